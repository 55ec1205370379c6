"""Numpy stand-ins for an Engine, to test the generation loop's bookkeeping (not model numerics).

ToyEngine computes in small integers held in float32, so every sum is exact whatever its order:
a prefill split differently (prefix reuse, chunking) must give bit-identical logits, and any
wrong position, mask or cache slot changes them. It also asserts the contract on every call:
past_mask is a contiguous prefix and position_ids continue right after it.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from server.runtime.engine import Engine, EngineDims


class ToyEngine(Engine):
    def __init__(self, num_layers: int = 2, kv_heads: int = 2, head_dim: int = 4, max_context: int = 64,
                 vocab: int = 40, num_image_tokens: int = 3, seed: int = 0, fail_on_call: Optional[int] = None) -> None:
        h = kv_heads * head_dim
        self._dims = EngineDims(num_layers, kv_heads, head_dim, max_context, vocab, h, num_image_tokens,
                                np.dtype(np.float32))
        rng = np.random.default_rng(seed)
        self.lm_head = rng.integers(-3, 4, size=(h, vocab)).astype(np.float32)
        self.embed_table = rng.integers(-3, 4, size=(vocab, h)).astype(np.float32)
        self.decode_calls: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.image_calls = 0
        self.fail_on_call = fail_on_call

    @property
    def dims(self) -> EngineDims:
        return self._dims

    def encode_image(self, pixel_values: np.ndarray) -> np.ndarray:
        self.image_calls += 1
        d = self._dims
        flat = np.resize(np.floor(np.asarray(pixel_values, dtype=np.float64).reshape(-1) * 4),
                         d.num_image_tokens * d.hidden_size)
        return flat.reshape(1, d.num_image_tokens, d.hidden_size).astype(np.float32)

    def decode(self, inputs_embeds, position_ids, past_key, past_value, past_mask):
        if self.fail_on_call is not None and len(self.decode_calls) == self.fail_on_call:
            raise RuntimeError("injected failure")
        self.decode_calls.append((inputs_embeds.copy(), position_ids.copy(), past_mask.copy()))
        d = self._dims
        s = inputs_embeds.shape[1]
        n_past = int(past_mask.sum())
        assert past_mask[0, :n_past].all() and not past_mask[0, n_past:].any(), "mask is not a prefix"
        assert (position_ids[0] == np.arange(n_past, n_past + s)).all(), "positions do not follow the cache"
        pos = position_ids[0].astype(np.float32)
        k = inputs_embeds[0] * (1 + pos % 3)[:, None] + pos[:, None]  # [S, H]
        k = k.reshape(s, d.num_kv_heads, d.head_dim).transpose(1, 0, 2)  # [KVH, S, D]
        new_key = np.stack([k * (layer + 1) for layer in range(d.num_layers)])[:, None]  # [L, 1, KVH, S, D]
        new_value = new_key - 1
        # The last position "attends" to every valid cached slot and every new token of every layer.
        past = (past_key + past_value)[:, 0, :, :n_past].sum(axis=(0, 2))  # [KVH, D]
        new = (new_key + new_value)[:, 0].sum(axis=(0, 2))
        ctx = (past + new).reshape(1, d.hidden_size)
        logits = np.mod(ctx @ self.lm_head, 97.0) + pos[-1] % 5  # bounded, still exact
        return logits.astype(np.float32), new_key.astype(np.float32), new_value.astype(np.float32)


class ScriptedEngine(Engine):
    """Emits a fixed token script after the prompt: answer token k is script[k]."""

    def __init__(self, script: List[int], vocab: int, max_context: int = 256, num_image_tokens: int = 2) -> None:
        self._dims = EngineDims(1, 1, 2, max_context, vocab, 2, num_image_tokens, np.dtype(np.float32))
        self.script = list(script)
        self.prompt_length = 0  # set by the test before generating

    @property
    def dims(self) -> EngineDims:
        return self._dims

    def encode_image(self, pixel_values):
        return np.zeros((1, self._dims.num_image_tokens, 2), np.float32)

    def decode(self, inputs_embeds, position_ids, past_key, past_value, past_mask):
        s = inputs_embeds.shape[1]
        k = int(position_ids[0, -1]) - (self.prompt_length - 1)
        logits = np.zeros((1, self._dims.vocab_size), np.float32)
        logits[0, self.script[k]] = 10.0
        kv = np.zeros((1, 1, 1, s, 2), np.float32)
        return logits, kv, kv
