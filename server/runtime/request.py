"""What one generation request asks for, validated before any work starts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from server.runtime.errors import RequestError
from server.runtime.sampling import SamplingParams


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 256
    temperature: float = 0.0  # <= 0: greedy
    top_k: int = 0
    top_p: float = 1.0
    seed: Optional[int] = None
    stop: Tuple[str, ...] = ()  # stop strings: the answer ends before the first one
    stop_token_ids: Tuple[int, ...] = ()  # stop tokens besides the tokenizer's EOS
    ignore_eos: bool = False  # benchmarks: run to max_tokens through EOS and stop tokens
    return_logits: bool = False  # validation: keep each step's logits [V] float32
    # validation: take these tokens in order instead of sampling (teacher forcing), then sample
    forced_tokens: Tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.max_tokens < 0:
            raise RequestError("max_tokens must be >= 0, got %r" % self.max_tokens)
        # Lists from JSON become tuples, so the params stay hashable and immutable; a lone string or
        # id (OpenAI's `stop` may be either a string or a list) is one stop, not a sequence of them.
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        ids = (self.stop_token_ids,) if isinstance(self.stop_token_ids, int) else self.stop_token_ids
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in ids))
        object.__setattr__(self, "forced_tokens", tuple(int(t) for t in self.forced_tokens))
        SamplingParams(self.temperature, self.top_k, self.top_p, self.seed)  # raises RequestError on bad values

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_k, self.top_p, self.seed)
