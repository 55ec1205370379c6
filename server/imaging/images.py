"""Untrusted image uploads (PNG, JPEG, DICOM) -> an RGB PIL image and patient-free metadata.

The format comes from magic bytes, never from a file name or content type. PNG and JPEG sizes are
read from their headers and checked before Pillow allocates anything; Pillow then opens only the
one expected format; its process-wide pixel cap and bomb-warning filter are set once at start-up
(configure_pillow, by ImagePreparer), not per decode. DICOM goes through server/imaging/dicom.py. Every refusal is an
ImageInputError (server/imaging/limits.py) with a 4xx status and a message a person can act on;
no message or log line carries file content.
"""
from __future__ import annotations

import hashlib
import io
import struct
import zlib
from dataclasses import dataclass
from typing import Dict, Optional, Union

import numpy as np
from PIL import Image

from server.imaging.dicom import decode_dicom
from server.imaging.headers import JPEG_SOI, PNG_SIGNATURE, jpeg_size, png_size
from server.imaging.limits import ImageInputError, ImageLimits, check_dimensions

__all__ = ["DEFAULT_LIMITS", "DecodedImage", "ImageInputError", "ImageLimits", "decode_image", "sniff_format"]

# What Pillow's PNG / JPEG plugins and decoders raise on bad input (OSError covers
# UnidentifiedImageError and "image file is truncated"). Not TypeError/KeyError/IndexError: those
# are bugs, and a bug must be a 500 with a traceback, not a "damaged file" for the user.
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_SIXTEEN_BIT_GREY = ("I;16", "I;16B", "I;16L", "I")  # how Pillow opens 16-bit greyscale PNG
_DICOM_MAGIC_OFFSET = 128  # PS3.10 7.1: a 128-byte preamble, then "DICM"
DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True)
class DecodedImage:
    """The decoded RGB image, and facts about it that are safe to log and return to a client."""

    image: Image.Image
    format: str  # "png" | "jpeg" | "dicom"
    width: int
    height: int
    frames: int  # frames in the upload (DICOM multi-frame), 1 otherwise
    frame: int  # the 0-based frame decoded
    modality: Optional[str]  # DICOM Modality code (CT, MR, CR, ...), None otherwise
    sha256: str  # of the uploaded bytes

    def metadata(self) -> Dict[str, object]:
        return {
            "format": self.format, "width": self.width, "height": self.height, "frames": self.frames,
            "frame": self.frame, "modality": self.modality, "sha256": self.sha256,
        }


def sniff_format(data: bytes) -> Optional[str]:
    """'png', 'jpeg' or 'dicom' from magic bytes; None for anything else."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SOI + b"\xff"):
        return "jpeg"
    if data[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return "dicom"
    return None


def decode_image(
    data: Union[bytes, bytearray, memoryview], frame: Optional[int] = None, limits: ImageLimits = DEFAULT_LIMITS,
    digest: Optional[str] = None,
) -> DecodedImage:
    """Decode an upload to RGB. `frame` (0-based) picks a DICOM frame; default the middle one.

    `digest` is the sha256 hex of `data` when the caller already has it (else it is computed here)."""
    data = bytes(data)
    if not data:
        raise ImageInputError("image_invalid", "the upload is empty: attach a PNG, JPEG or DICOM file")
    if len(data) > limits.max_bytes:
        raise ImageInputError(
            "image_too_large",
            "the upload is %d bytes; the limit is %d: send a smaller or downscaled image" % (len(data), limits.max_bytes),
            status=413,
        )
    kind = sniff_format(data)
    if kind is None:
        raise ImageInputError(
            "image_unsupported_format",
            "the upload is not a PNG, JPEG or DICOM file (DICOM needs the 128-byte preamble and 'DICM'): "
            "export the image in one of these formats",
            status=415,
        )
    if digest is None:
        digest = hashlib.sha256(data).hexdigest()
    if kind == "dicom":
        dicom = decode_dicom(data, frame, limits)
        image = Image.fromarray(dicom.rgb)
        return DecodedImage(image, kind, image.width, image.height, dicom.frames, dicom.frame, dicom.modality, digest)
    if frame not in (None, 0):
        raise ImageInputError(
            "image_frame_out_of_range", "frame %r does not exist: a %s upload has one frame, 0" % (frame, kind.upper())
        )
    image = _decode_with_pillow(data, kind, limits)
    return DecodedImage(image, kind, image.width, image.height, 1, 0, None, digest)


def _decode_with_pillow(data: bytes, kind: str, limits: ImageLimits) -> Image.Image:
    size = png_size(data) if kind == "png" else jpeg_size(data)
    if size is None:
        raise _broken(data, kind)
    check_dimensions(size[0], size[1], limits)
    try:
        with Image.open(io.BytesIO(data), formats=[kind.upper()]) as img:
            check_dimensions(img.width, img.height, limits)
            img.load()
            return _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageInputError(
            "image_too_large", "the image is larger than %d pixels: downscale it and send it again" % limits.max_pixels,
            status=413,
        ) from None
    except _PILLOW_ERRORS:
        raise _broken(data, kind) from None


def _broken(data: bytes, kind: str) -> ImageInputError:
    """Truncated if the stream lacks its end marker (PNG IEND chunk, JPEG EOI), else damaged."""
    tail = data.rstrip(b"\0\r\n ")
    complete = data[-8:-4] == b"IEND" if kind == "png" else tail.endswith(b"\xff\xd9")
    name = kind.upper()
    if not complete:
        return ImageInputError(
            "image_truncated", "the %s file ends early (was the upload cut off?): send the whole file" % name
        )
    return ImageInputError("image_invalid", "the %s file is damaged and could not be decoded" % name)


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB as LLaVA's `.convert("RGB")`, except 16-bit grey, which Pillow would clip at 255."""
    if img.mode in _SIXTEEN_BIT_GREY:
        # PNG 12.5: a sample is a fraction of 2^bitdepth - 1; rescale 0..65535 to 0..255.
        grey = np.asarray(img, dtype=np.float64) * (255.0 / 65535.0)
        grey8 = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey8[:, :, None], 3, axis=2))
    return img.convert("RGB")  # a copy even when already RGB: the opened image is closed after this
