"""The on-disk tensor-name layouts and how their names map onto the internal names.

One table per layout: (checkpoint prefix, internal prefix[, connector type]) rules and the names
that are deliberately dropped. Reading picks the longest matching checkpoint prefix; writing uses
the first rule listed for an internal prefix, which is the spelling the real tool writes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Pattern, Sequence, Tuple

from models.checkpoint.errors import CorruptCheckpointError, UnsupportedCheckpointError

LAYOUTS = ("llava", "factory", "hf")


@dataclass(frozen=True)
class Rule:
    checkpoint: str  # checkpoint-name prefix
    internal: str  # internal-name prefix it becomes
    connector: Optional[str] = None  # only for this connector type (mlp2x_gelu is nn.Sequential: .0/.2)


@dataclass(frozen=True)
class Layout:
    name: str
    rules: Tuple[Rule, ...]
    dropped: Tuple[Pattern[str], ...]  # checkpoint names that are never weights of the model
    # Internal parameters the layout cannot store; the model gets zeros (what the real tool computes).
    absent_as_zero: Tuple[str, ...] = ()

    def rules_for(self, connector: str) -> List[Rule]:
        return [r for r in self.rules if r.connector in (None, connector)]


# Buffers older transformers saved with the weights: recomputed from the config, never loaded.
_BUFFERS = (re.compile(r"(^|\.)rotary_emb\.inv_freq$"), re.compile(r"(^|\.)embeddings\.position_ids$"))

# LLaVA / TinyLLaVABench (bczhou) and TinyLLaVA-Med: `LlavaLlamaModel` puts the LLM, `mm_projector`
# and `vision_tower.vision_tower` (the HF tower) under `model.` (TinyLLaVA_Factory
# convert_legecy_weights_to_tinyllavafactory.py KEYS_TO_MODIFY_MAPPING).
LLAVA = Layout(
    name="llava",
    rules=(
        Rule("model.vision_tower.vision_tower.vision_model.", "vision_tower."),
        Rule("model.mm_projector.0.", "connector.linear_1.", "mlp2x_gelu"),
        Rule("model.mm_projector.2.", "connector.linear_2.", "mlp2x_gelu"),
        Rule("model.mm_projector.", "connector.linear_1.", "linear"),  # a bare nn.Linear
        Rule("model.", "language_model."),
        Rule("lm_head.", "lm_head."),
    ),
    dropped=_BUFFERS,
)

# TinyLLaVA_Factory `TinyLlavaForConditionalGeneration` (modeling_tinyllava.py).
FACTORY = Layout(
    name="factory",
    rules=(
        Rule("vision_tower._vision_tower.vision_model.", "vision_tower."),
        Rule("connector._connector.0.", "connector.linear_1.", "mlp2x_gelu"),
        Rule("connector._connector.2.", "connector.linear_2.", "mlp2x_gelu"),
        Rule("connector._connector.", "connector.linear_1.", "linear"),
        Rule("language_model.model.", "language_model."),
        Rule("language_model.lm_head.", "lm_head."),
    ),
    dropped=_BUFFERS,
)

# transformers LlavaForConditionalGeneration. 5.x save_pretrained writes the first spelling of each
# (checked against 5.24: no `vision_model.` level); 4.x wrote `vision_tower.vision_model.*`; the
# in-memory 5.x module names (`model.language_model.*`, `lm_head.*`) are accepted too.
HF = Layout(
    name="hf",
    rules=(
        Rule("vision_tower.", "vision_tower."),
        Rule("vision_tower.vision_model.", "vision_tower."),
        Rule("model.vision_tower.", "vision_tower."),
        Rule("model.vision_tower.vision_model.", "vision_tower."),
        Rule("multi_modal_projector.", "connector."),
        Rule("model.multi_modal_projector.", "connector."),
        Rule("language_model.model.", "language_model."),
        Rule("model.language_model.", "language_model."),
        Rule("language_model.lm_head.", "lm_head."),
        Rule("lm_head.", "lm_head."),
    ),
    dropped=_BUFFERS,
    # LlavaForConditionalGeneration's lm_head is Linear(bias=False) whatever the text model, so a
    # Phi-2 lm_head bias cannot be stored: transformers runs such a model without it.
    absent_as_zero=("lm_head.bias",),
)

# A separate vision-tower directory (LLaVA's `mm_vision_tower`): SiglipVisionModel / CLIPVisionModel
# weights (`vision_model.*` up to transformers 4.x, bare names in 5.x), or a full SiglipModel /
# CLIPModel whose text half is not ours.
TOWER_DIR = Layout(
    name="vision-tower",
    rules=(
        Rule("vision_model.", "vision_tower."),
        Rule("", "vision_tower."),
    ),
    dropped=_BUFFERS + tuple(re.compile(p) for p in (
        r"^text_model\.", r"^logit_scale$", r"^logit_bias$", r"^visual_projection\.", r"^text_projection\.")),
)

LAYOUT_TABLES: Dict[str, Layout] = {"llava": LLAVA, "factory": FACTORY, "hf": HF}

# model_type / architectures that name each layout (config.json of the real checkpoints; see
# shared/reference/tinyllava_med_model.md section 4).
LLAVA_MODEL_TYPES = ("tiny_llava", "tiny_llava_phi", "tinyllava", "llava", "llava_llama")
LLAVA_ARCHITECTURES = {
    "TinyLlavaLlamaForCausalLM": "llama",
    "LlavaLlamaForCausalLM": "llama",
    "TinyLlavaPhiForCausalLM": "phi",
}
FACTORY_ARCHITECTURES = ("TinyLlavaForConditionalGeneration",)
HF_ARCHITECTURES = ("LlavaForConditionalGeneration",)


def detect_layout(config_json: dict) -> str:
    """"llava", "factory" or "hf" from config.json's model_type / architectures / keys."""
    model_type = config_json.get("model_type")
    archs = list(config_json.get("architectures") or [])
    if model_type == "llava" and ("text_config" in config_json or any(a in HF_ARCHITECTURES for a in archs)):
        return "hf"
    if model_type == "tinyllava" and "mm_vision_tower" not in config_json:
        return "factory"
    if model_type in LLAVA_MODEL_TYPES or any(a in LLAVA_ARCHITECTURES for a in archs):
        unknown = [a for a in archs if a not in LLAVA_ARCHITECTURES]
        if unknown:
            raise UnsupportedCheckpointError(
                "architecture %s (model_type %r) is not supported: this project runs %s; convert the "
                "checkpoint to one of those or open an issue" % (
                    ", ".join(unknown), model_type, ", ".join(sorted(LLAVA_ARCHITECTURES))))
        return "llava"
    raise UnsupportedCheckpointError(
        "unsupported checkpoint: model_type %r, architectures %s. Supported: LLaVA/TinyLLaVA (model_type %s), "
        "TinyLLaVA_Factory (model_type 'tinyllava' with text_config/vision_config) and transformers "
        "LlavaForConditionalGeneration (model_type 'llava')" % (
            model_type, archs or "(none)", ", ".join(repr(t) for t in LLAVA_MODEL_TYPES)))


def to_internal(name: str, layout: Layout, connector: str) -> Optional[str]:
    """The internal name for a checkpoint name, or None when no rule matches."""
    best: Optional[Rule] = None
    for rule in layout.rules_for(connector):
        if name.startswith(rule.checkpoint) and (best is None or len(rule.checkpoint) > len(best.checkpoint)):
            best = rule
    if best is None:
        return None
    return best.internal + name[len(best.checkpoint):]


def is_dropped(name: str, layout: Layout) -> bool:
    return any(p.search(name) for p in layout.dropped)


def to_checkpoint(internal: str, layout: Layout, connector: str) -> str:
    """The checkpoint name the real tool writes for an internal name (inverse of to_internal)."""
    best: Optional[Rule] = None
    for rule in layout.rules_for(connector):  # first of the longest internal prefixes wins
        if internal.startswith(rule.internal) and (best is None or len(rule.internal) > len(best.internal)):
            best = rule
    if best is None:
        raise KeyError("layout %s has no rule for internal name %r" % (layout.name, internal))
    return best.checkpoint + internal[len(best.internal):]


def map_names(names: Sequence[str], layout: Layout, connector: str) -> Tuple[Dict[str, str], List[str], List[str]]:
    """Split checkpoint names into ({internal: checkpoint name}, dropped, unmapped)."""
    mapped: Dict[str, str] = {}
    dropped: List[str] = []
    unmapped: List[str] = []
    for name in names:
        if is_dropped(name, layout):
            dropped.append(name)
            continue
        internal = to_internal(name, layout, connector)
        if internal is None:
            unmapped.append(name)
        elif internal in mapped:
            raise CorruptCheckpointError(
                "tensors %r and %r both map to %r in the %s layout: the checkpoint mixes two spellings of one "
                "weight; keep one of them" % (mapped[internal], name, internal, layout.name))
        else:
            mapped[internal] = name
    return mapped, dropped, unmapped
