"""A stand-in for the `tensorrt` module (this machine has neither TensorRT nor a GPU).

It implements only the API surface engine_build/trt calls, records every call, and "parses" an
ONNX bundle graph by reading layer names from a list the test gives it (the ONNX node names, as
TensorRT's ONNX parser names its layers). It builds nothing: plans are a deterministic byte string
derived from what was configured, so tests can see that a different configuration gives a new plan.
"""
from __future__ import annotations

import enum
import json
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    INT64 = 9


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class _Flag(enum.IntEnum):
    EXPLICIT_BATCH = 0


class BuilderFlag(enum.Enum):
    FP16 = "FP16"
    INT8 = "INT8"
    OBEY_PRECISION_CONSTRAINTS = "OBEY_PRECISION_CONSTRAINTS"


class MemoryPoolType(enum.Enum):
    WORKSPACE = "WORKSPACE"


class _Tensor:
    def __init__(self, dtype: DataType) -> None:
        self.dtype = dtype


class _Layer:
    def __init__(self, name: str, outputs: List[DataType]) -> None:
        self.name = name
        self.precision: Optional[DataType] = None
        self._outputs = [_Tensor(d) for d in outputs]
        self.output_types: Dict[int, DataType] = {}

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_output(self, i: int) -> _Tensor:
        return self._outputs[i]

    def set_output_type(self, i: int, dtype: DataType) -> None:
        self.output_types[i] = dtype


class _Network:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.layers: List[_Layer] = []

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_layer(self, i: int) -> _Layer:
        return self.layers[i]


class _Profile:
    def __init__(self) -> None:
        self.shapes: Dict[str, Tuple[Tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
        self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class _TimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"+timed"


class _Config:
    def __init__(self) -> None:
        self.flags: List[BuilderFlag] = []
        self.pools: Dict[MemoryPoolType, int] = {}
        self.profiles: List[_Profile] = []
        self.timing_cache: Optional[_TimingCache] = None

    def set_flag(self, f: BuilderFlag) -> None:
        self.flags.append(f)

    def set_memory_pool_limit(self, pool: MemoryPoolType, n: int) -> None:
        self.pools[pool] = n

    def add_optimization_profile(self, p: _Profile) -> int:
        self.profiles.append(p)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> _TimingCache:
        return _TimingCache(bytes(data))

    def set_timing_cache(self, cache: _TimingCache, ignore_mismatch: bool) -> bool:
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> Optional[_TimingCache]:
        return self.timing_cache


def make_tensorrt(version: str, layers: Dict[str, List[Tuple[str, List[DataType]]]],
                  fail_build: bool = False) -> SimpleNamespace:
    """A fake `tensorrt` of `version`; `layers`: ONNX file name -> [(layer name, output dtypes)]."""
    calls: Dict[str, List[Any]] = {"networks": [], "configs": [], "parsed": [], "builds": 0}

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: _Network, logger: Logger) -> None:
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            from pathlib import Path

            name = Path(path).name
            calls["parsed"].append(name)
            self.network.layers = [_Layer(n, d) for n, d in layers[name]]
            return True

    class Builder:
        def __init__(self, logger: Logger) -> None:
            pass

        def create_network(self, flags: int) -> _Network:
            net = _Network(flags)
            calls["networks"].append(net)
            return net

        def create_builder_config(self) -> _Config:
            c = _Config()
            calls["configs"].append(c)
            return c

        def create_optimization_profile(self) -> _Profile:
            return _Profile()

        def build_serialized_network(self, network: _Network, config: _Config) -> Optional[bytes]:
            calls["builds"] += 1
            if fail_build:
                return None
            desc = {"layers": [[layer.name, str(layer.precision)] for layer in network.layers],
                    "flags": [f.value for f in config.flags], "profiles": [p.shapes for p in config.profiles]}
            return ("PLAN" + json.dumps(desc, default=str)).encode()

    major = int(version.split(".")[0])
    ns = SimpleNamespace(
        __version__=version, Logger=Logger, Builder=Builder, OnnxParser=OnnxParser, BuilderFlag=BuilderFlag,
        MemoryPoolType=MemoryPoolType, NetworkDefinitionCreationFlag=_Flag, TensorIOMode=TensorIOMode,
        float32=DataType.FLOAT, float16=DataType.HALF, int8=DataType.INT8, int32=DataType.INT32, bool=DataType.BOOL,
        calls=calls)
    if major >= 9:
        ns.int64 = DataType.INT64
    return ns


class FakeEngine:
    """An engine's I/O table as TensorRT reports it: name -> (mode, dtype)."""

    def __init__(self, io: Dict[str, Tuple[TensorIOMode, DataType]]) -> None:
        self._names = list(io)
        self._io = io

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    def get_tensor_name(self, i: int) -> str:
        return self._names[i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self._io[name][0]

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._io[name][1]
