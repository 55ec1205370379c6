"""Building blocks shared by the vision towers and the decoders, written for clean ONNX export.

Export rules these functions keep (TensorRT 8.5 parses the graphs later): no data-dependent Python
branches (only branches on config values), no `repeat_interleave`, no scaled_dot_product_attention,
RoPE computed from explicit position ids, masks built from tensor shapes, softmax in fp32.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import ConfigError, TextConfig


def _gelu_new(x: Tensor) -> Tensor:
    # transformers NewGELUActivation (Phi-2's "gelu_new"), written out: F.gelu(approximate="tanh")
    # is close but not bit-identical, and parity tests compare at 1e-4.
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def _quick_gelu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(1.702 * x)  # transformers QuickGELUActivation (CLIP)


ACTIVATIONS: Dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,  # exact erf GELU (LLaVA mlp2x_gelu uses nn.GELU())
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),  # SigLIP
    "gelu_new": _gelu_new,
    "quick_gelu": _quick_gelu,
    "silu": F.silu,
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError("unsupported activation %r (supported: %s)" % (name, ", ".join(sorted(ACTIVATIONS)))) from None


class RMSNorm(nn.Module):
    """Llama RMSNorm, normalised in fp32 and scaled in the input dtype, as transformers' LlamaRMSNorm."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class FeedForward(nn.Module):
    """fc1 -> activation -> fc2 with biases: the MLP of SigLIP/CLIP encoder layers and of Phi-2."""

    def __init__(self, hidden_size: int, intermediate_size: int, act: str) -> None:
        super().__init__()
        self.act = activation(act)
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


# ---- rotary position embedding ------------------------------------------------------------

def rope_cos_sin(position_ids: Tensor, rotary_dim: int, theta: float, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """cos/sin of shape [B, 1, S, rotary_dim] for explicit position ids [B, S].

    The inverse frequencies are recomputed here rather than kept as a buffer: a buffer would stay
    on the meta device after `load_state_dict(assign=True)`, and under export they fold to a constant.
    """
    exponent = torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=position_ids.device) / rotary_dim
    inv_freq = 1.0 / (theta ** exponent)
    freqs = position_ids[..., None].to(torch.float32) * inv_freq  # [B, S, rotary_dim / 2]
    emb = torch.cat((freqs, freqs), dim=-1)  # HF rotate_half layout: halves, not interleaved pairs
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def _rotate_half(x: Tensor) -> Tensor:
    half = int(x.shape[-1]) // 2  # a Python int: constant Slice bounds in the exported graph
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor, rotary_dim: int, head_dim: int) -> Tensor:
    """Rotate the first `rotary_dim` features of x [B, H, S, head_dim] (all of them for Llama)."""
    if rotary_dim == head_dim:  # a config branch: Llama has no pass-through part
        return x * cos + _rotate_half(x) * sin
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    return torch.cat((x_rot * cos + _rotate_half(x_rot) * sin, x_pass), dim=-1)


# ---- heads, masks and attention --------------------------------------------------------------

def split_heads(x: Tensor, num_heads: int, head_dim: int) -> Tensor:
    """[B, S, num_heads * head_dim] -> [B, num_heads, S, head_dim].

    The batch size is taken as a Python int and the sequence axis as -1, so the exported Reshape
    has a constant target shape (the bundle's graphs have batch 1) instead of a Shape / Gather /
    Unsqueeze / Concat chain per projection: on the tiny model those chains were a third of the
    decoder's ONNX Runtime nodes, and every node is fixed cost on each call.
    """
    return x.reshape(int(x.shape[0]), -1, num_heads, head_dim).transpose(1, 2)


def causal_mask_bias(attention_mask: Tensor, query_len: int, groups: int = 1) -> Tensor:
    """Additive fp32 attention bias [B, 1, groups * S, P+S]: 0 where query i (cache slot P+i) may see
    key j (j <= P+i and key j is not padding), the most negative float elsewhere; repeated `groups`
    times along the query axis for `attend`'s grouped queries (row g * S + i is query i of group g).

    attention_mask is [B, P+S] with 1 = attend, 0 = pad. P is derived from the shapes, so the
    same graph serves prefill (P = 0) and decode. Built once per forward, shared by every layer.
    Adding it equals masked_fill exactly: score + 0 is the score, and |score| is far below half an
    ulp of float32's minimum, so score + min rounds to min. ONNX Runtime's broadcasting Add is
    vectorised where its Where is not (Where over the scores was ~18% of a tiny-model prefill).
    """
    total = attention_mask.shape[-1]
    key_pos = torch.arange(total, device=attention_mask.device)
    query_pos = torch.arange(query_len, device=attention_mask.device) + (total - query_len)
    causal = key_pos[None, :] <= query_pos[:, None]  # [S, P+S]
    allowed = causal[None, None] & (attention_mask[:, None, None, :] != 0)
    if groups > 1:
        allowed = allowed.repeat(1, 1, groups, 1)
    zero = torch.zeros((), dtype=torch.float32, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(torch.float32).min)


def attend(q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor], scale: float,
           num_kv_heads: int, upcast_scores: bool = False) -> Tensor:
    """Plain matmul-softmax attention with grouped-query heads; returns [B, S, H * D].

    q is [B, H, S, D]; k and v are [B, KVH, T, D]; bias is None or causal_mask_bias(..., groups=G)
    [B, 1, G * S, T] with G = H / KVH. Query head h reads KV head h // G, as transformers'
    repeat_kv: queries are grouped per KV head, so K/V are never repeated or copied.
    Softmax runs in fp32; `upcast_scores` also computes Q.K^T in fp32 (Phi-2 overflows fp16 there).
    """
    # Shapes as Python ints (and the sequence axis as -1) keep the exported reshapes constant.
    b, h, d = int(q.shape[0]), int(q.shape[1]), int(q.shape[3])
    # Queries of one KV head stacked as [B, KVH, G*S, D]: a 4-D product with K^T that ONNX Runtime
    # fuses into one MatMul with transposed B. The 5-D broadcast form exported a real Transpose of
    # every layer's whole K (22% of a full-size decode step on ONNX Runtime CPU).
    q4 = q.reshape(b, num_kv_heads, -1, d)
    if upcast_scores:
        q4, k = q4.to(torch.float32), k.to(torch.float32)
    # Scaling the queries rather than the scores saves one score-sized intermediate: over a
    # 2048-slot cache that is ~280 MB per layer in a 775-token prefill.
    scores = torch.matmul(q4 * scale, k.transpose(-1, -2)).to(torch.float32)  # [B, KVH, G*S, T]
    if bias is not None:  # [B, 1, G*S, T]: rows already in the grouped order, broadcast over KVH
        scores = scores + bias
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    out = torch.matmul(probs, v)  # [B, KVH, G*S, D]
    return out.reshape(b, h, -1, d).transpose(1, 2).reshape(b, -1, h * d)


class RopeSelfAttention(nn.Module):
    """q/k/v projections, RoPE on the first `rotary_dim` features, attention over the past and new K/V.

    The decoders' attention without its output projection, which each subclass adds under its
    checkpoint's name (Llama `o_proj`, Phi-2 `dense`).
    """

    def __init__(self, cfg: TextConfig, rotary_dim: int, qkv_bias: bool, upcast_scores: bool = False) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.rotary_dim = rotary_dim
        self.upcast_scores = upcast_scores
        self.scale = cfg.head_dim ** -0.5
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * cfg.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=qkv_bias)

    def attend_new(self, x: Tensor, cos: Tensor, sin: Tensor, past_k: Tensor, past_v: Tensor,
                   bias: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(attention output [B, S, H * D] before the output projection, new K, new V)."""
        q = split_heads(self.q_proj(x), self.num_heads, self.head_dim)
        k = split_heads(self.k_proj(x), self.num_kv_heads, self.head_dim)
        v = split_heads(self.v_proj(x), self.num_kv_heads, self.head_dim)
        q = apply_rope(q, cos, sin, self.rotary_dim, self.head_dim)
        k = apply_rope(k, cos, sin, self.rotary_dim, self.head_dim)
        # the cache holds keys after RoPE, as transformers does; only the new ones are returned
        out = attend(q, torch.cat((past_k, k), dim=2), torch.cat((past_v, v), dim=2), bias, self.scale,
                     self.num_kv_heads, upcast_scores=self.upcast_scores)
        return out, k, v


def run_layers(layers: nn.ModuleList, h: Tensor, cos: Tensor, sin: Tensor, past_key: Tensor, past_value: Tensor,
               bias: Tensor, new_kv_only: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """Run decoder layers; each takes (h, cos, sin, past_k, past_v, bias) and returns (h, new_k, new_v).

    Returns (h, key, value) where key/value are the new positions' K/V [L, B, KVH, S, D] when
    new_kv_only, else past and new concatenated [L, B, KVH, P+S, D]. The exported decoder asks for
    the new ones only: its cache is runtime-owned, and stacking all L full-length presents just to
    slice them again would copy the whole cache (~100 MB for TinyLlama at 2048) on every call.
    """
    keys, values = [], []
    for i, layer in enumerate(layers):
        h, k, v = layer(h, cos, sin, past_key[i], past_value[i], bias)
        keys.append(k)
        values.append(v)
    new_key, new_value = torch.stack(keys), torch.stack(values)
    if new_kv_only:
        return h, new_key, new_value
    return h, torch.cat((past_key, new_key), dim=3), torch.cat((past_value, new_value), dim=3)
