"""The embedded default bundle is the trained synthetic-image demo model, and it reads the image.

Against a real `tinyllava-med serve` with no --bundle: scored by `eval --url` on the held-out synthetic test
split that scripts/make-demo-model scores (seed 0, 50 images), it meets issue 11's bars; and asked the same
question about two drawn images that differ only in the feature asked about (a lesion there or not, on the
patient's left or right), it answers each correctly. The images come from the dataset generator with every
other feature, and the rendering noise, held fixed, so nothing but that feature can carry the answer.
tests/server/eval/test_synthetic_scoring.py shows an untrained model of the same shape and an image-blind
answerer score at chance on the same split.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from models.synthetic.dataset import make_dataset, png_bytes
from models.synthetic.scene import Scene, mirrored, sample_scene, without_lesions
from server.cli import main
from server.runtime.bundle import read_manifest
from tests.server.service_process import DEFAULT_BUNDLE, ServerProcess, serving


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(ServerProcess(tmp_path_factory.mktemp("demo-server"))) as server:
        yield server


def test_the_default_bundle_is_the_synthetic_demo() -> None:
    manifest = read_manifest(DEFAULT_BUNDLE)
    assert manifest.model.name == "tinyllava-med-synthetic-demo"
    assert manifest.model.vision.image_size == 64 and manifest.model.text.num_layers == 3
    size = sum(p.stat().st_size for p in DEFAULT_BUNDLE.iterdir())
    assert size <= 25 * 1024 * 1024  # issue 11: at most 25 MB as an FP32 bundle


def test_served_demo_meets_the_accuracy_bars_on_the_held_out_split(demo_server: ServerProcess,
                                                                   tmp_path: Path) -> None:
    split = make_dataset(tmp_path / "vqa-rad", seed=0, train=0, test=50, fmt="vqa-rad", progress=False)
    out = tmp_path / "eval"
    assert main(["eval", "--dataset", "vqa-rad", "--data", str(split), "--url", demo_server.url,
                 "--out", str(out), "--no-progress", "--no-chart", "--max-tokens", "8"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["closed"]["n"] + report["open"]["n"] >= 300
    assert report["closed"]["llava_med_gated"] >= 0.90, report["closed"]
    assert report["open"]["recall"] >= 0.80, report["open"]


def _ask(server: ServerProcess, image: bytes, question: str) -> str:
    with server.client() as client:
        r = client.post("/v1/vqa", files={"image": ("scan.png", image, "image/png")},
                        data={"question": question, "max_tokens": "8"})
    assert r.status_code == 200, r.text
    return r.json()["answer"].strip().lower()


def _large_lesion_scene(modality: str, region: str, k: int) -> Scene:
    return sample_scene(np.random.default_rng([11, k]), modality=modality, region=region, lesions=1, size="large")


# Four fixed chest pairs (CT and X-ray, where the demo is most reliable). They pin that the answer follows the
# image, not how often it does: over 180 such pairs (heads and MRI too) the demo sees 76 % of the lesions and
# names the side of 85-93 % (docs/benchmarks.md), so a pair it gets wrong exists and these are not it.
PAIRS = [("CT", "chest", 0), ("X-ray", "chest", 0), ("CT", "chest", 2), ("X-ray", "chest", 3)]


@pytest.mark.parametrize("modality,region,k", PAIRS)
def test_lesion_present_or_absent_is_read_from_the_image(demo_server: ServerProcess, modality: str, region: str,
                                                         k: int) -> None:
    with_lesion = _large_lesion_scene(modality, region, k)
    without = without_lesions(with_lesion)  # same anatomy and noise
    assert _ask(demo_server, png_bytes(with_lesion), "Is there a lesion?") == "yes"
    assert _ask(demo_server, png_bytes(without), "Is there a lesion?") == "no"


@pytest.mark.parametrize("modality,region,k", PAIRS)
def test_lesion_side_is_read_from_the_image(demo_server: ServerProcess, modality: str, region: str, k: int) -> None:
    scene = _large_lesion_scene(modality, region, k)
    other = mirrored(scene)  # the same lesion across the midline, same anatomy and noise
    assert other.side != scene.side
    assert _ask(demo_server, png_bytes(scene), "Where is the lesion?") == scene.side
    assert _ask(demo_server, png_bytes(other), "Where is the lesion?") == other.side
