"""Every tensor a checkpoint for a ModelConfig holds: internal name -> shape, from the config alone.

Torch-free so that the writer, the reader and the bundle tooling share one source of truth. The
internal names are `LlavaModel`'s parameter names (HF's inner module names per family).
"""
from __future__ import annotations

from typing import Dict, Tuple

from models.config import ModelConfig, TextConfig, VisionConfig

Shape = Tuple[int, ...]
Spec = Dict[str, Shape]


def param_spec(cfg: ModelConfig, used_only: bool) -> Spec:
    """Internal name -> shape.

    used_only=True: exactly the parameters of `LlavaModel(cfg)`.
    used_only=False: additionally what a real checkpoint carries but the model never runs: the
    vision layers past `num_layers_used`, `post_layernorm` and SigLIP's attention-pooling head.
    """
    spec: Spec = {}
    spec.update(_vision_spec(cfg.vision, used_only))
    spec.update(_connector_spec(cfg))
    spec.update(_text_spec(cfg.text))
    return spec


def _vision_spec(v: VisionConfig, used_only: bool) -> Spec:
    h, i, p = v.hidden_size, v.intermediate_size, v.patch_size
    pre = "vision_tower."
    spec: Spec = {pre + "embeddings.patch_embedding.weight": (h, 3, p, p)}
    if v.family == "clip":
        # HF CLIPVisionEmbeddings: Conv2d(bias=False), a learned class token, and `pre_layrnorm` (sic).
        spec[pre + "embeddings.class_embedding"] = (h,)
        spec[pre + "pre_layrnorm.weight"] = (h,)
        spec[pre + "pre_layrnorm.bias"] = (h,)
    else:
        spec[pre + "embeddings.patch_embedding.bias"] = (h,)
    spec[pre + "embeddings.position_embedding.weight"] = (v.num_positions, h)
    n_layers = v.num_layers_used if used_only else v.num_layers
    for n in range(n_layers):
        lp = pre + "encoder.layers.%d." % n
        for norm in ("layer_norm1", "layer_norm2"):
            spec[lp + norm + ".weight"] = (h,)
            spec[lp + norm + ".bias"] = (h,)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            spec[lp + "self_attn.%s.weight" % proj] = (h, h)
            spec[lp + "self_attn.%s.bias" % proj] = (h,)
        spec.update(_linear(lp + "mlp.fc1", i, h, bias=True))
        spec.update(_linear(lp + "mlp.fc2", h, i, bias=True))
    if used_only:
        return spec
    spec[pre + "post_layernorm.weight"] = (h,)
    spec[pre + "post_layernorm.bias"] = (h,)
    if v.family == "siglip":
        # HF SiglipMultiheadAttentionPoolingHead: probe + nn.MultiheadAttention + LayerNorm + MLP.
        hp = pre + "head."
        spec[hp + "probe"] = (1, 1, h)
        spec[hp + "attention.in_proj_weight"] = (3 * h, h)
        spec[hp + "attention.in_proj_bias"] = (3 * h,)
        spec.update(_linear(hp + "attention.out_proj", h, h, bias=True))
        spec[hp + "layernorm.weight"] = (h,)
        spec[hp + "layernorm.bias"] = (h,)
        spec.update(_linear(hp + "mlp.fc1", i, h, bias=True))
        spec.update(_linear(hp + "mlp.fc2", h, i, bias=True))
    return spec


def _connector_spec(cfg: ModelConfig) -> Spec:
    vh, th = cfg.vision.hidden_size, cfg.text.hidden_size
    spec = _linear("connector.linear_1", th, vh, bias=True)
    if cfg.connector == "mlp2x_gelu":
        spec.update(_linear("connector.linear_2", th, th, bias=True))
    return spec


def _text_spec(t: TextConfig) -> Spec:
    h, i, hd = t.hidden_size, t.intermediate_size, t.head_dim
    q_out, kv_out = t.num_heads * hd, t.num_kv_heads * hd
    pre = "language_model."
    spec: Spec = {pre + "embed_tokens.weight": (t.vocab_size, h)}
    phi = t.family == "phi"
    for n in range(t.num_layers):
        lp = pre + "layers.%d." % n
        spec.update(_linear(lp + "self_attn.q_proj", q_out, h, bias=phi))
        spec.update(_linear(lp + "self_attn.k_proj", kv_out, h, bias=phi))
        spec.update(_linear(lp + "self_attn.v_proj", kv_out, h, bias=phi))
        if phi:
            spec.update(_linear(lp + "self_attn.dense", h, q_out, bias=True))
            spec.update(_linear(lp + "mlp.fc1", i, h, bias=True))
            spec.update(_linear(lp + "mlp.fc2", h, i, bias=True))
            # Phi-2: one LayerNorm feeds attention and MLP in parallel.
            spec[lp + "input_layernorm.weight"] = (h,)
            spec[lp + "input_layernorm.bias"] = (h,)
        else:
            spec.update(_linear(lp + "self_attn.o_proj", h, q_out, bias=False))
            spec.update(_linear(lp + "mlp.gate_proj", i, h, bias=False))
            spec.update(_linear(lp + "mlp.up_proj", i, h, bias=False))
            spec.update(_linear(lp + "mlp.down_proj", h, i, bias=False))
            spec[lp + "input_layernorm.weight"] = (h,)
            spec[lp + "post_attention_layernorm.weight"] = (h,)
    if phi:
        spec[pre + "final_layernorm.weight"] = (h,)
        spec[pre + "final_layernorm.bias"] = (h,)
    else:
        spec[pre + "norm.weight"] = (h,)
    spec.update(_linear("lm_head", t.vocab_size, h, bias=phi))  # Phi-2's lm_head has a bias
    return spec


def _linear(name: str, out_features: int, in_features: int, bias: bool) -> Spec:
    spec: Spec = {name + ".weight": (out_features, in_features)}
    if bias:
        spec[name + ".bias"] = (out_features,)
    return spec
