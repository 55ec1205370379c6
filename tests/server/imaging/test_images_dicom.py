"""DICOM uploads: pixels against pydicom's own decode of the whole file and the PS3.3 C.11 formulas
written out in tests/server/image_fixtures.py; refusals; no patient data in messages or logs.

Files come from pydicom's wheel; those only in pydicom-data (the test extra) skip without it."""
from __future__ import annotations

import hashlib
import io
import logging
import random
import struct
import warnings
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence

from server.imaging.images import ImageInputError, ImageLimits, decode_image
from server.imaging.pydicom_compat import configure_pydicom, iter_frames, ybr_full_to_rgb
from tests.server.image_fixtures import (
    all_dicom_test_files,
    deflate_raw,
    explicit_le_meta,
    grey_rgb,
    min_max,
    peak_rss_growth,
    read_bytes,
    read_dataset,
    to_bytes,
    to_u8,
    window_linear,
    window_linear_exact,
    window_sigmoid,
)

MB = 1024 * 1024
PYDICOM_3 = int(pydicom.__version__.split(".")[0]) >= 3


@pytest.fixture(autouse=True)
def _restore_pillow_cap(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


def _pixels(data: bytes, **kw) -> np.ndarray:
    out = decode_image(data, **kw)
    assert out.format == "dicom" and out.image.mode == "RGB"
    return np.asarray(out.image)


def _refusal(data: bytes, **kw) -> ImageInputError:
    with pytest.raises(ImageInputError) as info:
        decode_image(data, **kw)
    assert 400 <= info.value.status < 500
    return info.value


def _stored(name: str) -> np.ndarray:
    """pydicom's decode of the whole file (all frames), as the reference stored values."""
    return read_dataset(name).pixel_array.astype(np.float64)


# ---- monochrome: modality LUT, VOI, MONOCHROME1 ----


def test_ct_rescale_then_min_max_when_there_is_no_window():
    ds = read_dataset("CT_small.dcm")
    assert "WindowCenter" not in ds and float(ds.RescaleIntercept) != 0
    hu = _stored("CT_small.dcm") * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    data = read_bytes("CT_small.dcm")
    out = decode_image(data)
    np.testing.assert_array_equal(np.asarray(out.image), grey_rgb(to_u8(min_max(hu))))
    assert out.metadata() == {
        "format": "dicom", "width": 128, "height": 128, "frames": 1, "frame": 0, "modality": "CT",
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def test_mr_window_follows_ps3_3_c_11_2_1_2():
    ds = read_dataset("MR_small.dcm")
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    expected = to_u8(window_linear(_stored("MR_small.dcm"), c, w))
    np.testing.assert_array_equal(_pixels(read_bytes("MR_small.dcm")), grey_rgb(expected))
    assert 0 < expected.mean() < 255  # the window actually cuts through the data


def test_mr_window_agrees_with_pydicoms_windowing():
    # pydicom's apply_voi_lut maps the same window onto the signed 16-bit range (MR_small has
    # no rescale); rescaled to 0..255 it must agree with ours to rounding.
    try:
        from pydicom.pixels import apply_voi_lut
    except ImportError:
        from pydicom.pixel_data_handlers.util import apply_voi_lut
    ds = read_dataset("MR_small.dcm")
    assert ds.PixelRepresentation == 1 and ds.BitsStored == 16
    theirs = (apply_voi_lut(ds.pixel_array, ds).astype(np.float64) + 32768.0) / 65535.0 * 255.0
    ours = _pixels(read_bytes("MR_small.dcm"))[..., 0].astype(np.float64)
    assert np.abs(ours - theirs).max() <= 1.0


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm", "MR_small_implicit.dcm",
     "MR_small_padded.dcm", "MR_small_jp2klossless.dcm"],
)
def test_every_lossless_encoding_of_mr_small_renders_identically(name):
    np.testing.assert_array_equal(_pixels(read_bytes(name)), _pixels(read_bytes("MR_small.dcm")))


@pytest.mark.parametrize(
    "function,reference", [("LINEAR_EXACT", window_linear_exact), ("SIGMOID", window_sigmoid)]
)
def test_voi_lut_functions(function, reference):
    ds = read_dataset("MR_small.dcm")
    ds.VOILUTFunction = function
    expected = to_u8(reference(_stored("MR_small.dcm"), float(ds.WindowCenter), float(ds.WindowWidth)))
    np.testing.assert_array_equal(_pixels(to_bytes(ds)), grey_rgb(expected))


def test_multi_valued_window_uses_the_first_pair():
    ds = read_dataset("MR_small.dcm")
    ds.WindowCenter, ds.WindowWidth = [700, 100], [400, 50]
    expected = to_u8(window_linear(_stored("MR_small.dcm"), 700.0, 400.0))
    np.testing.assert_array_equal(_pixels(to_bytes(ds)), grey_rgb(expected))


def test_unusable_window_falls_back_to_min_max():
    ds = read_dataset("MR_small.dcm")
    ds.WindowWidth = 0
    expected = to_u8(min_max(_stored("MR_small.dcm")))
    np.testing.assert_array_equal(_pixels(to_bytes(ds)), grey_rgb(expected))


def test_monochrome1_is_inverted_after_the_window():
    ds = read_dataset("CT_small.dcm")
    mono2 = _pixels(to_bytes(ds))
    ds.PhotometricInterpretation = "MONOCHROME1"
    np.testing.assert_array_equal(_pixels(to_bytes(ds)), 255 - mono2)


def test_real_monochrome1_radiograph():
    ds = read_dataset("RG3_UNCI.dcm")  # pydicom-data: a CR stored MONOCHROME1 with a window
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    values = ds.pixel_array.astype(np.float64)
    if "RescaleSlope" in ds:
        values = values * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = 255 - to_u8(window_linear(values, c, w))
    np.testing.assert_array_equal(_pixels(read_bytes("RG3_UNCI.dcm")), grey_rgb(expected))


def test_modality_lut_sequence():
    ds = read_dataset("mlut_18.dcm")  # pydicom-data
    item = ds.ModalityLUTSequence[0]
    entries, first, _bits = item.LUTDescriptor
    lut = np.asarray(item.LUTData, dtype=np.float64)
    index = np.clip(ds.pixel_array.astype(np.int64) - first, 0, (entries or 65536) - 1)
    mapped = lut[index]
    assert "WindowCenter" not in ds
    np.testing.assert_array_equal(_pixels(read_bytes("mlut_18.dcm")), grey_rgb(to_u8(min_max(mapped))))


def test_voi_lut_sequence():
    ds = read_dataset("vlut_04.dcm")  # pydicom-data
    item = ds.VOILUTSequence[0]
    entries, first, bits = item.LUTDescriptor
    lut = np.asarray(item.LUTData, dtype=np.float64)
    index = np.clip(ds.pixel_array.astype(np.int64) - first, 0, (entries or 65536) - 1)
    expected = to_u8(lut[index] / (2 ** bits - 1) * 255.0)
    np.testing.assert_array_equal(_pixels(read_bytes("vlut_04.dcm")), grey_rgb(expected))


# ---- frames and functional groups ----


def test_middle_frame_by_default_and_any_frame_on_request():
    stored = _stored("rtdose.dcm")  # 15 frames, 32-bit
    data = read_bytes("rtdose.dcm")
    out = decode_image(data)
    assert (out.frames, out.frame) == (15, 7)
    for frame in (7, 0, 14):
        expected = to_u8(min_max(stored[frame]))
        np.testing.assert_array_equal(_pixels(data, frame=frame), grey_rgb(expected))


def test_rle_multi_frame_matches_the_uncompressed_file():
    for frame in (0, 7, 14):
        np.testing.assert_array_equal(
            _pixels(read_bytes("rtdose_rle.dcm"), frame=frame), _pixels(read_bytes("rtdose.dcm"), frame=frame)
        )


@pytest.mark.parametrize("frame", [15, -1, 2.0, True])
def test_frame_out_of_range(frame):
    err = _refusal(read_bytes("rtdose.dcm"), frame=frame)
    assert err.code == "image_frame_out_of_range" and "0 to 14" in err.message


def test_enhanced_multi_frame_mr():
    stored = _stored("emri_small.dcm")  # pydicom-data: enhanced MR, 10 frames
    out = decode_image(read_bytes("emri_small.dcm"))
    assert (out.frames, out.frame) == (10, 5)
    np.testing.assert_array_equal(np.asarray(out.image), grey_rgb(to_u8(min_max(stored[5]))))
    for name in ("emri_small_RLE.dcm", "emri_small_big_endian.dcm", "emri_small_jpeg_2k_lossless.dcm"):
        np.testing.assert_array_equal(_pixels(read_bytes(name), frame=3), _pixels(read_bytes("emri_small.dcm"), frame=3))


def test_shared_functional_groups_give_rescale_and_window():
    ds = read_dataset("eCT_Supplemental.dcm")  # pydicom-data: enhanced CT, shared groups only
    shared = ds.SharedFunctionalGroupsSequence[0]
    voi = shared.FrameVOILUTSequence[0]
    rescale = shared.PixelValueTransformationSequence[0]
    c, w = float(np.atleast_1d(voi.WindowCenter)[0]), float(np.atleast_1d(voi.WindowWidth)[0])
    hu = ds.pixel_array[1].astype(np.float64) * float(rescale.RescaleSlope) + float(rescale.RescaleIntercept)
    out = decode_image(read_bytes("eCT_Supplemental.dcm"))
    assert out.frame == 1
    np.testing.assert_array_equal(np.asarray(out.image), grey_rgb(to_u8(window_linear(hu, c, w))))


def _voi_item(center: float, width: float) -> Dataset:
    item = Dataset()
    item.WindowCenter, item.WindowWidth = center, width
    return item


def _rescale_item(slope: float, intercept: float) -> Dataset:
    item = Dataset()
    item.RescaleSlope, item.RescaleIntercept, item.RescaleType = slope, intercept, "US"
    return item


def test_per_frame_functional_groups_override_shared_and_top_level():
    # rtdose.dcm's real 15 frames, given enhanced-style groups: a shared rescale and window,
    # a per-frame window on frames 0 and 14 only, and a misleading top-level window.
    ds = read_dataset("rtdose.dcm")
    stored = ds.pixel_array.astype(np.float64)
    ds.WindowCenter, ds.WindowWidth = 1, 1
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([_rescale_item(2.0, -100.0)])
    shared.FrameVOILUTSequence = Sequence([_voi_item(float(stored.mean()) * 2 - 100, float(stored.std()) * 4)])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    windows = {0: (float(stored[0].mean()) * 2 - 100, 50.0), 14: (float(stored[14].max()) * 2 - 100, 5000.0)}
    for frame in range(15):
        item = Dataset()
        if frame in windows:
            item.FrameVOILUTSequence = Sequence([_voi_item(*windows[frame])])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    data = to_bytes(ds)
    for frame in (0, 7, 14):
        c, w = windows.get(frame, (float(stored.mean()) * 2 - 100, float(stored.std()) * 4))
        expected = to_u8(window_linear(stored[frame] * 2.0 - 100.0, c, w))
        np.testing.assert_array_equal(_pixels(data, frame=frame), grey_rgb(expected), err_msg="frame %d" % frame)


# ---- colour ----

# pydicom's own tests of its SC_rgb* files: the colour of ten horizontal bands (row, column 50).
_BANDS = {
    5: (255, 0, 0), 15: (255, 128, 128), 25: (0, 255, 0), 35: (128, 255, 128), 45: (0, 0, 255),
    55: (128, 128, 255), 65: (0, 0, 0), 75: (64, 64, 64), 85: (192, 192, 192), 95: (255, 255, 255),
}


@pytest.mark.parametrize(
    "name,tolerance",
    [
        ("SC_rgb_rle.dcm", 0), ("SC_rgb_rle_16bit.dcm", 0), ("SC_rgb_rle_32bit.dcm", 0),
        ("SC_rgb_small_odd.dcm", None),
        ("SC_ybr_full_422_uncompressed.dcm", 8),  # YBR_FULL_422, stored subsampled
        ("SC_rgb_jpeg_dcmtk.dcm", 8),  # JPEG baseline, YBR_FULL: lossy
        ("SC_rgb_dcmtk_+eb+cy+n1.dcm", 8),
        # JPEG baseline of RGB samples (no colour transform): pydicom 2.4's own Pillow path fails on
        # it with Pillow >= 10.1, so pydicom_compat decodes it (the Python 3.8 run checks that path).
        ("SC_rgb_dcmtk_+eb+cr.dcm", 8),
    ],
)
def test_colour_bands(name, tolerance):
    rgb = _pixels(read_bytes(name)).astype(int)
    if tolerance is None:  # 3 x 3, no bands: pydicom's decode of the same 8-bit RGB file, value for value
        ds = read_dataset(name)
        assert (ds.PhotometricInterpretation, ds.BitsAllocated) == ("RGB", 8)
        np.testing.assert_array_equal(rgb, ds.pixel_array.astype(int))
        assert rgb.shape == (3, 3, 3)
        assert (rgb[..., 0] != rgb[..., 2]).any()  # colour: the channels are not all equal
        return
    for row, colour in _BANDS.items():
        assert np.abs(rgb[row, 50] - np.array(colour)).max() <= tolerance, (row, rgb[row, 50], colour)


@pytest.mark.parametrize("name", ["SC_jpeg_no_color_transform.dcm", "SC_rgb_jpeg.dcm"])
def test_rgb_jpeg_without_a_colour_transform_is_not_converted(name):
    # JPEG baseline whose samples are RGB (no Adobe marker saying otherwise): the decoded values are the
    # stored ones. So reading them as YCbCr, with pydicom's conversion, must give what Pillow's own
    # decoder gives when it assumes YCbCr (its default): two independent implementations of the same
    # transform, equal up to rounding. (pydicom 2.4's own path raises on these with Pillow >= 10.1.)
    ours = _pixels(read_bytes(name))
    fragment = next(iter_frames(read_dataset(name), read_dataset(name).PixelData, 1))
    pillow_as_ycbcr = np.asarray(Image.open(io.BytesIO(fragment)).convert("RGB")).astype(int)
    assert np.abs(ours.astype(int) - pillow_as_ycbcr).max() > 20  # the two readings differ visibly
    np.testing.assert_allclose(ybr_full_to_rgb(ours).astype(int), pillow_as_ycbcr, atol=3)


def test_grey_jpeg_stream_in_a_file_that_says_rgb_is_a_4xx():
    # The stream's component count is not the file's: a clear refusal, not a crash further on.
    ds = read_dataset("SC_jpeg_no_color_transform.dcm")
    buf = io.BytesIO()
    Image.new("L", (int(ds.Columns), int(ds.Rows)), 128).save(buf, format="JPEG")
    ds.PixelData = encapsulate([buf.getvalue()])
    with pytest.raises(ImageInputError) as err:
        decode_image(to_bytes(ds))
    assert 400 <= err.value.status < 500


def test_rle_colour_frames_match_pydicom():
    # pydicom's tests: the second frame of SC_rgb_rle_2frame is the first one inverted.
    data = read_bytes("SC_rgb_rle_2frame.dcm")
    first, second = _pixels(data, frame=0), _pixels(data)
    assert decode_image(data).frame == 1
    for row, colour in _BANDS.items():
        assert tuple(first[row, 50]) == colour and tuple(second[row, 50]) == tuple(255 - np.array(colour))
    stored = read_dataset("SC_rgb_rle_2frame.dcm").pixel_array
    np.testing.assert_array_equal(first, stored[0])
    np.testing.assert_array_equal(second, stored[1])


def test_palette_colour():
    try:
        from pydicom.pixels import apply_color_lut
    except ImportError:
        from pydicom.pixel_data_handlers.util import apply_color_lut
    ds = read_dataset("OBXXXX1A.dcm")  # pydicom-data: PALETTE COLOR ultrasound, 8-bit LUTs
    rgb = apply_color_lut(ds.pixel_array, ds)  # pydicom computes the palette; we check the plumbing
    expected = rgb if rgb.dtype == np.uint8 else to_u8(rgb / 65535.0 * 255.0)
    np.testing.assert_array_equal(_pixels(read_bytes("OBXXXX1A.dcm")), expected)
    np.testing.assert_array_equal(_pixels(read_bytes("OBXXXX1A_rle.dcm")), expected)


# ---- refusals ----


def test_deflated_file_is_refused():
    err = _refusal(read_bytes("image_dfl.dcm"))
    assert (err.code, err.status) == ("dicom_unsupported_transfer_syntax", 415)
    assert "Deflated" in err.message


def test_deflate_bomb_is_refused_before_inflating():
    body = deflate_raw(b"\0" * (256 * MB))  # ~256 KB on the wire, 256 MB inflated
    bomb = explicit_le_meta("1.2.840.10008.1.2.1.99") + body
    assert len(zlib.decompressobj(-15).decompress(body, 64 * MB)) == 64 * MB  # it is a real bomb
    errors = []
    growth = peak_rss_growth(lambda: errors.append(_refusal(bomb)))
    assert growth < 50 * MB and errors[0].code == "dicom_unsupported_transfer_syntax"


def test_rle_header_claiming_8192_square_is_refused():
    ds = read_dataset("MR_small_RLE.dcm")
    ds.Rows = ds.Columns = 8192
    data = to_bytes(ds)
    errors = []
    growth = peak_rss_growth(lambda: errors.append(_refusal(data)))
    assert growth < 50 * MB
    assert (errors[0].code, errors[0].status) == ("image_too_large", 413)
    assert "8192 x 8192" in errors[0].message


def test_rle_header_claiming_8192_square_within_raised_caps_fails_cleanly():
    # Caps raised to allow it: the RLE decoder finds the segments far too short, without
    # ever holding 8192 x 8192 decoded values.
    ds = read_dataset("MR_small_RLE.dcm")
    ds.Rows = ds.Columns = 8192
    data = to_bytes(ds)
    limits = ImageLimits(max_pixels=8192 * 8192, max_side=8192)
    errors = []
    growth = peak_rss_growth(lambda: errors.append(_refusal(data, limits=limits)))
    assert growth < 50 * MB and errors[0].code == "dicom_invalid" and "RLE" in errors[0].message


def test_rle_segment_that_expands_past_the_frame_is_cut_off():
    # 16 MB of replicate runs would decode to 1 GB in an unbounded decoder; the frame needs 8 KB.
    ds = read_dataset("MR_small_RLE.dcm")
    segment = b"\x81\x00" * (4 * MB)  # each pair: byte 0x00 repeated 128 times
    header = struct.pack("<16I", 2, 64, 64 + len(segment), *([0] * 13))
    ds.PixelData = encapsulate([header + segment + segment])
    data = to_bytes(ds)
    results = []
    growth = peak_rss_growth(lambda: results.append(decode_image(data)))
    assert growth < 80 * MB  # the upload itself is 16 MB; an unbounded decoder would hold 1 GB
    zero = to_u8(window_linear(np.zeros(1), float(ds.WindowCenter), float(ds.WindowWidth)))[0]
    assert (np.asarray(results[0].image) == zero).all()  # every stored value decoded as 0


def test_compressed_frame_header_must_match_rows_and_columns():
    data = bytearray(read_bytes("SC_rgb_jpeg_dcmtk.dcm"))
    sof = data.find(b"\xff\xc0", data.find(b"\xff\xd8\xff"))
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    err = _refusal(bytes(data))
    assert err.code == "dicom_invalid" and "60000 x 60000" in err.message


def test_missing_codec_is_415_with_an_install_hint():
    if PYDICOM_3:
        from pydicom.pixels import get_decoder

        available = get_decoder("1.2.840.10008.1.2.4.80").is_available
    else:
        from pydicom import config

        available = any(
            h.supports_transfer_syntax("1.2.840.10008.1.2.4.80") and h.is_available() for h in config.pixel_data_handlers
        )
    if available:
        pytest.skip("a JPEG-LS decoder is installed here")
    err = _refusal(read_bytes("MR_small_jpeg_ls_lossless.dcm"))
    assert (err.code, err.status) == ("dicom_unsupported_transfer_syntax", 415)
    assert "pylibjpeg" in err.message and "JPEG-LS" in err.message


def test_truncated_pixel_data():
    err = _refusal(read_bytes("MR_truncated.dcm"))
    assert (err.code, err.status) == ("image_truncated", 422)


def test_objects_without_pixels():
    for name in ("rtplan.dcm", "test-SR.dcm", "waveform_ecg.dcm"):
        assert _refusal(read_bytes(name)).code == "dicom_no_pixel_data", name


def test_no_preamble_is_not_clearly_dicom():
    err = _refusal(read_bytes("no_meta.dcm"))
    assert (err.code, err.status) == ("image_unsupported_format", 415)


def test_frame_cap():
    err = _refusal(read_bytes("rtdose.dcm"), limits=ImageLimits(max_dicom_frames=10))
    assert (err.code, err.status) == ("image_too_large", 413) and "15 frames" in err.message


def test_float_pixel_data_is_unsupported():
    ds = read_dataset("CT_small.dcm")
    del ds.PixelData
    ds.BitsAllocated, ds.BitsStored = 32, 32
    ds.add(DataElement(0x7FE00008, "OF", np.zeros(128 * 128, dtype="<f4").tobytes()))
    err = _refusal(to_bytes(ds))
    assert (err.code, err.status) == ("dicom_unsupported_image", 415)


def test_huge_header_is_refused_from_a_bounded_prefix():
    # 300 000 empty private elements (2.4 MB): pydicom would spend seconds and hundreds of MB on
    # them. The header cap stops the parse at a whole number of elements.
    meta = explicit_le_meta("1.2.840.10008.1.2.1")
    elements = []
    for i in range(300000):
        group, element = 0x0009 + 2 * (i // 0xE000), 0x1000 + i % 0xE000
        elements.append(struct.pack("<HH2sH", group, element, b"LO", 0))
    data = meta + b"".join(elements)
    limit = len(meta) + 8 * 30000
    errors = []
    growth = peak_rss_growth(lambda: errors.append(_refusal(data, limits=ImageLimits(max_dicom_header_bytes=limit))))
    assert growth < 40 * MB  # parsing all 300 000 elements (no cap) grows RSS by ~90 MB here
    assert (errors[0].code, errors[0].status) == ("image_too_large", 413)


def test_every_pydicom_test_file_decodes_or_is_refused_with_a_4xx():
    paths = all_dicom_test_files()
    assert len(paths) > 50
    decoded = 0
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        try:
            out = decode_image(data)
        except ImageInputError as err:
            assert 400 <= err.status < 500 and err.code, path
        else:
            decoded += 1
            assert out.image.mode == "RGB" and out.image.size == (out.width, out.height)
    assert decoded > len(paths) // 3


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm", "emri_small_RLE.dcm"])
def test_mutated_dicom_decodes_or_is_refused_never_crashes(name):
    rng = random.Random(name)
    original = read_bytes(name)
    for _ in range(60):
        data = bytearray(original)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(132, len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(132, len(data))]
        try:
            decode_image(bytes(data))
        except ImageInputError as err:
            assert 400 <= err.status < 500


# ---- patient data ----

CANARY = "CANARY"


def _canary_dataset() -> Dataset:
    ds = read_dataset("CT_small.dcm")
    ds.PatientName = "CANARY^PATIENT"
    ds.PatientID = "CANARY-0001"
    ds.InstitutionName = "CANARY HOSPITAL"
    ds.StudyDescription = "CANARY STUDY"
    return ds


def _canary_variants():
    ok = _canary_dataset()
    yield "ok", to_bytes(ok)
    big = _canary_dataset()
    big.Rows = 9000
    yield "too-large", to_bytes(big)
    yield "truncated", to_bytes(_canary_dataset())[:-3000]
    # Invalid DS / IS values carrying the canary, patched into the bytes (pydicom will not write them).
    bad_window = _canary_dataset()
    bad_window.WindowCenter, bad_window.WindowWidth = "1234567890", "9876543210"
    data = to_bytes(bad_window).replace(b"1234567890", b"CANARY    ").replace(b"9876543210", b"CANARY    ")
    yield "bad-window", data
    bad_frames = _canary_dataset()
    bad_frames.NumberOfFrames = "123456"
    yield "bad-number-of-frames", to_bytes(bad_frames).replace(b"123456", b"CANARY")
    # Explicit VR Little Endian relabelled RLE (same length), pixels left uncompressed.
    relabelled = to_bytes(_canary_dataset()).replace(b"1.2.840.10008.1.2.1\0", b"1.2.840.10008.1.2.5\0", 1)
    yield "wrong-syntax", relabelled
    unknown = _canary_dataset()
    unknown.file_meta.TransferSyntaxUID = "1.2.3.999999"
    yield "unknown-syntax", to_bytes(unknown).replace(b"1.2.3.999999", b"1.2.CANARY.3")
    garbled = bytearray(to_bytes(_canary_dataset()))
    at = garbled.find(b"CANARY^PATIENT")
    garbled[at - 2 : at] = b"\xff\xff"  # the PatientName length field, now past the end of the file
    yield "garbled-length", bytes(garbled)


def test_a_bug_in_the_decoder_is_not_reported_as_a_damaged_file(monkeypatch):
    import server.imaging.dicom as dicom

    def broken(*args, **kwargs):
        raise TypeError("a bug in rendering")

    monkeypatch.setattr(dicom, "render_frame", broken)
    with pytest.raises(TypeError, match="a bug in rendering"):  # a 500 with a traceback, not a 4xx
        decode_image(read_bytes("CT_small.dcm"))


def test_pydicom_warnings_quoting_values_are_silenced_once_at_start_up():
    ds = _canary_dataset()
    ds.SpecificCharacterSet = "CANARY_CHARSET"
    data = to_bytes(ds)
    with warnings.catch_warnings(record=True) as before:
        warnings.simplefilter("always")
        decode_image(data)  # pydicom warns, quoting the value it could not use
    assert any(CANARY in str(w.message).upper() for w in before)
    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter("always")
        configure_pydicom()  # what ImagePreparer does as the service starts
        out = decode_image(data)
    assert out.format == "dicom"
    assert not [w for w in after if CANARY in str(w.message).upper()]


def test_no_patient_data_in_messages_logs_or_warnings(caplog, capsys):
    variants = list(_canary_variants())
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    codes = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for label, data in variants:
            assert CANARY.encode() in data
            try:
                out = decode_image(data)
            except ImageInputError as err:
                codes[label] = err.code
                for text in (str(err), repr(err), err.message):
                    assert CANARY not in text.upper(), (label, text)
                # No chained pydicom exception for a traceback to print.
                assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__), label
            else:
                codes[label] = "ok"
                assert CANARY not in repr(out.metadata()).upper()
    assert codes["ok"] == "ok" and codes["too-large"] == "image_too_large"
    assert codes["truncated"] == "image_truncated" and codes["bad-window"] == "ok"
    assert codes["bad-number-of-frames"] == "dicom_invalid"
    assert codes["wrong-syntax"] == "dicom_invalid"
    assert codes["unknown-syntax"] == "dicom_unsupported_transfer_syntax"
    assert "garbled-length" in codes
    assert CANARY not in caplog.text.upper()
    assert all(CANARY not in str(w.message).upper() for w in caught)
    captured = capsys.readouterr()
    assert CANARY not in (captured.out + captured.err).upper()
