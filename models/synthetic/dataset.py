"""make_dataset: the synthetic medical VQA set in the layouts `tinyllava-med eval` reads.

- "vqa-rad": `VQA_RAD Dataset Public.json` + `VQA_RAD Image Folder/` (split in `phrase_type`);
- "slake": `Slake1.0/{train,validate,test}.json` + `Slake1.0/imgs/xmlabN/source.*` (validate is empty);
- "llava-med": `train.json` (instruction-tuning conversations: a caption turn, then questions) +
  `test.json` (one question per item, LLaVA-Med's converted VQA format) + `images/`.

Train and test images are different scenes (split by image); each split draws from its own seed
stream and each image from its own generator, so --train N does not change the test set. Every
`dicom_every`-th image is written as DICOM, the rest as PNG. Same seed, same bytes.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import numpy as np
from PIL import Image

from models.synthetic.dicom_write import dicom_bytes
from models.synthetic.questions import QA, caption, questions
from models.synthetic.scene import LOCATION_OF, Scene, render, sample_scene

FORMATS = ("vqa-rad", "slake", "llava-med")
GENERATOR_VERSION = "1"  # recorded in dataset_info.json; bump when images or questions change
_ORGAN_VQA_RAD = {"head": "HEAD", "chest": "CHEST", "abdomen": "ABD"}
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class Item:
    split: str
    index: int
    scene: Scene
    qas: Tuple[QA, ...]
    dicom: bool


def scenes(seed: int, split: str, count: int) -> List[Tuple[Scene, Tuple[QA, ...]]]:
    """The split's scenes and their questions, image by image."""
    out = []
    for i in range(count):
        rng = np.random.default_rng([seed, _SPLITS.index(split), i])
        scene = sample_scene(rng)
        out.append((scene, tuple(questions(scene, rng))))
    return out


def png_bytes(scene: Scene) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(render(scene), mode="L").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def make_dataset(out: Union[str, Path], seed: int = 0, train: int = 1000, test: int = 50, fmt: str = "llava-med",
                 dicom_every: int = 8, progress: bool = True) -> Path:
    """Write the data set to `out` (absent or empty); returns the path `eval --data` takes."""
    if fmt not in FORMATS:
        raise ValueError("unknown format %r: choose one of %s" % (fmt, ", ".join(FORMATS)))
    if train < 0 or test < 0 or train + test == 0:
        raise ValueError("--train and --test must be >= 0 and not both 0")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError("%s is not empty; give a new directory" % out)
    items = [Item(split, i, scene, qas, dicom_every > 0 and i % dicom_every == dicom_every - 1)
             for split, n in (("train", train), ("test", test))
             for i, (scene, qas) in enumerate(scenes(seed, split, n))]
    root = out / "Slake1.0" if fmt == "slake" else out
    image_dir = {"vqa-rad": root / "VQA_RAD Image Folder", "slake": root / "imgs", "llava-med": root / "images"}[fmt]
    image_dir.mkdir(parents=True, exist_ok=True)
    names: Dict[Tuple[str, int], str] = {}
    from tqdm import tqdm  # the export extra's; `tinyllava-med --help` must work without it

    for item in tqdm(items, desc="drawing images", unit="img", disable=not progress):
        name = _image_name(fmt, item)
        names[(item.split, item.index)] = name
        path = image_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(dicom_bytes(item.scene, name) if item.dicom else png_bytes(item.scene))
    if fmt == "vqa-rad":
        _dump(root / "VQA_RAD Dataset Public.json", _vqa_rad(items, names))
    elif fmt == "slake":
        for split in ("train", "test"):
            _dump(root / ("%s.json" % split), _slake([it for it in items if it.split == split], names))
        _dump(root / "validate.json", [])
    else:
        _dump(root / "train.json", _instruct([it for it in items if it.split == "train"], names))
        _dump(root / "test.json", _llava_vqa([it for it in items if it.split == "test"], names))
    counts = {s: {"images": sum(1 for it in items if it.split == s),
                  "questions": sum(len(it.qas) for it in items if it.split == s),
                  "closed": sum(1 for it in items if it.split == s for q in it.qas if q.answer_type == "CLOSED")}
              for s in _SPLITS}
    _dump(out / "dataset_info.json", {
        "generator": "tinyllava-med make-dataset", "generator_version": GENERATOR_VERSION, "seed": seed,
        "format": fmt, "dicom_every": dicom_every, "splits": counts,
        "note": "Synthetic images drawn by a program; no patient data. Not for clinical use. Sides follow the "
                "radiological convention: the patient's left is on the image's right.",
    })
    return root


# The sample images in models/assets (README examples, the page's first try): drawn by the same
# generator with the features fixed, so the demo model's answers to the README's questions are known.
SAMPLES = {
    "synthetic_ct_head.png": dict(modality="CT", region="head", lesions=1, side="left", size="large"),
    "synthetic_xray_chest.png": dict(modality="X-ray", region="chest", lesions=2, side="right", size="large"),
    "synthetic_mri_abdomen.dcm": dict(modality="MRI", region="abdomen", lesions=0),
}


def write_samples(out: Union[str, Path], seed: int = 0) -> List[Path]:
    """The SAMPLES files in `out`; same seed, same bytes."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (name, features) in enumerate(sorted(SAMPLES.items())):
        scene = sample_scene(np.random.default_rng([seed, 99, k]), **features)  # type: ignore[arg-type]
        path = out / name
        path.write_bytes(dicom_bytes(scene, name) if name.endswith(".dcm") else png_bytes(scene))
        paths.append(path)
    return paths


def _image_name(fmt: str, item: Item) -> str:
    ext = ".dcm" if item.dicom else ".png"
    number = item.index + 1 + (0 if item.split == "train" else 100000)
    if fmt == "vqa-rad":
        return "synpic%06d%s" % (number, ext)
    if fmt == "slake":
        return "xmlab%d/source%s" % (number, ext)
    return "%s_%05d%s" % (item.split, item.index, ext)


def _qids(items: List[Item]):
    qid = 0
    for item in items:
        for qa in item.qas:
            qid += 1
            yield qid, item, qa


def _vqa_rad(items: List[Item], names: Dict[Tuple[str, int], str]) -> List[Dict[str, Any]]:
    return [{
        "qid": qid, "image_name": names[(it.split, it.index)], "image_organ": _ORGAN_VQA_RAD[it.scene.region],
        "answer": qa.answer, "answer_type": qa.answer_type, "question_type": qa.question_type,
        "question": qa.question, "question_rephrase": "NULL",
        "phrase_type": "freeform" if it.split == "train" else "test_freeform",
    } for qid, it, qa in _qids(items)]


def _slake(items: List[Item], names: Dict[Tuple[str, int], str]) -> List[Dict[str, Any]]:
    offset = 0 if not items or items[0].split == "train" else 1000000
    return [{
        "img_id": it.index + 1 + offset, "img_name": names[(it.split, it.index)], "question": qa.question,
        "answer": qa.answer, "q_lang": "en", "location": LOCATION_OF[it.scene.region],
        "modality": it.scene.modality, "answer_type": qa.answer_type, "base_type": "vqa",
        "content_type": qa.content_type, "triple": ["vhead", "_", "_"], "qid": qid + offset,
    } for qid, it, qa in _qids(items)]


def _llava_vqa(items: List[Item], names: Dict[Tuple[str, int], str]) -> List[Dict[str, Any]]:
    return [{
        "id": qid, "image": names[(it.split, it.index)], "answer_type": qa.answer_type,
        "question_type": qa.question_type, "content_type": qa.content_type, "modality": it.scene.modality,
        "conversations": [{"from": "human", "value": "<image>\n" + qa.question}, {"from": "gpt", "value": qa.answer}],
    } for qid, it, qa in _qids(items)]


def _instruct(items: List[Item], names: Dict[Tuple[str, int], str]) -> List[Dict[str, Any]]:
    """One multi-turn conversation per image: the caption, then every question about it."""
    out = []
    for it in items:
        turns = [{"from": "human", "value": "<image>\nDescribe this image."},
                 {"from": "gpt", "value": caption(it.scene)}]
        for qa in it.qas:
            turns += [{"from": "human", "value": qa.question}, {"from": "gpt", "value": qa.answer}]
        out.append({"id": "%s_%05d" % (it.split, it.index), "image": names[(it.split, it.index)],
                    "answer_type": "OPEN", "conversations": turns})
    return out


def _dump(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


__all__ = ["FORMATS", "SAMPLES", "make_dataset", "png_bytes", "scenes", "write_samples"]
