"""The upload cache: a repeated upload skips decoding and preprocessing and yields the same pixels."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import server.imaging.prep as image_prep
from models.config import preset
from models.processor import Processor
from server.imaging.images import ImageInputError
from server.imaging.prep import ImagePreparer
from server.service.settings import DEFAULT_BUNDLE

SAMPLE = Path(__file__).resolve().parents[3] / "models" / "assets" / "sample_ct.png"


@pytest.fixture()
def preparer(monkeypatch: pytest.MonkeyPatch):
    calls = []
    real = image_prep.decode_image

    def counting(data, frame, limits, digest=None):
        calls.append(frame)
        assert digest == hashlib.sha256(data).hexdigest()  # the preparer's key, not hashed twice
        return real(data, frame, limits, digest=digest)

    monkeypatch.setattr(image_prep, "decode_image", counting)
    processor = Processor(preset("tiny"), DEFAULT_BUNDLE / "tokenizer.json")
    return ImagePreparer(processor, capacity=2), processor, calls


def test_same_bytes_decoded_once_with_identical_pixels(preparer) -> None:
    prep, processor, calls = preparer
    data = SAMPLE.read_bytes()
    first_meta, first = prep(data)
    again_meta, again = prep(data)
    assert calls == [None]  # decoded once
    assert again is first and not again.flags.writeable
    np.testing.assert_array_equal(first, processor.pixels(data))  # what a fresh decode gives
    assert again_meta.sha256 == first_meta.sha256 and again_meta.width == 128


def test_frames_are_separate_entries_and_the_oldest_is_evicted(preparer) -> None:
    prep, _, calls = preparer
    a = SAMPLE.read_bytes()
    other = io.BytesIO()
    Image.open(SAMPLE).rotate(90).save(other, format="PNG")
    prep(a)
    prep(a, frame=0)  # another frame of the same upload is another entry
    prep(other.getvalue())  # capacity 2: evicts (a, None)
    prep(a, frame=0)  # still cached
    prep(a)  # decoded again
    assert calls == [None, 0, None, None]


def test_bad_bytes_are_not_cached(preparer) -> None:
    prep, _, calls = preparer
    for _ in range(2):
        with pytest.raises(ImageInputError):
            prep(b"not an image")
    assert len(calls) == 2
