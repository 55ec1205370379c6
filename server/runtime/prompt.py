"""A prompt laid out on decoder positions: text runs, image runs, and a reuse key per position.

LLaVA puts IMAGE_TOKEN_INDEX (-200) in the prompt ids where an image goes and replaces each
sentinel by that image's N projected embeddings (`prepare_inputs_labels_for_multimodal`), so a
prompt with k images takes len(ids) - k + k * N positions. Each position also gets a key that
says what occupies it: the token id for text, (image hash, index) for an image position. Two
prompts can share cached K/V exactly as far as their keys agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, List, Optional, Sequence, Union

import numpy as np

from models.config import IMAGE_TOKEN_INDEX
from server.runtime.errors import ContextLengthError, RequestError
from server.runtime.image_cache import pixel_hash

ImagesArg = Union[np.ndarray, Sequence[np.ndarray], None]


@dataclass(frozen=True)
class Segment:
    """A run of positions [start, start + length): text token ids, or image number `image`."""

    start: int
    length: int
    token_ids: Optional[np.ndarray] = None  # int64, for text
    image: Optional[int] = None  # index into PromptLayout.images

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class PromptLayout:
    segments: List[Segment]
    images: List[np.ndarray]  # pixel_values [1, 3, S, S], one per sentinel, in order
    image_hashes: List[str]
    keys: List[Hashable]  # one per position

    @property
    def length(self) -> int:
        return len(self.keys)


def split_images(images: ImagesArg) -> List[np.ndarray]:
    """Normalise the images argument to a list of [1, 3, S, S] arrays."""
    if images is None:
        return []
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            return [images[None]]
        if images.ndim == 4:
            return [images[i:i + 1] for i in range(images.shape[0])]
        raise RequestError("pixel_values must be [3, S, S] or [k, 3, S, S], got shape %s" % (images.shape,))
    out: List[np.ndarray] = []
    for img in images:
        out.extend(split_images(np.asarray(img)))
    return out


def layout_prompt(prompt_ids: Sequence[int], images: ImagesArg, num_image_tokens: int, vocab_rows: int,
                  max_context: int) -> PromptLayout:
    """Check a prompt against the engine and lay it out; raises RequestError / ContextLengthError."""
    ids = [int(t) for t in prompt_ids]
    pixels = split_images(images)
    sentinels = ids.count(IMAGE_TOKEN_INDEX)
    if sentinels != len(pixels):
        raise RequestError("the prompt has %d image placeholder(s) but %d image(s) were given"
                           % (sentinels, len(pixels)))
    bad = [t for t in ids if t != IMAGE_TOKEN_INDEX and not 0 <= t < vocab_rows]
    if bad:
        raise RequestError("token id %d is outside the vocabulary (0..%d)" % (bad[0], vocab_rows - 1))
    length = len(ids) - sentinels + sentinels * num_image_tokens
    if length == 0:
        raise RequestError("the prompt is empty")
    if length > max_context:
        raise ContextLengthError(
            "the prompt takes %d positions (%d per image) but the context holds %d: shorten the question or "
            "the conversation history" % (length, num_image_tokens, max_context))
    hashes = [pixel_hash(p) for p in pixels]

    segments: List[Segment] = []
    keys: List[Hashable] = []
    run: List[int] = []
    image_no = 0

    def close_run() -> None:
        if run:
            segments.append(Segment(len(keys) - len(run), len(run), np.asarray(run, dtype=np.int64)))
            del run[:]

    for t in ids:
        if t == IMAGE_TOKEN_INDEX:
            close_run()
            segments.append(Segment(len(keys), num_image_tokens, image=image_no))
            keys.extend((hashes[image_no], j) for j in range(num_image_tokens))
            image_no += 1
        else:
            run.append(t)
            keys.append(t)
    close_run()
    return PromptLayout(segments, pixels, hashes, keys)


def scoped(layout: PromptLayout, scope: str) -> PromptLayout:
    """The layout with every reuse key (and image cache key) tagged with `scope`: two requests then
    share cached K/V and image embeddings only when their scopes are equal too."""
    hashes = ["%s|%s" % (scope, h) for h in layout.image_hashes]
    keys: List[Hashable] = [(scope, k) for k in layout.keys]
    return PromptLayout(layout.segments, layout.images, hashes, keys)


def common_prefix(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common prefix of two key sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
