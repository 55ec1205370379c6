"""Upload bytes -> (decoded-image facts, pixel_values), cached by the sha256 of the bytes.

A follow-up question about the same image (a second /v1/vqa call, or the next turn of a chat that
sends the image again) then skips decoding (PNG/JPEG/DICOM) and preprocessing as well as the vision
graph (whose embeddings the runtime caches by pixel hash). Same bytes, same frame, same limits:
the cached pixels are exactly what a fresh decode would give.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Optional, Tuple

import numpy as np

from models.processor import Processor
from server.imaging.images import DEFAULT_LIMITS, DecodedImage, decode_image
from server.imaging.limits import ImageLimits, configure_pillow
from server.imaging.pydicom_compat import configure_pydicom
from server.runtime.lru import LRU


class ImagePreparer:
    def __init__(self, processor: Processor, limits: Optional[ImageLimits] = None, capacity: int = 8) -> None:
        self.processor = processor
        self.limits = limits or DEFAULT_LIMITS
        configure_pillow(self.limits.max_pixels)  # once, as the service (or bench) starts
        configure_pydicom()
        self._cache: "LRU[Tuple[str, Optional[int]], Tuple[DecodedImage, np.ndarray]]" = LRU(capacity)

    def __call__(self, data: bytes, frame: Optional[int] = None) -> Tuple[DecodedImage, np.ndarray]:
        """DecodedImage (its PIL image dropped when served from the cache) and pixel_values [1,3,S,S]."""
        digest = hashlib.sha256(data).hexdigest()
        key = (digest, frame)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        decoded = decode_image(data, frame, self.limits, digest=digest)
        pixels = self.processor.pixels(decoded.image)
        pixels.flags.writeable = False  # shared across requests
        # keep the facts, not the full-size PIL image
        self._cache.put(key, (dataclasses.replace(decoded, image=None), pixels))  # type: ignore[arg-type]
        return decoded, pixels
