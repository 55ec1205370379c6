"""Tokenizer files beside a checkpoint: finding and loading them (reader), producing them (writer).

Loading never writes into the checkpoint directory: a SentencePiece tokenizer.model is converted in
memory (optionally cached as tokenizer.json under a cache directory of the caller's choosing).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from models.checkpoint.errors import CorruptCheckpointError, TokenizerNotFoundError

_CONVERTER_VERSION = "1"  # part of the cache key: bump when convert_sentencepiece changes its output


@dataclass(frozen=True)
class TokenizerSource:
    kind: str  # "tokenizer.json" | "sentencepiece" | "bpe-vocab"
    path: Path  # tokenizer.json, tokenizer.model or vocab.json


def find_tokenizer(directory: Path) -> Optional[TokenizerSource]:
    """tokenizer.json first (what transformers' fast tokenizers read), then tokenizer.model, then
    GPT-2 style vocab.json + merges.txt."""
    if (directory / "tokenizer.json").is_file():
        return TokenizerSource("tokenizer.json", directory / "tokenizer.json")
    if (directory / "tokenizer.model").is_file():
        return TokenizerSource("sentencepiece", directory / "tokenizer.model")
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return TokenizerSource("bpe-vocab", directory / "vocab.json")
    return None


def load_tokenizer(directory: Path, cache_dir: Optional[Path] = None) -> Tokenizer:
    """The checkpoint's tokenizer as a `tokenizers.Tokenizer`."""
    src = find_tokenizer(directory)
    if src is None:
        raise TokenizerNotFoundError(
            "no tokenizer in %s: expected tokenizer.json, tokenizer.model or vocab.json + merges.txt; copy the "
            "tokenizer files of the base model (e.g. TinyLlama/TinyLlama-1.1B-Chat-v1.0) there" % directory)
    try:
        if src.kind == "tokenizer.json":
            return Tokenizer.from_file(str(src.path))
        if src.kind == "sentencepiece":
            return _from_sentencepiece(src.path, cache_dir)
        return bpe_from_vocab(directory)
    except Exception as e:
        # `tokenizers` raises plain Exception for malformed files; anything more specific is a bug
        # or an environment problem and propagates unchanged.
        if type(e) is Exception or isinstance(e, (ValueError, KeyError)):
            raise CorruptCheckpointError("cannot read the tokenizer %s (%s); copy it again from the base model"
                                         % (src.path, e)) from None
        raise


def _from_sentencepiece(model_path: Path, cache_dir: Optional[Path]) -> Tokenizer:
    from models.checkpoint.sentencepiece_convert import convert_sentencepiece

    if cache_dir is None:
        return convert_sentencepiece(model_path)
    key = hashlib.sha256(_CONVERTER_VERSION.encode() + model_path.read_bytes())
    cfg = model_path.parent / "tokenizer_config.json"
    if cfg.is_file():  # legacy / add_bos_token / added tokens change the conversion
        key.update(cfg.read_bytes())
    cached = Path(cache_dir) / ("tokenizer-%s.json" % key.hexdigest()[:32])
    if cached.is_file():
        return Tokenizer.from_file(str(cached))
    tok = convert_sentencepiece(model_path)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.name + ".partial")
    tok.save(str(tmp))
    tmp.replace(cached)
    return tok


def bpe_from_vocab(directory: Path) -> Tokenizer:
    """A GPT-2 byte-level BPE (Phi-2's tokenizer) from vocab.json + merges.txt, with the tokens that
    added_tokens.json / tokenizer_config.json add, encoded as transformers' GPT2TokenizerFast does."""
    tok = byte_level(models.BPE.from_file(str(directory / "vocab.json"), str(directory / "merges.txt")))
    for token, special, normalized in _added_tokens(directory):
        added = AddedToken(token, special=special, normalized=normalized)
        if special:
            tok.add_special_tokens([added])
        else:
            tok.add_tokens([added])
    return tok


def byte_level(bpe: models.BPE) -> Tokenizer:
    """`bpe` with GPT-2's byte-level pipeline (Phi-2's): the GPT-2 regex split with bytes mapped to
    chars, the matching decoder, and nothing added around encoded text."""
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _added_tokens(directory: Path) -> List[Tuple[str, bool, bool]]:
    """(content, special, normalized) in id order: tokenizer_config's added_tokens_decoder,
    added_tokens.json and the named special tokens (bos/eos/unk/pad)."""
    found: Dict[str, Tuple[int, bool, bool]] = {}
    cfg = read_json_if_present(directory / "tokenizer_config.json")
    for tid, entry in (cfg.get("added_tokens_decoder") or {}).items():
        special = bool(entry.get("special", False))
        found[entry["content"]] = (int(tid), special, bool(entry.get("normalized", not special)))
    for content, tid in read_json_if_present(directory / "added_tokens.json").items():
        found.setdefault(content, (int(tid), False, True))  # transformers' default for a plain added token
    specials = {**read_json_if_present(directory / "special_tokens_map.json"), **cfg}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = specials.get(key)
        content = value.get("content") if isinstance(value, dict) else value
        if isinstance(content, str):
            tid = found.get(content, (1 << 62, True, False))[0]  # unknown id: after the listed ones
            found[content] = (tid, True, False)
    ordered = sorted(found.items(), key=lambda kv: kv[1][0])
    return [(content, special, normalized) for content, (_, special, normalized) in ordered]


def read_json_if_present(path: Path) -> dict:
    """A JSON file's object, or {} when the file does not exist (tokenizer side files are optional)."""
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)
