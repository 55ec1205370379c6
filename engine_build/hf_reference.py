"""transformers configs (and in-memory weight copies) matching our ModelConfig, for parity tests.

transformers is the oracle: tests build an HF model from these configs, copy its weights into ours
(our submodule names equal HF's inner names) and compare outputs. Everything is eager attention so the
comparison does not depend on which SDPA kernel is picked.
"""
from __future__ import annotations

from typing import Dict, Iterable

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    PhiConfig,
    PretrainedConfig,
    SiglipVisionConfig,
)

from models.config import IMAGE_TOKEN_INDEX, ConfigError, ModelConfig, TextConfig, VisionConfig

ATTN = "eager"


def hf_vision_config(v: VisionConfig, vision_use_head: bool = True) -> PretrainedConfig:
    """The full HF tower (all num_layers, post_layernorm; SigLIP's pooling head as the real
    so400m checkpoints have it unless vision_use_head=False)."""
    common = dict(
        hidden_size=v.hidden_size, intermediate_size=v.intermediate_size, num_hidden_layers=v.num_layers,
        num_attention_heads=v.num_heads, num_channels=3, image_size=v.image_size, patch_size=v.patch_size,
        hidden_act=v.hidden_act, layer_norm_eps=v.layer_norm_eps, attention_dropout=0.0,
        attn_implementation=ATTN,
    )
    if v.family == "siglip":
        return SiglipVisionConfig(vision_use_head=vision_use_head, **common)
    if v.family == "clip":
        return CLIPVisionConfig(**common)
    raise ConfigError("no transformers vision config for %r" % v.family)


def hf_text_config(t: TextConfig) -> PretrainedConfig:
    common = dict(
        vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_layers, num_attention_heads=t.num_heads, num_key_value_heads=t.num_kv_heads,
        max_position_embeddings=t.max_position_embeddings, hidden_act=t.hidden_act,
        bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id, pad_token_id=t.pad_token_id,
        tie_word_embeddings=t.tie_word_embeddings, attention_dropout=0.0, attn_implementation=ATTN,
        # Plain rope_theta / partial_rotary_factor kwargs: transformers 5 folds them into
        # rope_parameters, 4.x reads them directly.
        rope_theta=t.rope_theta,
    )
    if t.family == "llama":
        return LlamaConfig(rms_norm_eps=t.norm_eps, attention_bias=False, mlp_bias=False, **common)
    if t.family == "phi":
        return PhiConfig(layer_norm_eps=t.norm_eps, resid_pdrop=0.0, embd_pdrop=0.0, qk_layernorm=False,
                         partial_rotary_factor=t.partial_rotary_factor, **common)
    raise ConfigError("no transformers text config for %r" % t.family)


def hf_select_strategy(v: VisionConfig) -> str:
    """HF Llava's "default" drops token 0, "full" keeps all: our (strategy, patch_drops_first) mapped."""
    return "default" if (v.select_strategy == "patch" and v.patch_drops_first) else "full"


def hf_llava_config(cfg: ModelConfig, image_token_index: int, vision_use_head: bool = True) -> LlavaConfig:
    """LlavaConfig equivalent to cfg. image_token_index must be a real vocab id (HF embeds it
    before scattering the image features over it), e.g. cfg.text.vocab_size - 1.

    Caveat: HF Llava's lm_head has no bias, so for Phi the bias of our lm_head must be zero to compare.
    """
    if cfg.connector != "mlp2x_gelu":
        raise ConfigError("transformers' LlavaMultiModalProjector is mlp2x_gelu only, not %r" % cfg.connector)
    if not 0 <= image_token_index < cfg.text.vocab_size:
        raise ConfigError("image_token_index %d outside the vocab [0, %d)" % (image_token_index, cfg.text.vocab_size))
    return LlavaConfig(
        vision_config=hf_vision_config(cfg.vision, vision_use_head),
        text_config=hf_text_config(cfg.text),
        image_token_index=image_token_index,
        image_seq_length=cfg.num_image_tokens,
        projector_hidden_act="gelu",  # LLaVA mlp2x_gelu: nn.GELU() (exact erf)
        vision_feature_select_strategy=hf_select_strategy(cfg.vision),
        vision_feature_layer=cfg.vision.feature_layer,
        multimodal_projector_bias=True,
        tie_word_embeddings=cfg.text.tie_word_embeddings,
        attn_implementation=ATTN,
    )


# ---- in-memory weight copies (HF module -> our module) ------------------------------------

def _unused_vision_key(key: str, layers_used: int) -> bool:
    if key.startswith(("post_layernorm.", "head.")):
        return True
    if key.startswith("encoder.layers."):
        return int(key.split(".")[2]) >= layers_used
    return False


def vision_state_from_hf(hf_tower: torch.nn.Module, layers_used: int) -> Dict[str, torch.Tensor]:
    """An HF SiglipVisionModel / CLIPVisionModel state dict minus what our tower never runs."""
    hf_tower = getattr(hf_tower, "vision_model", hf_tower)  # transformers 4.x nests the tower one level down
    return {k: v for k, v in hf_tower.state_dict().items() if not _unused_vision_key(k, layers_used)}


def copy_hf_llava_weights(hf_model: torch.nn.Module, ours: torch.nn.Module) -> None:
    """Load an HF LlavaForConditionalGeneration's weights into our LlavaModel (strict, per submodule)."""
    inner = hf_model.model
    ours.vision_tower.load_state_dict(vision_state_from_hf(inner.vision_tower, ours.cfg.vision.num_layers_used))
    ours.connector.load_state_dict(inner.multi_modal_projector.state_dict())
    ours.language_model.load_state_dict(inner.language_model.state_dict())
    head = {"weight": hf_model.lm_head.weight.detach()}
    if ours.lm_head.bias is not None:  # Phi: HF Llava has no lm_head bias, i.e. a zero one
        head["bias"] = torch.zeros_like(ours.lm_head.bias)
    ours.lm_head.load_state_dict(head)


def hf_input_ids(prompt_ids: Iterable[int], image_token_index: int, num_image_tokens: int) -> torch.Tensor:
    """Our prompt (IMAGE_TOKEN_INDEX sentinels) as HF Llava input_ids: each sentinel becomes
    num_image_tokens copies of image_token_index. Returns [1, T] int64."""
    out = []
    for t in prompt_ids:
        out.extend([image_token_index] * num_image_tokens if t == IMAGE_TOKEN_INDEX else [t])
    return torch.tensor([out], dtype=torch.long)
