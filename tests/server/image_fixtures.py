"""Shared by the image-upload tests: real DICOM test files, peak-memory measurement, and the
display transforms written out from the standard (PS3.3 C.11), independently of server/."""
from __future__ import annotations

import io
import os
import re
import struct
import zlib
from typing import Callable, Optional

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

_WHEEL_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")


def _pydicom_data_dir() -> Optional[str]:
    """pydicom-data (the `test` extra) installs its files as the `data_store` package."""
    try:
        import data_store
    except ImportError:
        return None
    return os.path.join(os.path.dirname(data_store.__file__), "data")


def dicom_path(name: str) -> str:
    """A file from pydicom's own test data, else from pydicom-data; skip when neither has it.

    Not pydicom.data.get_testdata_file: pydicom 2.4 tries to download missing files.
    """
    for folder in (_WHEEL_FILES, _pydicom_data_dir()):
        if folder and os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    pytest.skip("%s is in neither pydicom's test files nor pydicom-data (the test extra)" % name)
    raise AssertionError  # unreachable: skip raises


def all_dicom_test_files() -> list:
    paths = []
    for folder in (_WHEEL_FILES, _pydicom_data_dir()):
        if folder and os.path.isdir(folder):
            paths += sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".dcm"))
    return paths


def read_bytes(name: str) -> bytes:
    with open(dicom_path(name), "rb") as f:
        return f.read()


def read_dataset(name: str) -> Dataset:
    return pydicom.dcmread(dicom_path(name))


def to_bytes(ds: Dataset) -> bytes:
    """A dataset read from a Part 10 file, written back the same way (preamble, DICM, meta)."""
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def explicit_le_meta(transfer_syntax: str) -> bytes:
    """Preamble, DICM and a one-element file meta group, written by hand (PS3.10 7.1)."""
    value = transfer_syntax.encode("ascii")
    if len(value) % 2:
        value += b"\0"
    element = struct.pack("<HH2sH", 0x0002, 0x0010, b"UI", len(value)) + value
    return b"\0" * 128 + b"DICM" + element


def deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


def peak_rss_growth(fn: Callable[[], object]) -> int:
    """Bytes by which this process's peak RSS rose above its RSS at the start while `fn` ran."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("peak RSS needs Linux /proc")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (the peak) to the current RSS, Linux >= 4.0
    except OSError:
        pytest.skip("cannot reset the peak RSS here")
    start = _status_kb("VmRSS")
    fn()
    return (_status_kb("VmHWM") - start) * 1024


# ---- PS3.3 C.11, written out as the standard states it, for comparison with server/ ----


def window_linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """C.11.2.1.2.1: if x <= c - 0.5 - (w-1)/2 then y = ymin; else if x > c - 0.5 + (w-1)/2 then
    y = ymax; else y = ((x - (c - 0.5)) / (w-1) + 0.5) * (ymax - ymin) + ymin; here ymin 0, ymax 255."""
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0
    y = np.where(x <= c - 0.5 - (w - 1) / 2, 0.0, y)
    return np.where(x > c - 0.5 + (w - 1) / 2, 255.0, y)


def window_linear_exact(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """C.11.2.1.3.2: y = ((x - c) / w + 0.5) * 255 between c - w/2 and c + w/2."""
    y = ((x - c) / w + 0.5) * 255.0
    return np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 255.0, y))


def window_sigmoid(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """C.11.2.1.3.1: y = ymax / (1 + exp(-4 (x - c) / w))."""
    return 255.0 / (1.0 + np.exp(-4.0 * (x - c) / w))


def min_max(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / (x.max() - x.min()) * 255.0


def to_u8(y: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def grey_rgb(y8: np.ndarray) -> np.ndarray:
    return np.stack([y8, y8, y8], axis=-1)
