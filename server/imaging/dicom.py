"""DICOM Part 10 uploads -> one frame as 8-bit RGB, with every cap checked before any pixel is decoded.

Order:
  1. the transfer syntax, from the file meta group alone: Deflated is refused before pydicom would
     inflate the whole dataset (a zlib bomb), unknown syntaxes before anything else is parsed;
  2. the attributes before Pixel Data, parsed by pydicom from at most max_dicom_header_bytes;
  3. Rows, Columns, frames, samples and bits against the caps (server/imaging/limits.py);
  4. the Pixel Data element located by hand (nothing after it is parsed), the chosen frame cut out
     (native) or split out (encapsulated), and its JPEG / JPEG 2000 header checked against Rows and Columns;
  5. that single frame decoded: RLE by server/imaging/dicom_rle.py, the others by pydicom's plugins
     (numpy; Pillow; pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg where installed);
  6. display rendering by server/imaging/dicom_display.py.
Frame rule: the middle frame, index frames // 2 (0-based), unless the caller names one.
Supports pydicom 2.4 (the newest on Python 3.8, JetPack 5) and pydicom 3.
"""
from __future__ import annotations

import io
import itertools
import logging
import re
import struct
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import UID

from server.imaging.dicom_display import render_frame
from server.imaging.dicom_rle import RLEError, decode_rle_frame
from server.imaging.headers import j2k_size, jpeg_size
from server.imaging.limits import ImageInputError, ImageLimits, check_dimensions
from server.imaging.pydicom_compat import (
    decode_only_frame,
    decoder_available,
    file_encoding,
    iter_frames,
    read_file_meta,
    ybr_full_to_rgb,
)

logger = logging.getLogger(__name__)

# PS3.6 Annex A transfer syntax UIDs.
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
_NATIVE = frozenset([IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE])
# JPEG baseline, extended, lossless (2), JPEG-LS lossless and near-lossless: T.81 / T.87 frame headers.
_JPEG_FAMILY = frozenset("1.2.840.10008.1.2.4.%s" % s for s in ("50", "51", "57", "70", "80", "81"))
# JPEG 2000 lossless / lossy and High-Throughput JPEG 2000 (three): ISO 15444 SIZ headers.
_J2K_FAMILY = frozenset("1.2.840.10008.1.2.4.%s" % s for s in ("90", "91", "201", "202", "203"))

_PIXEL_DATA = 0x7FE00010
_LONG_LENGTH_VRS = (b"OB", b"OW", b"UN")  # what Pixel Data may carry in explicit VR (PS3.5 7.1.2)
_UNDEFINED_LENGTH = 0xFFFFFFFF
_COLOUR = frozenset(["RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"])
_MONOCHROME = frozenset(["MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"])
_MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")  # CS value of a defined term (PS3.3 C.7.3.1.1.1)

_INSTALL_HINT = (
    "install pylibjpeg with pylibjpeg-libjpeg (JPEG, JPEG-LS) or pylibjpeg-openjpeg (JPEG 2000), "
    "or send the image uncompressed (Explicit VR Little Endian)"
)


@dataclass(frozen=True)
class DicomImage:
    """One rendered frame and the facts about it that are not patient data."""

    rgb: np.ndarray  # uint8 (rows, columns, 3)
    frames: int
    frame: int
    modality: Optional[str]


def decode_dicom(data: bytes, frame: Optional[int], limits: ImageLimits) -> DicomImage:
    """Decode one frame of a DICOM Part 10 file; every failure is an ImageInputError (4xx)."""
    # pydicom's warnings quote element values (patient data): configure_pydicom, at start-up,
    # silences them process-wide (a warnings.catch_warnings here would not be thread-safe).
    try:
        return _decode(data, frame, limits)
    except ImageInputError:  # a ValueError too: ours, with its own message
        raise
    except _PYDICOM_ERRORS as exc:
        # The message may quote the file: log the type only, and drop the chain (from None).
        logger.info("DICOM upload refused after %s", type(exc).__name__)
        raise ImageInputError(
            "dicom_invalid", "the DICOM file is damaged or not a DICOM image and could not be read"
        ) from None


# What pydicom raises on damaged bytes (on pydicom 2.4 and 3: a byte-mutation fuzz of its test files,
# and tests/server/imaging/test_images_dicom.py's mutation test, which keeps four of them). Not TypeError/KeyError/IndexError: those are bugs, and a bug must be a
# 500 with a traceback, not a "damaged file" for the user.
_PYDICOM_ERRORS = (InvalidDicomError, BytesLengthException, ValueError, OSError, EOFError, struct.error,
                   NotImplementedError, OverflowError)


def _decode(data: bytes, frame: Optional[int], limits: ImageLimits) -> DicomImage:
    # Everything before Pixel Data is parsed from this prefix only: pydicom spends about 4 us
    # and 250 bytes per element, so a file of millions of tiny elements must not reach it whole.
    prefix = data[: limits.max_dicom_header_bytes]
    syntax = _file_meta_transfer_syntax(prefix)
    ds, pixel_offset = _read_header(prefix, len(prefix) < len(data), limits)
    if syntax is None:  # no (0002,0010): pydicom guessed the encoding; record what it found
        syntax = _guessed_syntax(ds)
        ds.file_meta.TransferSyntaxUID = syntax
    rows, columns, frames, index = _check_geometry(ds, frame, limits)
    photometric = _photometric(ds)
    value, encapsulated = _pixel_element(data, pixel_offset, syntax)
    if syntax in _NATIVE:
        pixels = _decode_native(ds, value, encapsulated, rows, columns, frames, index, photometric)
    else:
        fragment = _encapsulated_frame(ds, value, encapsulated, frames, index)
        pixels = _decode_compressed(ds, fragment, syntax, rows, columns, photometric)
    if photometric in _COLOUR:  # every decode path above returns colour as RGB
        photometric = "RGB"
    expected = (rows, columns) if _int(ds, "SamplesPerPixel", 1) == 1 else (rows, columns, 3)
    if pixels.shape != expected:
        raise ImageInputError("dicom_invalid", "the decoded frame does not match Rows, Columns and Samples per Pixel")
    return DicomImage(render_frame(pixels, ds, index, photometric), frames, index, _modality(ds))


def _file_meta_transfer_syntax(prefix: bytes) -> Optional[str]:
    syntax = read_file_meta(io.BytesIO(prefix)).get("TransferSyntaxUID")
    if not syntax:
        return None
    syntax = str(syntax).strip("\0 ")
    if syntax == DEFLATED_LE:
        raise ImageInputError(
            "dicom_unsupported_transfer_syntax",
            "Deflated Explicit VR Little Endian DICOM is refused: a deflated dataset must be inflated "
            "whole before any size can be checked; send it uncompressed or with RLE / JPEG pixel data",
            status=415,
        )
    if syntax not in _NATIVE and syntax != RLE_LOSSLESS and syntax not in _JPEG_FAMILY | _J2K_FAMILY:
        raise ImageInputError(
            "dicom_unsupported_transfer_syntax",
            "%s is not a transfer syntax this server decodes; send the image uncompressed "
            "(Explicit VR Little Endian), RLE, JPEG, JPEG-LS or JPEG 2000" % _syntax_name(syntax),
            status=415,
        )
    return syntax


def _syntax_name(syntax: str) -> str:
    uid = UID(syntax)
    if uid.name != syntax:
        return "'%s' (%s)" % (uid.name, syntax)
    return "transfer syntax %s" % syntax if re.match(r"^[0-9.]{1,64}$", syntax) else "this transfer syntax"


def _read_header(prefix: bytes, clipped: bool, limits: ImageLimits) -> Tuple[Dataset, int]:
    """Parse the elements before Pixel Data; return the dataset and the Pixel Data offset."""
    fp = io.BytesIO(prefix)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
    except _PYDICOM_ERRORS:  # raised by pydicom only (nothing of ours runs inside dcmread)
        if not clipped:
            raise
        raise ImageInputError(
            "dicom_invalid",
            "the DICOM attributes before the pixel data could not be read within the first %d bytes "
            "(the file is damaged, or its header is larger than this server accepts)" % limits.max_dicom_header_bytes,
        ) from None
    offset = fp.tell()
    tag = _read_tag(prefix, offset, file_encoding(ds)[1])
    if tag is None or tag >> 16 != 0x7FE0:
        if clipped:
            raise ImageInputError(
                "image_too_large",
                "the DICOM attributes before the pixel data exceed %d bytes; this server accepts "
                "smaller headers" % limits.max_dicom_header_bytes,
                status=413,
            )
        raise ImageInputError(
            "dicom_no_pixel_data", "this DICOM object has no pixel data (a report, a series index or similar)"
        )
    if tag != _PIXEL_DATA:  # Float / Double Float Pixel Data (parametric maps)
        raise ImageInputError(
            "dicom_unsupported_image", "floating-point DICOM pixel data is not supported", status=415
        )
    return ds, offset


def _read_tag(buf: bytes, offset: int, little: bool) -> Optional[int]:
    if offset + 4 > len(buf):
        return None
    group, element = struct.unpack("<HH" if little else ">HH", buf[offset : offset + 4])
    return group << 16 | element


def _guessed_syntax(ds: Dataset) -> str:
    implicit, little = file_encoding(ds)
    return IMPLICIT_LE if implicit else (EXPLICIT_LE if little else EXPLICIT_BE)


def _int(ds: Dataset, keyword: str, default: Optional[int] = None) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        if default is None:
            raise ImageInputError("dicom_invalid", "the DICOM image has no %s attribute" % keyword)
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ImageInputError("dicom_invalid", "the DICOM %s attribute is not a number" % keyword) from None


def _check_geometry(ds: Dataset, frame: Optional[int], limits: ImageLimits) -> Tuple[int, int, int, int]:
    """Rows, Columns, frames and the frame index, all checked; also samples and bits."""
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    check_dimensions(columns, rows, limits, what="the DICOM image")
    frames = _int(ds, "NumberOfFrames", 1)
    if frames < 1:
        raise ImageInputError("dicom_invalid", "the DICOM Number of Frames is %d" % frames)
    if frames > limits.max_dicom_frames:
        raise ImageInputError(
            "image_too_large",
            "the DICOM object has %d frames; the limit is %d: send the frame of interest as its own "
            "file" % (frames, limits.max_dicom_frames),
            status=413,
        )
    samples = _int(ds, "SamplesPerPixel", 1)
    bits = _int(ds, "BitsAllocated")
    stored = _int(ds, "BitsStored", bits)
    if samples not in (1, 3) or bits not in (1, 8, 16, 32):
        raise ImageInputError(
            "dicom_unsupported_image",
            "DICOM pixel data with %d samples of %d bits is not supported (1 or 3 samples of 1, 8, 16 "
            "or 32 bits are)" % (samples, bits),
            status=415,
        )
    representation = _int(ds, "PixelRepresentation", 0)
    if not 1 <= stored <= bits or representation not in (0, 1):
        raise ImageInputError("dicom_invalid", "the DICOM Bits Stored or Pixel Representation is out of range")
    # pydicom's decoders need these Type 1 attributes that older writers leave out: give them the
    # values assumed above, so every decode path reads the frame the same way.
    ds.SamplesPerPixel, ds.BitsStored, ds.PixelRepresentation = samples, stored, representation
    if samples == 3 and "PlanarConfiguration" not in ds:
        ds.PlanarConfiguration = 0
    if frame is None:
        index = frames // 2
    elif isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame < frames:
        raise ImageInputError(
            "image_frame_out_of_range",
            "frame %r does not exist: this DICOM object has %d frame(s), numbered 0 to %d"
            % (frame, frames, frames - 1),
        )
    else:
        index = frame
    return rows, columns, frames, index


def _photometric(ds: Dataset) -> str:
    value = ds.get("PhotometricInterpretation")
    photometric = str(value).strip() if value else ""
    samples = _int(ds, "SamplesPerPixel", 1)
    if photometric in _MONOCHROME and samples == 1 or photometric in _COLOUR and samples == 3:
        return photometric
    known = photometric in _MONOCHROME | _COLOUR
    raise ImageInputError(
        "dicom_unsupported_image",
        "this DICOM Photometric Interpretation is not supported (MONOCHROME1/2, PALETTE COLOR, RGB "
        "and YBR are)" if not known else "the DICOM Photometric Interpretation does not match Samples per Pixel",
        status=415,
    )


def _pixel_element(data: bytes, offset: int, syntax: str) -> Tuple[bytes, bool]:
    """The Pixel Data value (to the end of the file when encapsulated) and whether it is encapsulated."""
    little = syntax != EXPLICIT_BE
    if offset + 12 > len(data):
        raise ImageInputError("image_truncated", "the DICOM file ends inside its Pixel Data header: send the whole file")
    if syntax != IMPLICIT_LE and data[offset + 4 : offset + 6] in _LONG_LENGTH_VRS:
        header = 12
        (length,) = struct.unpack("<I" if little else ">I", data[offset + 8 : offset + 12])
    else:  # implicit VR, or an explicit-VR file that switches to implicit (pydicom reads those too)
        header = 8
        (length,) = struct.unpack("<I" if little else ">I", data[offset + 4 : offset + 8])
    start = offset + header
    if length == _UNDEFINED_LENGTH:
        return data[start:], True
    return data[start : start + length], False


def _decode_native(
    ds: Dataset, value: bytes, encapsulated: bool, rows: int, columns: int, frames: int, index: int, photometric: str
) -> np.ndarray:
    if encapsulated:
        raise ImageInputError("dicom_invalid", "uncompressed DICOM pixel data must not be encapsulated")
    # PS3.3 C.7.6.3.1.2: YBR_FULL_422 stores two luminance and one pair of chroma samples per two pixels.
    samples = 2 if photometric == "YBR_FULL_422" else _int(ds, "SamplesPerPixel", 1)
    frame_bits = rows * columns * samples * int(ds.BitsAllocated)
    needed = (frame_bits * frames + 7) // 8
    if len(value) < needed:
        raise ImageInputError(
            "image_truncated",
            "the DICOM pixel data holds %d bytes; Rows x Columns x frames need %d: the file is "
            "truncated, send it again" % (len(value), needed),
        )
    if frames > 1 and frame_bits % 8:
        raise ImageInputError(
            "dicom_unsupported_image", "1-bit multi-frame pixel data whose frames share bytes is not supported",
            status=415,
        )
    if frames > 1:
        value = value[index * frame_bits // 8 : (index + 1) * frame_bits // 8]
    else:
        value = value[:needed]
    if len(value) % 2:  # PS3.5 7.1.1: values have even length
        value += b"\0"
    return decode_only_frame(ds, value, encapsulated=False)


def _encapsulated_frame(ds: Dataset, value: bytes, encapsulated: bool, frames: int, index: int) -> bytes:
    if not encapsulated:
        raise ImageInputError("dicom_invalid", "compressed DICOM pixel data must be encapsulated")
    frame = next(itertools.islice(iter_frames(ds, value, frames), index, None), None)
    if frame is None:
        raise ImageInputError("dicom_invalid", "the DICOM pixel data holds fewer frames than Number of Frames")
    return frame


def _decode_compressed(
    ds: Dataset, fragment: bytes, syntax: str, rows: int, columns: int, photometric: str
) -> np.ndarray:
    """Decode one compressed frame to its stored values (colour as RGB)."""
    if syntax == RLE_LOSSLESS:
        try:
            pixels = decode_rle_frame(
                fragment, rows, columns, _int(ds, "SamplesPerPixel", 1), int(ds.BitsAllocated),
                signed=_int(ds, "PixelRepresentation", 0) == 1,
            )
        except RLEError as exc:  # our own message: sizes and counts only
            raise ImageInputError("dicom_invalid", "the RLE pixel data is damaged: %s" % exc) from None
        return ybr_full_to_rgb(pixels) if photometric == "YBR_FULL" else pixels
    # The codec sizes its buffer from the stream's own header, not from Rows and Columns (which
    # are capped already): a frame that disagrees with them is refused before it is decoded.
    size = jpeg_size(fragment) if syntax in _JPEG_FAMILY else j2k_size(fragment)
    if size is None:
        raise ImageInputError("dicom_invalid", "a compressed DICOM frame has no readable image header")
    if size != (columns, rows):
        raise ImageInputError(
            "dicom_invalid",
            "a compressed DICOM frame is %d x %d pixels but Columns x Rows say %d x %d" % (size + (columns, rows)),
        )
    if not decoder_available(syntax):
        raise ImageInputError(
            "dicom_unsupported_transfer_syntax",
            "this server has no decoder for %s pixel data: %s" % (_syntax_name(syntax), _INSTALL_HINT),
            status=415,
        )
    try:
        return decode_only_frame(ds, encapsulate([fragment]), encapsulated=True)
    except _PYDICOM_ERRORS + (RuntimeError,) as exc:  # pylibjpeg's codecs raise RuntimeError on a damaged stream
        logger.info("compressed DICOM frame not decoded: %s", type(exc).__name__)
        raise ImageInputError(
            "dicom_decode_failed",
            "the %s pixel data could not be decoded: it is damaged, or needs a codec this server "
            "lacks (%s)" % (_syntax_name(syntax), _INSTALL_HINT),
        ) from None


def _modality(ds: Dataset) -> Optional[str]:
    value = ds.get("Modality")
    text = str(value).strip() if value else ""
    return text if _MODALITY.match(text) else None
