"""The bounded LRU map behind the image-embedding cache and the upload cache."""
from __future__ import annotations

import numpy as np
import pytest

from server.runtime.image_cache import ImageEmbeddingCache
from server.runtime.lru import LRU


def test_least_recently_used_goes_first_and_get_refreshes() -> None:
    c: LRU[str, int] = LRU(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1  # "a" is now newer than "b"
    c.put("c", 3)
    assert (c.get("a"), c.get("b"), c.get("c"), len(c)) == (1, None, 3, 2)
    c.put("a", 4)  # replacing keeps one entry
    assert c.get("a") == 4 and len(c) == 2
    c.clear()
    assert c.get("a") is None and len(c) == 0


def test_capacity_zero_keeps_nothing_and_negative_is_refused() -> None:
    c: LRU[str, int] = LRU(0)
    c.put("a", 1)
    assert c.get("a") is None
    with pytest.raises(ValueError, match=">= 0"):
        LRU(-1)


def test_embedding_cache_keeps_a_read_only_copy() -> None:
    cache = ImageEmbeddingCache(1)
    embeds = np.ones((1, 2, 3), dtype=np.float32)
    cache.put("h", embeds)
    embeds[:] = 5  # the caller's array changes later: the cached copy does not
    got = cache.get("h")
    assert got is not None and not got.flags.writeable
    np.testing.assert_array_equal(got, np.ones((1, 2, 3), dtype=np.float32))
