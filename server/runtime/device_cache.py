"""A KV cache that lives in device memory, for backends that own their cache (native TensorRT).

Same semantics as kv_cache.KVCache (preallocated [L, 1, KVH, M, D], valid positions exactly the
prefix [0, length), dropped slots zeroed), but the K/V never cross to the host: a step's new K/V
(the engine's output buffers, [L, 1, KVH, S, D] contiguous) are copied into their slots with one
strided device-to-device copy per tensor (rows = L*KVH, row width S*D elements, destination pitch
M*D), and truncation zeroes slots with one strided memset. Only past_mask ([1, M], a few KB) is
mirrored on the host and uploaded when it changed.

The device is any object with the DeviceMemory methods below (CudaDevice in trt_backend.py; tests
use a numpy stand-in), so the bookkeeping is tested without a GPU.
"""
from __future__ import annotations

from typing import Any, Tuple, Union

import numpy as np

from server.runtime.errors import ContextLengthError


class DeviceMemory:
    """What the cache needs from a device (byte addresses are ints)."""

    def alloc(self, nbytes: int) -> int:
        raise NotImplementedError

    def free(self, ptr: int) -> None:
        raise NotImplementedError

    def memset2d(self, ptr: int, pitch: int, value: int, width: int, height: int) -> None:
        raise NotImplementedError

    def copy2d(self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int) -> None:
        """Device-to-device copy of `height` rows of `width` bytes."""
        raise NotImplementedError

    def upload(self, ptr: int, array: np.ndarray) -> None:
        raise NotImplementedError

    def download(self, array: np.ndarray, ptr: int) -> None:
        raise NotImplementedError


class DeviceKVCache:
    """key / value [L, 1, KVH, M, D] at device addresses `key_ptr` / `value_ptr`; past_mask at `mask_ptr`."""

    owns_device_memory = True

    def __init__(self, device: Any, num_layers: int, num_kv_heads: int, max_context: int, head_dim: int,
                 dtype: Union[str, np.dtype] = np.float16, mask_dtype: Union[str, np.dtype] = np.int64) -> None:
        self.device = device
        self.shape = (num_layers, 1, num_kv_heads, max_context, head_dim)
        self.dtype = np.dtype(dtype)
        self._rows = num_layers * num_kv_heads
        self._slot = head_dim * self.dtype.itemsize  # bytes per position in one row
        self._pitch = max_context * self._slot
        nbytes = self._rows * self._pitch
        self.key_ptr = device.alloc(nbytes)
        self.value_ptr = device.alloc(nbytes)
        for p in (self.key_ptr, self.value_ptr):
            device.memset2d(p, self._pitch, 0, self._pitch, self._rows)
        self.mask = np.zeros((1, max_context), dtype=mask_dtype)  # host mirror, the engine's binding dtype
        self.mask_ptr = device.alloc(self.mask.nbytes)
        device.upload(self.mask_ptr, self.mask)
        self._mask_dirty = False
        self._length = 0

    @property
    def length(self) -> int:
        return self._length

    @property
    def capacity(self) -> int:
        return self.shape[3]

    @property
    def remaining(self) -> int:
        return self.capacity - self._length

    def sync_mask(self) -> int:
        """Upload past_mask if it changed; returns its device address (call before each engine step)."""
        if self._mask_dirty:
            self.device.upload(self.mask_ptr, self.mask)
            self._mask_dirty = False
        return self.mask_ptr

    def write_device(self, start: int, new_key_ptr: int, new_value_ptr: int, new_tokens: int) -> None:
        """Store S new tokens' K/V (device buffers [L, 1, KVH, S, D]) at positions start .. start+S-1."""
        if not 0 <= start <= self._length:
            raise ValueError("write at position %d would leave a gap after %d cached positions" % (start, self._length))
        end = start + new_tokens
        if end > self.capacity:
            raise ContextLengthError("%d positions do not fit in a context of %d" % (end, self.capacity))
        self.truncate(start)
        width = new_tokens * self._slot
        for dst, src in ((self.key_ptr, new_key_ptr), (self.value_ptr, new_value_ptr)):
            self.device.copy2d(dst + start * self._slot, self._pitch, src, width, width, self._rows)
        self.mask[0, start:end] = 1
        self._mask_dirty = True
        self._length = end

    def truncate(self, length: int) -> None:
        """Keep positions [0, length); zero the dropped slots (a reused cache equals a fresh one)."""
        if not 0 <= length <= self.capacity:
            raise ValueError("cannot truncate a cache of %d positions to %d" % (self.capacity, length))
        if length < self._length:
            width = (self._length - length) * self._slot
            for p in (self.key_ptr, self.value_ptr):
                self.device.memset2d(p + length * self._slot, self._pitch, 0, width, self._rows)
            self.mask[0, length:self._length] = 0
            self._mask_dirty = True
            self._length = length

    def reset(self) -> None:
        self.truncate(0)

    def download(self) -> Tuple[np.ndarray, np.ndarray]:
        """(key, value) as host arrays: for checks and debugging, never on the generation path."""
        key = np.empty(self.shape, self.dtype)
        value = np.empty(self.shape, self.dtype)
        self.device.download(key, self.key_ptr)
        self.device.download(value, self.value_ptr)
        return key, value

    def close(self) -> None:
        for p in (self.key_ptr, self.value_ptr, self.mask_ptr):
            self.device.free(p)
        self.key_ptr = self.value_ptr = self.mask_ptr = 0
