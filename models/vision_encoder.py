"""The pre-LN ViT encoder that SigLIP and CLIP share, and LLaVA's feature selection.

Module and parameter names follow transformers' SiglipEncoder / CLIPEncoder (`layers.<i>.layer_norm1`,
`self_attn.{q,k,v,out}_proj`, `mlp.fc1/fc2`, `layer_norm2`), so HF state dicts load without renaming.
The towers differ only in their embeddings, CLIP's pre-LayerNorm, the activation and the LayerNorm eps.
"""
from __future__ import annotations

from torch import Tensor, nn

from models.config import VisionConfig
from models.layers import FeedForward, attend, split_heads


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.scale = cfg.head_dim ** -0.5
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        q = split_heads(self.q_proj(x), self.num_heads, self.head_dim)
        k = split_heads(self.k_proj(x), self.num_heads, self.head_dim)
        v = split_heads(self.v_proj(x), self.num_heads, self.head_dim)
        return self.out_proj(attend(q, k, v, None, self.scale, num_kv_heads=self.num_heads))


class VisionEncoderLayer(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = VisionAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = FeedForward(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class VisionEncoder(nn.Module):
    """Only the first `num_layers_used` layers: hidden_states[feature_layer] never needs the rest."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([VisionEncoderLayer(cfg) for _ in range(cfg.num_layers_used)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def select_image_features(hidden: Tensor, cfg: VisionConfig) -> Tensor:
    """LLaVA's feature selection on [B, N, C] tower output.

    "patch" drops token 0 only when the checkpoint's convention says so (CLIP's CLS token; SigLIP
    under TinyLLaVA_Factory, issue #203); "full" keeps every token. Matches cfg.num_image_tokens.
    """
    if cfg.select_strategy == "patch" and cfg.patch_drops_first:
        return hidden[:, 1:]
    return hidden
