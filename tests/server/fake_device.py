"""A numpy stand-in for GPU memory (this machine has no GPU), and a device-cache engine over ToyEngine.

FakeDevice keeps one byte array as "device memory" and implements the DeviceMemory calls
(alloc, strided memset / copy, upload, download) with numpy slicing, counting host<->device bytes.
DeviceToyEngine runs ToyEngine's exact integer arithmetic as its "kernel", reading the cache where
the device cache keeps it (device memory, not a host copy), and owns its caches like the TensorRT
engine does (create_cache / decode_into).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from server.runtime.device_cache import DeviceKVCache, DeviceMemory
from tests.server.fake_engines import ToyEngine

_BASE = 1 << 20  # addresses start here, so 0 is never a valid pointer


class FakeDevice(DeviceMemory):
    def __init__(self, nbytes: int = 16 << 20) -> None:
        self.mem = np.full(nbytes, 0xAB, dtype=np.uint8)  # garbage, as fresh device memory may be
        self._next = 0
        self.live: Dict[int, int] = {}
        self.uploaded = 0
        self.downloaded = 0
        self.largest_transfer = 0
        self.stream = 0  # what TensorRT calls take as the CUDA stream

    def _off(self, ptr: int) -> int:
        return ptr - _BASE

    def alloc(self, nbytes: int) -> int:
        off = (self._next + 255) // 256 * 256
        if off + nbytes > self.mem.size:
            raise MemoryError("fake device out of memory")
        self._next = off + nbytes
        self.live[off + _BASE] = nbytes
        return off + _BASE

    def free(self, ptr: int) -> None:
        del self.live[ptr]

    def _rows(self, ptr: int, pitch: int, width: int, height: int) -> np.ndarray:
        off = self._off(ptr)
        return np.lib.stride_tricks.as_strided(self.mem[off:], shape=(height, width), strides=(pitch, 1))

    def memset2d(self, ptr: int, pitch: int, value: int, width: int, height: int) -> None:
        self._rows(ptr, pitch, width, height)[...] = value

    def copy2d(self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int) -> None:
        self._rows(dst, dpitch, width, height)[...] = self._rows(src, spitch, width, height).copy()

    def upload(self, ptr: int, array: np.ndarray) -> None:
        b = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        self.mem[self._off(ptr):self._off(ptr) + b.size] = b
        self.uploaded += b.size
        self.largest_transfer = max(self.largest_transfer, b.size)

    def download(self, array: np.ndarray, ptr: int) -> None:
        n = array.nbytes
        array.reshape(-1).view(np.uint8)[...] = self.mem[self._off(ptr):self._off(ptr) + n]
        self.downloaded += n
        self.largest_transfer = max(self.largest_transfer, n)

    def view(self, ptr: int, shape: tuple, dtype: np.dtype) -> np.ndarray:
        """What a kernel sees at ptr (no transfer counted)."""
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self.mem[self._off(ptr):self._off(ptr) + n].view(dtype).reshape(shape)


class DeviceToyEngine(ToyEngine):
    """ToyEngine whose KV caches live on a FakeDevice."""

    def __init__(self, device: FakeDevice, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.device = device
        d = self.dims
        self._out = {n: device.alloc(d.num_layers * d.num_kv_heads * d.max_context * d.head_dim * 4)
                     for n in ("new_key", "new_value")}

    def create_cache(self) -> DeviceKVCache:
        d = self.dims
        return DeviceKVCache(self.device, d.num_layers, d.num_kv_heads, d.max_context, d.head_dim, np.float32)

    def decode_into(self, inputs_embeds, position_ids, cache):  # type: ignore[no-untyped-def]
        dev = self.device
        mask = dev.view(cache.sync_mask(), cache.mask.shape, cache.mask.dtype)
        key = dev.view(cache.key_ptr, cache.shape, np.float32)
        value = dev.view(cache.value_ptr, cache.shape, np.float32)
        logits, nk, nv = self.decode(inputs_embeds, position_ids, key, value, mask)
        s = inputs_embeds.shape[1]
        # the "kernel" writes its outputs to device buffers; the cache copies them into their slots
        dev.view(self._out["new_key"], nk.shape, np.float32)[...] = nk
        dev.view(self._out["new_value"], nv.shape, np.float32)[...] = nv
        cache.write_device(int(position_ids[0, 0]), self._out["new_key"], self._out["new_value"], s)
        return logits
