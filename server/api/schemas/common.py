"""Shapes shared by the generation routes: token usage and per-phase timings."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from server.runtime.results import Timings as RuntimeTimings


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(description="prompt positions reused from the previous request's KV cache")


class Usage(BaseModel):
    prompt_tokens: int = Field(description="prompt positions, image tokens included")
    completion_tokens: int = Field(description="generated tokens, a final stop token included")
    total_tokens: int
    prompt_tokens_details: Optional[PromptTokensDetails] = None


class Timings(BaseModel):
    """Milliseconds per phase (server/runtime/results.py), plus the service's own phases."""

    model_config = ConfigDict(extra="allow")

    queue_ms: float = Field(description="admission to the start of generation")
    preprocess_ms: float = Field(description="image decode, preprocessing and tokenisation")
    image_encode_ms: float
    prefill_ms: float
    ttft_ms: float = Field(description="generation start to the first token")
    decode_ms: float
    decode_tokens_per_s: float
    total_ms: float = Field(description="generation start to the last token")
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    images: int
    images_encoded: int
    image_cache_hits: int
    energy_j: Optional[float] = Field(None, description="joules the device drew while generating (power "
                                      "integrated from start to last token); only where power is readable (jtop)")


class ImageInfo(BaseModel):
    """Facts about the decoded upload (no DICOM tag other than the modality code)."""

    format: str = Field(description="png | jpeg | dicom")
    width: int
    height: int
    frames: int
    frame: int = Field(description="0-based frame that was used (DICOM multi-frame: the middle one by default)")
    modality: Optional[str] = None
    sha256: str


def usage_of(t: RuntimeTimings) -> Usage:
    return Usage(prompt_tokens=t.prompt_tokens, completion_tokens=t.completion_tokens,
                 total_tokens=t.prompt_tokens + t.completion_tokens,
                 prompt_tokens_details=PromptTokensDetails(cached_tokens=t.cached_tokens))
