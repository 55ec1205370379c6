"""The answer's text while it streams: detokenised, cut at stop strings, never taken back.

Every delta handed out is final: a partial character waits in the detokenizer, a possible start
of a stop string waits here, and when a stop string completes the text ends before it.

Each token costs time in the new text only, not in the answer so far: the stable text only grows,
so a stop string that a new delta completes starts at most max_len - 1 characters before it, and
only that tail of the old text is kept at hand for searching and holding back.
"""
from __future__ import annotations

from typing import AbstractSet, List, Optional, Tuple

from server.runtime.detokenizer import Decoder, IncrementalDetokenizer
from server.runtime.stop import StopStrings, trim_at_stop


class AnswerText:
    def __init__(self, tokenizer: Decoder, stops: StopStrings,
                 byte_token_ids: Optional[AbstractSet[int]] = None) -> None:
        self._detok = IncrementalDetokenizer(tokenizer, byte_token_ids=byte_token_ids)
        self._stops = stops
        self._keep = max(stops.max_len - 1, 0)  # old characters a stop string can still start in
        self._chunks: List[str] = []  # the stable text, as the detokenizer emitted it
        self._length = 0  # characters of stable text
        self._tail = ""  # its last self._keep characters (all of it while shorter)
        self._sent = 0  # characters handed out so far: a prefix of the stable text until finish()
        self._final: Optional[str] = None  # set once push() reported a stop string or finish() ran

    @property
    def text(self) -> str:
        """The answer: final once push() reported a stop string or finish() ran."""
        return "".join(self._chunks) if self._final is None else self._final

    def push(self, token_id: int) -> Tuple[str, Optional[str]]:
        """Add a generated token; returns (text to stream now, the stop string it completed or None)."""
        delta = self._detok.add(token_id)
        if not delta:
            # Nothing new: the text was searched already, and what may be sent is unchanged.
            return "", None
        window = self._tail + delta
        base = self._length - len(self._tail)  # where the window starts in the stable text
        self._chunks.append(delta)
        self._length += len(delta)
        self._tail = window[max(0, len(window) - self._keep):]
        hit = self._stops.find(window) if self._stops else None
        if hit is not None:
            end = base + hit[0]
            self._final = "".join(self._chunks)[:end]
            return self._send_upto(window, base, end), hit[1]
        end = base + self._stops.safe_length(window) if self._stops else self._length
        return self._send_upto(window, base, end), None

    def finish(self) -> Tuple[str, Optional[str]]:
        """Generation ended (stop token or length): the answer is the full decode, which releases any
        held-back tail, cut at a stop string it completes. Returns (last text to stream, stop string)."""
        sent = "".join(self._chunks)[:self._sent]
        self._final, matched = trim_at_stop(self._detok.full_text(), self._stops)
        # The full decode extends what was sent except after invalid byte sequences that a tokenizer
        # renders differently once more tokens follow (see detokenizer.py); then nothing more is streamed.
        if not self._final.startswith(sent):
            return "", matched
        self._sent = len(self._final)
        return self._final[len(sent):], matched

    def _send_upto(self, window: str, base: int, end: int) -> str:
        """Hand out the stable text up to `end` beyond what was sent; `window` is that text from `base` on."""
        # What was sent reaches base: at most max_len - 1 characters were held back before this delta.
        # end does not fall behind it either (a held-back tail grows into a stop string or is released);
        # the check only makes sure a delta never goes backwards.
        if end < self._sent:
            return ""
        delta = window[self._sent - base:end - base]
        self._sent = end
        return delta
