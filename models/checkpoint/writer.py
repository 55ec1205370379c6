"""make_checkpoint: a random-weight checkpoint in one of the real on-disk layouts.

Weights are generated one tensor at a time straight into the safetensors files (never the whole
model in memory), deterministically: each tensor's values depend only on (seed, internal name),
so any tensor can be regenerated with init_tensor() and the copy a layout stores twice (the llava
tower) is identical in both places.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import torch
from tokenizers import AddedToken, Tokenizer
from tqdm import tqdm

from models.checkpoint import config_write as cw
from models.checkpoint.layouts import LAYOUT_TABLES, TOWER_DIR, to_checkpoint
from models.checkpoint.safetensors_io import write_checkpoint_files
from models.checkpoint.spec import param_spec
from models.config import IMAGE_TOKEN, ModelConfig
from models.config import preset as get_preset
from models.checkpoint.sentencepiece_convert import convert_sentencepiece
from models.tokenizer_build import ENDOFTEXT, train_bpe, train_sentencepiece

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_MAX_SHARD_BYTES = 2 * 1024 ** 3  # the full 1.5B preset in fp32 (6.1 GB) becomes 3 shards
# Largest vocabularies the built-in tokenizer corpus trains (models.tokenizer_build); a bigger model
# vocabulary keeps its extra rows, which the tokenizer never produces.
SENTENCEPIECE_MAX_VOCAB = 2000
BPE_MAX_VOCAB = 1100


@dataclass(frozen=True)
class TokenIds:
    bos: Optional[int]
    eos: int
    pad: int
    unk: str  # token strings, for the tokenizer configs
    bos_token: Optional[str]
    eos_token: str
    pad_token: str
    image_token_id: Optional[int] = None  # hf layout: "<image>" appended after the base vocabulary


def make_checkpoint(out: Union[str, Path], preset: Union[str, ModelConfig], fmt: str, seed: int = 0,
                    dtype: str = "float32", max_shard_bytes: Optional[int] = None, progress: bool = True) -> Path:
    """Write a random-weight checkpoint of `preset` in layout `fmt` ("llava" | "factory" | "hf") to `out`.

    `out` must be absent or empty. Returns `out`. The written config says what the layout can
    say: e.g. "factory" always drops the first patch for "patch" selection (728-token
    convention), "llava" drops it only for CLIP.
    """
    if fmt not in LAYOUT_TABLES:
        raise ValueError("unknown checkpoint format %r (llava, factory, hf)" % fmt)
    if dtype not in DTYPES:
        raise ValueError("unsupported dtype %r (%s)" % (dtype, ", ".join(DTYPES)))
    cfg = get_preset(preset) if isinstance(preset, str) else preset
    if fmt == "hf" and cfg.connector != "mlp2x_gelu":
        raise ValueError("the hf layout (LlavaForConditionalGeneration) has only the mlp2x_gelu projector; "
                         "preset %r uses %r" % (cfg.name, cfg.connector))
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError("%s is not empty; give a new directory" % out)
    out.mkdir(parents=True, exist_ok=True)

    ids = write_tokenizer(out, cfg, fmt)
    cfg = replace(cfg, text=replace(cfg.text, bos_token_id=ids.bos, eos_token_id=ids.eos, pad_token_id=ids.pad))
    tower = cw.known_tower_name(cfg.vision) if fmt == "llava" else None
    tower_dir = None
    if fmt == "llava" and tower is None:  # not a published tower: ship it beside the weights, as bczhou's 3.1B does
        tower = "%s_vision_tower" % cfg.vision.family
        tower_dir = out / tower
    spec = param_spec(cfg, used_only=False)
    _write_weights(out, cfg, fmt, lambda name: init_tensor(name, spec[name], seed), DTYPES[dtype],
                   max_shard_bytes or DEFAULT_MAX_SHARD_BYTES, progress, tower_dir=tower_dir)
    if tower_dir is not None:
        _dump(tower_dir / "config.json", cw.tower_dir_json(cfg.vision, dtype))

    if fmt == "llava":
        _dump(out / "config.json", cw.llava_json(cfg, tower or "", ids.pad_token, dtype))
    elif fmt == "factory":
        _dump(out / "config.json", cw.factory_json(cfg, ids.pad_token, dtype))
    else:
        assert ids.image_token_id is not None
        _dump(out / "config.json", cw.hf_json(cfg, ids.image_token_id, dtype))
        processor = cw.processor_json(cfg)
        _dump(out / "processor_config.json", processor)  # transformers 5
        _dump(out / "preprocessor_config.json", {**processor["image_processor"], "processor_class": "LlavaProcessor"})
        (out / "chat_template.jinja").write_text(cw.chat_template(cfg.template), encoding="utf-8")
    version = cw.HF_TRANSFORMERS if fmt == "hf" else cw.LEGACY_TRANSFORMERS
    _dump(out / "generation_config.json", cw.generation_json(cfg.text, version))
    return out


def _write_weights(out: Path, cfg: ModelConfig, fmt: str, value: Callable[[str], torch.Tensor], dtype: torch.dtype,
                   max_shard: int, progress: bool, tower_dir: Optional[Path] = None) -> None:
    """Every param_spec(used_only=False) tensor under the layout's names, `value(internal name)` each;
    with tower_dir, the vision tower a second time there under a standalone SiglipVisionModel /
    CLIPVisionModel's names."""
    layout = LAYOUT_TABLES[fmt]
    spec = param_spec(cfg, used_only=False)
    jobs = [(out, {to_checkpoint(n, layout, cfg.connector): n for n in spec if n not in layout.absent_as_zero})]
    if tower_dir is not None:
        tower_dir.mkdir()
        jobs.append((tower_dir, {to_checkpoint(n, TOWER_DIR, cfg.connector): n for n in spec
                                 if n.startswith("vision_tower.")}))
    itemsize = torch.empty((), dtype=dtype).element_size()
    total = sum(math.prod(spec[n]) for _, names in jobs for n in names.values()) * itemsize
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="writing %s" % out.name,
              disable=not progress) as bar:
        for directory, names in jobs:
            entries = [(stored, spec[internal]) for stored, internal in names.items()]
            write_checkpoint_files(directory, entries, dtype, _producer(names, value, dtype), max_shard, bar.update)


# ---- weights ------------------------------------------------------------------------------------

def init_tensor(name: str, shape: Sequence[int], seed: int) -> torch.Tensor:
    """The float32 value make_checkpoint writes for internal tensor `name` (before the dtype cast).

    Norm weights are 1 + N(0, 0.02); biases and other vectors N(0, 0.02); embedding tables N(0, 0.5)
    (they are normalised before use); matrices N(0, 1/fan_in), i.e. about 0.02 at the real sizes
    and large enough in the tiny presets that greedy decoding depends on the context.
    """
    digest = hashlib.sha256(("%d/%s" % (seed, name)).encode("utf-8")).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    t = torch.randn(tuple(shape), generator=gen)
    module, _, leaf = name.rpartition(".")
    if len(shape) == 1:
        if leaf == "weight" and "norm" in module.rpartition(".")[2]:  # layer_norm1, input_layernorm, norm, ...
            return t.mul_(0.02).add_(1.0)
        return t.mul_(0.02)
    if name.endswith(("embed_tokens.weight", "position_embedding.weight")):
        return t.mul_(0.5)
    fan_in = math.prod(shape) // shape[0]
    return t.mul_(1.0 / math.sqrt(fan_in))


def _producer(back: Dict[str, str], value: Callable[[str], torch.Tensor],
              dtype: torch.dtype) -> Callable[[str], torch.Tensor]:
    def produce(checkpoint_name: str) -> torch.Tensor:
        return value(back[checkpoint_name]).detach().to(device="cpu", dtype=dtype).contiguous()

    return produce


# ---- trained weights ------------------------------------------------------------------------------

_TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "vocab.json", "merges.txt", "added_tokens.json")


def save_checkpoint(out: Union[str, Path], cfg: ModelConfig, tensors: Mapping[str, torch.Tensor],
                    tokenizer_from: Union[str, Path], dtype: str = "float32", progress: bool = True) -> Path:
    """Trained weights as a checkpoint in the llava layout (what `finetune` writes; every reader loads it).

    `tensors` holds every param_spec(cfg, used_only=False) name (models.checkpoint.reader.read_all_tensors
    gives the ones the model never runs); the tokenizer files are copied from `tokenizer_from`, the
    directory of the checkpoint the training started from. `out` must be absent or empty.
    """
    out = Path(out)
    if out.exists() and any(p.name != "trainer_state.pt" for p in out.iterdir()):
        raise FileExistsError("%s is not empty; give a new directory" % out)
    spec = param_spec(cfg, used_only=False)
    missing = [n for n in spec if n not in tensors]
    if missing:
        raise ValueError("cannot save: %d tensor(s) missing, e.g. %s" % (len(missing), missing[0]))
    out.mkdir(parents=True, exist_ok=True)
    src = Path(tokenizer_from)
    for name in _TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    pad_token = _pad_token(src)
    tower = cw.known_tower_name(cfg.vision)
    tower_dir = None
    if tower is None:
        tower = "%s_vision_tower" % cfg.vision.family
        tower_dir = out / tower
    _write_weights(out, cfg, "llava", lambda name: tensors[name], DTYPES[dtype], DEFAULT_MAX_SHARD_BYTES, progress,
                   tower_dir=tower_dir)
    if tower_dir is not None:
        _dump(tower_dir / "config.json", cw.tower_dir_json(cfg.vision, dtype))
    _dump(out / "config.json", cw.llava_json(cfg, tower, pad_token, dtype))
    _dump(out / "generation_config.json", cw.generation_json(cfg.text, cw.LEGACY_TRANSFORMERS))
    return out


def _pad_token(checkpoint: Path) -> str:
    """The pad token the source checkpoint names (config.json, then special_tokens_map.json)."""
    for name in ("config.json", "special_tokens_map.json"):
        path = checkpoint / name
        if path.is_file():
            value = json.loads(path.read_text(encoding="utf-8")).get("pad_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and value:
                return value
    return "<unk>"


# ---- tokenizer --------------------------------------------------------------------------------

def write_tokenizer(out: Path, cfg: ModelConfig, fmt: str) -> TokenIds:
    """Train a tokenizer that fits the model's vocabulary and write the layout's tokenizer files."""
    t = cfg.text
    reserve = 1 if fmt == "hf" else 0  # the hf layout appends "<image>" after the base vocabulary
    # The hf layout ships only tokenizer.json (saved below), so the trainer's own files go to a scratch directory.
    train_dir = tempfile.TemporaryDirectory() if fmt == "hf" else contextlib.nullcontext(out)
    with train_dir as where:
        if t.family == "llama":
            size = min(t.vocab_size - reserve, SENTENCEPIECE_MAX_VOCAB)
            tok = convert_sentencepiece(train_sentencepiece(where, size), legacy=False)
            ids = TokenIds(bos=tok.token_to_id("<s>"), eos=tok.token_to_id("</s>"), pad=tok.token_to_id("<unk>"),
                           unk="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<unk>")  # TinyLLaVA pads with <unk>
        else:
            size = min(t.vocab_size - reserve, BPE_MAX_VOCAB)
            tok = Tokenizer.from_file(str(train_bpe(where, size)))
            eot = tok.token_to_id(ENDOFTEXT)
            ids = TokenIds(bos=eot, eos=eot, pad=eot, unk=ENDOFTEXT, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT,
                           pad_token=ENDOFTEXT)  # Phi-2: <|endoftext|> is every special token
    if fmt == "hf":
        image_id = tok.get_vocab_size()
        tok.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
        if tok.token_to_id(IMAGE_TOKEN) != image_id or image_id >= t.vocab_size:
            raise ValueError("cannot place %s at id %d inside a %d-token vocabulary" % (IMAGE_TOKEN, image_id, t.vocab_size))
        tok.save(str(out / "tokenizer.json"))
        ids = replace(ids, image_token_id=image_id)
    _dump(out / "tokenizer_config.json", _tokenizer_config(cfg, fmt, ids, tok))
    specials = {"bos_token": ids.bos_token, "eos_token": ids.eos_token, "unk_token": ids.unk, "pad_token": ids.pad_token}
    _dump(out / "special_tokens_map.json", {k: v for k, v in specials.items() if v is not None})
    return ids


def _tokenizer_config(cfg: ModelConfig, fmt: str, ids: TokenIds, tok: Any) -> Dict[str, Any]:
    added: Dict[str, Any] = {}
    for content in sorted({ids.unk, ids.bos_token, ids.eos_token, ids.pad_token} - {None},
                          key=lambda c: tok.token_to_id(c)):
        added[str(tok.token_to_id(content))] = _added_entry(content)
    if ids.image_token_id is not None:
        added[str(ids.image_token_id)] = _added_entry(IMAGE_TOKEN)
    d: Dict[str, Any] = {
        "added_tokens_decoder": added, "bos_token": ids.bos_token, "eos_token": ids.eos_token,
        "unk_token": ids.unk, "pad_token": ids.pad_token, "model_max_length": cfg.text.max_position_embeddings,
        "padding_side": "right", "clean_up_tokenization_spaces": False,
    }
    if fmt == "hf":  # tokenizer.json is the whole tokenizer; no class-specific rebuilding
        d.update(tokenizer_class="PreTrainedTokenizerFast", processor_class="LlavaProcessor")
    elif cfg.text.family == "llama":  # TinyLlama / bczhou tokenizer_config.json
        d.update(tokenizer_class="LlamaTokenizer", add_bos_token=True, add_eos_token=False, legacy=False,
                 sp_model_kwargs={}, use_default_system_prompt=False)
    else:  # microsoft/phi-2 tokenizer_config.json
        d.update(tokenizer_class="CodeGenTokenizer", add_prefix_space=False)
    return d


def _added_entry(content: str) -> Dict[str, Any]:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": True}


def _dump(path: Path, obj: Dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
