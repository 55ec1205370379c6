"""Stop strings on decoded text: find the first match, and hold back what could still become one.

Matching runs on text, not token ids, because one stop string ("###", "</s>" spelled out by the
model) can arrive split over tokens in many ways. While streaming, the tail of the text that is a
prefix of some stop string is held back: if the stop string completes, that tail is never sent.
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple


class StopStrings:
    def __init__(self, stops: Iterable[str] = ()) -> None:
        self.stops: Tuple[str, ...] = tuple(dict.fromkeys(s for s in stops if s))  # drop "" and repeats
        self.max_len = max((len(s) for s in self.stops), default=0)

    def __bool__(self) -> bool:
        return bool(self.stops)

    def find(self, text: str, start: int = 0) -> Optional[Tuple[int, str]]:
        """(index, stop string) of the earliest match that ends after `start`, or None.

        `start` is how much of `text` was searched before: a match must end past it, so only the
        last max_len - 1 characters before it are searched again.
        """
        lo = max(0, start - self.max_len + 1)
        best: Optional[Tuple[int, str]] = None
        for s in self.stops:
            i = text.find(s, lo)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
        return best

    def safe_length(self, text: str) -> int:
        """Length of the prefix of `text` that no continuation can turn into part of a stop string."""
        for n in range(min(self.max_len - 1, len(text)), 0, -1):
            tail = text[len(text) - n:]
            if any(s.startswith(tail) for s in self.stops):
                return len(text) - n
        return len(text)


def trim_at_stop(text: str, stops: StopStrings) -> Tuple[str, Optional[str]]:
    """text cut before the first stop string, and that string (None when none occurs)."""
    hit = stops.find(text)
    if hit is None:
        return text, None
    return text[:hit[0]], hit[1]
