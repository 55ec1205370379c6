"""SentencePiece tokenizer.model -> a `tokenizers` Tokenizer, at checkpoint-read time (export).

It encodes like transformers' slow LlamaTokenizer (legacy and non-legacy), checked against the
sentencepiece library in tests/models/test_tokenizer_build.py. transformers' own converter is not
used: from transformers 5 on its LlamaTokenizer no longer reproduces the legacy behaviour that
checkpoints without `"legacy": false` (Llama-2 style) were trained with.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

PathLike = Union[str, Path]
SPIECE_UNDERLINE = "\u2581"  # SentencePiece's visible space, "▁"
_SP_BPE = 2
_SP_NORMAL, _SP_USER_DEFINED = 1, 4


def _load_sp_proto(model_path: Path):  # -> sentencepiece_model_pb2.ModelProto
    from sentencepiece import sentencepiece_model_pb2  # needs protobuf (export extra)

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_path.read_bytes())
    return proto


def _sp_merges(pieces: List[Tuple[str, float, int]]) -> List[Tuple[str, str]]:
    """BPE merges implied by a SentencePiece BPE vocabulary.

    SentencePiece merges the adjacent pair whose concatenation is the highest-scoring normal
    piece; ranking every (left, right) split of every normal piece by that piece's score (then id)
    makes the `tokenizers` BPE apply merges in the same order.
    """
    normal = {p: (score, i) for i, (p, score, kind) in enumerate(pieces) if kind == _SP_NORMAL}
    ranked = []
    for piece, (score, pid) in normal.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-score, pid, left, right))
    ranked.sort()
    return [(left, right) for _, _, left, right in ranked]


def convert_sentencepiece(model_path: PathLike, legacy: Optional[bool] = None) -> Tokenizer:
    """A `tokenizers` Tokenizer that encodes like transformers' slow LlamaTokenizer on this
    SentencePiece BPE tokenizer.model (same ids, same decoded text).

    legacy: transformers' LlamaTokenizer flag. True: every text segment between special tokens
    gets SentencePiece's dummy "▁" prefix (plain `sp.encode` per segment). False: only the start of
    the whole text does (text after "</s>" is not prefixed). None: read "legacy" from the
    tokenizer_config.json next to the model; transformers treats an absent flag as True.
    The BOS/EOS additions follow that file's add_bos_token / add_eos_token (defaults: BOS only).
    """
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError("no SentencePiece model at %s" % path)
    proto = _load_sp_proto(path)
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    if spec.model_type != _SP_BPE:
        raise ValueError("%s is not a SentencePiece BPE model (Llama-style); cannot convert it" % path)
    if norm.remove_extra_whitespaces:
        raise ValueError("%s collapses whitespace (remove_extra_whitespaces); Llama-style models do not, "
                         "and this converter does not reproduce it" % path)
    if any(p.type == _SP_USER_DEFINED for p in proto.pieces):
        raise ValueError("%s has user-defined pieces; this converter supports Llama-style models only" % path)
    cfg_path = path.parent / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    if legacy is None:
        legacy = tok_cfg.get("legacy") is not False

    pieces = [(p.piece, p.score, p.type) for p in proto.pieces]
    vocab = {p: i for i, (p, _, _) in enumerate(pieces)}
    unk = pieces[spec.unk_id][0]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=_sp_merges(pieces), unk_token=unk, fuse_unk=True,
                               byte_fallback=spec.byte_fallback))

    steps = []
    if norm.precompiled_charsmap:
        steps.append(normalizers.Precompiled(norm.precompiled_charsmap))
    if legacy:
        # SentencePiece on each segment: dummy prefix always (even before a leading space), then
        # spaces become "▁". Added tokens are split off first, so each segment is prefixed.
        if norm.add_dummy_prefix:
            steps.append(normalizers.Prepend(SPIECE_UNDERLINE))
        steps.append(normalizers.Replace(" ", SPIECE_UNDERLINE))
        tok.normalizer = normalizers.Sequence(steps)
    else:
        if steps:
            tok.normalizer = normalizers.Sequence(steps)
        # Prefix only the segment at the start of the text: transformers' non-legacy behaviour.
        scheme = "first" if norm.add_dummy_prefix else "never"
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme=scheme, split=False)

    dec = [decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if norm.add_dummy_prefix:
        dec.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(dec)

    specials = [pieces[i][0] for i in (spec.unk_id, spec.bos_id, spec.eos_id) if 0 <= i < len(pieces)]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    _add_config_tokens(tok, tok_cfg, len(pieces))

    bos = pieces[spec.bos_id][0] if spec.bos_id >= 0 else None
    eos = pieces[spec.eos_id][0] if spec.eos_id >= 0 else None
    add_bos = bool(tok_cfg.get("add_bos_token", True)) and bos is not None
    add_eos = bool(tok_cfg.get("add_eos_token", False)) and eos is not None
    single = ([bos + ":0"] if add_bos else []) + ["$A:0"] + ([eos + ":0"] if add_eos else [])
    pair = single + ([bos + ":1"] if add_bos else []) + ["$B:1"] + ([eos + ":1"] if add_eos else [])
    used = [(t, vocab[t]) for t, on in ((bos, add_bos), (eos, add_eos)) if on]
    tok.post_processor = processors.TemplateProcessing(single=" ".join(single), pair=" ".join(pair),
                                                       special_tokens=used)
    return tok


def _add_config_tokens(tok: Tokenizer, tok_cfg: Dict[str, object], n_pieces: int) -> None:
    """Tokens a checkpoint added on top of the SentencePiece vocabulary (ids >= its size), in id order."""
    added = tok_cfg.get("added_tokens_decoder") or {}
    extra = sorted((int(k), v) for k, v in added.items() if int(k) >= n_pieces)  # type: ignore[union-attr]
    for want, entry in extra:
        token = AddedToken(entry["content"], special=bool(entry.get("special", False)),
                           normalized=bool(entry.get("normalized", False)),
                           lstrip=bool(entry.get("lstrip", False)), rstrip=bool(entry.get("rstrip", False)))
        if entry.get("special"):
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
        got = tok.token_to_id(entry["content"])
        if got != want:
            raise ValueError("tokenizer_config.json puts %r at id %d but it lands at %s; the added tokens "
                             "are not contiguous after the SentencePiece vocabulary" % (entry["content"], want, got))


__all__ = ["SPIECE_UNDERLINE", "convert_sentencepiece"]
