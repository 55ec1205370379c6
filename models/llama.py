"""Llama-family decoder layer (TinyLlama-1.1B: GQA 32 query / 4 KV heads, RMSNorm, SwiGLU, RoPE).
The stack (embeddings, layers, final norm) is models/decoder.py.

Names follow transformers' LlamaModel (`embed_tokens`, `layers.<i>.self_attn.{q,k,v,o}_proj`,
`layers.<i>.mlp.{gate,up,down}_proj`, `input_layernorm`, `post_attention_layernorm`, `norm`); the
lm_head lives on LlavaModel. The forward follows the export contract in models/layers.py: explicit
position ids, K/V of all layers stacked into one past and one present tensor.
"""
from __future__ import annotations

from typing import Tuple

from torch import Tensor, nn

from models.config import TextConfig
from models.layers import (
    RMSNorm,
    RopeSelfAttention,
    activation,
)


class LlamaAttention(RopeSelfAttention):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__(cfg, rotary_dim=cfg.head_dim, qkv_bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, past_k: Tensor, past_v: Tensor,
                bias: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        out, k, v = self.attend_new(x, cos, sin, past_k, past_v, bias)
        return self.o_proj(out), k, v


class LlamaMLP(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.act = activation(cfg.hidden_act)
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(cfg)
        self.mlp = LlamaMLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.norm_eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, past_k: Tensor, past_v: Tensor,
                bias: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        attn, k, v = self.self_attn(self.input_layernorm(x), cos, sin, past_k, past_v, bias)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), k, v

