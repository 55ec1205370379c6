"""Phi-2 decoder layer: one LayerNorm feeding attention and MLP in parallel, partial RoPE, biases
everywhere. The stack (embeddings, layers, final norm) is models/decoder.py.

Names follow transformers' PhiModel (`embed_tokens`, `layers.<i>.self_attn.{q,k,v}_proj` and `dense`,
`layers.<i>.mlp.fc1/fc2`, `layers.<i>.input_layernorm`, `final_layernorm`); the lm_head (with bias)
lives on LlavaModel. Same forward contract as models/llama.py.
"""
from __future__ import annotations

from typing import Tuple

from torch import Tensor, nn

from models.config import TextConfig
from models.layers import (
    FeedForward,
    RopeSelfAttention,
)


class PhiAttention(RopeSelfAttention):
    def __init__(self, cfg: TextConfig) -> None:
        # RoPE on cfg.rotary_dim features (32 of 80 for Phi-2, partial_rotary_factor 0.4). Q.K^T in fp32:
        # transformers 4.x PhiAttention, "Queries and keys upcast to fp32 is required by Phi-2 to avoid
        # overflow" (in fp16).
        super().__init__(cfg, rotary_dim=cfg.rotary_dim, qkv_bias=True, upcast_scores=True)
        self.dense = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, past_k: Tensor, past_v: Tensor,
                bias: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        out, k, v = self.attend_new(x, cos, sin, past_k, past_v, bias)
        return self.dense(out), k, v


class PhiDecoderLayer(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.self_attn = PhiAttention(cfg)
        self.mlp = FeedForward(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)
        self.input_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, past_k: Tensor, past_v: Tensor,
                bias: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        h = self.input_layernorm(x)
        attn, k, v = self.self_attn(h, cos, sin, past_k, past_v, bias)
        return attn + self.mlp(h) + x, k, v  # transformers' summation order

