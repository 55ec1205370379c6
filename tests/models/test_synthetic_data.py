"""make-dataset: deterministic bytes, the layouts eval reads, balanced answers, DICOM that decodes to the PNG.

Torch-free: runs on Python 3.8 too (TINYLLAVA_PY38_RUN=1).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from models.synthetic.dataset import make_dataset, scenes
from models.synthetic.scene import IMAGE_SIZE, mirrored, render, sample_scene, without_lesions
from server.eval.datasets import load_dataset


def _digests(root: Path) -> Dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["vqa-rad", "slake", "llava-med"])
def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path, fmt: str) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        make_dataset(tmp_path / name, seed=seed, train=12, test=8, fmt=fmt, progress=False)
    a, b, c = (_digests(tmp_path / name) for name in "abc")
    assert a == b and len(a) > 20
    images = [k for k in a if k.endswith((".png", ".dcm"))]
    assert len(images) == 20 and all(a[k] != c.get(k) for k in images)


def test_test_split_is_independent_of_train_size_and_split_by_image(tmp_path: Path) -> None:
    small = scenes(0, "test", 10)
    large = scenes(0, "test", 10)
    assert small == large
    train = {render(s).tobytes() for s, _ in scenes(0, "train", 60)}
    assert not train & {render(s).tobytes() for s, _ in scenes(0, "test", 30)}


@pytest.mark.parametrize("fmt,name", [("vqa-rad", "vqa-rad"), ("slake", "slake"), ("llava-med", "llava-med")])
def test_eval_loaders_read_every_layout(tmp_path: Path, fmt: str, name: str) -> None:
    root = make_dataset(tmp_path / "d", seed=0, train=10, test=40, fmt=fmt, progress=False)
    items = load_dataset(name, root, "test")  # checks ids are unique and every image exists
    info = json.loads((tmp_path / "d" / "dataset_info.json").read_text())
    assert len(items) == info["splits"]["test"]["questions"] >= 40 * 6
    assert {i.answer_type for i in items} == {"closed", "open"}
    assert any(i.image_path.suffix == ".dcm" for i in items) and any(i.image_path.suffix == ".png" for i in items)
    closed = Counter(i.answer for i in items if i.answer_type == "closed")
    assert set(closed) == {"yes", "no"}
    assert abs(closed["yes"] - closed["no"]) <= 0.2 * sum(closed.values())  # balanced: chance is about 50 %
    if fmt == "slake":
        assert {i.modality for i in items} == {"CT", "MRI", "X-ray"}
        assert {i.content_type for i in items} >= {"Abnormality", "Position", "Modality", "Organ", "Size", "Quantity"}
    if fmt == "vqa-rad":
        assert load_dataset(name, root, "train")  # the train split is in the same file (phrase_type)


def test_answers_match_the_scene() -> None:
    for scene, qas in scenes(1, "train", 40):
        by_q = {q.question: q.answer for q in qas}
        assert by_q[next(q for q in by_q if q.startswith("How many"))] == str(len(scene.lesions))
        where = [q for q in by_q if q in ("Where is the lesion?", "On which side is the lesion?")]
        assert (by_q[where[0]] == scene.side) if scene.lesions else not where


def test_lesion_side_is_visible_in_the_pixels() -> None:
    """The same scene with and without its lesion differs only on the lesion's side of the image
    (radiological convention: the patient's left is the image's right)."""
    for seed in range(6):
        for side in ("left", "right"):
            scene = sample_scene(np.random.default_rng(seed), "CT", "head", 1, side, "large")
            normal = without_lesions(scene)
            assert normal == dataclasses.replace(scene, lesions=(), side="none", size="none")
            half = IMAGE_SIZE // 2
            # mirrored(): the same lesion on the other side, nothing else changed
            for shown, shown_side in ((scene, side), (mirrored(scene), "right" if side == "left" else "left")):
                assert shown.side == shown_side
                diff = np.abs(render(shown).astype(int) - render(normal).astype(int))
                image_right, image_left = diff[:, half:].sum(), diff[:, :half].sum()
                lesion_half, other = (image_right, image_left) if shown_side == "left" else (image_left, image_right)
                assert lesion_half > 1000 and other == 0


def test_dicom_images_decode_like_their_png_through_the_server_path(tmp_path: Path) -> None:
    from PIL import Image

    from models.synthetic.dicom_write import dicom_bytes
    from server.imaging.images import decode_image

    for scene, _ in scenes(2, "test", 6):
        decoded = decode_image(dicom_bytes(scene, "x.dcm"))
        assert decoded.format == "dicom" and decoded.modality == {"CT": "CT", "MRI": "MR", "X-ray": "DX"}[scene.modality]
        got = np.asarray(decoded.image.convert("L"), dtype=int)
        assert np.abs(got - render(scene).astype(int)).max() <= 1
        assert isinstance(decoded.image, Image.Image)
