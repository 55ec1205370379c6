"""The CUDA device this process runs on, through cuda-python (imported only when asked)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from engine_build.trt.compat import TensorRTUnavailable


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    compute_capability: str  # "7.2" on Xavier
    total_memory: int  # bytes


def _check(result: Any) -> Any:
    """cuda-python calls return (error, value...); raise on an error."""
    err, rest = result[0], result[1:]
    if int(err) != 0:
        raise TensorRTUnavailable("CUDA call failed (%s): is a GPU visible to this process (docker --runtime nvidia "
                                  "/ --gpus all)?" % err)
    return rest[0] if len(rest) == 1 else rest


def current_device(cudart: Optional[Any] = None, device: int = 0) -> DeviceInfo:
    if cudart is None:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError as e:
            raise TensorRTUnavailable("cuda-python is not installed (%s): `pip install cuda-python` (the version "
                                      "matching the CUDA toolkit, 11.4 on JetPack 5)" % e) from None
    count = _check(cudart.cudaGetDeviceCount())
    if count < 1:
        raise TensorRTUnavailable("no CUDA device is visible: TensorRT engines need a GPU; serve with "
                                  "--backend onnxruntime on this host")
    props = _check(cudart.cudaGetDeviceProperties(device))
    name = props.name.decode("utf-8", "replace") if isinstance(props.name, bytes) else str(props.name)
    return DeviceInfo(name=name.strip("\x00 "), compute_capability="%d.%d" % (props.major, props.minor),
                      total_memory=int(props.totalGlobalMem))
