"""Tokenizer training and SentencePiece conversion, checked against the sentencepiece library.

The oracle for convert_sentencepiece is `sentencepiece` itself, applied the way transformers' slow
LlamaTokenizer applies it: special tokens are split off first, then each remaining segment is
`sp.encode`d (legacy), or only the segment at the start of the text gets the dummy prefix
(non-legacy). No torch or transformers needed.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List

import pytest

spm = pytest.importorskip("sentencepiece")
pytest.importorskip("google.protobuf")

from sentencepiece import sentencepiece_model_pb2  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from models.processor import TextTokenizer  # noqa: E402
from models.checkpoint.sentencepiece_convert import convert_sentencepiece  # noqa: E402
from models.tokenizer_build import medical_corpus, train_bpe, train_sentencepiece  # noqa: E402

TRICKY = [
    "Is there a mass in the liver?", " leading space", "  two leading spaces", "trailing space ",
    "double  inner   spaces", "\n", "line one\nline two", "\n\nWhat is shown?", "tab\there",
    "12345 and 3.14159 cm", "2024-01-31", "héllo wörld", "naïve café", "日本語のテキスト", "Ελληνικά",
    "🙂 emoji 🚑 and 🧠", "mixed▁underscore▁char", "ALL CAPS TEXT", "punctuation!?.,;:'\"()[]{}",
    "x", "", " ", "a" * 300, "UNKNOWN_WORD_zzqqxx",
]
SPECIALS = ["<unk>", "<s>", "</s>"]


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sentencepiece(tmp_path_factory.mktemp("sp"), 1024)


def _sp(path: Path, dummy_prefix: bool = True):
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    proto.normalizer_spec.add_dummy_prefix = dummy_prefix
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def slow_llama_ids(text: str, sp, sp_noprefix, legacy: bool) -> List[int]:
    """BOS + sentencepiece ids of each segment between special tokens (transformers' slow
    LlamaTokenizer semantics)."""
    ids = [sp.piece_to_id("<s>")]
    parts = re.split("(%s)" % "|".join(re.escape(s) for s in SPECIALS), text)
    for i, part in enumerate(parts):
        if part in SPECIALS:
            ids.append(sp.piece_to_id(part))
        elif part:
            ids.extend(sp.encode(part) if legacy or i == 0 else sp_noprefix.encode(part))
    return ids


def test_sentencepiece_model_is_llama_style(sp_model: Path) -> None:
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(sp_model.read_bytes())
    assert len(proto.pieces) == 1024
    assert [p.piece for p in proto.pieces[:3]] == ["<unk>", "<s>", "</s>"]
    assert proto.trainer_spec.model_type == 2 and proto.trainer_spec.byte_fallback  # BPE
    assert proto.normalizer_spec.add_dummy_prefix and not proto.normalizer_spec.remove_extra_whitespaces
    assert sum(p.type == 6 for p in proto.pieces) == 256  # one piece per byte


def test_training_is_deterministic(tmp_path: Path, sp_model: Path) -> None:
    assert train_sentencepiece(tmp_path / "a", 1024).read_bytes() == sp_model.read_bytes()
    a, b = train_bpe(tmp_path / "b1", 700), train_bpe(tmp_path / "b2", 700)
    assert a.read_bytes() == b.read_bytes()
    assert (a.parent / "merges.txt").read_bytes() == (b.parent / "merges.txt").read_bytes()


def test_vocab_size_limits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too small"):
        train_sentencepiece(tmp_path, 100)
    with pytest.raises(ValueError, match="smaller vocab_size"):
        train_sentencepiece(tmp_path, 50000)
    with pytest.raises(ValueError, match="too small"):
        train_bpe(tmp_path, 200)
    with pytest.raises(ValueError, match="smaller vocab_size"):
        train_bpe(tmp_path, 50000)
    assert Tokenizer.from_file(str(train_bpe(tmp_path / "s", 400))).get_vocab_size() == 400


def test_convert_matches_sentencepiece_legacy(sp_model: Path) -> None:
    sp, sp0 = _sp(sp_model), _sp(sp_model, dummy_prefix=False)
    tok = convert_sentencepiece(sp_model, legacy=True)
    texts = medical_corpus() + TRICKY + ["a liver</s>USER: next", "x</s> y", "<s>start", "<unk> u", "end</s>"]
    for text in texts:
        assert tok.encode(text).ids == slow_llama_ids(text, sp, sp0, legacy=True), text


def test_convert_matches_sentencepiece_non_legacy(sp_model: Path) -> None:
    sp, sp0 = _sp(sp_model), _sp(sp_model, dummy_prefix=False)
    tok = convert_sentencepiece(sp_model, legacy=False)
    # Excluded: text that *starts* with whitespace. The slow tokenizer adds a second "▁" there and
    # tokenizers' Metaspace does not (transformers' own fast tokenizer has the same difference);
    # prompts always start with the system text.
    texts = [t for t in medical_corpus() + TRICKY if not t[:1].isspace()]
    texts += ["a liver</s>USER: next", "x</s> y", "q ASSISTANT: a</s>USER: b</s>  c", "end</s>"]
    for text in texts:
        assert tok.encode(text).ids == slow_llama_ids(text, sp, sp0, legacy=False), text


def test_decode_round_trips(sp_model: Path) -> None:
    sp = _sp(sp_model)
    tok = convert_sentencepiece(sp_model)
    for text in medical_corpus()[:200] + TRICKY:
        ids = tok.encode(text).ids
        assert tok.decode(ids) == sp.decode(sp.encode(text)) == text.replace("\u2581", " "), text
    assert tok.decode(tok.encode("answer</s>").ids) == "answer"  # special tokens skipped


def test_legacy_flag_and_specials_come_from_tokenizer_config(tmp_path: Path, sp_model: Path) -> None:
    model = tmp_path / "tokenizer.model"
    model.write_bytes(sp_model.read_bytes())
    text = "a</s>USER: b"
    legacy_ids = convert_sentencepiece(model, legacy=True).encode(text).ids
    assert convert_sentencepiece(model).encode(text).ids == legacy_ids  # no config: transformers' default
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "legacy": False, "add_bos_token": True, "add_eos_token": True,
        "added_tokens_decoder": {"1024": {"content": "<image_pad>", "special": True},
                                 "1025": {"content": "<extra>", "special": False}},
    }))
    tok = convert_sentencepiece(model)
    ids = tok.encode(text).ids
    assert ids[:-1] == convert_sentencepiece(model, legacy=False).encode(text).ids[:-1] != legacy_ids[:-1]
    assert ids[-1] == 2  # add_eos_token
    assert tok.token_to_id("<image_pad>") == 1024 and tok.token_to_id("<extra>") == 1025
    assert tok.encode("x<image_pad>y", add_special_tokens=False).ids.count(1024) == 1


def test_converted_json_loads_in_the_runtime_wrapper(tmp_path: Path, sp_model: Path) -> None:
    path = tmp_path / "tokenizer.json"
    convert_sentencepiece(sp_model).save(str(path))
    tok = TextTokenizer.from_file(path)
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (1, 2, 1024)
    ids = tok.encode_with_image("USER: <image>\nWhat is this? ASSISTANT:")
    assert ids[0] == 1 and ids.count(-200) == 1 and ids.count(1) == 1


def test_bpe_is_gpt2_style(tmp_path: Path) -> None:
    path = train_bpe(tmp_path, 1024)
    assert {p.name for p in tmp_path.iterdir()} == {"tokenizer.json", "vocab.json", "merges.txt"}
    tok = Tokenizer.from_file(str(path))
    assert tok.get_vocab_size() == 1024 and tok.token_to_id("<|endoftext|>") == 0
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert vocab == tok.get_vocab(with_added_tokens=False)
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8").startswith("#version")
    for text in TRICKY:
        ids = tok.encode(text).ids
        assert tok.decode(ids) == text  # byte-level: everything round-trips, nothing is added
    assert tok.encode("done<|endoftext|>").ids[-1] == 0
