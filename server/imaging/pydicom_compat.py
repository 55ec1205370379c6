"""The few pydicom calls server/ needs, for pydicom 2.4 (the newest on Python 3.8, so JetPack 5)
and pydicom 3 (pixels moved from pydicom.pixel_data_handlers to pydicom.pixels, encaps renamed).

Importing this module also turns pydicom's read-time value validation off, process-wide: it logs
each invalid value, quoted, at WARNING on the "pydicom" logger, which would put patient data in
the service's logs. This process reads DICOM only to decode uploads and never needs that check;
a value that cannot be converted still fails where it is read.
"""
from __future__ import annotations

import io
import warnings
from typing import BinaryIO, Iterator, Tuple

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

# A file meta reader that takes a buffer (the public read_file_meta_info opens a path).
from pydicom.filereader import _read_file_meta_info, read_preamble

PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])

if PYDICOM_MAJOR >= 3:
    from pydicom.encaps import generate_frames
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, convert_color_space, get_decoder
else:
    from pydicom import config as _config
    from pydicom.encaps import generate_pixel_data_frame
    from pydicom.pixel_data_handlers.pillow_handler import PillowJPEGTransferSyntaxes as _PILLOW_JPEG
    from pydicom.pixel_data_handlers.util import (
        apply_color_lut,
        apply_modality_lut,
        apply_voi_lut,
        convert_color_space,
    )

__all__ = [
    "PYDICOM_MAJOR", "apply_color_lut", "apply_modality_lut", "apply_voi_lut", "configure_pydicom",
    "decode_only_frame", "decoder_available", "file_encoding", "iter_frames", "read_file_meta", "ybr_full_to_rgb",
]

pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def configure_pydicom() -> None:
    """Once, at start-up: silence pydicom's warnings process-wide.

    They quote element values ("Unknown encoding 'ISO_IR 19f'", the value it could not convert), which
    are patient data, and say nothing about what is decoded (a damaged value still fails where it is
    read). Set once rather than by a warnings.catch_warnings around each decode, which is not
    thread-safe; calling again is harmless.
    """
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")


_PIXEL_DATA = 0x7FE00010
_EXTENDED_OFFSET_TABLE = (0x7FE00001, 0x7FE00002)  # offsets into the original frames


def read_file_meta(fp: BinaryIO) -> Dataset:
    """The File Meta Information group (0002,xxxx) of a Part 10 stream at its start."""
    read_preamble(fp, False)
    return _read_file_meta_info(fp)


def file_encoding(ds: Dataset) -> Tuple[bool, bool]:
    """(implicit VR, little endian) as dcmread found the dataset encoded."""
    if PYDICOM_MAJOR >= 3:
        implicit, little = ds.original_encoding
    else:
        implicit, little = ds.is_implicit_VR, ds.is_little_endian
    return bool(implicit), bool(little)


def iter_frames(ds: Dataset, value: bytes, frames: int) -> Iterator[bytes]:
    """Frames of an encapsulated Pixel Data value (from its Basic Offset Table item on)."""
    if PYDICOM_MAJOR >= 3:
        offsets = None
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        return generate_frames(value, number_of_frames=frames, extended_offsets=offsets)
    return generate_pixel_data_frame(value, frames)


def decoder_available(syntax: str) -> bool:
    """Whether an installed pydicom plugin / handler can decode this transfer syntax."""
    if PYDICOM_MAJOR >= 3:
        try:
            return bool(get_decoder(syntax).is_available)
        except NotImplementedError:
            return False
    return any(h.supports_transfer_syntax(syntax) and h.is_available() for h in _config.pixel_data_handlers)


def decode_only_frame(ds: Dataset, value: bytes, encapsulated: bool) -> np.ndarray:
    """Decode `value` as the only frame of `ds` (its Pixel Data replaced); colour comes back RGB."""
    vr = "OB" if encapsulated or int(ds.BitsAllocated) <= 8 else "OW"
    ds[_PIXEL_DATA] = DataElement(_PIXEL_DATA, vr, value, is_undefined_length=encapsulated)
    if "NumberOfFrames" in ds:
        ds.NumberOfFrames = 1
    for tag in _EXTENDED_OFFSET_TABLE:
        if tag in ds:
            del ds[tag]
    if PYDICOM_MAJOR < 3 and encapsulated and _is_rgb_jpeg(ds):
        return _decode_rgb_jpeg(next(generate_pixel_data_frame(value, 1)))
    pixels = ds.pixel_array
    # pydicom 3 returns YBR_FULL(_422) as RGB (its default, as_rgb). pydicom 2.4 leaves it as
    # stored unless its handler converted, which it says by rewriting the attribute to RGB.
    if PYDICOM_MAJOR < 3 and str(ds.PhotometricInterpretation) in ("YBR_FULL", "YBR_FULL_422"):
        pixels = ybr_full_to_rgb(pixels)
    return pixels


def _is_rgb_jpeg(ds: Dataset) -> bool:
    syntax = ds.file_meta.TransferSyntaxUID
    return syntax in _PILLOW_JPEG and str(ds.PhotometricInterpretation) == "RGB" and int(ds.BitsAllocated) == 8


def _decode_rgb_jpeg(fragment: bytes) -> np.ndarray:
    """An 8-bit JPEG whose samples are RGB, not YCbCr, decoded without a colour transform.

    pydicom 2.4's Pillow handler asks for that by assigning Image.mode, which Pillow >= 10.1 made
    read-only (AttributeError on every such file); Image.draft is the supported way, and what pydicom
    3 does. An Adobe marker saying the stream is colour-transformed wins, as it does there.
    """
    from PIL import Image

    with Image.open(io.BytesIO(fragment)) as image:
        if "adobe_transform" not in image.info:
            image.draft("YCbCr", image.size)
        return np.asarray(image)


def ybr_full_to_rgb(pixels: np.ndarray) -> np.ndarray:
    return convert_color_space(pixels, "YBR_FULL", "RGB")
