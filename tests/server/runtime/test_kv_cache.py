"""The preallocated KV cache: positions, mask, truncation and bounds."""
from __future__ import annotations

import numpy as np
import pytest

from server.runtime.engine import EngineDims
from server.runtime.errors import ContextLengthError
from server.runtime.kv_cache import KVCache

L, KVH, M, D = 2, 3, 8, 4


def _kv(s: int, start: float) -> np.ndarray:
    return (np.arange(L * KVH * s * D, dtype=np.float32).reshape(L, 1, KVH, s, D) + start)


def test_preallocated_zero_and_shaped() -> None:
    c = KVCache(L, KVH, M, D, np.float16)
    assert c.key.shape == c.value.shape == (L, 1, KVH, M, D)
    assert c.key.dtype == np.float16 and c.mask.dtype == np.int64 and c.mask.shape == (1, M)
    assert c.length == 0 and c.remaining == M and not c.key.any() and not c.mask.any()
    dims = EngineDims(L, KVH, D, M, vocab_size=10, hidden_size=12, num_image_tokens=4, dtype=np.dtype(np.float32))
    assert KVCache.for_dims(dims).key.shape == (L, 1, KVH, M, D)


def test_write_places_tokens_at_their_positions() -> None:
    c = KVCache(L, KVH, M, D)
    k1, v1 = _kv(3, 0), _kv(3, 1000)
    c.write(0, k1, v1)
    k2, v2 = _kv(1, 500), _kv(1, 1500)
    c.write(3, k2, v2)
    assert c.length == 4
    np.testing.assert_array_equal(c.mask[0], [1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(c.key[:, :, :, 0:3], k1)
    np.testing.assert_array_equal(c.value[:, :, :, 0:3], v1)
    np.testing.assert_array_equal(c.key[:, :, :, 3:4], k2)
    np.testing.assert_array_equal(c.value[:, :, :, 3:4], v2)
    assert not c.key[:, :, :, 4:].any()


def test_truncate_makes_cache_equal_to_fresh_prefix() -> None:
    c = KVCache(L, KVH, M, D)
    c.write(0, _kv(6, 1), _kv(6, 2))
    fresh = KVCache(L, KVH, M, D)
    fresh.write(0, _kv(6, 1)[:, :, :, :2], _kv(6, 2)[:, :, :, :2])
    c.truncate(2)
    assert c.length == 2
    np.testing.assert_array_equal(c.key, fresh.key)
    np.testing.assert_array_equal(c.value, fresh.value)
    np.testing.assert_array_equal(c.mask, fresh.mask)
    c.reset()
    assert c.length == 0 and not c.key.any() and not c.value.any() and not c.mask.any()


def test_write_below_length_replaces_the_rest() -> None:
    c = KVCache(L, KVH, M, D)
    c.write(0, _kv(5, 1), _kv(5, 1))
    c.write(2, _kv(1, 7), _kv(1, 7))
    assert c.length == 3
    np.testing.assert_array_equal(c.mask[0], [1, 1, 1, 0, 0, 0, 0, 0])
    assert not c.key[:, :, :, 3:].any()


def test_bounds() -> None:
    c = KVCache(L, KVH, M, D)
    with pytest.raises(ValueError, match="gap"):
        c.write(1, _kv(1, 0), _kv(1, 0))
    c.write(0, _kv(7, 0), _kv(7, 0))
    with pytest.raises(ContextLengthError):
        c.write(7, _kv(2, 0), _kv(2, 0))
    c.write(7, _kv(1, 0), _kv(1, 0))
    assert c.remaining == 0
    with pytest.raises(ValueError, match="shapes"):
        c.write(0, np.zeros((L, 1, KVH + 1, 1, D), np.float32), np.zeros((L, 1, KVH + 1, 1, D), np.float32))
    with pytest.raises(ValueError):
        c.truncate(M + 1)
