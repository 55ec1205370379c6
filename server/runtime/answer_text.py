"""The answer's text while it streams: detokenised, cut at stop strings, never taken back.

Every delta handed out is final: a partial character waits in the detokenizer, a possible start
of a stop string waits here, and when a stop string completes the text ends before it.
"""
from __future__ import annotations

from typing import AbstractSet, Optional, Tuple

from server.runtime.detokenizer import Decoder, IncrementalDetokenizer
from server.runtime.stop import StopStrings, trim_at_stop


class AnswerText:
    def __init__(self, tokenizer: Decoder, stops: StopStrings,
                 byte_token_ids: Optional[AbstractSet[int]] = None) -> None:
        self._detok = IncrementalDetokenizer(tokenizer, byte_token_ids=byte_token_ids)
        self._stops = stops
        self._searched = 0  # characters of stable text already searched for stop strings
        self._stable = ""  # the detokenizer's stable text so far
        self.sent = ""  # text handed out so far
        self.text = ""  # the answer: final once push() reported a stop string or finish() ran

    def push(self, token_id: int) -> Tuple[str, Optional[str]]:
        """Add a generated token; returns (text to stream now, the stop string it completed or None)."""
        self._stable += self._detok.add(token_id)  # appended, not the detokenizer's chunks joined again
        stable = self._stable
        hit = self._stops.find(stable, self._searched) if self._stops else None
        self._searched = len(stable)
        if hit is not None:
            self.text = stable[:hit[0]]
            return self._send(self.text), hit[1]
        self.text = stable
        return self._send(stable[:self._stops.safe_length(stable)] if self._stops else stable), None

    def finish(self) -> Tuple[str, Optional[str]]:
        """Generation ended (stop token or length): the answer is the full decode, which releases any
        held-back tail, cut at a stop string it completes. Returns (last text to stream, stop string)."""
        self.text, matched = trim_at_stop(self._detok.full_text(), self._stops)
        return self._send(self.text), matched

    def _send(self, upto: str) -> str:
        # upto extends what was sent except after invalid byte sequences that a tokenizer renders
        # differently once more tokens follow (see detokenizer.py); then nothing more is streamed.
        if not upto.startswith(self.sent):
            return ""
        delta = upto[len(self.sent):]
        self.sent = upto
        return delta
