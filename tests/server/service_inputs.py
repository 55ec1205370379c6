"""Uploads for the service tests: small PNG/JPEG, damaged and oversized images, DICOM with canaries.

Built here with Pillow, zlib and pydicom (independent of server/imaging/images.py), never read from the
service's own code.
"""
from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Dict, Optional

import numpy as np
from PIL import Image

# Canary strings: if any of these shows up in a log line or /metrics, patient data leaked.
CANARY_NAME = "Canarysurname^Zq7Patient"
CANARY_ID = "CANARYPID-55021"
CANARY_BIRTH = "18990713"
CANARY_QUESTION = "Qcanary-7d1f3e is there a lesion in the left lobe?"
CANARY_FILENAME = "Fcanary-9b2e4c.dcm"
CANARIES = (CANARY_NAME, "Canarysurname", "Zq7Patient", CANARY_ID, CANARY_BIRTH, "Qcanary-7d1f3e", "Fcanary-9b2e4c")


def png(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def jpeg(width: int = 64, height: int = 48, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return "data:%s;base64,%s" % (mime, base64.b64encode(data).decode("ascii"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(side: int = 50000) -> bytes:
    """A valid 1-bit greyscale PNG of side x side black pixels: ~300 KB that inflate to 2.5 gigapixels."""
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    rows_per_feed = 100
    parts = [comp.compress(row * rows_per_feed) for _ in range(side // rows_per_feed)]
    parts.append(comp.compress(row * (side % rows_per_feed)))
    parts.append(comp.flush())
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def _write(ds: object) -> bytes:
    import pydicom

    buf = io.BytesIO()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    else:
        ds.is_little_endian = True  # type: ignore[attr-defined]
        ds.is_implicit_VR = False  # type: ignore[attr-defined]
        pydicom.dcmwrite(buf, ds, write_like_original=False)
    return buf.getvalue()


def _dataset(transfer_syntax: str, patient: Optional[Dict[str, str]] = None) -> object:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import generate_uid

    ct_storage = "1.2.840.10008.5.1.4.1.1.2"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ct_storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = ct_storage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    for key, value in (patient or {}).items():
        setattr(ds, key, value)
    return ds


def canary_ct_dicom(size: int = 64) -> bytes:
    """A CT slice (16-bit, rescale + window) whose patient tags are canaries."""
    ds = _dataset("1.2.840.10008.1.2.1", {"PatientName": CANARY_NAME, "PatientID": CANARY_ID,
                                          "PatientBirthDate": CANARY_BIRTH})
    yy, xx = np.mgrid[0:size, 0:size]
    hu = (np.hypot(yy - size / 2, xx - size / 2) < size / 3) * 1040 - 1000  # a disc of soft tissue in air
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.PixelData = (hu + 1024).astype("<u2").tobytes()
    return _write(ds)


def rle_dicom_claiming(side: int = 8192) -> bytes:
    """An RLE Lossless DICOM whose header says side x side but carries one tiny fragment."""
    from pydicom.encaps import encapsulate

    ds = _dataset("1.2.840.10008.1.2.5")
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    # RLE header (PS3.5 G.3.1): one segment at offset 64, then a run of 128 zeros repeated.
    header = struct.pack("<16I", 1, 64, *([0] * 14))
    ds.PixelData = encapsulate([header + b"\x81\x00" * 64])
    ds["PixelData"].VR = "OB"
    return _write(ds)


__all__ = ["CANARIES", "CANARY_BIRTH", "CANARY_FILENAME", "CANARY_ID", "CANARY_NAME", "CANARY_QUESTION", "b64",
           "canary_ct_dicom", "data_url", "jpeg", "png", "png_bomb", "rle_dicom_claiming"]
