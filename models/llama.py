"""Llama-family decoder (TinyLlama-1.1B: GQA 32 query / 4 KV heads, RMSNorm, SwiGLU, RoPE).

Names follow transformers' LlamaModel (`embed_tokens`, `layers.<i>.self_attn.{q,k,v,o}_proj`,
`layers.<i>.mlp.{gate,up,down}_proj`, `input_layernorm`, `post_attention_layernorm`, `norm`); the
lm_head lives on LlavaModel. The forward follows the export contract in models/layers.py: explicit
position ids, K/V of all layers stacked into one past and one present tensor.
"""
from __future__ import annotations

from typing import Tuple

from torch import Tensor, nn

from models.config import ConfigError, TextConfig
from models.layers import (
    RMSNorm,
    RopeSelfAttention,
    activation,
    causal_mask_bias,
    rope_cos_sin,
    run_layers,
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


class LlamaModel(nn.Module):
    """Decoder stack without lm_head.

    forward(inputs_embeds [B,S,H], position_ids [B,S] int64, past_key/past_value [L,B,KVH,P,D],
    attention_mask [B,P+S] (1 attend, 0 pad)) -> (hidden [B,S,H] after the final norm,
    present_key, present_value [L,B,KVH,P+S,D]). P may be 0.
    """

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        if cfg.family != "llama":
            raise ConfigError("LlamaModel needs a llama text config, got %r" % cfg.family)
        self.rope_theta = cfg.rope_theta
        self.head_dim = cfg.head_dim
        self.query_groups = cfg.num_heads // cfg.num_kv_heads  # query heads per KV head (GQA)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([LlamaDecoderLayer(cfg) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)

    def forward(self, inputs_embeds: Tensor, position_ids: Tensor, past_key: Tensor, past_value: Tensor,
                attention_mask: Tensor, new_kv_only: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
        cos, sin = rope_cos_sin(position_ids, self.head_dim, self.rope_theta, inputs_embeds.dtype)
        bias = causal_mask_bias(attention_mask, inputs_embeds.shape[1], self.query_groups)
        h, key, value = run_layers(self.layers, inputs_embeds, cos, sin, past_key, past_value, bias, new_kv_only)
        return self.norm(h), key, value
