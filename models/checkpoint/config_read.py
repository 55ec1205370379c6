"""config.json (as each layout writes it) -> ModelConfig.

Missing keys take the defaults of the transformers config class that wrote them (LlamaConfig,
PhiConfig, SiglipVisionConfig, CLIPVisionConfig), because transformers may omit default values.
Options this project cannot run are refused with UnsupportedCheckpointError, never ignored.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Dict, Optional

from models.checkpoint.errors import CheckpointConfigError, UnsupportedCheckpointError
from models.checkpoint.layouts import LLAVA_ARCHITECTURES
from models.config import (
    CLIP_L336,
    CONNECTOR_TYPES,
    SELECT_STRATEGIES,
    SIGLIP_SO400M,
    TEXT_FAMILIES,
    ConfigError,
    ModelConfig,
    TextConfig,
    VisionConfig,
    default_image_config,
)

TEMPLATES = {"llama": "vicuna_v1", "phi": "phi"}  # TinyLLaVA-Med trains with vicuna_v1; Phi-2 models with `phi`

# transformers defaults (configuration_llama.py / configuration_phi.py / configuration_siglip.py /
# configuration_clip.py), used only for keys a config leaves out.
_LLAMA_DEFAULTS: Dict[str, Any] = dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    max_position_embeddings=2048, rms_norm_eps=1e-6, hidden_act="silu", bos_token_id=1, eos_token_id=2)
_PHI_DEFAULTS: Dict[str, Any] = dict(
    vocab_size=51200, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
    max_position_embeddings=2048, layer_norm_eps=1e-5, hidden_act="gelu_new", partial_rotary_factor=0.5,
    bos_token_id=1, eos_token_id=2)
_VISION_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "siglip": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
    "clip": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5),
}
_VISION_MODEL_TYPES = {"siglip_vision_model": "siglip", "clip_vision_model": "clip", "siglip": "siglip", "clip": "clip"}

# Hub towers named by `mm_vision_tower` whose config we know, for checkpoints that embed the
# tower's weights but whose tower directory is not on this machine.
KNOWN_TOWERS: Dict[str, VisionConfig] = {
    "google/siglip-so400m-patch14-384": SIGLIP_SO400M,
    "bczhou/TinyLLaVA-1.5B-SigLIP": SIGLIP_SO400M,  # a copy of so400m (TinyLLaVA_Factory conversion map)
    "bczhou/TinyLLaVA-2.0B-SigLIP": SIGLIP_SO400M,
    "bczhou/TinyLLaVA-3.1B-SigLIP": SIGLIP_SO400M,
    "openai/clip-vit-large-patch14-336": CLIP_L336,
}


def config_from_json(config_json: dict, layout: str, vision_config_json: Optional[dict] = None,
                     name: str = "checkpoint", processor_json: Optional[dict] = None) -> ModelConfig:
    """Parse config.json of the given layout.

    vision_config_json: the config.json of the separate tower directory a llava-layout
    `mm_vision_tower` names (otherwise the tower must be a KNOWN_TOWERS hub id).
    processor_json: hf layout only: the image-processor dict (do_pad decides pad-to-square).
    """
    try:
        if layout == "llava":
            return _llava(config_json, vision_config_json, name)
        if layout == "factory":
            return _factory(config_json, name)
        if layout == "hf":
            return _hf(config_json, name, processor_json)
    except ConfigError as e:  # models.config validation: inconsistent sizes
        raise CheckpointConfigError("config.json of %s is inconsistent: %s" % (name, e)) from None
    raise ValueError("unknown layout %r" % layout)


# ---- the three layouts ------------------------------------------------------------------------

def _llava(cj: dict, vision_json: Optional[dict], name: str) -> ModelConfig:
    family = _llava_text_family(cj)
    text = text_from_json(cj, family)
    tower = cj.get("mm_vision_tower")
    if vision_json is not None:
        vision_base = vision_from_json(vision_json)
    elif tower in KNOWN_TOWERS:
        vision_base = KNOWN_TOWERS[tower]
    else:
        raise CheckpointConfigError(
            "mm_vision_tower %r is neither a local directory nor a known tower; put the tower "
            "(its config.json and safetensors) in a directory and set mm_vision_tower to that path" % tower)
    strategy = cj.get("mm_vision_select_feature", "patch")
    # LLaVA drops token 0 only for CLIP (the CLS token); the TinyLLaVA/TinyLLaVA-Med SigLIP tower
    # keeps all 729 patches (siglip_encoder.py asserts 729).
    vision = _with_selection(vision_base, cj.get("mm_vision_select_layer", -2), strategy,
                             patch_drops_first=vision_base.family == "clip", key="mm_vision_select_feature")
    _check_equal("mm_hidden_size", cj.get("mm_hidden_size", vision.hidden_size), vision.hidden_size)
    connector = _connector(cj.get("mm_projector_type", "linear"), "mm_projector_type")
    return _model(name, vision, text, connector, _aspect(cj.get("image_aspect_ratio")))


def _factory(cj: dict, name: str) -> ModelConfig:
    if "text_config" not in cj or "vision_config" not in cj:
        raise CheckpointConfigError("TinyLLaVA_Factory config.json lacks text_config/vision_config; re-save it "
                                    "with TinyLLaVA_Factory so the nested configs are written")
    tc = cj["text_config"]
    family = tc.get("model_type", "")
    if family not in TEXT_FAMILIES:
        raise UnsupportedCheckpointError("TinyLLaVA_Factory language model %r (%s) is not supported: only "
                                         "llama (TinyLlama) and phi (Phi-2)" % (
                                             tc.get("model_type"), cj.get("llm_model_name_or_path")))
    if tc.get("pad_token_id") is None and cj.get("pad_token_id") is not None:
        tc = dict(tc, pad_token_id=cj["pad_token_id"])  # Factory keeps the pad id at the top level
    text = text_from_json(tc, family)
    base = vision_from_json(cj["vision_config"])
    # Factory's vision_tower/base.py drops index 0 for "patch" whatever the tower (issue #203).
    vision = _with_selection(base, cj.get("vision_feature_layer", -2), cj.get("vision_feature_select_strategy",
                             "patch"), patch_drops_first=True, key="vision_feature_select_strategy")
    connector = _connector(cj.get("connector_type") or "linear", "connector_type")
    return _model(name, vision, text, connector, _aspect(cj.get("image_aspect_ratio", "square")))


def _hf(cj: dict, name: str, processor_json: Optional[dict]) -> ModelConfig:
    tc, vc = cj.get("text_config") or {}, cj.get("vision_config")
    family = tc.get("model_type", "llama")
    if family not in TEXT_FAMILIES:
        raise UnsupportedCheckpointError("LlavaForConditionalGeneration with a %r language model is not "
                                         "supported: only llama and phi" % tc.get("model_type"))
    if vc is None:
        raise CheckpointConfigError("config.json has no vision_config; re-save the model with transformers")
    text = text_from_json(tc, family)
    base = vision_from_json(vc)
    strategy = cj.get("vision_feature_select_strategy", "default")
    if strategy == "default":  # HF Llava: "default" drops token 0, "full" keeps all
        vision = _with_selection(base, cj.get("vision_feature_layer", -2), "patch", True, "")
    elif strategy == "full":
        # without a CLS token "full" and LLaVA's "patch" are the same selection
        kind = "patch" if base.family == "siglip" else "full"
        vision = _with_selection(base, cj.get("vision_feature_layer", -2), kind, False, "")
    else:
        raise UnsupportedCheckpointError("vision_feature_select_strategy %r is not supported (default, full)" % strategy)
    act = cj.get("projector_hidden_act", "gelu")
    if act != "gelu" or not cj.get("multimodal_projector_bias", True):
        raise UnsupportedCheckpointError("multi_modal_projector with act %r / bias %r is not supported: only "
                                         "Linear+GELU+Linear with biases" % (act, cj.get("multimodal_projector_bias")))
    do_pad = bool((processor_json or {}).get("do_pad", False))  # LlavaImageProcessor pads with the mean colour
    return _model(name, vision, text, "mlp2x_gelu", "pad" if do_pad else "square")


# ---- pieces -----------------------------------------------------------------------------------

def _llava_text_family(cj: dict) -> str:
    for arch in cj.get("architectures") or []:
        if arch in LLAVA_ARCHITECTURES:
            return LLAVA_ARCHITECTURES[arch]
    return "phi" if cj.get("model_type") == "tiny_llava_phi" else "llama"


def text_from_json(d: dict, family: str) -> TextConfig:
    d = {**(_LLAMA_DEFAULTS if family == "llama" else _PHI_DEFAULTS), **{k: v for k, v in d.items() if v is not None}}
    rope = dict(d.get("rope_parameters") or {})  # transformers 5 moves rope_theta & co. here
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    scaling = d.get("rope_scaling")
    if rope_type != "default" or (scaling and (scaling.get("rope_type") or scaling.get("type")) != "default"):
        raise UnsupportedCheckpointError("RoPE scaling %r is not supported (plain RoPE only)" % (scaling or rope))
    heads = d["num_attention_heads"]
    kv_heads = d.get("num_key_value_heads") or heads
    if d.get("head_dim") not in (None, d["hidden_size"] // heads):
        raise UnsupportedCheckpointError("head_dim %s != hidden_size / num_attention_heads (%d) is not supported"
                                         % (d["head_dim"], d["hidden_size"] // heads))
    if family == "llama":
        if d.get("attention_bias") or d.get("mlp_bias"):
            raise UnsupportedCheckpointError("Llama with attention_bias/mlp_bias is not supported (TinyLlama has none)")
        if d["hidden_act"] != "silu":
            raise UnsupportedCheckpointError("Llama hidden_act %r is not supported (silu only)" % d["hidden_act"])
        eps = d["rms_norm_eps"]
        partial = 1.0
    else:
        if d.get("qk_layernorm"):
            raise UnsupportedCheckpointError("Phi with qk_layernorm is not supported (Phi-2 has none)")
        eps = d["layer_norm_eps"]
        partial = rope.get("partial_rotary_factor", d["partial_rotary_factor"])
    eos = d["eos_token_id"]
    return TextConfig(
        family=family, vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
        intermediate_size=d["intermediate_size"], num_layers=d["num_hidden_layers"], num_heads=heads,
        num_kv_heads=kv_heads, max_position_embeddings=d["max_position_embeddings"],
        rope_theta=float(rope.get("rope_theta", d.get("rope_theta", 10000.0))), norm_eps=float(eps),
        hidden_act=d["hidden_act"], partial_rotary_factor=float(partial), bos_token_id=d.get("bos_token_id"),
        eos_token_id=eos[0] if isinstance(eos, list) else eos, pad_token_id=d.get("pad_token_id"),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
    )


def vision_from_json(d: dict) -> VisionConfig:
    """A siglip_vision_model / clip_vision_model config, or a full siglip / clip config's vision half."""
    model_type = d.get("model_type", "")
    if model_type in ("siglip", "clip"):
        d = dict(d.get("vision_config") or {}, model_type=model_type + "_vision_model")
    family = _VISION_MODEL_TYPES.get(d.get("model_type", ""))
    if family is None:
        raise UnsupportedCheckpointError("vision tower model_type %r is not supported (siglip_vision_model, "
                                         "clip_vision_model)" % model_type)
    d = {**_VISION_DEFAULTS[family], **{k: v for k, v in d.items() if v is not None}}
    if d.get("num_channels", 3) != 3:
        raise UnsupportedCheckpointError("vision tower with %d input channels is not supported (RGB only)"
                                         % d["num_channels"])
    return VisionConfig(
        family=family, image_size=d["image_size"], patch_size=d["patch_size"], hidden_size=d["hidden_size"],
        intermediate_size=d["intermediate_size"], num_layers=d["num_hidden_layers"],
        num_heads=d["num_attention_heads"], layer_norm_eps=float(d["layer_norm_eps"]), hidden_act=d["hidden_act"],
        patch_drops_first=family == "clip",
    )


def _with_selection(v: VisionConfig, layer: Any, strategy: str, patch_drops_first: bool, key: str) -> VisionConfig:
    if not isinstance(layer, int):
        raise UnsupportedCheckpointError("vision feature layer %r is not supported (one layer index only)" % (layer,))
    if strategy == "cls_patch":  # LLaVA / Factory spelling of "keep every token"
        strategy = "full"
    if strategy not in SELECT_STRATEGIES:
        raise UnsupportedCheckpointError("%s %r is not supported (patch, cls_patch)" % (key, strategy))
    return replace(v, feature_layer=layer, select_strategy=strategy, patch_drops_first=patch_drops_first)


def _connector(kind: str, key: str) -> str:
    if kind not in CONNECTOR_TYPES:
        raise UnsupportedCheckpointError("%s %r is not supported (%s)" % (key, kind, ", ".join(CONNECTOR_TYPES)))
    return kind


def _aspect(value: Optional[str]) -> str:
    if value == "pad":
        return "pad"
    if value in (None, "", "square", "resize"):
        return "square"
    if re.match(r"anyres", value):
        raise UnsupportedCheckpointError("image_aspect_ratio %r (multi-crop) is not supported (pad, square)" % value)
    raise UnsupportedCheckpointError("image_aspect_ratio %r is not supported (pad, square)" % value)


def _check_equal(key: str, declared: Any, actual: Any) -> None:
    if declared != actual:
        raise CheckpointConfigError("config.json says %s=%r but the vision tower has hidden_size %r: the "
                                    "checkpoint and its mm_vision_tower do not belong together" % (key, declared, actual))


def _model(name: str, vision: VisionConfig, text: TextConfig, connector: str, aspect: str) -> ModelConfig:
    image = replace(default_image_config(vision), aspect=aspect)
    return ModelConfig(name=name, vision=vision, text=text, connector=connector,
                       template=TEMPLATES[text.family], image=image)
