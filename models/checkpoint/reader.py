"""Read a checkpoint directory strictly: every tensor consumed, every shape checked.

read_checkpoint maps the layout's names onto the internal names, checks them against
param_spec(cfg, used_only=False) and returns memory-mapped tensors for the parameters the model
has. Tensors a real checkpoint carries but the model never runs (the last vision layer, the
post-layernorm and pooling head) are shape-checked from the file header and not loaded.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch

from models.checkpoint.config_read import KNOWN_TOWERS, config_from_json
from models.checkpoint.errors import (
    CheckpointConfigError,
    CheckpointNotFoundError,
    MissingTensorError,
    ShapeMismatchError,
    UnexpectedTensorError,
)
from models.checkpoint.layouts import LAYOUT_TABLES, TOWER_DIR, Layout, detect_layout, map_names, to_checkpoint
from models.checkpoint.safetensors_io import TensorRef, WeightFiles, has_weights, open_weights
from models.checkpoint.spec import param_spec
from models.checkpoint.tokenizer_files import TokenizerSource, find_tokenizer, load_tokenizer
from models.config import ModelConfig
from models.llava import LlavaModel, build_model

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
TOWER_SUBDIRS = ("siglip_vision_tower", "clip_vision_tower", "vision_tower")  # bczhou/TinyLLaVA-3.1B ships the first
_LIST_AT_MOST = 8  # names quoted in an error message


@dataclass
class LoadedCheckpoint:
    path: Path
    config: ModelConfig
    layout: str  # "llava" | "factory" | "hf"
    tensors: Dict[str, torch.Tensor]  # internal name -> tensor, exactly param_spec(config, used_only=True)
    tokenizer_source: Optional[TokenizerSource]
    vision_tower_path: Optional[Path] = None  # the separate tower directory used, if any
    image_token_id: Optional[int] = None  # hf layout: the "<image>" id in the tokenizer

    def load_tokenizer(self, cache_dir: Optional[Path] = None):  # -> tokenizers.Tokenizer
        """The tokenizer; a tokenizer.model is converted in memory (cached under cache_dir if given)."""
        return load_tokenizer(self.path, cache_dir)


def read_checkpoint(path: Union[str, Path], dtype: Optional[torch.dtype] = None) -> LoadedCheckpoint:
    """Parse config.json, map and check every tensor. dtype: convert tensors to it (None keeps the
    stored dtype, and the memory map: nothing is copied)."""
    root = Path(path)
    cj = _read_config(root)
    layout_name = detect_layout(cj)
    layout = LAYOUT_TABLES[layout_name]

    tower_dir = _resolve_tower(root, cj) if layout_name == "llava" else None
    vision_json = _load_json(tower_dir / "config.json") if tower_dir else None
    processor = _processor_json(root) if layout_name == "hf" else None
    cfg = config_from_json(cj, layout_name, vision_json, name=root.resolve().name, processor_json=processor)

    main = open_weights(root)
    sources: List[Tuple[Layout, WeightFiles]] = [(layout, main)]
    if tower_dir is not None and has_weights(tower_dir):
        sources.append((TOWER_DIR, open_weights(tower_dir)))
    full, used = param_spec(cfg, used_only=False), param_spec(cfg, used_only=True)
    refs = _map_all(sources, cfg, full)
    _check(refs, cfg, sources, layout, full, used)

    tensors: Dict[str, torch.Tensor] = {}
    for internal in used:
        if internal not in refs:  # tied lm_head or the layout's absent_as_zero (see _check)
            continue
        ref, owner = refs[internal]
        t = owner.get(ref.name)
        tensors[internal] = t if dtype is None or t.dtype == dtype else t.to(dtype)
    if cfg.text.tie_word_embeddings and "lm_head.weight" not in tensors:
        tensors["lm_head.weight"] = tensors["language_model.embed_tokens.weight"]
    for internal in layout.absent_as_zero:
        if internal in used:
            like = tensors["lm_head.weight"]
            tensors[internal] = torch.zeros(used[internal], dtype=like.dtype)
    return LoadedCheckpoint(
        path=root, config=cfg, layout=layout_name, tensors=tensors,
        tokenizer_source=find_tokenizer(root), vision_tower_path=tower_dir,
        image_token_id=cj.get("image_token_index", cj.get("image_token_id")) if layout_name == "hf" else None)


def load_model(path: Union[str, Path], dtype: Optional[torch.dtype] = None) -> Tuple[LlavaModel, ModelConfig]:
    """A LlavaModel (eval mode) whose parameters are the checkpoint's tensors.

    Built on the meta device and filled with load_state_dict(assign=True): with dtype None (or the
    stored dtype) the parameters stay memory-mapped; otherwise each is converted once.
    """
    return model_from_checkpoint(read_checkpoint(path, dtype))


def read_all_tensors(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Every tensor param_spec(config, used_only=False) names, loaded: read_checkpoint's, plus those
    the model never runs (the last vision layer, post-layernorm, pooling head), which a fine-tuned
    checkpoint carries over unchanged."""
    root = Path(path)
    ckpt = read_checkpoint(root)
    sources: List[Tuple[Layout, WeightFiles]] = [(LAYOUT_TABLES[ckpt.layout], open_weights(root))]
    if ckpt.vision_tower_path is not None and has_weights(ckpt.vision_tower_path):
        sources.append((TOWER_DIR, open_weights(ckpt.vision_tower_path)))
    tensors = dict(ckpt.tensors)
    for internal, (ref, owner) in _map_all(sources, ckpt.config, param_spec(ckpt.config, used_only=False)).items():
        tensors.setdefault(internal, owner.get(ref.name))
    return tensors


def model_from_checkpoint(ckpt: LoadedCheckpoint) -> Tuple[LlavaModel, ModelConfig]:
    """The LlavaModel of an already read checkpoint, in the dtype its tensors have (see load_model)."""
    dtype = ckpt.tensors["lm_head.weight"].dtype
    state = {k: (v if v.dtype == dtype else v.to(dtype)) for k, v in ckpt.tensors.items()}  # mixed-dtype files
    model = build_model(ckpt.config, device="meta", dtype=dtype)
    model.load_state_dict(state, strict=True, assign=True)
    return model, ckpt.config


# ---- mapping and checking ----------------------------------------------------------------------

_Refs = Dict[str, Tuple[TensorRef, WeightFiles]]  # internal name -> (stored tensor, the files holding it)


def _map_all(sources: List[Tuple[Layout, WeightFiles]], cfg: ModelConfig,
             full: Dict[str, Tuple[int, ...]]) -> _Refs:
    refs: _Refs = {}
    unexpected: List[str] = []
    separate_tower = len(sources) > 1
    for layout, files in sources:
        mapped, _, unmapped = map_names(files.names(), layout, cfg.connector)
        unexpected += ["%s (in %s)" % (n, files.refs[n].file.name) for n in unmapped]
        shadowed = 0
        for internal, name in mapped.items():
            if separate_tower and layout is not TOWER_DIR and internal.startswith("vision_tower."):
                # LLaVA loads the tower from mm_vision_tower, not from the checkpoint's own copy
                # (builder.py: delay_load, then vision_tower.load_model()); that copy is only checked.
                _check_shape(files.refs[name], internal, full)
                shadowed += 1
                continue
            refs[internal] = (files.refs[name], files)
        if shadowed:
            log.info("using the vision tower from %s; the checkpoint's own copy (%d tensors) is ignored, as LLaVA "
                     "does", sources[1][1].files()[0].parent, shadowed)
    if unexpected:
        raise UnexpectedTensorError(
            "%d tensor(s) match no weight of a %s checkpoint: %s. The checkpoint holds modules this project does "
            "not run, or its config.json does not describe it" % (len(unexpected), sources[0][0].name, _few(unexpected)))
    return refs


def _check(refs: _Refs, cfg: ModelConfig, sources: List[Tuple[Layout, WeightFiles]], layout: Layout,
           full: Dict[str, Tuple[int, ...]], used: Dict[str, Tuple[int, ...]]) -> None:
    stored_zero = [n for n in layout.absent_as_zero if n in refs]
    if stored_zero:
        raise UnexpectedTensorError(
            "%s holds %s, which a %s checkpoint cannot have (transformers would ignore it and run without it); "
            "remove it, or save the model in a layout that keeps it" % (
                refs[stored_zero[0]][0].file.name, refs[stored_zero[0]][0].name, layout.name))
    extra = [n for n in refs if n not in full]
    if extra:
        raise UnexpectedTensorError(
            "%d tensor(s) are not part of the model config.json describes: %s. config.json and the weights "
            "disagree (layer count, connector type?); fix config.json or use the matching weights"
            % (len(extra), _few(["%s (internal %s)" % (refs[n][0].name, n) for n in extra])))
    for internal, (ref, _) in refs.items():
        _check_shape(ref, internal, full)
    missing = [n for n in used if n not in refs and n not in layout.absent_as_zero]
    if cfg.text.tie_word_embeddings and missing == ["lm_head.weight"]:
        missing = []  # tied: lm_head is the embedding table
    if missing:
        where = ", ".join(sorted({str(p) for _, w in sources for p in w.files()}))
        named = ["%s (stored as %s)" % (n, to_checkpoint(n, layout, cfg.connector)) for n in missing]
        raise MissingTensorError(
            "%d tensor(s) the model needs are not in the checkpoint: %s (looked in %s). The download is "
            "incomplete or config.json describes a bigger model than the weights"
            % (len(missing), _few(named), where))


def _check_shape(ref: TensorRef, internal: str, full: Dict[str, Tuple[int, ...]]) -> None:
    want = full.get(internal)
    if want is not None and tuple(ref.shape) != tuple(want):
        raise ShapeMismatchError(
            "tensor %r (internal %s) in %s has shape %s but the config (config.json and its vision tower) implies "
            "%s; the config and the weights come from different models" % (ref.name, internal, ref.file.name, list(ref.shape), list(want)))


def _few(names: List[str]) -> str:
    shown = ", ".join(names[:_LIST_AT_MOST])
    return shown + (" and %d more" % (len(names) - _LIST_AT_MOST) if len(names) > _LIST_AT_MOST else "")


# ---- files -------------------------------------------------------------------------------------

def _read_config(root: Path) -> dict:
    if root.is_file():
        raise CheckpointNotFoundError("%s is a file; give the checkpoint directory (the one holding config.json)"
                                      % root)
    if not root.is_dir():
        raise CheckpointNotFoundError("checkpoint directory %s does not exist" % root)
    config = root / "config.json"
    if not config.is_file():
        raise CheckpointNotFoundError("no config.json in %s: give the directory that holds config.json and the "
                                      "*.safetensors weights" % root)
    return _load_json(config)


def _load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:
        raise CheckpointConfigError("%s is not valid JSON (%s); restore it from the checkpoint's source"
                                    % (path, e)) from None
    if not isinstance(data, dict):
        raise CheckpointConfigError("%s does not hold a JSON object" % path)
    return data


def _processor_json(root: Path) -> Optional[dict]:
    """The image-processor settings: processor_config.json (transformers 5) or preprocessor_config.json."""
    if (root / "processor_config.json").is_file():
        nested = _load_json(root / "processor_config.json").get("image_processor")
        if isinstance(nested, dict):
            return nested
    if (root / "preprocessor_config.json").is_file():
        return _load_json(root / "preprocessor_config.json")
    return None


def _resolve_tower(root: Path, cj: dict) -> Optional[Path]:
    """The separate tower directory LLaVA's mm_vision_tower points at, or None when the tower is a
    known hub model whose weights the checkpoint embeds."""
    value = cj.get("mm_vision_tower") or cj.get("vision_tower")
    if not value or not isinstance(value, str):
        raise CheckpointConfigError("config.json of a LLaVA checkpoint has no mm_vision_tower; set it to the "
                                    "vision tower's directory")
    candidate = Path(value).expanduser()
    candidate = candidate if candidate.is_absolute() else root / candidate
    if candidate.is_dir():
        if not (candidate / "config.json").is_file():
            raise CheckpointNotFoundError("vision tower directory %s (mm_vision_tower) has no config.json; copy the "
                                          "tower's config.json there" % candidate)
        return candidate
    if _HUB_ID.match(value):
        for sub in TOWER_SUBDIRS:
            if (root / sub / "config.json").is_file():
                return root / sub
        if value in KNOWN_TOWERS:
            return None
        raise CheckpointNotFoundError(
            "mm_vision_tower is the hub model %r, which is not on this machine; download it (huggingface-cli "
            "download %s --local-dir DIR) and set mm_vision_tower in %s to DIR" % (value, value, root / "config.json"))
    raise CheckpointNotFoundError(
        "the vision tower directory %s (mm_vision_tower %r) does not exist; copy the tower (config.json + "
        "safetensors) there or correct mm_vision_tower in %s" % (candidate, value, root / "config.json"))
