"""transformers' LlavaForConditionalGeneration equivalent to a ModelConfig: the reference implementation.

transformers is the oracle: the parity tests build an HF model from these configs, copy its weights into
ours (our submodule names equal HF's inner names) and compare outputs; `tinyllava-med bench` builds one
from a checkpoint's tensors (build_hf_llava) and times it. Everything is eager attention so results do
not depend on which SDPA kernel is picked.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Sequence

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


# ---- our tensors -> an HF model (benchmark baseline) --------------------------------------------

# Our top-level prefixes -> LlavaForConditionalGeneration's (transformers 5 in-memory names; the
# vision tower's inner names are found on the model, since transformers 4.x nests them in vision_model).
_HF_PREFIXES = (("connector.", "model.multi_modal_projector."), ("language_model.", "model.language_model."),
                ("lm_head.", "lm_head."))


def pick_image_token_index(vocab_size: int, prompts: Sequence[Sequence[int]]) -> int:
    """A vocab id for HF's image placeholder that no prompt uses as text (HF finds image positions by
    comparing input_ids with it). Prefers the top of the vocab."""
    used = {int(t) for p in prompts for t in p}
    for candidate in range(vocab_size - 1, -1, -1):
        if candidate not in used:
            return candidate
    raise ConfigError("every vocab id occurs in the prompts; no id is free for the image placeholder")


def hf_state_from_internal(hf_model: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Our internal names (models.checkpoint's LoadedCheckpoint.tensors) -> hf_model's state-dict names.

    Phi's lm_head.bias has no place in HF Llava (its lm_head has no bias): it is left out, so such an
    HF model differs from ours by that bias (irrelevant for timing, not for outputs)."""
    tower = hf_model.model.vision_tower
    vision_prefix = "model.vision_tower.vision_model." if hasattr(tower, "vision_model") else "model.vision_tower."
    prefixes = (("vision_tower.", vision_prefix),) + _HF_PREFIXES
    out: Dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        if name == "lm_head.bias":
            continue
        for ours, theirs in prefixes:
            if name.startswith(ours):
                out[theirs + name[len(ours):]] = value
                break
        else:
            raise ConfigError("no transformers Llava name for our tensor %r" % name)
    return out


def build_hf_llava(cfg: ModelConfig, tensors: Mapping[str, torch.Tensor], image_token_index: int,
                   dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """An eval-mode LlavaForConditionalGeneration (eager attention) holding `tensors`.

    The parameters are the given tensors themselves (load_state_dict(assign=True), converted only when
    their dtype differs), so building it costs no second copy of the weights. The full HF tower also
    has what our model never runs (the last vision layer(s), post_layernorm, SigLIP's pooling head);
    the checkpoint reader does not load those, so they get small random values: transformers computes
    them in every forward, which is part of its cost, but they do not reach the outputs.
    """
    from transformers import LlavaForConditionalGeneration
    from transformers.initialization import no_init_weights

    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # create parameters in `dtype`: converting empty ones would touch them
    try:
        with no_init_weights():  # parameters stay torch.empty: untouched pages, no init time
            hf = LlavaForConditionalGeneration(hf_llava_config(cfg, image_token_index))
    finally:
        torch.set_default_dtype(default)
    state = {k: (v if v.dtype == dtype else v.to(dtype)) for k, v in hf_state_from_internal(hf, tensors).items()}
    missing, unexpected = hf.load_state_dict(state, strict=False, assign=True)
    if unexpected:
        raise ConfigError("tensors with no place in transformers' Llava: %s" % ", ".join(unexpected[:8]))
    _fill_unused(hf, missing, cfg.vision.num_layers_used)
    if cfg.text.tie_word_embeddings:
        hf.tie_weights()
    return hf.eval()


def _fill_unused(hf: torch.nn.Module, missing: List[str], layers_used: int) -> None:
    params = dict(hf.named_parameters())
    for name in missing:
        inner = name.split("vision_tower.", 1)[-1].replace("vision_model.", "", 1)
        if "vision_tower." not in name or not _unused_vision_key(inner, layers_used):
            raise ConfigError("the checkpoint has no tensor for transformers' %s" % name)
        with torch.no_grad():
            p = params[name]
            if "norm" in name and name.endswith(".weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
