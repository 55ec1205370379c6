"""LlavaModel: vision tower + connector + decoder + lm_head, the one torch model the project exports.

Submodule names are the internal parameter-name contract that checkpoint readers map onto:
`vision_tower.*` (HF SiglipVisionModel / CLIPVisionModel inner names, only the layers that run),
`connector.linear_1/linear_2`, `language_model.*` (HF LlamaModel / PhiModel inner names; models/decoder.py),
`lm_head`.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Type

import torch
from torch import Tensor, nn

from models.config import IMAGE_TOKEN_INDEX, ModelConfig
from models.connector import build_connector
from models.decoder import DecoderModel
from models.vision_clip import CLIPVisionTower
from models.vision_encoder import select_image_features
from models.vision_siglip import SiglipVisionTower

VISION_TOWERS: Dict[str, Type[nn.Module]] = {"siglip": SiglipVisionTower, "clip": CLIPVisionTower}
LM_HEAD_BIAS: Dict[str, bool] = {"llama": False, "phi": True}  # Phi-2's lm_head has a bias


class LlavaModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision_tower = VISION_TOWERS[cfg.vision.family](cfg.vision)
        self.connector = build_connector(cfg.connector, cfg.vision.hidden_size, cfg.text.hidden_size)
        self.language_model = DecoderModel(cfg.text)
        self.lm_head = nn.Linear(cfg.text.hidden_size, cfg.text.vocab_size, bias=LM_HEAD_BIAS[cfg.text.family])
        if cfg.text.tie_word_embeddings:
            self.lm_head.weight = self.language_model.embed_tokens.weight

    # ---- image side ------------------------------------------------------------------------

    def encode_image(self, pixel_values: Tensor) -> Tensor:
        """pixel_values [B, 3, H, W] -> image embeddings [B, num_image_tokens, text_hidden]."""
        features = select_image_features(self.vision_tower(pixel_values), self.cfg.vision)
        return self.connector(features)

    # ---- text side -------------------------------------------------------------------------

    def embed(self, input_ids: Tensor) -> Tensor:
        """Token embeddings for real token ids (0 <= id < vocab_size); sentinels belong in merge()."""
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.cfg.text.vocab_size):
            raise ValueError(
                "token ids must lie in [0, %d), got min %d max %d; the image sentinel %d is expanded by "
                "LlavaModel.merge()" % (self.cfg.text.vocab_size, int(input_ids.min()), int(input_ids.max()),
                                        IMAGE_TOKEN_INDEX))
        return self.language_model.embed_tokens(input_ids)

    def merge(self, prompt_ids: Sequence[int], image_embeds: Optional[Tensor] = None) -> Tensor:
        """Prompt ids with IMAGE_TOKEN_INDEX sentinels -> inputs_embeds [1, T, text_hidden].

        Each sentinel is replaced by the embeddings of the next image, in order, as LLaVA's
        prepare_inputs_labels_for_multimodal does; T = len(prompt_ids) + images * (N - 1).
        image_embeds is [num_images, N, text_hidden] (or [N, text_hidden] for one image).
        """
        ids = [int(i) for i in prompt_ids]
        sentinels = [i for i, t in enumerate(ids) if t == IMAGE_TOKEN_INDEX]
        if image_embeds is not None and image_embeds.dim() == 2:
            image_embeds = image_embeds[None]
        num_images = 0 if image_embeds is None else image_embeds.shape[0]
        if len(sentinels) != num_images:
            raise ValueError(
                "prompt has %d image placeholder(s) (id %d) but %d image embedding(s) were given; put one "
                "<image> in the prompt per image" % (len(sentinels), IMAGE_TOKEN_INDEX, num_images))
        text_ids = [t for t in ids if t != IMAGE_TOKEN_INDEX]
        device = self.language_model.embed_tokens.weight.device
        text = self.embed(torch.tensor(text_ids, dtype=torch.long, device=device))
        pieces: List[Tensor] = []
        start = 0  # position in `text`
        for n, pos in enumerate(sentinels):
            seg_len = pos - n - start  # text tokens before this sentinel, not yet taken
            pieces.append(text[start:start + seg_len])
            pieces.append(image_embeds[n].to(device=device, dtype=text.dtype))
            start += seg_len
        pieces.append(text[start:])
        return torch.cat(pieces, dim=0)[None]

    def forward_decoder(self, inputs_embeds: Tensor, position_ids: Tensor, past_key: Tensor, past_value: Tensor,
                        attention_mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(inputs_embeds [B,S,H], position_ids [B,S], past K/V [L,B,KVH,P,D], attention_mask [B,P+S])
        -> (logits [B,S,V], present_key, present_value [L,B,KVH,P+S,D])."""
        hidden, present_key, present_value = self.language_model(
            inputs_embeds, position_ids, past_key, past_value, attention_mask)
        return self.lm_head(hidden), present_key, present_value

    def empty_kv(self, batch: int, dtype: Optional[torch.dtype] = None) -> Tensor:
        """A zero-length past [L, batch, KVH, 0, D] (use it for both past_key and past_value)."""
        t = self.cfg.text
        weight = self.lm_head.weight
        return torch.zeros(t.num_layers, batch, t.num_kv_heads, 0, t.head_dim,
                           dtype=dtype or weight.dtype, device=weight.device)


def build_model(cfg: ModelConfig, device: str = "cpu", dtype: torch.dtype = torch.float32) -> LlavaModel:
    """A LlavaModel in eval mode. On "meta" nothing is allocated: load weights with
    `load_state_dict(state, assign=True)` (the model has no buffers that assignment would leave behind)."""
    with torch.device(device):
        model = LlavaModel(cfg)
    return model.to(dtype=dtype).eval()
