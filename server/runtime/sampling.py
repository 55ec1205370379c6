"""Next-token choice: greedy, or sampling with temperature, top-k and top-p, seeded per request.

Semantics follow transformers' generate (the oracle the bundle is validated against): the warpers
apply in its order, temperature -> top-k -> top-p (GenerationMixin._get_logits_processor), with
TopKLogitsWarper keeping every token tied with the k-th score and TopPLogitsWarper keeping the
smallest set of top tokens whose probability reaches top_p, never fewer than one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from server.runtime.errors import RequestError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # <= 0: greedy, and top_k / top_p are ignored (transformers' do_sample=False)
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    seed: Optional[int] = None  # None: fresh OS entropy per request

    def __post_init__(self) -> None:
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise RequestError("temperature must be a finite number >= 0, got %r" % self.temperature)
        if self.top_k < 0:
            raise RequestError("top_k must be >= 0 (0 turns it off), got %r" % self.top_k)
        if not 0.0 < self.top_p <= 1.0:
            raise RequestError("top_p must be in (0, 1], got %r" % self.top_p)
        if self.seed is not None and self.seed < 0:
            raise RequestError("seed must be >= 0, got %r" % self.seed)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def greedy(logits: np.ndarray) -> int:
    """argmax over [V]; among ties the lowest id, as torch.argmax and np.argmax both return."""
    return int(np.argmax(logits))


def warp_logits(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Scaled logits [V] (float64) with the tokens outside top-k / top-p set to -inf."""
    scores = np.asarray(logits, dtype=np.float64).reshape(-1) / temperature
    v = scores.shape[0]
    if 0 < top_k < v:
        kth = np.partition(scores, v - top_k)[v - top_k]
        scores = np.where(scores < kth, -np.inf, scores)
    if top_p < 1.0:
        # Stable sort on the negated scores: among equal scores the lower id ranks first, so the
        # set kept at a tie is deterministic (transformers leaves that to torch.sort).
        order = np.argsort(-scores, kind="stable")
        ranked = scores[order]
        probs = np.exp(ranked - ranked[0])
        probs /= probs.sum()
        keep = int(np.searchsorted(np.cumsum(probs), top_p, side="left")) + 1
        scores = scores.copy()
        scores[order[min(keep, v):]] = -np.inf
    return scores


def probabilities(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """The distribution [V] (float64) that `Sampler` draws from; one-hot on the argmax when greedy."""
    if params.greedy:
        out = np.zeros(np.asarray(logits).reshape(-1).shape[0], dtype=np.float64)
        out[greedy(logits)] = 1.0
        return out
    scores = warp_logits(logits, params.temperature, params.top_k, params.top_p)
    probs = np.exp(scores - scores.max())
    return probs / probs.sum()


class Sampler:
    """Chooses tokens for one request; holds that request's random generator."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        # Made at the first draw: seeding from OS entropy costs ~25 us, which a greedy request (the
        # default) would pay before its first token for nothing.
        self._rng: Optional[np.random.Generator] = None

    def __call__(self, logits: np.ndarray) -> int:
        if self.params.greedy:
            return greedy(logits)
        if self._rng is None:
            self._rng = np.random.default_rng(self.params.seed)
        probs = probabilities(logits, self.params)
        cdf = np.cumsum(probs)
        # Inverse CDF with side="right": zero-probability tokens add no width to the CDF, so the
        # draw lands on a token with positive probability; the guard covers u * total rounding up.
        idx = int(np.searchsorted(cdf, self._rng.random() * cdf[-1], side="right"))
        if idx >= cdf.shape[0]:
            idx = int(np.flatnonzero(probs)[-1])
        return idx
