"""What generation returns: streamed deltas, the final result, and per-phase timings."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Union

import numpy as np


def ms(seconds: float) -> float:
    """Seconds as milliseconds, rounded to the microsecond (how every timing is reported)."""
    return round(seconds * 1000.0, 3)


@dataclass
class Timings:
    image_encode_ms: float = 0.0  # vision graph time; 0 when every image came from cache or reuse
    prefill_ms: float = 0.0  # decoder over the prompt positions that were not reused
    ttft_ms: float = 0.0  # request start -> first token chosen
    decode_ms: float = 0.0  # first token -> last token, without time the stream's consumer held it
    decode_tokens_per_s: float = 0.0  # decoder steps after the first token / decode_ms
    total_ms: float = 0.0  # wall time of the request (a streaming consumer's time included)
    prompt_tokens: int = 0  # decoder positions of the prompt, image tokens expanded
    completion_tokens: int = 0  # generated tokens, a stop token included
    cached_tokens: int = 0  # prompt positions reused from the previous request's KV cache
    images: int = 0
    images_encoded: int = 0  # images that ran the vision graph
    image_cache_hits: int = 0  # images whose embeddings came from the cache

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class StreamDelta:
    """One generated token and the text it made stable (may be "")."""

    token_id: int
    text: str
    finish_reason: Optional[str] = None  # set on the last delta: "stop" | "length"


@dataclass
class GenerationResult:
    output_ids: List[int]  # generated tokens; a terminating stop token is not included
    text: str  # decode of output_ids, cut before the first stop string
    finish_reason: str  # "stop" (stop token or stop string) | "length" (max_tokens or context full)
    timings: Timings = field(default_factory=Timings)
    stop: Optional[Union[int, str]] = None  # the stop token id or stop string that ended it
    logits: Optional[np.ndarray] = None  # [steps, V] float32 when return_logits; row i chose token i
