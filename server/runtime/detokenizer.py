"""Incremental detokenisation for streaming: emit only text that later tokens cannot change.

Decoding token by token goes wrong two ways: a multi-byte character split over byte tokens
decodes to U+FFFD until its last byte arrives, and decoders that strip a leading space (Llama's
Metaspace/Strip) treat every single-token decode as the start of a text. So each step decodes a
window that starts one emitted chunk back (the prefix gives the decoder its context) and emits
the window's growth only when it does not end in U+FFFD. This is the scheme of Hugging Face
text-generation-inference (`Model.decode_token`).

One more rule for byte-fallback tokenizers (Llama's <0xXX> pieces): the ByteFallback decoder
renders a whole run of byte tokens at once, and an invalid run becomes U+FFFD per byte, even
bytes that were valid ASCII alone. So while the last token is a byte token nothing is emitted
(nor after a skipped special token, which the decode drops and so joins the runs around it);
with that, the streamed text equals the full decode for any id sequence, garbage included.
"""
from __future__ import annotations

import re
from typing import AbstractSet, Any, FrozenSet, List, Optional, Protocol, Sequence

_REPLACEMENT = "\ufffd"
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")  # SentencePiece byte-fallback pieces


class Decoder(Protocol):
    """What the runtime needs from a tokenizer: tokenizers.Tokenizer and TextTokenizer both fit."""

    def decode(self, ids: List[int], skip_special_tokens: bool = True) -> str: ...


def byte_fallback_ids(tokenizer: Any) -> FrozenSet[int]:
    """Ids of <0xXX> byte pieces, read from a tokenizers.Tokenizer (or a wrapper's `.backend`).

    Empty for byte-level BPE (GPT-2, Phi-2), whose decoder has no cross-token byte runs, and for
    objects that expose no vocabulary.
    """
    tok = getattr(tokenizer, "backend", tokenizer)
    get_vocab = getattr(tok, "get_vocab", None)
    if get_vocab is None:
        return frozenset()
    return frozenset(i for t, i in get_vocab(with_added_tokens=False).items() if _BYTE_PIECE.match(t))


def special_token_ids(tokenizer: Any) -> FrozenSet[int]:
    """Ids of special added tokens (what skip_special_tokens drops); empty when not exposed."""
    tok = getattr(tokenizer, "backend", tokenizer)
    added = getattr(tok, "get_added_tokens_decoder", None)
    if added is None:
        return frozenset()
    return frozenset(i for i, t in added().items() if getattr(t, "special", False))


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas whose concatenation is the full decode."""

    def __init__(self, tokenizer: Decoder, skip_special_tokens: bool = True,
                 byte_token_ids: Optional[AbstractSet[int]] = None) -> None:
        """byte_token_ids: the tokenizer's byte-fallback ids; None reads them from the tokenizer
        (pass them in when creating one detokenizer per request, the lookup walks the vocabulary)."""
        self._tok = tokenizer
        self._skip = skip_special_tokens
        if byte_token_ids is None:
            byte_token_ids = byte_fallback_ids(tokenizer)
        # Tokens after which the rendering of the text so far may still change (see module docstring).
        self._hold_ids: AbstractSet[int] = byte_token_ids
        if byte_token_ids and skip_special_tokens:
            self._hold_ids = frozenset(byte_token_ids) | special_token_ids(tokenizer)
        self._ids: List[int] = []
        self._prefix_offset = 0  # window start: tokens before it are emitted and need not be redecoded
        self._read_offset = 0  # tokens before it are emitted
        self._text: List[str] = []

    @property
    def text(self) -> str:
        """All text emitted so far (stable)."""
        return "".join(self._text)

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=self._skip)

    def add(self, token_id: int) -> str:
        """Append one token; return the text that became stable (often "", never a partial character)."""
        self._ids.append(int(token_id))
        if token_id in self._hold_ids:
            return ""  # a byte run renders as a unit: wait for the token that ends it
        prefix = self._decode(self._ids[self._prefix_offset:self._read_offset])
        window = self._decode(self._ids[self._prefix_offset:])
        if len(window) > len(prefix) and not window.endswith(_REPLACEMENT) and window.startswith(prefix):
            delta = window[len(prefix):]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            self._text.append(delta)
            return delta
        return ""

    def flush(self) -> str:
        """At the end of generation: return whatever the full decode adds to what was emitted.

        A sequence that ends inside a character (or in a real U+FFFD) is held back by add(); here it
        is released as the full decode renders it.
        """
        full = self._decode(self._ids)
        emitted = self.text
        if len(full) > len(emitted) and full.startswith(emitted):
            delta = full[len(emitted):]
            self._text.append(delta)
            self._prefix_offset = self._read_offset = len(self._ids)
            return delta
        return ""

    def full_text(self) -> str:
        """The decode of every token at once: the reference the streamed text converges to."""
        return self._decode(self._ids)
