"""One decoded DICOM frame -> 8-bit RGB for display, in the order PS3.3 C.11 and C.7.6.3.1 give.

Monochrome: Modality LUT (C.11.1: Rescale Slope / Intercept, or a Modality LUT Sequence) -> VOI
(C.11.2: the first Window Center / Width with its VOI LUT Function; without a usable window a
VOI LUT Sequence; without either the frame's own min-max) -> MONOCHROME1 inverted (C.7.6.3.1.2:
the minimum is white) -> grey to RGB. In enhanced multi-frame objects the rescale and window come
from the frame's Per-Frame Functional Groups item, else the Shared Functional Groups, else the
top level (C.7.6.16.2.9 Pixel Value Transformation, C.7.6.16.2.10 Frame VOI LUT).
Colour: PALETTE COLOR through its LUTs (C.7.6.3.1.5), RGB scaled from Bits Stored to 8 bits.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np
from pydicom.dataset import Dataset

from server.imaging.pydicom_compat import apply_color_lut, apply_modality_lut, apply_voi_lut

# Functional group macros holding the rescale and the window (PS3.3 C.7.6.16.2.9, C.7.6.16.2.10).
_RESCALE_MACRO = "PixelValueTransformationSequence"
_VOI_MACRO = "FrameVOILUTSequence"


def render_frame(pixels: np.ndarray, ds: Dataset, index: int, photometric: str) -> np.ndarray:
    """Stored values of frame `index` -> uint8 (rows, columns, 3); `photometric` as decoded."""
    if photometric == "PALETTE COLOR":
        return _to_uint8(apply_color_lut(pixels, ds), None)
    if photometric == "RGB":
        stored = int(ds.get("BitsStored") or ds.BitsAllocated)
        return _to_uint8(pixels, 2 ** stored - 1)
    grey = _monochrome_to_uint8(pixels, ds, index)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return np.repeat(grey[:, :, None], 3, axis=2)


def _monochrome_to_uint8(pixels: np.ndarray, ds: Dataset, index: int) -> np.ndarray:
    # One float64 copy of the frame, transformed in place: 8 bytes a pixel at the largest frame
    # allowed (16.7 Mpx: 134 MB) rather than several temporaries of that size.
    values = _modality_lut(pixels, ds, index)
    window = frame_window(ds, index)
    if window is not None:
        return _rint_uint8(apply_window(values, *window))
    if ds.get("VOILUTSequence"):
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        out = apply_voi_lut(np.rint(values).astype(np.int64), ds, index=0, prefer_lut=True)
        return _rint_uint8(out.astype(np.float64) * (255.0 / (2 ** bits - 1)))
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    values -= low
    values /= high - low
    values *= 255.0
    return _rint_uint8(values)


def _modality_lut(pixels: np.ndarray, ds: Dataset, index: int) -> np.ndarray:
    """C.11.1: the Modality LUT Sequence if present, else output = slope * stored + intercept."""
    if ds.get("ModalityLUTSequence"):
        return apply_modality_lut(pixels, ds).astype(np.float64)
    slope = _number(functional_group_value(ds, index, _RESCALE_MACRO, "RescaleSlope"))
    intercept = _number(functional_group_value(ds, index, _RESCALE_MACRO, "RescaleIntercept"))
    values = pixels.astype(np.float64)
    if slope is not None:
        values *= slope
    if intercept is not None:
        values += intercept
    return values


def frame_window(ds: Dataset, index: int) -> Optional[Tuple[float, float, str]]:
    """(center, width, VOI LUT Function) of frame `index`, or None when there is no usable window."""
    center = _number(functional_group_value(ds, index, _VOI_MACRO, "WindowCenter"))
    width = _number(functional_group_value(ds, index, _VOI_MACRO, "WindowWidth"))
    function = functional_group_value(ds, index, _VOI_MACRO, "VOILUTFunction")
    function = str(function).strip().upper() if function else "LINEAR"
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    if center is None or width is None or width <= 0 or (function == "LINEAR" and width < 1):
        return None  # C.11.2.1.2: Window Width shall be >= 1 (LINEAR) or > 0 (the others)
    return center, width, function


def apply_window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 onto 0..255 (float, not yet rounded), in place on `x`, which it returns.

    LINEAR and LINEAR_EXACT are linear ramps clamped at both ends, so each is its ramp formula
    clipped to 0..255; a LINEAR width of 1 is a step at center - 0.5.
    """
    if function == "SIGMOID":  # C.11.2.1.3.1: y = 255 / (1 + exp(-4 (x - c) / w))
        x -= center
        x *= -4.0
        x /= width
        np.exp(x, out=x)
        x += 1.0
        np.divide(255.0, x, out=x)
        return x
    if function == "LINEAR_EXACT":  # C.11.2.1.3.2: y = ((x - c) / w + 0.5) * 255
        mid, span = center, width
    elif width == 1:  # C.11.2.1.2.1 with w = 1: 0 up to c - 0.5, 255 above
        return np.where(x > center - 0.5, 255.0, 0.0)
    else:  # C.11.2.1.2.1 LINEAR: y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
        mid, span = center - 0.5, width - 1.0
    x -= mid
    x /= span
    x += 0.5
    x *= 255.0
    return np.clip(x, 0.0, 255.0, out=x)


def functional_group_value(ds: Dataset, index: int, macro: str, keyword: str) -> Any:
    """`keyword` for frame `index`: Per-Frame item, then Shared item, then the top level; else None."""
    items = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and index < len(per_frame):
        items.append(per_frame[index])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        items.append(shared[0])
    for item in items:
        group = item.get(macro)
        if group and keyword in group[0]:
            return _value(group[0], keyword)
    return _value(ds, keyword)


def _value(dataset: Dataset, keyword: str) -> Any:
    """The attribute's value, or None when absent or not convertible to its VR (treated as absent)."""
    if keyword not in dataset:
        return None
    try:
        return dataset[keyword].value
    except (ValueError, TypeError, OverflowError):
        return None


def _number(value: Any) -> Optional[float]:
    """The first value of a (possibly multi-valued) DS / FD attribute, or None if unusable."""
    if value is None or isinstance(value, (bytes, str)) and not value.strip():
        return None
    if not isinstance(value, (int, float, str, bytes)):
        try:
            value = value[0]  # multi-valued: the first is the default (C.11.2.1.2)
        except (IndexError, TypeError):
            return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _to_uint8(values: np.ndarray, maximum: Optional[int]) -> np.ndarray:
    """Colour samples to 8 bits: uint8 as they are, wider ones scaled from 0..maximum."""
    if values.dtype == np.uint8:
        return values
    if maximum is None:
        maximum = np.iinfo(values.dtype).max if values.dtype.kind in "ui" else 255
    return _rint_uint8(values.astype(np.float64) * (255.0 / maximum))


def _rint_uint8(values: np.ndarray) -> np.ndarray:
    """Round half to even and clip to 0..255 (in place on `values`), then to uint8."""
    np.rint(values, out=values)
    np.clip(values, 0.0, 255.0, out=values)
    return values.astype(np.uint8)
