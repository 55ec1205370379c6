"""SigLIP vision tower as LLaVA/TinyLLaVA use it: embeddings + the first `num_layers_used` encoder layers.

No post_layernorm and no attention-pooling head: LLaVA takes hidden_states[feature_layer] (-2) of the
encoder, which is the raw output of layer num_layers - 1 (bczhou's siglip_encoder.py deletes the last
layer and the head for the same reason).
"""
from __future__ import annotations

from torch import Tensor, nn

from models.config import ConfigError, VisionConfig
from models.vision_encoder import VisionEncoder


class SiglipVisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, cfg.hidden_size, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Embedding(cfg.num_positions, cfg.hidden_size)

    def forward(self, pixel_values: Tensor) -> Tensor:
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)  # [B, num_patches, C], row-major over the grid
        # The whole table in order equals HF's position_embedding(arange(num_positions)).
        return patches + self.position_embedding.weight[None]


class SiglipVisionTower(nn.Module):
    """pixel_values [B, 3, S, S] -> hidden_states[feature_layer] [B, num_patches, C]."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        if cfg.family != "siglip":
            raise ConfigError("SiglipVisionTower needs a siglip vision config, got %r" % cfg.family)
        self.embeddings = SiglipVisionEmbeddings(cfg)
        self.encoder = VisionEncoder(cfg)

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.encoder(self.embeddings(pixel_values))
