"""ModelConfig -> the JSON files each layout's real tool writes (config.json and friends).

Keys and values follow the published checkpoints: bczhou/TinyLLaVA-1.5B (llava), the
TinyLLaVA_Factory TinyLlavaConfig (factory) and transformers 5.24 LlavaConfig (hf); see
shared/reference/tinyllava_med_model.md section 4. Only what config_read parses is semantically
required; the rest makes the files look like what the tools write.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, Optional

from models.checkpoint.config_read import KNOWN_TOWERS
from models.config import IMAGE_TOKEN, IMAGE_TOKEN_INDEX, ModelConfig, TextConfig, VisionConfig
from models.processor.templates import get_template

_LLAVA_ARCH = {"llama": ("TinyLlavaLlamaForCausalLM", "tiny_llava"), "phi": ("TinyLlavaPhiForCausalLM", "tiny_llava_phi")}
_TEXT_MODEL = {"llama": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "phi": "microsoft/phi-2"}  # Factory conversion map
_TOWER_MODEL = {"siglip": "google/siglip-so400m-patch14-384", "clip": "openai/clip-vit-large-patch14-336"}
LEGACY_TRANSFORMERS = "4.37.2"  # what the bczhou checkpoints record
HF_TRANSFORMERS = "5.24.0"


def text_json(t: TextConfig, with_model_type: bool = True) -> Dict[str, Any]:
    """A LlamaConfig / PhiConfig dict in the 4.x spelling (rope_theta at top level), which 5.x reads too."""
    d: Dict[str, Any] = {"model_type": t.family} if with_model_type else {}
    d.update(
        vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_layers, num_attention_heads=t.num_heads, num_key_value_heads=t.num_kv_heads,
        hidden_act=t.hidden_act, max_position_embeddings=t.max_position_embeddings, rope_theta=t.rope_theta,
        rope_scaling=None, attention_dropout=0.0, initializer_range=0.02,
        tie_word_embeddings=t.tie_word_embeddings, use_cache=True, bos_token_id=t.bos_token_id,
        eos_token_id=t.eos_token_id, pad_token_id=t.pad_token_id,
    )
    if t.family == "llama":
        d.update(rms_norm_eps=t.norm_eps, attention_bias=False, mlp_bias=False, pretraining_tp=1)
    else:
        d.update(layer_norm_eps=t.norm_eps, partial_rotary_factor=t.partial_rotary_factor, qk_layernorm=False,
                 resid_pdrop=0.1, embd_pdrop=0.0)
    return d


def vision_json(v: VisionConfig) -> Dict[str, Any]:
    """A SiglipVisionConfig / CLIPVisionConfig dict."""
    d: Dict[str, Any] = {
        "model_type": "%s_vision_model" % v.family, "hidden_size": v.hidden_size,
        "intermediate_size": v.intermediate_size, "num_hidden_layers": v.num_layers,
        "num_attention_heads": v.num_heads, "image_size": v.image_size, "patch_size": v.patch_size,
        "num_channels": 3, "hidden_act": v.hidden_act, "layer_norm_eps": v.layer_norm_eps, "attention_dropout": 0.0,
    }
    if v.family == "clip":
        d.update(projection_dim=768, initializer_factor=1.0, initializer_range=0.02)
    return d


def tower_dir_json(v: VisionConfig, dtype: str) -> Dict[str, Any]:
    """config.json of a separate tower directory, as SiglipVisionModel.save_pretrained writes it."""
    arch = "SiglipVisionModel" if v.family == "siglip" else "CLIPVisionModel"
    return {"architectures": [arch], **vision_json(v), "torch_dtype": dtype, "transformers_version": LEGACY_TRANSFORMERS}


def llava_json(cfg: ModelConfig, tower: str, pad_token: str, dtype: str) -> Dict[str, Any]:
    """bczhou/TinyLLaVA-1.5B style: the LLM's keys at top level plus LLaVA's mm_* keys."""
    arch, model_type = _LLAVA_ARCH[cfg.text.family]
    v = cfg.vision
    d: Dict[str, Any] = {"_name_or_path": cfg.name, "architectures": [arch], "model_type": model_type}
    d.update(text_json(cfg.text, with_model_type=False))
    d.update(
        mm_hidden_size=v.hidden_size, mm_patch_merge_type="flat", mm_projector_lr=None,
        mm_projector_type=cfg.connector, mm_use_im_patch_token=False, mm_use_im_start_end=False,
        # LLaVA "patch" drops token 0 for CLIP only; "cls_patch" keeps every token.
        mm_vision_select_feature="patch" if v.select_strategy == "patch" else "cls_patch",
        mm_vision_select_layer=v.feature_layer, mm_vision_tower=tower, freeze_mm_mlp_adapter=False,
        tune_mm_mlp_adapter=False, use_mm_proj=True, image_aspect_ratio=_aspect(cfg),
        tokenizer_model_max_length=cfg.text.max_position_embeddings, tokenizer_padding_side="right",
        pad_token=pad_token, torch_dtype=dtype, transformers_version=LEGACY_TRANSFORMERS,
    )
    return d


def factory_json(cfg: ModelConfig, pad_token: str, dtype: str) -> Dict[str, Any]:
    """TinyLLaVA_Factory TinyLlavaConfig.to_dict(): nested text_config / vision_config."""
    v, t = cfg.vision, cfg.text
    return {
        "architectures": ["TinyLlavaForConditionalGeneration"], "model_type": "tinyllava",
        "llm_model_name_or_path": _TEXT_MODEL[t.family], "tokenizer_name_or_path": _TEXT_MODEL[t.family],
        "vision_model_name_or_path": _TOWER_MODEL[v.family], "vision_model_name_or_path2": "",
        "connector_type": cfg.connector, "hidden_size": t.hidden_size, "vocab_size": t.vocab_size,
        "ignore_index": -100, "image_token_index": IMAGE_TOKEN_INDEX, "pad_token": pad_token,
        "pad_token_id": t.pad_token_id,
        "tokenizer_padding_side": "right", "tokenizer_model_max_length": t.max_position_embeddings,
        "text_config": text_json(t), "vision_config": vision_json(v), "vision_hidden_size": v.hidden_size,
        "vision_feature_layer": v.feature_layer,
        # Factory's "patch" drops token 0 for every tower (issue #203); "cls_patch" keeps all.
        "vision_feature_select_strategy": "patch" if v.select_strategy == "patch" else "cls_patch",
        "image_aspect_ratio": _aspect(cfg), "resampler_hidden_size": None, "num_queries": None,
        "num_resampler_layers": None, "use_cache": False, "cache_dir": None, "tokenizer_use_fast": False,
        "tune_type_llm": "full", "tune_type_connector": "full", "tune_type_vision_tower": "frozen",
        "tune_vision_tower_from_layer": 0, "torch_dtype": dtype, "transformers_version": "4.40.1",
    }


def hf_strategy(v: VisionConfig) -> str:
    """HF Llava: "default" drops token 0, "full" keeps every token."""
    return "default" if (v.select_strategy == "patch" and v.patch_drops_first) else "full"


def hf_json(cfg: ModelConfig, image_token_id: int, dtype: str) -> Dict[str, Any]:
    """transformers LlavaConfig (5.24 field names). Only for the mlp2x_gelu connector, the one projector
    LlavaForConditionalGeneration has: make_checkpoint refuses the others before writing anything."""
    return {
        "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
        "image_token_index": image_token_id, "image_seq_length": cfg.num_image_tokens,
        "projector_hidden_act": "gelu", "multimodal_projector_bias": True,
        "vision_feature_layer": cfg.vision.feature_layer, "vision_feature_select_strategy": hf_strategy(cfg.vision),
        "tie_word_embeddings": cfg.text.tie_word_embeddings, "text_config": text_json(cfg.text),
        "vision_config": vision_json(cfg.vision), "dtype": dtype, "transformers_version": HF_TRANSFORMERS,
    }


def image_processor_json(cfg: ModelConfig) -> Dict[str, Any]:
    """transformers LlavaImageProcessor settings equal to our ImageConfig.

    LlavaImageProcessor's do_pad pads to a square with int(mean * 255), as LLaVA's expand2square.
    """
    img = cfg.image
    assert img is not None
    if img.resize == "exact":  # SigLIP: straight to size x size
        size: Dict[str, int] = {"height": img.size, "width": img.size}
        crop = False
    else:  # CLIP: shortest edge, then centre crop
        size = {"shortest_edge": img.size}
        crop = True
    return {
        "image_processor_type": "LlavaImageProcessor", "do_pad": img.aspect == "pad", "do_resize": True,
        "size": size, "resample": {"bicubic": 3, "bilinear": 2}[img.resample], "do_center_crop": crop,
        "crop_size": {"height": img.size, "width": img.size}, "do_rescale": True,
        "rescale_factor": img.rescale_factor, "do_normalize": True, "image_mean": list(img.mean),
        "image_std": list(img.std), "do_convert_rgb": True,
    }


def processor_json(cfg: ModelConfig) -> Dict[str, Any]:
    """processor_config.json as LlavaProcessor.save_pretrained (5.x) writes it."""
    return {
        "processor_class": "LlavaProcessor", "image_processor": image_processor_json(cfg), "image_token": IMAGE_TOKEN,
        "patch_size": cfg.vision.patch_size, "vision_feature_select_strategy": hf_strategy(cfg.vision),
        "num_additional_image_tokens": 1 if cfg.vision.has_cls else 0,
    }


def generation_json(t: TextConfig, transformers_version: str) -> Dict[str, Any]:
    return {"_from_model_config": True, "bos_token_id": t.bos_token_id, "eos_token_id": t.eos_token_id,
            "pad_token_id": t.pad_token_id, "transformers_version": transformers_version}


def chat_template(template_name: str) -> str:
    """A jinja chat template that renders like models.processor.templates (LLaVA SeparatorStyle.TWO)."""
    tpl = get_template(template_name)
    user, assistant = (_jinja_str(r + ": ") for r in tpl.roles)
    sep, sep2 = _jinja_str(tpl.sep), _jinja_str(tpl.sep2)
    images = ("{%- for item in message['content'] if item['type'] == 'image' -%}{{- '" + IMAGE_TOKEN + "\\n' -}}"
              "{%- endfor -%}")
    texts = "{%- for item in message['content'] if item['type'] == 'text' -%}{{- item['text'] -}}{%- endfor -%}"
    content = "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    return "".join([
        "{{- ", _jinja_str(tpl.system), " + ", sep, " -}}",
        "{%- for message in messages -%}",
        "{%- if message['role'] == 'user' -%}",
        "{{- ", user, " -}}", content, images, texts, "{%- endif -%}{{- ", sep, " -}}",
        "{%- else -%}",
        "{{- ", assistant, " -}}", content, texts, "{%- endif -%}{{- ", sep2, " -}}",
        "{%- endif -%}",
        "{%- endfor -%}",
        "{%- if add_generation_prompt -%}{{- ", _jinja_str(tpl.roles[1] + ":"), " -}}{%- endif -%}",
    ])


def _jinja_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _aspect(cfg: ModelConfig) -> str:
    assert cfg.image is not None
    return cfg.image.aspect


def known_tower_name(v: VisionConfig) -> Optional[str]:
    """The hub id a bczhou config names for this tower, when the tower is a published one."""
    plain = replace(v, feature_layer=-2, select_strategy="patch", patch_drops_first=v.family == "clip")
    for name, known in KNOWN_TOWERS.items():
        if known == plain:
            return name
    return None
