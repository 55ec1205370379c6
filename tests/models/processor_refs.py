"""Test references for the processor: LLaVA's own functions transcribed from haotian-liu/LLaVA
llava/mm_utils.py (tokenizer_image_token, expand2square), and synthetic test images.

Kept out of models/ on purpose: tests compare our implementation against these, never against
itself. Imports only numpy and Pillow (usable under Python 3.8).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

IMAGE_TOKEN_INDEX = -200  # LLaVA constants.py


def tokenizer_image_token(prompt: str, encode: Callable[[str], List[int]],
                          bos_token_id: Optional[int]) -> List[int]:
    """LLaVA mm_utils.tokenizer_image_token with `tokenizer(chunk).input_ids` passed as `encode`."""
    prompt_chunks = [encode(chunk) for chunk in prompt.split("<image>")]

    def insert_separator(X, sep):
        return [ele for sublist in zip(X, [sep] * len(X)) for ele in sublist][:-1]

    input_ids = []
    offset = 0
    if len(prompt_chunks) > 0 and len(prompt_chunks[0]) > 0 and prompt_chunks[0][0] == bos_token_id:
        offset = 1
        input_ids.append(prompt_chunks[0][0])
    for x in insert_separator(prompt_chunks, [IMAGE_TOKEN_INDEX] * (offset + 1)):
        input_ids.extend(x[offset:])
    return input_ids


def expand2square(pil_img: Image.Image, background_color: Tuple[int, ...]) -> Image.Image:
    """LLaVA mm_utils.expand2square."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    elif width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    else:
        result = Image.new(pil_img.mode, (height, height), background_color)
        result.paste(pil_img, ((height - width) // 2, 0))
        return result


def noise(h: int, w: int, c: int, seed: int) -> np.ndarray:
    return (np.random.RandomState(seed).rand(h, w, c) * 255).astype(np.uint8)


def ct_like(w: int, h: int) -> Image.Image:
    """A grey-level 'slice': body ellipse, two organs, a bright bone, noise."""
    img = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(img)
    d.ellipse((w * 0.1, h * 0.15, w * 0.9, h * 0.85), fill=90)
    d.ellipse((w * 0.2, h * 0.3, w * 0.45, h * 0.6), fill=140)
    d.ellipse((w * 0.55, h * 0.35, w * 0.75, h * 0.55), fill=60)
    d.rectangle((w * 0.47, h * 0.6, w * 0.53, h * 0.75), fill=250)
    arr = np.asarray(img).astype(np.int16) + np.random.RandomState(7).randint(-12, 13, (h, w))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")


def smooth_rgb(w: int, h: int) -> Image.Image:
    """Gradients with a few shapes: photo-like content where bicubic overshoot matters."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    arr = np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), 128 + 100 * np.sin(x / 7.0 + y / 11.0)], -1)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    ImageDraw.Draw(img).ellipse((w * 0.3, h * 0.3, w * 0.6, h * 0.7), fill=(250, 10, 10))
    return img


# Several sizes and aspect ratios, incl. grayscale, RGBA, palette and smaller-than-input images.
IMAGES: List[Tuple[str, Callable[[], Image.Image]]] = [
    ("wide_noise", lambda: Image.fromarray(noise(48, 100, 3, 1))),
    ("tall_noise", lambda: Image.fromarray(noise(131, 67, 3, 2))),
    ("square_noise", lambda: Image.fromarray(noise(64, 64, 3, 3))),
    ("gray", lambda: Image.fromarray(noise(40, 70, 1, 4)[..., 0], "L")),
    ("rgba", lambda: Image.fromarray(noise(33, 20, 4, 5), "RGBA")),
    ("palette", lambda: smooth_rgb(90, 60).convert("P")),
    ("ct_like", lambda: ct_like(300, 220)),
    ("photo_like_large", lambda: smooth_rgb(640, 480)),
    ("tiny", lambda: Image.fromarray(noise(3, 9, 3, 6))),
]
