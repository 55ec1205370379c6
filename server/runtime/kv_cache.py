"""The runtime-owned KV cache: preallocated at max_context, filled from position 0 without gaps.

The decoder graph reads the whole cache (static shape, so one graph and one TensorRT profile serve
every length) and returns only the new tokens' K/V; this class writes them at their positions and
keeps past_mask in step. Valid positions are always the prefix [0, length), which is what prefix
reuse needs: keeping a shared prompt prefix is truncate(n).
"""
from __future__ import annotations

from typing import Union

import numpy as np

from server.runtime.engine import EngineDims
from server.runtime.errors import ContextLengthError


class KVCache:
    """key / value [L, 1, KVH, M, D] and past_mask [1, M] int64 for one sequence."""

    def __init__(self, num_layers: int, num_kv_heads: int, max_context: int, head_dim: int,
                 dtype: Union[str, np.dtype] = np.float32) -> None:
        shape = (num_layers, 1, num_kv_heads, max_context, head_dim)
        self.key = np.zeros(shape, dtype=dtype)
        self.value = np.zeros(shape, dtype=dtype)
        self.mask = np.zeros((1, max_context), dtype=np.int64)
        self._length = 0

    @classmethod
    def for_dims(cls, dims: EngineDims) -> "KVCache":
        return cls(dims.num_layers, dims.num_kv_heads, dims.max_context, dims.head_dim, dims.dtype)

    @property
    def length(self) -> int:
        """Number of valid positions; they are exactly [0, length)."""
        return self._length

    @property
    def capacity(self) -> int:
        return self.mask.shape[1]

    @property
    def remaining(self) -> int:
        return self.capacity - self._length

    def write(self, start: int, new_key: np.ndarray, new_value: np.ndarray) -> None:
        """Store S new tokens' K/V [L, 1, KVH, S, D] at positions start .. start+S-1.

        start may be below length (the positions from start on are replaced); it may not leave a
        gap, because the graph derives nothing from gaps and a gap would attend to stale slots.
        """
        expected = self.key.shape[:3] + self.key.shape[4:]
        if new_key.shape != new_value.shape or new_key.shape[:3] + new_key.shape[4:] != expected:
            raise ValueError("new K/V shapes %s / %s do not fit a cache of %s"
                             % (new_key.shape, new_value.shape, self.key.shape))
        if not 0 <= start <= self._length:
            raise ValueError("write at position %d would leave a gap after %d cached positions" % (start, self._length))
        s = new_key.shape[3]
        end = start + s
        if end > self.capacity:
            raise ContextLengthError("%d positions do not fit in a context of %d" % (end, self.capacity))
        self.truncate(start)
        self.key[:, :, :, start:end, :] = new_key
        self.value[:, :, :, start:end, :] = new_value
        self.mask[0, start:end] = 1
        self._length = end

    def truncate(self, length: int) -> None:
        """Keep positions [0, length) and clear the rest.

        Cleared slots are zeroed, not just masked, so a reused cache is bit-identical to a fresh
        one: token-identical results then do not depend on how the graph applies the mask.
        """
        if not 0 <= length <= self.capacity:
            raise ValueError("cannot truncate a cache of %d positions to %d" % (self.capacity, length))
        if length < self._length:
            self.key[:, :, :, length:self._length, :] = 0
            self.value[:, :, :, length:self._length, :] = 0
            self.mask[0, length:self._length] = 0
            self._length = length

    def reset(self) -> None:
        self.truncate(0)
