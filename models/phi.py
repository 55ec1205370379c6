"""Phi-2 decoder: one LayerNorm feeding attention and MLP in parallel, partial RoPE, biases everywhere.

Names follow transformers' PhiModel (`embed_tokens`, `layers.<i>.self_attn.{q,k,v}_proj` and `dense`,
`layers.<i>.mlp.fc1/fc2`, `layers.<i>.input_layernorm`, `final_layernorm`); the lm_head (with bias)
lives on LlavaModel. Same forward contract as models/llama.py.
"""
from __future__ import annotations

from typing import Tuple

from torch import Tensor, nn

from models.config import ConfigError, TextConfig
from models.layers import (
    FeedForward,
    RopeSelfAttention,
    causal_mask_bias,
    rope_cos_sin,
    run_layers,
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


class PhiModel(nn.Module):
    """Decoder stack without lm_head; same forward signature and shapes as models.llama.LlamaModel."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        if cfg.family != "phi":
            raise ConfigError("PhiModel needs a phi text config, got %r" % cfg.family)
        self.rope_theta = cfg.rope_theta
        self.rotary_dim = cfg.rotary_dim
        self.query_groups = cfg.num_heads // cfg.num_kv_heads  # 1 for Phi-2 (no GQA)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([PhiDecoderLayer(cfg) for _ in range(cfg.num_layers)])
        self.final_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)

    def forward(self, inputs_embeds: Tensor, position_ids: Tensor, past_key: Tensor, past_value: Tensor,
                attention_mask: Tensor, new_kv_only: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
        cos, sin = rope_cos_sin(position_ids, self.rotary_dim, self.rope_theta, inputs_embeds.dtype)
        bias = causal_mask_bias(attention_mask, inputs_embeds.shape[1], self.query_groups)
        h, key, value = run_layers(self.layers, inputs_embeds, cos, sin, past_key, past_value, bias, new_kv_only)
        return self.final_layernorm(h), key, value
