"""CLIP vision tower as LLaVA uses it: class token + patches, pre_layrnorm, the first `num_layers_used` layers.

No post_layernorm: LLaVA takes hidden_states[feature_layer] of the encoder. `pre_layrnorm` keeps
transformers' (and OpenAI's) spelling so checkpoints load without renaming.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from models.config import ConfigError, VisionConfig
from models.vision_encoder import VisionEncoder


class CLIPVisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(cfg.hidden_size))
        # CLIP's patch projection has no bias (transformers CLIPVisionEmbeddings: bias=False).
        self.patch_embedding = nn.Conv2d(3, cfg.hidden_size, kernel_size=cfg.patch_size, stride=cfg.patch_size,
                                         bias=False)
        self.position_embedding = nn.Embedding(cfg.num_positions, cfg.hidden_size)

    def forward(self, pixel_values: Tensor) -> Tensor:
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)  # [B, num_patches, C]
        cls = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        return torch.cat((cls, patches), dim=1) + self.position_embedding.weight[None]


class CLIPVisionTower(nn.Module):
    """pixel_values [B, 3, S, S] -> hidden_states[feature_layer] [B, num_patches + 1, C] (CLS first)."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        if cfg.family != "clip":
            raise ConfigError("CLIPVisionTower needs a clip vision config, got %r" % cfg.family)
        self.embeddings = CLIPVisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder = VisionEncoder(cfg)

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))
