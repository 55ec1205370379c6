"""The native TensorRT engine: the bundle's plans (tinyllava-med build-engines) on this GPU, no torch.

Device memory and the stream come from cuda-python (imported only here, only when this backend is
chosen). The KV cache stays in device memory (device_cache.DeviceKVCache): each step binds the
cache buffers as past_key / past_value, writes the new tokens' K/V into their slots with a strided
device copy, and only the logits ([1, V]) come back to the host. Binding dtypes are read from the
engine: TensorRT 8.5 turns the int64 position_ids / past_mask into int32, 10.x keeps int64.
The decoder plan has two profiles (decode S = 1, prefill S <= chunk), one execution context each.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from server.runtime.bundle import Manifest
from server.runtime.device_cache import DeviceKVCache, DeviceMemory
from server.runtime.engine import Engine, EngineDims
from server.runtime.errors import EngineError

log = logging.getLogger(__name__)


class CudaDevice(DeviceMemory):
    """cuda-python runtime calls on one stream; every copy is asynchronous on that stream."""

    def __init__(self, device: int = 0) -> None:
        from cuda import cudart  # type: ignore[import-not-found]

        self.cudart = cudart
        self._check(cudart.cudaSetDevice(device))
        self.stream = self._check(cudart.cudaStreamCreate())

    def _check(self, result: Any) -> Any:
        err, rest = result[0], result[1:]
        if int(err) != 0:
            raise EngineError("CUDA call failed: %s" % (err,))
        return rest[0] if len(rest) == 1 else (rest or None)

    def alloc(self, nbytes: int) -> int:
        return int(self._check(self.cudart.cudaMalloc(max(1, nbytes))))

    def free(self, ptr: int) -> None:
        if ptr:
            self._check(self.cudart.cudaFree(ptr))

    def memset2d(self, ptr: int, pitch: int, value: int, width: int, height: int) -> None:
        self._check(self.cudart.cudaMemset2DAsync(ptr, pitch, value, width, height, self.stream))

    def copy2d(self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self._check(self.cudart.cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, kind, self.stream))

    def upload(self, ptr: int, array: np.ndarray) -> None:
        a = np.ascontiguousarray(array)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpyAsync(ptr, a.ctypes.data, a.nbytes, kind, self.stream))
        self.synchronize()  # the host array may be freed or reused right after

    def download(self, array: np.ndarray, ptr: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, kind, self.stream))
        self.synchronize()

    def synchronize(self) -> None:
        self._check(self.cudart.cudaStreamSynchronize(self.stream))

    def close(self) -> None:
        self._check(self.cudart.cudaStreamDestroy(self.stream))


def select_plans(manifest: Manifest, trt_version: str, device_name: str, compute_capability: str,
                 precision: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
    """graph -> engine record built for this TensorRT and GPU (and precision, if given); {} if incomplete."""
    found: Dict[str, Dict[str, Any]] = {}
    for rec in manifest.engines.values():
        if (rec.get("tensorrt"), rec.get("device"), rec.get("compute_capability")) != \
                (trt_version, device_name, compute_capability):
            continue
        if precision is not None and rec.get("precision") != precision:
            continue
        found.setdefault(rec["graph"], rec)
    return found if set(found) >= set(manifest.graphs) else {}


class _Plan:
    """One deserialized engine, its I/O dtypes and its execution contexts (one per profile)."""

    def __init__(self, trt: Any, runtime: Any, path: Path, device: Any, profiles: int) -> None:
        from engine_build.trt.compat import io_tensors

        data = path.read_bytes()
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise EngineError("TensorRT could not load %s (built by another TensorRT or GPU?): rebuild it with "
                              "`tinyllava-med build-engines`" % path.name)
        self.io = io_tensors(trt, self.engine)
        self.contexts: List[Any] = []
        for i in range(max(1, profiles)):
            ctx = self.engine.create_execution_context()
            if profiles > 1:
                ctx.set_optimization_profile_async(i, device.stream)
            self.contexts.append(ctx)

    def dtype(self, name: str) -> np.dtype:
        return self.io[name][1]


class TrtEngine(Engine):
    """vision + decoder plans on one GPU, with device-resident KV caches (create_cache / decode_into)."""

    def __init__(self, bundle_dir: Path, manifest: Manifest, dims: EngineDims, precision: Optional[str] = None,
                 device: Optional[DeviceMemory] = None, trt: Optional[Any] = None, device_info: Optional[Any] = None
                 ) -> None:
        """device / trt / device_info default to this GPU, the installed tensorrt and cuda-python (tests inject)."""
        from engine_build.trt.compat import load_tensorrt
        from engine_build.trt.device import current_device

        trt = load_tensorrt(trt)
        info = device_info or current_device()
        plans = select_plans(manifest, str(trt.__version__), info.name, info.compute_capability, precision)
        if not plans:
            raise EngineError("no TensorRT plans for TensorRT %s on %s (%s) in %s: run `tinyllava-med build-engines "
                              "%s` on this device first" % (trt.__version__, info.name, info.compute_capability,
                                                           bundle_dir, bundle_dir))
        self.trt = trt
        self.device = device or CudaDevice()
        self._dims = dims
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.records = plans
        self.chunk = int(plans["decoder"].get("prefill_chunk", 1))
        self._vision = _Plan(trt, self._runtime, bundle_dir / plans["vision"]["file"], self.device, 1)
        self._decoder = _Plan(trt, self._runtime, bundle_dir / plans["decoder"]["file"], self.device, 2)
        d = dims
        e = np.dtype(self._decoder.dtype("inputs_embeds")).itemsize
        kv_row = d.num_layers * d.num_kv_heads * d.head_dim
        self._bufs = {
            "inputs_embeds": self.device.alloc(self.chunk * d.hidden_size * e),
            "position_ids": self.device.alloc(self.chunk * 8),
            "logits": self.device.alloc(d.vocab_size * 4),
            "new_key": self.device.alloc(self.chunk * kv_row * e),
            "new_value": self.device.alloc(self.chunk * kv_row * e),
        }
        vision_in = self._vision.io
        self._pixel_name = next(n for n, (is_in, _) in vision_in.items() if is_in)
        self._pixel_dtype = self._vision.dtype(self._pixel_name)
        self._vision_out = self.device.alloc(d.num_image_tokens * d.hidden_size *
                                             np.dtype(self._vision.dtype("image_embeds")).itemsize)
        self._pixel_buf = 0
        self.precision = plans["decoder"]["precision"]
        log.info("TensorRT %s %s plans on %s", trt.__version__, self.precision, info.name)

    @property
    def dims(self) -> EngineDims:
        return self._dims

    @property
    def providers(self) -> Dict[str, List[str]]:
        return {g: ["TensorRT %s (%s)" % (self.trt.__version__, self.precision)] for g in ("decoder", "vision")}

    def create_cache(self) -> DeviceKVCache:
        d = self._dims
        return DeviceKVCache(self.device, d.num_layers, d.num_kv_heads, d.max_context, d.head_dim,
                             dtype=self._decoder.dtype("past_key"), mask_dtype=self._decoder.dtype("past_mask"))

    def encode_image(self, pixel_values: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(pixel_values, dtype=self._pixel_dtype)
        if not self._pixel_buf:
            self._pixel_buf = self.device.alloc(x.nbytes)
        self.device.upload(self._pixel_buf, x)
        ctx = self._vision.contexts[0]
        ctx.set_tensor_address(self._pixel_name, self._pixel_buf)
        ctx.set_tensor_address("image_embeds", self._vision_out)
        self._execute(ctx, "vision")
        out = np.empty((1, self._dims.num_image_tokens, self._dims.hidden_size), self._vision.dtype("image_embeds"))
        self.device.download(out, self._vision_out)
        return out

    def decode(self, inputs_embeds: np.ndarray, position_ids: np.ndarray, past_key: np.ndarray,
               past_value: np.ndarray, past_mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise EngineError("the TensorRT engine keeps the KV cache on the device: use create_cache() and "
                          "decode_into() (the Generator does)")

    def decode_into(self, inputs_embeds: np.ndarray, position_ids: np.ndarray, cache: Any) -> np.ndarray:
        s = int(inputs_embeds.shape[1])
        if s > self.chunk:
            raise EngineError("%d new positions in one step; the plan's prefill profile takes at most %d" % (s, self.chunk))
        start = int(position_ids[0, 0])
        dec = self._decoder
        ctx = dec.contexts[0 if s == 1 else 1]
        self.device.upload(self._bufs["inputs_embeds"], np.ascontiguousarray(inputs_embeds, dec.dtype("inputs_embeds")))
        self.device.upload(self._bufs["position_ids"], np.ascontiguousarray(position_ids, dec.dtype("position_ids")))
        ctx.set_input_shape("inputs_embeds", (1, s, self._dims.hidden_size))
        ctx.set_input_shape("position_ids", (1, s))
        addresses = {"inputs_embeds": self._bufs["inputs_embeds"], "position_ids": self._bufs["position_ids"],
                     "past_key": cache.key_ptr, "past_value": cache.value_ptr, "past_mask": cache.sync_mask(),
                     "logits": self._bufs["logits"], "new_key": self._bufs["new_key"],
                     "new_value": self._bufs["new_value"]}
        for name, ptr in addresses.items():
            ctx.set_tensor_address(name, ptr)
        self._execute(ctx, "decoder")
        cache.write_device(start, self._bufs["new_key"], self._bufs["new_value"], s)
        logits = np.empty((1, self._dims.vocab_size), np.float32)
        self.device.download(logits, self._bufs["logits"])
        return logits

    def _execute(self, ctx: Any, graph: str) -> None:
        if not ctx.execute_async_v3(self.device.stream):
            raise EngineError("TensorRT failed to run the %s plan (see the TensorRT log)" % graph)

    def close(self) -> None:
        for p in list(self._bufs.values()) + [self._vision_out, self._pixel_buf]:
            self.device.free(p)
        self._bufs = {}


def tensorrt_available(bundle_dir: Path, manifest: Manifest) -> bool:
    """Whether this host can run the bundle's plans: tensorrt + a GPU + plans recorded for both."""
    try:
        from engine_build.trt.compat import TensorRTUnavailable, load_tensorrt
        from engine_build.trt.device import current_device
    except ImportError:
        return False
    try:
        trt = load_tensorrt()
        info = current_device()
    except TensorRTUnavailable as e:
        log.info("TensorRT backend unavailable: %s", e)
        return False
    plans = select_plans(manifest, str(trt.__version__), info.name, info.compute_capability)
    return bool(plans) and all((Path(bundle_dir) / r["file"]).is_file() for r in plans.values())


__all__ = ["CudaDevice", "TrtEngine", "select_plans", "tensorrt_available"]
