"""The native TensorRT engine's host side, over a fake TensorRT runtime whose "kernels" are ToyEngine's exact
arithmetic reading and writing a FakeDevice at the addresses the engine bound (no TensorRT or GPU here).
Binding dtypes come from the engine: TensorRT 8.5 plans take int32 position_ids / past_mask, 10.x int64; a
wrong dtype would garble the positions and fail ToyEngine's checks."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

from engine_build.trt.device import DeviceInfo
from server.runtime import GenerationParams, Generator
from server.runtime.bundle import load_manifest
from server.runtime.trt_backend import TrtEngine
from tests.engine_build.trt.fake_tensorrt import DataType, TensorIOMode, make_tensorrt
from tests.server.fake_device import FakeDevice
from tests.server.fake_engines import ToyEngine

GPU = DeviceInfo("Fake GPU", "7.2", 8 << 30)
_NP = {DataType.FLOAT: np.float32, DataType.INT32: np.int32, DataType.INT64: np.int64}


class _Ids:
    def decode(self, ids, skip_special_tokens=True):  # type: ignore[no-untyped-def]
        return " ".join(str(i) for i in ids)


class FakePlan:
    """A deserialized engine: its I/O table, and contexts that run `toy` on device memory."""

    def __init__(self, graph: str, toy: ToyEngine, dev: FakeDevice, ids: DataType) -> None:
        self.graph, self.toy, self.dev = graph, toy, dev
        f, i, o = DataType.FLOAT, TensorIOMode.INPUT, TensorIOMode.OUTPUT
        if graph == "vision":
            self.io = {"pixel_values": (i, f), "image_embeds": (o, f)}
        else:
            self.io = {"inputs_embeds": (i, f), "position_ids": (i, ids), "past_key": (i, f), "past_value": (i, f),
                       "past_mask": (i, ids), "logits": (o, f), "new_key": (o, f), "new_value": (o, f)}
        self.contexts: List["FakeContext"] = []
        self._names = list(self.io)

    num_io_tensors = property(lambda self: len(self._names))

    def get_tensor_name(self, k: int) -> str:
        return self._names[k]

    def get_tensor_mode(self, n: str) -> TensorIOMode:
        return self.io[n][0]

    def get_tensor_dtype(self, n: str) -> DataType:
        return self.io[n][1]

    def create_execution_context(self) -> "FakeContext":
        c = FakeContext(self)
        self.contexts.append(c)
        return c


class FakeContext:
    def __init__(self, plan: FakePlan) -> None:
        self.plan, self.profile, self.addr, self.shapes = plan, 0, {}, {}
        self.runs: List[int] = []

    def set_optimization_profile_async(self, i: int, stream: int) -> bool:
        self.profile = i
        return True

    def set_input_shape(self, name: str, shape: Tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addr[name] = ptr
        return True

    def _arr(self, name: str, shape: Tuple[int, ...]) -> np.ndarray:
        return self.plan.dev.view(self.addr[name], shape, _NP[self.plan.io[name][1]])

    def execute_async_v3(self, stream: int) -> bool:
        p, d = self.plan, self.plan.toy.dims
        if p.graph == "vision":
            px = self._arr("pixel_values", (1, 3, 4, 4))
            self._arr("image_embeds", (1, d.num_image_tokens, d.hidden_size))[...] = p.toy.encode_image(px)
            return True
        s = self.shapes["inputs_embeds"][1]
        assert self.profile == (0 if s == 1 else 1), "one-token steps run on the decode profile"
        self.runs.append(s)
        kv = (d.num_layers, 1, d.num_kv_heads, d.max_context, d.head_dim)
        logits, nk, nv = p.toy.decode(self._arr("inputs_embeds", (1, s, d.hidden_size)),
                                      self._arr("position_ids", (1, s)), self._arr("past_key", kv),
                                      self._arr("past_value", kv), self._arr("past_mask", (1, d.max_context)))
        self._arr("logits", logits.shape)[...] = logits
        self._arr("new_key", nk.shape)[...] = nk
        self._arr("new_value", nv.shape)[...] = nv
        return True


def _engine(tmp_path: Path, version: str, ids: DataType, toy: ToyEngine, dev: FakeDevice) -> TrtEngine:
    from tests.engine_build.trt.bundles import write_bundle

    b = write_bundle(tmp_path / "b")
    m = load_manifest(b)
    for g in ("vision", "decoder"):
        (b / "engines").mkdir(exist_ok=True)
        (b / "engines" / (g + ".plan")).write_bytes(g.encode())
        m.engines[g] = {"graph": g, "tensorrt": version, "device": GPU.name, "compute_capability": "7.2",
                        "precision": "fp16", "file": "engines/%s.plan" % g, "prefill_chunk": 4}
    trt = make_tensorrt(version, {})

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> FakePlan:
            return FakePlan(data.decode(), toy, dev, ids)

    trt.Runtime = Runtime
    return TrtEngine(b, m, toy.dims, device=dev, trt=trt, device_info=GPU)


@pytest.mark.parametrize("version,ids", [("8.5.2.2", DataType.INT32), ("10.3.0", DataType.INT64)])
def test_generation_on_the_tensorrt_engine_matches_the_host_path(tmp_path: Path, version: str, ids: DataType) -> None:
    dev = FakeDevice()
    engine = _engine(tmp_path, version, ids, ToyEngine(), dev)
    host = ToyEngine()
    image = np.linspace(0, 1, 48, dtype=np.float32).reshape(1, 3, 4, 4)
    params = GenerationParams(max_tokens=6, ignore_eos=True, return_logits=True)
    results: Dict[str, list] = {}
    for name, eng in (("host", host), ("trt", engine)):
        gen = Generator(eng, host.embed_table, _Ids(), prefill_chunk=4)
        results[name] = [gen.generate(p, image, params) for p in ([1, 5, -200, 7, 8], [1, 5, -200, 7, 8, 9, 10])]
    for h, t in zip(results["host"], results["trt"]):
        assert h.output_ids == t.output_ids and h.timings.cached_tokens == t.timings.cached_tokens
        np.testing.assert_array_equal(h.logits, t.logits)
    runs = engine._decoder.contexts[0].runs + engine._decoder.contexts[1].runs
    assert max(runs) == 4 and runs.count(1) >= 10  # prefill chunks on the prefill profile, steps on decode
    assert engine._decoder.dtype("position_ids") == np.dtype(np.int32 if version.startswith("8") else np.int64)


def test_a_step_longer_than_the_prefill_profile_is_refused(tmp_path: Path) -> None:
    from server.runtime.errors import EngineError

    dev = FakeDevice()
    engine = _engine(tmp_path, "8.5.2.2", DataType.INT32, ToyEngine(), dev)
    cache = engine.create_cache()
    d = engine.dims
    with pytest.raises(EngineError, match="at most 4"):
        engine.decode_into(np.zeros((1, 5, d.hidden_size), np.float32), np.arange(5)[None], cache)
