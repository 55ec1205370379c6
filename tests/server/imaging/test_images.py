"""PNG / JPEG uploads and format sniffing: Pillow is the oracle for pixels; refusals are 4xx codes.
DICOM uploads: tests/server/imaging/test_images_dicom.py."""
from __future__ import annotations

import hashlib
import io
import random
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from server.imaging.images import DecodedImage, ImageInputError, ImageLimits, decode_image, sniff_format
from server.imaging.limits import configure_pillow
from server.imaging.prep import ImagePreparer
from tests.server.image_fixtures import peak_rss_growth

MB = 1024 * 1024


@pytest.fixture(autouse=True)
def _restore_pillow_cap(monkeypatch):
    # configure_pillow (start-up) sets Pillow's cap and a warnings filter process-wide: keep other
    # tests' Pillow and filters as they were.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    with warnings.catch_warnings():
        yield


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kw)
    return out.getvalue()


def _photo(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], axis=-1)
    noise = rng.integers(0, 40, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_bomb(width: int, height: int, rows_of_data: int = 64) -> bytes:
    """A well-formed 8-bit greyscale PNG header declaring width x height, with a small IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    scanlines = (b"\0" + b"\0" * width) * rows_of_data  # filter byte 0, then zero pixels
    return (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(scanlines, 9))
        + _png_chunk(b"IEND", b"")
    )


def _refusal(data: bytes, **kw) -> ImageInputError:
    with pytest.raises(ImageInputError) as info:
        decode_image(data, **kw)
    err = info.value
    assert 400 <= err.status < 500 and err.code and str(err) == err.message
    return err


# ---- what decodes ----


def test_png_decodes_to_the_same_pixels_and_safe_metadata():
    img = _photo()
    data = _encode(img, "PNG")
    out = decode_image(data)
    assert isinstance(out, DecodedImage) and out.image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out.image), np.asarray(img))
    assert out.metadata() == {
        "format": "png", "width": 96, "height": 64, "frames": 1, "frame": 0, "modality": None,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def test_jpeg_decodes_as_pillow_does():
    data = _encode(_photo(seed=1), "JPEG", quality=85)
    out = decode_image(data)
    with Image.open(io.BytesIO(data)) as ref:
        np.testing.assert_array_equal(np.asarray(out.image), np.asarray(ref.convert("RGB")))
    assert (out.format, out.width, out.height) == ("jpeg", 96, 64)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "1"])
def test_png_modes_convert_as_llava_does(mode):
    img = _photo(seed=2).convert(mode)
    out = decode_image(_encode(img, "PNG"))
    np.testing.assert_array_equal(np.asarray(out.image), np.asarray(img.convert("RGB")))


def test_sixteen_bit_grey_png_is_scaled_not_clipped():
    # Pillow's convert("RGB") clips I;16 at 255; PNG 12.5 defines a sample as a fraction of 65535.
    values = (np.arange(40 * 30, dtype=np.uint32).reshape(30, 40) * 54).astype(np.uint16)
    out = decode_image(_encode(Image.fromarray(values), "PNG"))
    expected = np.clip(np.rint(values.astype(np.float64) * 255.0 / 65535.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(out.image), np.stack([expected] * 3, axis=-1))


def test_frame_zero_is_accepted_for_png_and_others_are_refused():
    data = _encode(_photo(), "PNG")
    assert decode_image(data, frame=0).frame == 0
    err = _refusal(data, frame=1)
    assert err.code == "image_frame_out_of_range"


def test_sniffing_uses_magic_bytes_only():
    assert sniff_format(_encode(_photo(), "PNG")) == "png"
    assert sniff_format(_encode(_photo(), "JPEG")) == "jpeg"
    assert sniff_format(b"\0" * 128 + b"DICM" + b"\0" * 8) == "dicom"
    assert sniff_format(b"DICM" + b"\0" * 200) is None  # no preamble: not clearly DICOM


def test_pillow_is_asked_for_the_sniffed_format_only(monkeypatch):
    seen = []
    real_open = Image.open

    def spy(fp, mode="r", formats=None):
        seen.append(formats)
        return real_open(fp, mode, formats)

    monkeypatch.setattr(Image, "open", spy)
    decode_image(_encode(_photo(), "PNG"))
    decode_image(_encode(_photo(), "JPEG"))
    assert seen == [["PNG"], ["JPEG"]]


# ---- refusals ----


@pytest.mark.parametrize(
    "data",
    [
        b"hello, this is not an image",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + b"0" * 300,
        b"GIF89a" + b"\0" * 300,
        b"BM" + b"\0" * 300,
        b"\xff\xd8",  # JPEG SOI alone: not even a marker after it
    ],
    ids=["text", "pdf", "gif", "bmp", "soi-only"],
)
def test_non_image_bytes_are_415(data):
    err = _refusal(data)
    assert (err.code, err.status) == ("image_unsupported_format", 415)
    assert "PNG, JPEG or DICOM" in err.message


def test_other_formats_pillow_reads_are_still_refused():
    for fmt in ("GIF", "BMP", "TIFF", "WEBP"):
        err = _refusal(_encode(_photo(), fmt))
        assert err.code == "image_unsupported_format", fmt


def test_empty_upload():
    assert _refusal(b"").code == "image_invalid"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_uploads_say_so(fmt, keep):
    data = _encode(_photo(320, 240, seed=3), fmt)
    err = _refusal(data[: int(len(data) * keep)])
    assert (err.code, err.status) == ("image_truncated", 422)
    assert "ends early" in err.message and fmt in err.message


def test_truncated_inside_the_png_header():
    data = _encode(_photo(), "PNG")
    assert _refusal(data[:20]).code == "image_truncated"


def test_damaged_png_with_its_end_intact_is_invalid():
    data = bytearray(_encode(_photo(320, 240, seed=4), "PNG"))
    at = data.find(b"IDAT") + 40
    data[at : at + 64] = bytes(64)  # zeros inside the deflate stream: CRC and inflate both fail
    err = _refusal(bytes(data))
    assert (err.code, err.status) == ("image_invalid", 422)


def test_png_bomb_is_refused_from_its_header():
    bomb = _png_bomb(50000, 50000)
    # The bomb is a real PNG: Pillow (cap lifted) reads its header as 50000 x 50000.
    with _uncapped_open(bomb) as img:
        assert img.size == (50000, 50000)
    errors = []
    growth = peak_rss_growth(lambda: errors.append(_refusal(bomb)))
    assert growth < 50 * MB, "peak RSS grew by %.1f MB" % (growth / MB)
    err = errors[0]
    assert (err.code, err.status) == ("image_too_large", 413)
    assert "50000 x 50000" in err.message


class _uncapped_open:
    """Image.open with Pillow's bomb cap lifted for the duration (to show the header is valid)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __enter__(self) -> Image.Image:
        self.saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        self.img = Image.open(io.BytesIO(self.data))
        return self.img

    def __exit__(self, *exc) -> None:
        self.img.close()
        Image.MAX_IMAGE_PIXELS = self.saved


def test_pixel_cap_is_well_below_pillows_default():
    # 5000 x 5000 = 25 Mpx passes Pillow's default (~89 Mpx) but not ours (16.7 Mpx).
    default_pillow_cap = int(1024 * 1024 * 1024 // 4 // 3)
    assert ImageLimits().max_pixels * 2 < default_pillow_cap
    err = _refusal(_png_bomb(5000, 5000, rows_of_data=4))
    assert (err.code, err.status) == ("image_too_large", 413)
    assert "5000 x 5000" in err.message


def test_jpeg_frame_header_is_checked_before_decoding():
    data = bytearray(_encode(_photo(), "JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    err = _refusal(bytes(data))
    assert (err.code, err.status) == ("image_too_large", 413)
    assert "60000 x 60000" in err.message


def test_a_long_side_is_capped_too():
    err = _refusal(_png_bomb(9000, 10, rows_of_data=10))
    assert err.code == "image_too_large" and "8192 on a side" in err.message


def test_pillow_bomb_warning_is_raised_as_an_error_after_start_up(monkeypatch):
    # Our header cap allows 144 px; Pillow's cap is set to 100, so Pillow only *warns* (it
    # refuses at 2x). After the start-up configuration that warning is a refusal.
    configure_pillow(10000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    err = _refusal(_encode(_photo(12, 12), "PNG"), limits=ImageLimits(max_pixels=10000))
    assert (err.code, err.status) == ("image_too_large", 413)


def test_decoding_leaves_pillow_and_the_warning_filters_alone(monkeypatch):
    # Per-decode changes to process-wide state race between request threads: there are none.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(1024 * 1024 * 1024 // 4 // 3))
    filters_before = list(warnings.filters)
    decode_image(_encode(_photo(), "PNG"), limits=ImageLimits(max_pixels=5000 * 5000))
    assert Image.MAX_IMAGE_PIXELS == int(1024 * 1024 * 1024 // 4 // 3)
    assert warnings.filters == filters_before


def test_pillow_cap_is_lowered_never_raised_and_set_by_the_preparer(monkeypatch):
    # The cap is process-wide: start from Pillow's own default whatever earlier tests did.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(1024 * 1024 * 1024 // 4 // 3))
    configure_pillow(5000 * 5000)
    assert Image.MAX_IMAGE_PIXELS == 5000 * 5000
    configure_pillow(8000 * 8000)
    assert Image.MAX_IMAGE_PIXELS == 5000 * 5000
    n_filters = len(warnings.filters)
    configure_pillow(5000 * 5000)
    assert len(warnings.filters) == n_filters  # calling again adds nothing
    ImagePreparer(None, ImageLimits(max_pixels=4000 * 4000))  # what the service builds at start-up
    assert Image.MAX_IMAGE_PIXELS == 4000 * 4000


def test_upload_byte_cap():
    data = _encode(_photo(), "PNG")
    err = _refusal(data, limits=ImageLimits(max_bytes=len(data) - 1))
    assert (err.code, err.status) == ("image_too_large", 413)


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_pixels"):
        ImageLimits(max_pixels=0)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_mutated_uploads_decode_or_are_refused_never_crash(fmt):
    rng = random.Random(1234)
    original = _encode(_photo(64, 48, seed=5), fmt)
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(8, len(data))]
        try:
            out = decode_image(bytes(data))
        except ImageInputError as err:
            assert 400 <= err.status < 500
        else:
            assert out.image.mode == "RGB"
