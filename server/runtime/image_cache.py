"""Image embeddings cached by the content hash of their pixel_values (a small LRU).

A follow-up question about the same image skips the vision graph (the largest share of
time-to-first-token on a Jetson). The hash also names the image in the prefix-reuse key, so two
requests share KV positions at and after an image only when their pixels are identical.
"""
from __future__ import annotations

import hashlib

import numpy as np

from server.runtime.lru import LRU


def pixel_hash(pixel_values: np.ndarray) -> str:
    """sha256 over dtype, shape and bytes: equal only for identical preprocessed images."""
    arr = np.ascontiguousarray(pixel_values)
    h = hashlib.sha256()
    h.update(("%s%s" % (arr.dtype.str, arr.shape)).encode("ascii"))
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


class ImageEmbeddingCache(LRU[str, np.ndarray]):
    """LRU map from pixel hash to image_embeds [1, N, H]; capacity 0 disables it."""

    def put(self, key: str, value: np.ndarray) -> None:
        value = np.array(value, copy=True)
        value.flags.writeable = False  # shared across requests: nobody may change it in place
        super().put(key, value)
