"""Streaming detokenisation against the tokenizer's own full decode, on real trained tokenizers."""
from __future__ import annotations

import numpy as np
import pytest

from server.runtime.answer_text import AnswerText
from server.runtime.detokenizer import IncrementalDetokenizer, byte_fallback_ids
from server.runtime.stop import StopStrings
from tests.server.tiny_tokenizers import byte_level, llama_style

TEXTS = [
    "A small nodule in the left lower lobe.",
    "Résumé: cœur normal 🩺, poumons clairs.",
    "肺部正常 and the heart 👍🏽 is fine 👨‍⚕️!",  # CJK, skin-tone modifier, ZWJ sequence: all unseen in training
    "line one\nline two\ttabbed  double  spaces 🫁",
    "🩺🩺🩺",
]
TOKENIZERS = {"llama_style": llama_style, "byte_level": byte_level}


def _stream(tok, ids):
    d = IncrementalDetokenizer(tok)
    deltas = [d.add(i) for i in ids]
    return deltas, d.flush()


@pytest.mark.parametrize("style", sorted(TOKENIZERS))
@pytest.mark.parametrize("text", TEXTS)
def test_stream_equals_full_decode(style: str, text: str) -> None:
    tok = TOKENIZERS[style]()
    ids = tok.encode(text, add_special_tokens=False).ids
    full = tok.decode(ids)
    assert full == text  # the tokenizer round-trips, so the oracle is the text itself
    deltas, tail = _stream(tok, ids)
    assert "".join(deltas) + tail == full
    # Only a trailing byte-fallback run waits for flush() (the next token could still join it).
    assert tail == "" or tok.id_to_token(ids[-1]).startswith("<0x")
    assert not any("\ufffd" in d for d in deltas + [tail])
    emitted = ""
    for d in deltas:
        emitted += d
        assert full.startswith(emitted)


@pytest.mark.parametrize("style", sorted(TOKENIZERS))
def test_multibyte_characters_are_held_until_complete(style: str) -> None:
    tok = TOKENIZERS[style]()
    ids = tok.encode("ok 🩺 done", add_special_tokens=False).ids
    partial = [i for i, t in enumerate(ids) if "\ufffd" in tok.decode([t])]
    assert len(partial) >= 2, "the emoji should span several byte tokens"
    deltas, _ = _stream(tok, ids)
    first = next(i for i, d in enumerate(deltas) if "🩺" in d)
    assert first >= partial[-1]  # released only once its last byte has arrived
    assert "".join(deltas).count("🩺") == 1


@pytest.mark.parametrize("style", sorted(TOKENIZERS))
def test_random_ids_including_invalid_bytes_match_full_decode(style: str) -> None:
    # A random-weight model emits exactly this kind of sequence: byte pieces that form no
    # character, special tokens in the middle. The stream must still equal the full decode.
    tok = TOKENIZERS[style]()
    rng = np.random.default_rng(11)
    vocab = tok.get_vocab_size()
    for _ in range(200):
        ids = rng.integers(0, vocab, size=int(rng.integers(1, 40))).tolist()
        deltas, tail = _stream(tok, ids)
        assert "".join(deltas) + tail == tok.decode(ids), ids


def test_byte_fallback_ids_only_for_byte_pieces() -> None:
    ids = byte_fallback_ids(llama_style())
    assert len(ids) == 256 and llama_style().id_to_token(min(ids)).startswith("<0x")
    assert byte_fallback_ids(byte_level()) == frozenset()


def test_leading_space_is_stripped_once_as_in_full_decode() -> None:
    tok = llama_style()
    ids = tok.encode("the left lung", add_special_tokens=False).ids
    deltas, _ = _stream(tok, ids)
    assert "".join(deltas) == tok.decode(ids) == "the left lung"


@pytest.mark.parametrize("style", sorted(TOKENIZERS))
@pytest.mark.parametrize("text", TEXTS)
def test_answer_text_cuts_at_stop_strings_spanning_deltas(style: str, text: str) -> None:
    # Every substring of up to 4 characters as the stop string: matches that start in text already
    # streamed or held back, end inside a multi-byte character's run, or never complete.
    tok = TOKENIZERS[style]()
    ids = tok.encode(text, add_special_tokens=False).ids
    byte_ids = byte_fallback_ids(tok)
    for stop in sorted({text[i:i + n] for n in range(1, 5) for i in range(len(text) - n + 1)}):
        stops = StopStrings([stop, "\x00never"])
        answer = AnswerText(tok, stops, byte_ids)
        streamed, matched = "", None
        for i in ids:
            delta, matched = answer.push(i)
            streamed += delta
            assert stop not in streamed
            if matched is not None:
                break
        else:
            delta, matched = answer.finish()
            streamed += delta
        assert (streamed, matched) == (answer.text, stop) == (text[:text.index(stop)], stop)
