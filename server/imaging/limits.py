"""Caps on untrusted image uploads, and the one error type every refusal raises.

Every refusal is an `ImageInputError` carrying a stable `code` (for clients and metrics), an HTTP
`status` (4xx only: bad input is never a server error) and a message a person can act on. Messages
name sizes, counts and standard UIDs only, never a DICOM tag value or anything else from the file.

Codes: image_unsupported_format (415), image_too_large (413), image_truncated (422),
image_invalid (422), image_frame_out_of_range (422), dicom_invalid (422),
dicom_no_pixel_data (422), dicom_unsupported_transfer_syntax (415), dicom_unsupported_image (415),
dicom_decode_failed (422).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from PIL import Image


class ImageInputError(ValueError):
    """An upload the service will not decode; `code` and `status` say why, for clients and metrics."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class ImageLimits:
    """Caps checked before any pixel is decoded. The service's settings feed these.

    max_pixels is per image (per DICOM frame): 4096 x 4096 is far above what the vision tower
    uses (384 x 384) and well below Pillow's own cap (about 89 Mpx). max_side bounds the
    square canvas the processor pads to. max_dicom_header_bytes bounds the non-pixel part of
    a DICOM file, which pydicom parses element by element (about 4 us and 250 bytes of memory
    per element): an enhanced multi-frame header for a thousand frames stays well below it.
    """

    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_side: int = 8192
    max_dicom_frames: int = 2048
    max_dicom_header_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_side", "max_dicom_frames", "max_dicom_header_bytes"):
            if getattr(self, name) < 1:
                raise ValueError("ImageLimits.%s must be >= 1, got %r" % (name, getattr(self, name)))


def check_dimensions(width: int, height: int, limits: ImageLimits, what: str = "the image") -> None:
    """Refuse a width x height (read from a header) that is empty or over the pixel or side caps."""
    if width < 1 or height < 1:
        raise ImageInputError("image_invalid", "%s declares a size of %d x %d pixels" % (what, width, height))
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise ImageInputError(
            "image_too_large",
            "%s is %d x %d pixels; the limit is %d pixels in all and %d on a side: downscale it "
            "(the model sees 384 x 384) and send it again" % (what, width, height, limits.max_pixels, limits.max_side),
            status=413,
        )


def configure_pillow(max_pixels: int) -> None:
    """Once, at start-up: lower Pillow's process-wide decompression-bomb cap to `max_pixels`
    (never raise it) and make its bomb warning an error.

    Pillow warns above Image.MAX_IMAGE_PIXELS and refuses above twice that, in Image.open, for
    every image it opens in this process, including JPEG frames pydicom hands to it. The header
    checks here refuse oversized images first; this cap is the second line. Both settings are
    process-wide, so they are made once rather than per decode (warnings.catch_warnings around
    each decode is not thread-safe); calling again is harmless.
    """
    if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)  # re-adding moves it first
