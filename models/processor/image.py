"""Image -> pixel_values with Pillow and numpy, as LLaVA + the Hugging Face image processors do it.

Order (LLaVA `process_images` after `Image.open(...).convert("RGB")`):
  1. RGB conversion (alpha is dropped, not composited: LLaVA converts before the processor);
  2. aspect "pad": expand2square, pasting the image centred on a square of the mean colour;
  3. resize with Pillow: SigLIP to size x size; CLIP shortest edge to size, then centre crop;
  4. rescale (float64 multiply, then float32) and normalise in float32, channels first.
Steps 3-4 reproduce transformers' PIL image processors (SiglipImageProcessor / CLIPImageProcessor,
`*ImageProcessorPil` in transformers 5) operation for operation, so the result is bit-identical.
"""
from __future__ import annotations

import io
from typing import Tuple, Union

import numpy as np
from PIL import Image

from models.config import ConfigError, ImageConfig

ImageInput = Union[Image.Image, bytes, bytearray, memoryview]

_RESAMPLE = getattr(Image, "Resampling", Image)  # Pillow >= 9.1 moved the filters into an enum
RESAMPLE_FILTERS = {
    "nearest": _RESAMPLE.NEAREST,
    "bilinear": _RESAMPLE.BILINEAR,
    "bicubic": _RESAMPLE.BICUBIC,
    "lanczos": _RESAMPLE.LANCZOS,
    "box": _RESAMPLE.BOX,
    "hamming": _RESAMPLE.HAMMING,
}


class ImageError(ValueError):
    """The input is not an image this processor can read."""


def to_rgb(image: ImageInput) -> Image.Image:
    """Decode bytes if needed and convert to RGB (LLaVA: `Image.open(f).convert("RGB")`)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        try:
            image = Image.open(io.BytesIO(bytes(image)))
            image.load()
        except (OSError, SyntaxError, ValueError) as e:  # Pillow's ways of saying "not an image"
            raise ImageError("could not decode the image (%s); send a PNG or JPEG file" % e) from None
    if not isinstance(image, Image.Image):
        raise ImageError("expected a PIL image or encoded image bytes, got %s" % type(image).__name__)
    return image if image.mode == "RGB" else image.convert("RGB")


def expand2square(image: Image.Image, fill: Tuple[int, int, int]) -> Image.Image:
    """LLaVA mm_utils.expand2square: centre the image on a square canvas of colour `fill`."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def shortest_edge_size(height: int, width: int, size: int) -> Tuple[int, int]:
    """(height, width) with the short side at `size` (transformers get_resize_output_image_size,
    default_to_square=False: the long side is truncated with int(), not rounded)."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    return (new_long, size) if width <= height else (size, new_long)


def resize_and_crop(image: Image.Image, cfg: ImageConfig) -> np.ndarray:
    """Pillow resize (+ CLIP centre crop) to cfg.size; returns uint8 [H, W, 3]."""
    try:
        resample = RESAMPLE_FILTERS[cfg.resample]
    except KeyError:
        raise ConfigError("unsupported resample %r (supported: %s)" % (cfg.resample, ", ".join(RESAMPLE_FILTERS))) from None
    size = cfg.size
    if cfg.resize == "exact":
        out_h, out_w = size, size
    elif cfg.resize == "shortest_edge_crop":
        out_h, out_w = shortest_edge_size(image.height, image.width, size)
    else:
        raise ConfigError("unsupported resize rule %r (supported: exact, shortest_edge_crop)" % cfg.resize)
    # transformers passes reducing_gap=None: one exact resampling pass, no draft reduction.
    arr = np.asarray(image.resize((out_w, out_h), resample=resample, reducing_gap=None))
    if (out_h, out_w) != (size, size):
        # transformers center_crop offsets; the short side already equals `size`.
        top, left = (out_h - size) // 2, (out_w - size) // 2
        arr = arr[top:top + size, left:left + size]
    return arr


def normalize(arr: np.ndarray, cfg: ImageConfig) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [3, H, W], rescaled and normalised in transformers' dtypes."""
    chw = np.ascontiguousarray(arr.transpose(2, 0, 1))
    # transformers `rescale`: upcast to float64, multiply, then cast to float32.
    x = (chw.astype(np.float64) * cfg.rescale_factor).astype(np.float32)
    # transformers `normalize`: float32 mean/std, (x - mean) / std per channel.
    mean = np.asarray(cfg.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(cfg.std, dtype=np.float32).reshape(3, 1, 1)
    return (x - mean) / std


def preprocess(image: ImageInput, cfg: ImageConfig) -> np.ndarray:
    """One image -> pixel_values float32 [1, 3, size, size]."""
    rgb = to_rgb(image)
    if cfg.aspect == "pad":
        rgb = expand2square(rgb, cfg.pad_fill)
    elif cfg.aspect != "square":
        raise ConfigError("unsupported aspect rule %r (supported: pad, square)" % cfg.aspect)
    return normalize(resize_and_crop(rgb, cfg), cfg)[None]


__all__ = ["ImageError", "ImageInput", "RESAMPLE_FILTERS", "expand2square", "normalize", "preprocess",
           "resize_and_crop", "shortest_edge_size", "to_rgb"]
