"""The built-in probe set: images and questions that validation and parity checks run on.

Torch-free. The images derive from the shipped sample CT slice (models/assets/sample_ct.png) by
fixed transforms chosen to exercise preprocessing: non-square crops (pad-to-square), a colour
tint (three different channels), an inverted window (MONOCHROME1-like), a small upscale.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageOps

SAMPLE_IMAGE = Path(__file__).resolve().parent / "assets" / "sample_ct.png"

QUESTIONS = (
    "Is there a fracture of the vertebral body?",
    "What imaging modality was used?",
    "Which organ is abnormal in this image?",
    "Is the spinal canal narrowed?",
    "Where is the lesion located?",
    "Are there any calcifications?",
    "Is this a contrast-enhanced scan?",
    "What is the plane of this image?",
)


def _sample() -> Image.Image:
    with Image.open(SAMPLE_IMAGE) as im:
        return im.convert("L")


def builtin_images() -> List[Tuple[str, Image.Image]]:
    """(name, RGB image) pairs, deterministic."""
    base = _sample()
    w, h = base.size
    gray = base.convert("RGB")
    tint = Image.merge("RGB", (base, base.point(lambda v: int(v * 0.8)), base.point(lambda v: 255 - v)))
    return [
        ("ct", gray),
        ("ct-wide-crop", gray.crop((0, h // 4, w, 3 * h // 4))),
        ("ct-tall-crop", gray.crop((w // 3, 0, w, h))),
        ("ct-inverted", ImageOps.invert(gray)),
        ("ct-tinted", tint),
        ("ct-upscaled", gray.resize((w * 3, h * 3), Image.BICUBIC)),
        ("noise", Image.fromarray(np.random.default_rng(0).integers(0, 256, (97, 131, 3), dtype=np.uint8))),
    ]


def image_files(directory: Path) -> List[Tuple[str, Image.Image]]:
    """Every PNG/JPEG under `directory`, sorted by path, as (file name, RGB image)."""
    out = []
    for p in sorted(Path(directory).rglob("*")):
        if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.is_file():
            with Image.open(p) as im:
                out.append((p.name, im.convert("RGB")))
    if not out:
        raise FileNotFoundError("no .png/.jpg/.jpeg files under %s" % directory)
    return out


def probes(extra_images: Optional[Path] = None, questions_per_image: int = 2
           ) -> Iterator[Tuple[str, Image.Image, str]]:
    """(image name, image, question) triples: each image with `questions_per_image` questions, in rotation."""
    images = builtin_images() + (image_files(extra_images) if extra_images else [])
    k = 0
    for name, image in images:
        for _ in range(questions_per_image):
            yield name, image, QUESTIONS[k % len(QUESTIONS)]
            k += 1
