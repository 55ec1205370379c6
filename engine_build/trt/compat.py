"""One code path for TensorRT 8.5 (JetPack 5, Xavier) to 10.x; refuse 11 (it removes the precision flags).

Only APIs present from 8.5 GA through 10.x are used (reference/trt_onnx_jetson.md section 2): the
name-based tensor API, build_serialized_network, set_memory_pool_limit, the timing cache.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Dict, Optional, Tuple

import numpy as np

MIN_VERSION = (8, 5)
FIRST_UNSUPPORTED_MAJOR = 11


class TensorRTUnavailable(Exception):
    """TensorRT (or a GPU) is not available here, or its version is outside what this code supports."""


def load_tensorrt(module: Optional[ModuleType] = None) -> ModuleType:
    """The `tensorrt` module, version-checked; `module` lets tests pass a stand-in."""
    if module is None:
        try:
            import tensorrt as module  # type: ignore[no-redef]
        except ImportError as e:
            raise TensorRTUnavailable(
                "the `tensorrt` Python package is not installed (%s): engines are built on the device that runs "
                "them; on a Jetson use the JetPack image's TensorRT (python3-libnvinfer), on x86 "
                "`pip install 'tensorrt>=10,<11'`, or serve with --backend onnxruntime" % e) from None
    check_version(module.__version__)
    return module


def parse_version(text: str) -> Tuple[int, int, int]:
    parts = []
    for p in str(text).split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def check_version(text: str) -> Tuple[int, int, int]:
    v = parse_version(text)
    if v[0] >= FIRST_UNSUPPORTED_MAJOR:
        raise TensorRTUnavailable(
            "TensorRT %s is not supported: TensorRT 11 removes the FP16/INT8 builder flags this build uses; install "
            "TensorRT 10.x (`pip install 'tensorrt>=10,<11'`) or 8.5/8.6" % text)
    if v[:2] < MIN_VERSION:
        raise TensorRTUnavailable("TensorRT %s is too old: the name-based tensor API needs 8.5 or newer (JetPack 5.1)"
                                  % text)
    return v


def network_flags(trt: Any) -> int:
    """EXPLICIT_BATCH below 10 (the ONNX parser needs it); 10 ignores it (deprecated), so it is left out."""
    if parse_version(trt.__version__)[0] < 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return 0


def _np_dtypes(trt: Any) -> Dict[Any, np.dtype]:
    out = {trt.float32: np.dtype(np.float32), trt.float16: np.dtype(np.float16), trt.int32: np.dtype(np.int32),
           trt.int8: np.dtype(np.int8), trt.bool: np.dtype(np.bool_)}
    if hasattr(trt, "int64"):  # TensorRT >= 9 keeps INT64 bindings; 8.5 turns them into INT32
        out[trt.int64] = np.dtype(np.int64)
    return out


def io_tensors(trt: Any, engine: Any) -> Dict[str, Tuple[bool, np.dtype]]:
    """name -> (is_input, numpy dtype), read from the engine (not assumed from the ONNX graph)."""
    dtypes = _np_dtypes(trt)
    out = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dt = engine.get_tensor_dtype(name)
        if dt not in dtypes:
            raise TensorRTUnavailable("engine tensor %s has TensorRT type %s, which the runtime does not feed"
                                      % (name, dt))
        out[name] = (engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT, dtypes[dt])
    return out
