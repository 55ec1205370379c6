"""Loaders for the official layouts of the medical VQA test sets, into one EvalItem type.

- VQA-RAD (osf.io/89kps): `VQA_RAD Dataset Public.json` + `VQA_RAD Image Folder/`; the split comes from
  `phrase_type` (freeform/para = train, test_freeform/test_para = test); answers may be JSON numbers.
- SLAKE (med-vqa.com/slake): `{train,validate,test}.json` + `imgs/xmlabN/source.jpg`; English by default.
- PathVQA (UCSD-AI4H/PathVQA): `qas/<split>/<split>_qa.pkl` (a list of {image, question, answer}) +
  `images/<split>/<image>.jpg`; question ids are positions in that list, as in LLaVA-Med's conversion.
- LLaVA-Med's converted files: `<split>.json` or `.jsonl` + `images/`, items {id, image, answer_type,
  conversations: [human "<image>\\nquestion", gpt answer]}, also spelled `conversatons`.
Every loader checks that question ids are unique, since answer files are matched by id.
"""
from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

from models.config import IMAGE_TOKEN
from server.eval.errors import DatasetError

DATASETS = ("vqa-rad", "slake", "pathvqa", "llava-med")

# Spellings of the answer type seen in the data sets and LLaVA-Med's files (PathVQA's script uses the last
# three; see /work/shared/reference/medvqa_eval_and_test_data.md).
_ANSWER_TYPE = {"closed": "closed", "open": "open", "yes/no": "closed", "yes_no": "closed", "yesno": "closed",
                "other": "open", "number": "open"}

VQA_RAD_JSON = "VQA_RAD Dataset Public.json"
VQA_RAD_IMAGES = "VQA_RAD Image Folder"
_SPLIT_ALIASES = {
    "slake": {"train": "train", "val": "validate", "valid": "validate", "validate": "validate",
              "validation": "validate", "test": "test"},
    "pathvqa": {"train": "train", "val": "val", "valid": "val", "validate": "val", "validation": "val",
                "test": "test"},
    "vqa-rad": {"train": "train", "test": "test"},
}


PathLike = Union[str, Path]


@dataclass(frozen=True)
class EvalItem:
    """One question of a test set. `qid` is the data set's own id as a string (answer files are matched on
    it); `answer_type` is "closed" or "open"; the three category fields are None where a data set lacks
    them (VQA-RAD has question_type, SLAKE content_type and modality). `qid_value` is the id as the data
    set's file holds it (an int for VQA-RAD, SLAKE and PathVQA): answer files are written with it, because
    LLaVA-Med's evaluator compares ids with `==` and a quoted number would not match."""

    qid: str
    image_path: Path
    question: str
    answer: str
    answer_type: str
    question_type: Optional[str]
    content_type: Optional[str]
    modality: Optional[str]
    split: str
    qid_value: Any = field(default=None, compare=False)


def load_dataset(name: str, data: PathLike, split: str = "test", *, language: Optional[str] = "en",
                 check_images: bool = True) -> List[EvalItem]:
    """Items of `split` of data set `name` (one of DATASETS) found at `data` (its directory, or for
    llava-med also a .json/.jsonl file). `language` filters SLAKE (None keeps all). With check_images,
    a missing image file is an error (scoring an answer file needs no images)."""
    loaders: Dict[str, Callable[[], List[EvalItem]]] = {
        "vqa-rad": lambda: load_vqa_rad(data, split),
        "slake": lambda: load_slake(data, split, language=language),
        "pathvqa": lambda: load_pathvqa(data, split),
        "llava-med": lambda: load_llava_med(data, split),
    }
    if name not in loaders:
        raise DatasetError("unknown data set %r: choose one of %s" % (name, ", ".join(DATASETS)))
    items = loaders[name]()
    if not items:
        raise DatasetError("%s at %s has no items in split %r" % (name, data, split))
    _check_unique(items, name)
    if check_images:
        _check_images(items, name)
    return items


def load_vqa_rad(data: PathLike, split: str = "test") -> List[EvalItem]:
    """VQA-RAD from the directory holding `VQA_RAD Dataset Public.json` (or that file itself)."""
    split = _canonical_split("vqa-rad", split)
    path = _find_file(Path(data), [VQA_RAD_JSON], "VQA-RAD")
    images = path.parent / VQA_RAD_IMAGES
    items = []
    for i, rec in enumerate(_as_list(_read_json(path), path)):
        phrase = str(_field(rec, "phrase_type", path, i)).strip().lower()
        if phrase not in ("freeform", "para", "test_freeform", "test_para"):
            raise DatasetError("%s item %d: phrase_type %r is none of freeform, para, test_freeform, test_para"
                               % (path, i, phrase))
        if ("test" if phrase.startswith("test") else "train") != split:
            continue
        items.append(EvalItem(
            qid=str(_field(rec, "qid", path, i)),
            qid_value=rec["qid"],
            image_path=images / str(_field(rec, "image_name", path, i)),
            question=str(_field(rec, "question", path, i)),
            answer=_answer_text(_field(rec, "answer", path, i)),
            answer_type=_answer_type(_field(rec, "answer_type", path, i), path, i),
            question_type=_optional(rec.get("question_type")),
            content_type=None,
            modality=None,
            split=split,
        ))
    return items


def load_slake(data: PathLike, split: str = "test", *, language: Optional[str] = "en") -> List[EvalItem]:
    """SLAKE from `Slake1.0/` (holding train/validate/test.json and imgs/) or its parent directory."""
    split = _canonical_split("slake", split)
    path = _find_file(Path(data), ["%s.json" % split, "Slake1.0/%s.json" % split], "SLAKE")
    items = []
    for i, rec in enumerate(_as_list(_read_json(path), path)):
        if language is not None and str(rec.get("q_lang", "")).lower() != language:
            continue
        items.append(EvalItem(
            qid=str(_field(rec, "qid", path, i)),
            qid_value=rec["qid"],
            image_path=path.parent / "imgs" / str(_field(rec, "img_name", path, i)),
            question=str(_field(rec, "question", path, i)),
            answer=_answer_text(_field(rec, "answer", path, i)),
            answer_type=_answer_type(_field(rec, "answer_type", path, i), path, i),
            question_type=None,
            content_type=_optional(rec.get("content_type")),
            modality=_optional(rec.get("modality")),
            split=split,
        ))
    return items


def load_pathvqa(data: PathLike, split: str = "test") -> List[EvalItem]:
    """PathVQA from the directory holding `qas/` and `images/` (or its parent `pvqa/` / `split/`).
    Closed means a yes/no answer, the convention of the PathVQA paper and of LLaVA-Med's conversion."""
    split = _canonical_split("pathvqa", split)
    rel = "qas/%s/%s_qa.pkl" % (split, split)
    path = _find_file(Path(data), [rel, "pvqa/" + rel, "split/" + rel], "PathVQA")
    root = path.parents[2]
    items = []
    for i, rec in enumerate(_as_list(_read_plain_pickle(path), path)):
        answer = _answer_text(_field(rec, "answer", path, i))
        items.append(EvalItem(
            qid=str(i),
            qid_value=i,
            image_path=root / "images" / split / _jpg_name(_field(rec, "image", path, i)),
            question=str(_field(rec, "question", path, i)),
            answer=answer,
            answer_type="closed" if answer.strip().lower() in ("yes", "no") else "open",
            question_type=None,
            content_type=None,
            modality=None,
            split=split,
        ))
    return items


def load_llava_med(data: PathLike, split: str = "test") -> List[EvalItem]:
    """LLaVA-Med's converted format: `data` is a .json/.jsonl file, or a directory with `<split>.json`
    or `<split>.jsonl`. Images are looked up under `images/` beside the file when that folder exists,
    else beside the file."""
    data = Path(data)
    path = data if data.is_file() else _find_file(data, ["%s.json" % split, "%s.jsonl" % split], "LLaVA-Med")
    records = _read_jsonl(path) if path.suffix == ".jsonl" else _as_list(_read_json(path), path)
    image_root = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    items = []
    for i, rec in enumerate(records):
        turns = rec.get("conversations", rec.get("conversatons"))
        if not isinstance(turns, list) or len(turns) < 2:
            raise DatasetError("%s item %d: needs a 'conversations' (or 'conversatons') list with the question "
                               "and the answer turn" % (path, i))
        human = next((t for t in turns if isinstance(t, dict) and t.get("from") == "human"), None)
        gpt = next((t for t in turns if isinstance(t, dict) and t.get("from") == "gpt"), None)
        if human is None or gpt is None:
            raise DatasetError("%s item %d: conversations need a 'human' and a 'gpt' turn" % (path, i))
        qid = rec.get("id", rec.get("question_id"))
        if qid is None:
            raise DatasetError("%s item %d: no 'id' (or 'question_id') field" % (path, i))
        items.append(EvalItem(
            qid=str(qid),
            qid_value=qid,
            image_path=image_root / str(_field(rec, "image", path, i)),
            question=str(human.get("value", "")).replace(IMAGE_TOKEN, "").strip(),
            answer=_answer_text(gpt.get("value", "")),
            answer_type=_answer_type(_field(rec, "answer_type", path, i), path, i),
            question_type=_optional(rec.get("question_type")),
            content_type=_optional(rec.get("content_type")),
            modality=_optional(rec.get("modality")),
            split=split,
        ))
    return items


def _canonical_split(dataset: str, split: str) -> str:
    aliases = _SPLIT_ALIASES[dataset]
    key = split.strip().lower()
    if key not in aliases:
        names = ", ".join(sorted(set(aliases.values())))
        raise DatasetError("%s has no split %r: use one of %s" % (dataset, split, names))
    return aliases[key]


def _find_file(data: Path, candidates: Sequence[str], what: str) -> Path:
    if data.is_file():
        return data
    for rel in candidates:
        if (data / rel).is_file():
            return data / rel
    raise DatasetError("%s: none of %s found under %s; point --data at the data set's directory as distributed"
                       % (what, ", ".join(repr(c) for c in candidates), data))


def _read_json(path: Path) -> Any:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError("cannot read %s as JSON: %s" % (path, e)) from e


def _read_jsonl(path: Path) -> List[Dict[str, Any]]:
    records = []
    with open(path, "r", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise DatasetError("%s line %d is not JSON: %s" % (path, line_no, e)) from e
            if not isinstance(rec, dict):
                raise DatasetError("%s line %d: expected a JSON object" % (path, line_no))
            records.append(rec)
    return records


class _PlainUnpickler(pickle.Unpickler):
    """Reads pickles made only of built-in containers and scalars: a pickle naming any class or function
    could run code on load, and PathVQA's qa files need none."""

    def find_class(self, module: str, name: str) -> Any:
        raise DatasetError("refusing to unpickle %s.%s: PathVQA qa files hold only lists, dicts and strings"
                           % (module, name))


def _read_plain_pickle(path: Path) -> Any:
    try:
        return _PlainUnpickler(io.BytesIO(path.read_bytes()), encoding="utf-8").load()
    except DatasetError as e:
        raise DatasetError("%s: %s" % (path, e)) from e
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DatasetError("cannot read %s as a pickle: %s" % (path, e)) from e


def _as_list(value: Any, path: Path) -> List[Dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise DatasetError("%s: expected a list of objects" % path)
    return value


def _field(rec: Dict[str, Any], key: str, path: Path, index: int) -> Any:
    if key not in rec or rec[key] is None:
        raise DatasetError("%s item %d: missing field %r" % (path, index, key))
    return rec[key]


def _answer_text(value: Any) -> str:
    # VQA-RAD stores some answers as JSON numbers; 2.0 and 2 both mean "2".
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _jpg_name(image: Any) -> str:
    name = str(image)
    return name if name.lower().endswith((".jpg", ".jpeg", ".png")) else name + ".jpg"


def _answer_type(value: Any, path: Path, index: int) -> str:
    key = str(value).strip().lower()
    if key not in _ANSWER_TYPE:
        raise DatasetError("%s item %d: answer_type %r is not one of %s"
                           % (path, index, value, ", ".join(sorted(_ANSWER_TYPE))))
    return _ANSWER_TYPE[key]


def _optional(value: Any) -> Optional[str]:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _check_unique(items: Iterable[EvalItem], name: str) -> None:
    seen = set()
    for item in items:
        if item.qid in seen:
            raise DatasetError("%s: question id %r occurs twice; answer files are matched by id" % (name, item.qid))
        seen.add(item.qid)


def _check_images(items: Sequence[EvalItem], name: str) -> None:
    missing = [item for item in items if not item.image_path.is_file()]
    if missing:
        raise DatasetError("%s: %d of %d images are missing, e.g. %s (question %s)"
                           % (name, len(missing), len(items), missing[0].image_path, missing[0].qid))
