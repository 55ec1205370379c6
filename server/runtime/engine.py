"""The `Engine` interface: what a backend (ONNX Runtime, native TensorRT) must provide.

By default an engine is stateless between calls: the KV cache belongs to the caller (see
kv_cache.py), so every backend has the same semantics and the generation loop is written once.
A backend whose cache must stay in device memory (native TensorRT: a host round trip of the whole
cache per token would cap decode far below the bandwidth ceiling) instead returns a cache object
from create_cache() and runs steps with decode_into(), which writes the new K/V into that cache
itself. The ONNX Runtime backend keeps the default (host cache, decode()). Graph I/O is the bundle
contract in server/runtime/bundle.py (VISION_* and DECODER_*).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class EngineDims:
    """Static sizes of a bundle's graphs; the KV cache is [num_layers, 1, num_kv_heads, max_context, head_dim]."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_context: int
    vocab_size: int  # logits width
    hidden_size: int  # inputs_embeds width
    num_image_tokens: int  # N in image_embeds [1, N, H]
    dtype: np.dtype  # inputs_embeds / KV cache dtype (float16 or float32)


class Engine(abc.ABC):
    """Runs the vision graph and one decoder step; owns no generation state."""

    @property
    @abc.abstractmethod
    def dims(self) -> EngineDims:
        """The graphs' static sizes and the model dtype."""

    @abc.abstractmethod
    def encode_image(self, pixel_values: np.ndarray) -> np.ndarray:
        """pixel_values [1, 3, S, S] -> image_embeds [1, N, H] in `dtype`."""

    @abc.abstractmethod
    def decode(self, inputs_embeds: np.ndarray, position_ids: np.ndarray, past_key: np.ndarray,
               past_value: np.ndarray, past_mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One decoder step over S new tokens.

        inputs_embeds [1, S, H] (dtype), position_ids [1, S] int64, past_key / past_value
        [L, 1, KVH, M, D] (dtype), past_mask [1, M] int64 (1 = attend). Returns logits [1, V]
        float32 for the last new position, and new_key / new_value [L, 1, KVH, S, D].
        """

    def create_cache(self) -> Optional[Any]:
        """A cache this engine owns (same interface as KVCache: length, capacity, remaining, truncate,
        reset), or None: the caller keeps a host KVCache and calls decode()."""
        return None

    def decode_into(self, inputs_embeds: np.ndarray, position_ids: np.ndarray, cache: Any) -> np.ndarray:
        """One step over S new tokens at positions cache.length.. against a cache from create_cache();
        writes their K/V into it and returns logits [1, V] float32."""
        raise NotImplementedError("%s keeps no cache of its own: use decode()" % type(self).__name__)

    @property
    def providers(self) -> Dict[str, List[str]]:
        """Graph name -> the execution providers actually running it (for logs and /v1/system)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook: an engine without resources needs no close
        """Release sessions and device memory; the engine is unusable afterwards."""

    # Convenience views of dims, so callers read engine.max_context rather than engine.dims.max_context.
    @property
    def dtype(self) -> np.dtype:
        return self.dims.dtype

    @property
    def max_context(self) -> int:
        return self.dims.max_context

    @property
    def num_image_tokens(self) -> int:
        return self.dims.num_image_tokens
