"""A rendered scene as a DICOM Part 10 file (pydicom 2.4 and 3), deterministic and patient-free.

Pixels are 12-bit unsigned values v = round((intensity + 0.25) * 2000) with RescaleIntercept -1500
(so modality values are intensity * 2000 - 1000: air near -1000, like HU; the 0.25 offset keeps
noise below zero intensity representable), and a LINEAR_EXACT VOI window equal to
the one the PNG copies are drawn with: a reader applying the modality LUT and the window gets the
PNG's pixels back to within one grey level. UIDs are derived from the image's name and seed (no
clock, no randomness), so the same seed writes the same bytes.
"""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from models.synthetic.scene import Scene, render_values

_MAJOR = int(pydicom.__version__.split(".")[0])
_SOP_CLASS = {  # PS3.4 B.5
    "CT": ("1.2.840.10008.5.1.4.1.1.2", "CT"),  # CT Image Storage
    "MRI": ("1.2.840.10008.5.1.4.1.1.4", "MR"),  # MR Image Storage
    "X-ray": ("1.2.840.10008.5.1.4.1.1.1.1", "DX"),  # Digital X-Ray Image Storage - For Presentation
}
_SCALE, _OFFSET = 2000.0, 0.25
_INTERCEPT = -1000.0 - _OFFSET * _SCALE
_IMPLEMENTATION_UID = "2.25.118927302650911461372342004815063461311"  # fixed: not pydicom's per-version one


def _uid(*parts: object) -> str:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode("utf-8")).digest()
    return "2.25.%d" % (int.from_bytes(digest[:15], "big"))  # PS3.5 B.2: a UUID-derived UID, < 64 chars


def dicom_bytes(scene: Scene, name: str) -> bytes:
    """The scene as DICOM bytes; `name` (the image's file name) only seeds the UIDs."""
    values, level, width = render_values(scene)
    stored = np.clip(np.round((values + _OFFSET) * _SCALE), 0, 4095).astype(np.uint16)
    sop_class, modality = _SOP_CLASS[scene.modality]
    sop_instance = _uid(name, scene.seed, "sop")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _IMPLEMENTATION_UID
    meta.ImplementationVersionName = "TINYLLAVA_SYN1"

    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyInstanceUID = _uid(name, scene.seed, "study")
    ds.SeriesInstanceUID = _uid(name, scene.seed, "series")
    ds.Modality = modality
    ds.PatientName = "SYNTHETIC^PHANTOM"
    ds.PatientID = "SYNTHETIC"
    ds.BodyPartExamined = {"head": "HEAD", "chest": "CHEST", "abdomen": "ABDOMEN"}[scene.region]
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "%g" % _INTERCEPT
    ds.RescaleSlope = "1"
    ds.WindowCenter = "%.3f" % (level * _SCALE - 1000.0)
    ds.WindowWidth = "%.3f" % (width * _SCALE)
    ds.VOILUTFunction = "LINEAR_EXACT"
    ds.PixelData = stored.astype("<u2").tobytes()

    buf = io.BytesIO()
    if _MAJOR >= 3:
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    else:  # pydicom 2.4 (Python 3.8): the encoding comes from attributes of the dataset
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(buf, ds, write_like_original=False)
    return buf.getvalue()


__all__ = ["dicom_bytes"]
