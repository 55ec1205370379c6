"""Procedural X-ray-, CT- and MRI-like images with known findings: the synthetic medical VQA world.

A Scene is what is in one image (modality, body region and its organ, lesions with side, size and
contrast); render() draws it with numpy as a 12-bit-like intensity map, windows it to uint8 and
adds noise. Everything is drawn from one numpy Generator, so a seed fixes every pixel.

The features the questions ask about are large and clear at the model's 64 px input on purpose
(a lesion is at least 7 px across there): the demo model must be able to learn them from pixels.
Sides follow the radiological convention: the patient's left is on the image's right.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

MODALITIES = ("CT", "MRI", "X-ray")
# region -> the organ the questions name (SLAKE's `location` and organ vocabulary)
REGIONS = ("head", "chest", "abdomen")
ORGAN_OF = {"head": "brain", "chest": "lung", "abdomen": "liver"}
# The organ a lesion on each side lies in: in the abdomen the liver is on the patient's right,
# the spleen on the left.
ABNORMAL_ORGAN = {("head", "left"): "brain", ("head", "right"): "brain", ("chest", "left"): "lung",
                  ("chest", "right"): "lung", ("abdomen", "left"): "spleen", ("abdomen", "right"): "liver"}
LOCATION_OF = {"head": "Head", "chest": "Chest", "abdomen": "Abdomen"}  # SLAKE's capitalisation
SIDES = ("left", "right")
SIZES = ("small", "large")
MAX_LESIONS = 3
IMAGE_SIZE = 128  # rendered size; the demo model sees 64 px

# Lesion radius in pixels of the 128 px image: small 7-8.5, large 12-14 (3.5-7 px at 64 px).
_RADIUS = {"small": (7.0, 8.5), "large": (12.0, 14.0)}


@dataclass(frozen=True)
class Lesion:
    x: float  # centre, pixels of the rendered image
    y: float
    radius: float
    bright: bool  # brighter than the organ (hyperdense / hyperintense) or darker
    aspect: float = 1.0  # vertical / horizontal radius


@dataclass(frozen=True)
class Scene:
    modality: str
    region: str
    side: str  # "none" without lesions
    size: str  # "none" without lesions
    lesions: Tuple[Lesion, ...] = ()
    seed: int = 0  # of the rendering noise

    @property
    def organ(self) -> str:
        return ORGAN_OF[self.region]

    @property
    def abnormal_organ(self) -> str:
        return ABNORMAL_ORGAN[(self.region, self.side)] if self.lesions else "none"

    @property
    def abnormal(self) -> bool:
        return bool(self.lesions)

    @property
    def count(self) -> int:
        return len(self.lesions)


def sample_scene(rng: np.random.Generator, modality: str = "", region: str = "", lesions: int = -1,
                 side: str = "", size: str = "") -> Scene:
    """A random scene; any argument given fixes that feature (lesions=-1: random count)."""
    modality = modality or MODALITIES[int(rng.integers(len(MODALITIES)))]
    region = region or REGIONS[int(rng.integers(len(REGIONS)))]
    if lesions < 0:
        # Half the images are normal; abnormal ones have 1, 2 or 3 lesions equally often.
        lesions = 0 if rng.random() < 0.5 else int(rng.integers(1, MAX_LESIONS + 1))
    if lesions == 0:
        return Scene(modality, region, "none", "none", (), int(rng.integers(2 ** 31)))
    side = side or SIDES[int(rng.integers(2))]
    size = size or SIZES[int(rng.integers(2))]
    # Lung lesions are nodules (soft tissue in air, so bright); elsewhere either contrast.
    bright = region == "chest" or bool(rng.random() < 0.5)
    placed: List[Lesion] = []
    for _ in range(200):  # rejection sampling: lesions inside the organ's half, not touching
        if len(placed) == lesions:
            break
        x, y = _lesion_centre(rng, region, side)
        r = float(rng.uniform(*_RADIUS[size]))
        crosses_midline = abs(x - IMAGE_SIZE / 2.0) < r + 2.0  # a lesion stays wholly on its side
        if not crosses_midline and all((x - o.x) ** 2 + (y - o.y) ** 2 > (r + o.radius + 3.0) ** 2 for o in placed):
            placed.append(Lesion(x, y, r, bright, float(rng.uniform(0.85, 1.15))))
    if len(placed) != lesions:  # the organ's half is full: fewer, smaller lesions would mislabel it
        return sample_scene(rng, modality, region, lesions, side, "small")
    return Scene(modality, region, side, size, tuple(placed), int(rng.integers(2 ** 31)))


# Where each organ lies, as (centre x, centre y, half-width, half-height) of the half in which
# lesions are drawn, per image side. The patient's left is the image's right.
_HALF = {
    "head": {"right": (44.0, 64.0, 12.0, 22.0), "left": (84.0, 64.0, 12.0, 22.0)},
    "chest": {"right": (42.0, 62.0, 9.0, 20.0), "left": (86.0, 62.0, 9.0, 20.0)},
    "abdomen": {"right": (44.0, 62.0, 12.0, 16.0), "left": (84.0, 66.0, 12.0, 14.0)},
}


def _lesion_centre(rng: np.random.Generator, region: str, side: str) -> Tuple[float, float]:
    cx, cy, hw, hh = _HALF[region][side]
    return float(cx + rng.uniform(-hw, hw)), float(cy + rng.uniform(-hh, hh))


def without_lesions(scene: Scene) -> Scene:
    """The same image with its lesions taken out: anatomy jitter and noise (scene.seed) unchanged."""
    return Scene(scene.modality, scene.region, "none", "none", (), scene.seed)


def mirrored(scene: Scene) -> Scene:
    """The same image with its lesions mirrored across the midline, to the patient's other side.

    Only for head and chest, whose two halves are drawn symmetric (_HALF); in the abdomen the liver and
    spleen differ, so a mirrored lesion could leave its organ.
    """
    if scene.region not in ("head", "chest") or not scene.lesions:
        raise ValueError("mirrored() needs a head or chest scene with lesions, not %s" % scene.region)
    other = "right" if scene.side == "left" else "left"
    lesions = tuple(Lesion(IMAGE_SIZE - m.x, m.y, m.radius, m.bright, m.aspect) for m in scene.lesions)
    return Scene(scene.modality, scene.region, other, scene.size, lesions, scene.seed)


# ---- drawing -------------------------------------------------------------------------------

_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64)


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((_XX - cx) / rx) ** 2 + ((_YY - cy) / ry) ** 2 <= 1.0


def _soft(mask: np.ndarray) -> np.ndarray:
    """A mask with one pixel of blur at its edge (a 3x3 box), so shapes are not aliased."""
    m = mask.astype(np.float64)
    p = np.pad(m, 1, mode="edge")
    return sum(p[i:i + IMAGE_SIZE, j:j + IMAGE_SIZE] for i in range(3) for j in range(3)) / 9.0


# Tissue intensities per modality in arbitrary "display" units 0..1 after windowing:
# background (air), body soft tissue, bone, the organ, and what a bright / dark lesion adds.
_TISSUE = {
    #          air   body  bone  organ  skin
    "CT": (0.02, 0.45, 0.97, 0.55, 0.45),
    "MRI": (0.03, 0.40, 0.12, 0.60, 0.90),  # cortical bone is dark and fat (the skin ring) bright on MRI
    "X-ray": (0.10, 0.55, 0.90, 0.25, 0.55),  # projection: air-filled lungs are dark, the frame is grey
}
_LESION_DELTA = 0.42  # |lesion - organ| intensity, well above the noise


def render(scene: Scene) -> np.ndarray:
    """The scene as a uint8 greyscale image [IMAGE_SIZE, IMAGE_SIZE]."""
    values, level, width = render_values(scene)
    return window(values, level, width)


def render_values(scene: Scene) -> Tuple[np.ndarray, float, float]:
    """(intensities float64 [IMAGE_SIZE, IMAGE_SIZE], window level, window width) before display:
    what a DICOM file stores, with the window it is meant to be viewed in."""
    rng = np.random.default_rng(scene.seed)
    air, body, bone, organ, skin = _TISSUE[scene.modality]
    img = np.full((IMAGE_SIZE, IMAGE_SIZE), air, dtype=np.float64)
    # Small random jitter of the anatomy so no two normal images are identical.
    jx, jy = rng.uniform(-3, 3, size=2)
    scale = rng.uniform(0.95, 1.05)
    organ_masks = _anatomy(img, scene, jx, jy, scale, body, bone, organ, skin)
    for lesion in scene.lesions:
        delta = _LESION_DELTA if lesion.bright else -_LESION_DELTA
        disc = _soft(_ellipse(lesion.x, lesion.y, lesion.radius, lesion.radius * lesion.aspect))
        img = img + delta * disc * np.clip(organ_masks, 0.6, 1.0)
    if scene.modality == "MRI":  # coil sensitivity: a smooth left-right bias field
        img = img * (0.85 + 0.3 * (_XX / IMAGE_SIZE) * rng.uniform(0.5, 1.0))
    noise = {"CT": 0.035, "MRI": 0.03, "X-ray": 0.025}[scene.modality]
    img = img + rng.normal(0.0, noise, size=img.shape)
    return img, 0.5 + float(rng.uniform(-0.03, 0.03)), 1.0 + float(rng.uniform(-0.05, 0.05))


def window(values: np.ndarray, level: float, width: float) -> np.ndarray:
    """Linear display window (as DICOM VOI: level +- width / 2 maps to 0..255), rounded to uint8."""
    lo = level - width / 2.0
    return np.clip(np.round((values - lo) / width * 255.0), 0, 255).astype(np.uint8)


def _anatomy(img: np.ndarray, scene: Scene, jx: float, jy: float, scale: float, body: float, bone: float,
             organ: float, skin: float) -> np.ndarray:
    """Draw the body outline and organs into img (in place); returns the soft mask lesions sit on."""
    c = IMAGE_SIZE / 2.0
    cx, cy = c + jx, c + jy
    xray = scene.modality == "X-ray"
    if scene.region == "head":
        outer = _ellipse(cx, cy, 40 * scale, 48 * scale)
        inner = _ellipse(cx, cy, 35 * scale, 43 * scale)
        if xray:  # skull radiograph: dense vault, grey inside, no brain detail
            img[outer] = bone
            img[inner] = body
            mask = inner
        else:
            img[_ellipse(cx, cy, 42 * scale, 50 * scale)] = skin
            img[outer] = bone
            img[inner] = organ
            img[_ellipse(cx, cy, 4, 10)] = body  # ventricles
            mask = inner
        return _soft(mask)
    if scene.region == "chest":
        if xray:  # frontal chest film: the body fills the frame
            img[:, 10:118] = body
        else:
            img[_ellipse(cx, cy + 4, 56 * scale, 40 * scale)] = skin
            img[_ellipse(cx, cy + 4, 53 * scale, 37 * scale)] = body
        lungs = _ellipse(cx - 22, cy - 2, 15 * scale, 27 * scale) | _ellipse(cx + 22, cy - 2, 15 * scale, 27 * scale)
        lung_value = organ if xray else 0.12  # aerated lung is dark on CT and MRI too
        img[lungs] = lung_value
        img[_ellipse(cx + 6, cy + 10, 11 * scale, 12 * scale)] = body + 0.08  # heart, to the patient's left
        img[_ellipse(cx, cy + 30, 6, 6)] = bone  # vertebra
        if xray:
            for k in range(5):  # ribs
                y = cy - 24 + 11 * k
                img[(np.abs(_YY - y - 0.08 * np.abs(_XX - cx)) < 1.3) & lungs] = bone * 0.75
        return _soft(lungs)
    # abdomen
    if xray:
        img[:, 8:120] = body
        for k in range(6):  # bowel gas
            gx, gy = 40 + 9 * k + jx, 80 + 6 * (k % 2)
            img[_ellipse(gx, gy, 4, 3)] = 0.2
    else:
        img[_ellipse(cx, cy, 56 * scale, 42 * scale)] = skin
        img[_ellipse(cx, cy, 53 * scale, 39 * scale)] = body
    liver = _ellipse(cx - 20, cy - 4, 24 * scale, 20 * scale)  # the liver is on the patient's right
    spleen = _ellipse(cx + 24, cy + 2, 13 * scale, 15 * scale)
    img[liver | spleen] = organ if not xray else body + 0.1
    img[_ellipse(cx, cy + 28, 6, 6)] = bone  # vertebra
    return _soft(liver | spleen)


__all__ = ["ABNORMAL_ORGAN", "IMAGE_SIZE", "LOCATION_OF", "Lesion", "MODALITIES", "ORGAN_OF", "REGIONS", "SIDES", "SIZES", "Scene",
           "mirrored", "render", "render_values", "sample_scene", "window", "without_lesions"]
