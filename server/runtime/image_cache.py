"""Image embeddings cached by the content hash of their pixel_values (a small LRU).

A follow-up question about the same image skips the vision graph (the largest share of
time-to-first-token on a Jetson). The hash also names the image in the prefix-reuse key, so two
requests share KV positions at and after an image only when their pixels are identical.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Optional

import numpy as np


def pixel_hash(pixel_values: np.ndarray) -> str:
    """sha256 over dtype, shape and bytes: equal only for identical preprocessed images."""
    arr = np.ascontiguousarray(pixel_values)
    h = hashlib.sha256()
    h.update(("%s%s" % (arr.dtype.str, arr.shape)).encode("ascii"))
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


class ImageEmbeddingCache:
    """LRU map from pixel hash to image_embeds [1, N, H]; capacity 0 disables it."""

    def __init__(self, capacity: int = 8) -> None:
        if capacity < 0:
            raise ValueError("image cache capacity must be >= 0, got %d" % capacity)
        self.capacity = capacity
        self._items: "OrderedDict[str, np.ndarray]" = OrderedDict()

    def get(self, key: str) -> Optional[np.ndarray]:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: np.ndarray) -> None:
        if self.capacity == 0:
            return
        value = np.array(value, copy=True)
        value.flags.writeable = False  # shared across requests: nobody may change it in place
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()
