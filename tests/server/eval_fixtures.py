"""Tiny test sets written at test time in each official layout (never the real data sets).

Images come from a DICOM that ships in the pydicom wheel (CT_small.dcm, converted to JPEG with Pillow);
pydicom is a runtime dependency, so every run has it.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Dict, List

from PIL import Image


def wheel_image() -> Image.Image:
    """An 8-bit greyscale image: pydicom's CT_small.dcm (128x128 CT) windowed to its full range."""
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    px = ds.pixel_array.astype(np.float64)
    px = (px - px.min()) / max(float(px.max() - px.min()), 1.0) * 255.0
    return Image.fromarray(px.astype(np.uint8))


def save_jpg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wheel_image().convert("RGB").save(str(path), format="JPEG")
    return path


VQA_RAD_RECORDS: List[Dict[str, Any]] = [
    {"qid": 0, "phrase_type": "freeform", "qid_linked_id": "03f451ca", "image_name": "synpic100.jpg",
     "image_organ": "HEAD", "question": "Is there a mass?", "question_rephrase": "NULL", "question_type": "PRES",
     "answer": "Yes", "answer_type": "CLOSED"},
    {"qid": 1, "phrase_type": "para", "qid_linked_id": "03f451ca", "image_name": "synpic100.jpg",
     "image_organ": "HEAD", "question": "Is a mass present?", "question_rephrase": "NULL", "question_type": "PRES",
     "answer": "yes", "answer_type": "CLOSED"},
    {"qid": 2, "phrase_type": "test_freeform", "qid_linked_id": "0a1b", "image_name": "synpic200.jpg",
     "image_organ": "CHEST", "question": "Is the heart enlarged?", "question_rephrase": "NULL",
     "question_type": "SIZE", "answer": "No", "answer_type": "CLOSED"},
    {"qid": 3, "phrase_type": "test_para", "qid_linked_id": "0a1c", "image_name": "synpic200.jpg",
     "image_organ": "CHEST", "question": "How many nodules are seen?", "question_rephrase": "NULL",
     "question_type": "COUNT", "answer": 2, "answer_type": "OPEN"},
    {"qid": 4, "phrase_type": "test_freeform", "qid_linked_id": "0a1d", "image_name": "synpic200.jpg",
     "image_organ": "CHEST", "question": "Where is the nodule?", "question_rephrase": "NULL",
     "question_type": "POS", "answer": "Left lung", "answer_type": "OPEN"},
    {"qid": 5, "phrase_type": "test_freeform", "qid_linked_id": "0a1e", "image_name": "synpic200.jpg",
     "image_organ": "CHEST", "question": "Left or right lung?", "question_rephrase": "NULL",
     "question_type": "POS", "answer": "left", "answer_type": "CLOSED"},
]


def write_vqa_rad(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(VQA_RAD_RECORDS, indent=1), encoding="utf-8")
    for name in ("synpic100.jpg", "synpic200.jpg"):
        save_jpg(root / "VQA_RAD Image Folder" / name)
    return root


def _slake(qid: int, img: int, lang: str, question: str, answer: str, atype: str, content: str,
           modality: str) -> Dict[str, Any]:
    return {"img_id": img, "img_name": "xmlab%d/source.jpg" % img, "question": question, "answer": answer,
            "q_lang": lang, "location": "Lung", "modality": modality, "answer_type": atype, "base_type": "vqa",
            "content_type": content, "triple": ["vhead", "_", "_"], "qid": qid}


SLAKE_SPLITS = {
    "train": [_slake(1, 1, "en", "Is this a CT?", "Yes", "CLOSED", "Modality", "CT")],
    "validate": [_slake(2, 1, "en", "Which organ is shown?", "Lung", "OPEN", "Organ", "CT")],
    "test": [
        _slake(11, 1, "en", "Does the picture contain a tumor?", "Yes", "CLOSED", "Abnormality", "MRI"),
        _slake(12, 1, "en", "Which organ is abnormal?", "Brain", "OPEN", "Organ", "MRI"),
        _slake(13, 2, "zh", "这是什么器官?", "肺", "OPEN", "Organ", "X-Ray"),
        _slake(14, 2, "en", "Where is the lesion?", "Left Lung", "OPEN", "Position", "X-Ray"),
    ],
}


def write_slake(root: Path) -> Path:
    """`root/Slake1.0/{train,validate,test}.json` and `root/Slake1.0/imgs/xmlabN/source.jpg`."""
    base = root / "Slake1.0"
    base.mkdir(parents=True, exist_ok=True)
    for split, recs in SLAKE_SPLITS.items():
        (base / ("%s.json" % split)).write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    for img in (1, 2):
        save_jpg(base / "imgs" / ("xmlab%d" % img) / "source.jpg")
    return root


PATHVQA_TEST = [
    {"image": "test_0000", "question": "Is this a carcinoma?", "answer": "yes"},
    {"image": "test_0000", "question": "Are the nuclei enlarged?", "answer": "No"},
    {"image": "test_0001", "question": "What have lost their nuclei?", "answer": "neutrophils"},
]


def write_pathvqa(root: Path, protocol: int = 2) -> Path:
    """`root/pvqa/qas/test/test_qa.pkl` and `root/pvqa/images/test/test_000N.jpg`, as distributed."""
    base = root / "pvqa"
    qa = base / "qas" / "test" / "test_qa.pkl"
    qa.parent.mkdir(parents=True, exist_ok=True)
    qa.write_bytes(pickle.dumps(PATHVQA_TEST, protocol=protocol))
    for name in ("test_0000", "test_0001"):
        save_jpg(base / "images" / "test" / ("%s.jpg" % name))
    return root


def llava_med_records(misspell: bool = False) -> List[Dict[str, Any]]:
    key = "conversatons" if misspell else "conversations"
    return [
        {"id": 101, "image": "img_a.jpg", "answer_type": "CLOSED",
         key: [{"from": "human", "value": "<image>\nIs there a fracture?"}, {"from": "gpt", "value": "no"}]},
        {"id": 102, "image": "img_a.jpg", "answer_type": "OPEN",
         key: [{"from": "human", "value": "What bone is shown?\n<image>"}, {"from": "gpt", "value": "femur"}]},
        {"id": 103, "image": "img_b.jpg", "answer_type": "yes/no",
         key: [{"from": "human", "value": "<image>\nIs it normal?"}, {"from": "gpt", "value": "yes"}]},
        {"id": 104, "image": "img_b.jpg", "answer_type": "other",
         key: [{"from": "human", "value": "<image>\nWhat stain?"}, {"from": "gpt", "value": "H&E"}]},
    ]


def write_llava_med(root: Path, misspell: bool = False, jsonl: bool = False) -> Path:
    """`root/test.json` (or test.jsonl) and `root/images/`."""
    root.mkdir(parents=True, exist_ok=True)
    recs = llava_med_records(misspell)
    if jsonl:
        (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    else:
        (root / "test.json").write_text(json.dumps(recs), encoding="utf-8")
    for name in ("img_a.jpg", "img_b.jpg"):
        save_jpg(root / "images" / name)
    return root
