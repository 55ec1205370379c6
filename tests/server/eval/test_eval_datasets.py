"""Loaders read each official layout (fixtures written in tmp_path) into EvalItem, and refuse bad input
with a message that names the file and what is wrong."""
from __future__ import annotations

import collections
import json
import pickle

import pytest
from PIL import Image

from server.eval.datasets import EvalItem, load_dataset
from server.eval.errors import DatasetError
from tests.server import eval_fixtures as fx


def _fields(items, *names):
    return [tuple(getattr(i, n) for n in names) for i in items]


def test_fixture_images_are_real_jpegs(tmp_path):
    path = fx.save_jpg(tmp_path / "x.jpg")
    with Image.open(path) as im:
        assert im.format == "JPEG" and im.size[0] >= 64


def test_vqa_rad_split_from_phrase_type(tmp_path):
    root = fx.write_vqa_rad(tmp_path / "vqarad")
    test = load_dataset("vqa-rad", root, "test")
    # test_freeform and test_para records are qids 2..5, in file order
    assert [i.qid for i in test] == ["2", "3", "4", "5"]
    # the JSON number 2 becomes "2"; mixed case is kept (normalisation is the metric's job)
    assert _fields(test, "answer", "answer_type", "question_type") == [
        ("No", "closed", "SIZE"), ("2", "open", "COUNT"), ("Left lung", "open", "POS"), ("left", "closed", "POS")]
    assert all(i.split == "test" and i.modality is None and i.content_type is None for i in test)
    assert test[0].image_path == root / "VQA_RAD Image Folder" / "synpic200.jpg"
    assert test[0].image_path.is_file()
    train = load_dataset("vqa-rad", root, "train")
    assert [i.qid for i in train] == ["0", "1"]
    # the json file itself is accepted as --data too
    assert load_dataset("vqa-rad", root / "VQA_RAD Dataset Public.json") == test


def test_slake_english_subset_and_splits(tmp_path):
    root = fx.write_slake(tmp_path)
    test = load_dataset("slake", root, "test")
    # the zh question (qid 13) is dropped by default
    assert _fields(test, "qid", "answer", "answer_type", "content_type", "modality") == [
        ("11", "Yes", "closed", "Abnormality", "MRI"), ("12", "Brain", "open", "Organ", "MRI"),
        ("14", "Left Lung", "open", "Position", "X-Ray")]
    assert test[2].image_path == root / "Slake1.0" / "imgs" / "xmlab2" / "source.jpg"
    assert [i.qid for i in load_dataset("slake", root, "test", language=None)] == ["11", "12", "13", "14"]
    # pointing at Slake1.0/ itself works; "val" means the "validate" file
    assert [i.qid for i in load_dataset("slake", root / "Slake1.0", "val")] == ["2"]
    assert load_dataset("slake", root / "Slake1.0", "val")[0].split == "validate"


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_pathvqa_pickle_layout(tmp_path, protocol):
    root = fx.write_pathvqa(tmp_path, protocol=protocol)
    items = load_dataset("pathvqa", root, "test")
    # ids are positions in test_qa.pkl; yes/no answers (any case) are closed, the rest open
    assert _fields(items, "qid", "answer", "answer_type") == [
        ("0", "yes", "closed"), ("1", "No", "closed"), ("2", "neutrophils", "open")]
    assert items[2].image_path == root / "pvqa" / "images" / "test" / "test_0001.jpg"
    # the pvqa/ directory itself is accepted too
    assert load_dataset("pathvqa", root / "pvqa", "test") == items


def test_pathvqa_refuses_pickles_that_name_classes(tmp_path):
    root = fx.write_pathvqa(tmp_path)
    qa = root / "pvqa" / "qas" / "test" / "test_qa.pkl"
    # an OrderedDict is harmless, but it is a global lookup: the same opcode that could name os.system
    qa.write_bytes(pickle.dumps([collections.OrderedDict(image="test_0000", question="q", answer="yes")]))
    with pytest.raises(DatasetError, match="refusing to unpickle collections.OrderedDict"):
        load_dataset("pathvqa", root, "test")


@pytest.mark.parametrize("misspell, jsonl", [(False, False), (True, False), (True, True)])
def test_llava_med_converted_format(tmp_path, misspell, jsonl):
    root = fx.write_llava_med(tmp_path / "data_RAD", misspell=misspell, jsonl=jsonl)
    items = load_dataset("llava-med", root, "test")
    # "<image>" is removed wherever it is; yes/no -> closed, other -> open
    assert _fields(items, "qid", "question", "answer", "answer_type") == [
        ("101", "Is there a fracture?", "no", "closed"), ("102", "What bone is shown?", "femur", "open"),
        ("103", "Is it normal?", "yes", "closed"), ("104", "What stain?", "H&E", "open")]
    assert items[0].image_path == root / "images" / "img_a.jpg"
    data_file = root / ("test.jsonl" if jsonl else "test.json")
    assert load_dataset("llava-med", data_file) == items


def test_eval_item_is_the_common_type(tmp_path):
    for name, root in (("vqa-rad", fx.write_vqa_rad(tmp_path / "a")), ("slake", fx.write_slake(tmp_path / "b")),
                       ("pathvqa", fx.write_pathvqa(tmp_path / "c")),
                       ("llava-med", fx.write_llava_med(tmp_path / "d"))):
        items = load_dataset(name, root)
        assert items and all(isinstance(i, EvalItem) and i.answer_type in ("closed", "open") for i in items)
        # every fixture's ids are JSON numbers (PathVQA's are list positions): kept as ints for answer files
        assert all(type(i.qid_value) is int and str(i.qid_value) == i.qid for i in items)


def test_missing_layout_names_the_expected_file(tmp_path):
    with pytest.raises(DatasetError, match="VQA_RAD Dataset Public.json"):
        load_dataset("vqa-rad", tmp_path)
    with pytest.raises(DatasetError, match="test_qa.pkl"):
        load_dataset("pathvqa", tmp_path)


def test_missing_images_are_reported_unless_not_needed(tmp_path):
    root = fx.write_vqa_rad(tmp_path)
    (root / "VQA_RAD Image Folder" / "synpic200.jpg").unlink()
    with pytest.raises(DatasetError, match="4 of 4 images are missing"):
        load_dataset("vqa-rad", root)
    assert len(load_dataset("vqa-rad", root, check_images=False)) == 4


def test_bad_answer_type_and_duplicate_ids(tmp_path):
    recs = json.loads(json.dumps(fx.VQA_RAD_RECORDS))
    recs[2]["answer_type"] = "MAYBE"
    root = fx.write_vqa_rad(tmp_path)
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(recs), encoding="utf-8")
    with pytest.raises(DatasetError, match="answer_type 'MAYBE'"):
        load_dataset("vqa-rad", root)
    recs[2]["answer_type"] = "CLOSED"
    recs[3]["qid"] = 2
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(recs), encoding="utf-8")
    with pytest.raises(DatasetError, match="question id '2' occurs twice"):
        load_dataset("vqa-rad", root)


def test_unknown_split_and_dataset(tmp_path):
    root = fx.write_slake(tmp_path)
    with pytest.raises(DatasetError, match="use one of test, train, validate"):
        load_dataset("slake", root, "dev")
    with pytest.raises(DatasetError, match="unknown data set"):
        load_dataset("mimic", root)


def test_llava_med_needs_question_and_answer_turns(tmp_path):
    root = fx.write_llava_med(tmp_path)
    recs = fx.llava_med_records()
    recs[1]["conversations"] = recs[1]["conversations"][:1]
    (root / "test.json").write_text(json.dumps(recs), encoding="utf-8")
    with pytest.raises(DatasetError, match="item 1"):
        load_dataset("llava-med", root)
