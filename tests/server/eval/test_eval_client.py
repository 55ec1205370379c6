"""`eval --url`: the stdlib client and the runner against a stand-in service on a local port (the real service
is exercised in test_eval_bundle.py). Torch-free: this file runs in the Python 3.8 run too.
Expected scores are worked out by hand in comments (LLaVA-Med's metrics, see server/eval/metrics.py)."""
from __future__ import annotations

import email.utils
import hashlib
import json
import socket
import threading
import time

import pytest

from server.cli import main as cli_main
from server.eval.client import VQAClient, data_url, retry_after_seconds
from server.eval.datasets import load_dataset
from server.eval.errors import PredictionsError, RequestError, ServiceError
from server.eval.runner import GenerationSettings, URLSource, run_eval
from tests.server import eval_fixtures as fx
from tests.server.fake_vqa_service import FakeVQAService, error

# The VQA-RAD fixture's test split: qid 2 "Is the heart enlarged?" (No, closed), 3 "How many nodules are seen?"
# (2, open), 4 "Where is the nodule?" (Left lung, open), 5 "Left or right lung?" (left, closed).
SCRIPT = {"Is the heart enlarged?": "No, it is not.", "How many nodules are seen?": "two nodules",
          "Where is the nodule?": "right lung", "Left or right lung?": "left"}


@pytest.fixture()
def vqarad(tmp_path):
    return fx.write_vqa_rad(tmp_path / "vqarad")


def _items(root):
    return load_dataset("vqa-rad", root, "test")


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _run(url, items, answers, settings=None, **kw):
    kw.setdefault("progress", False)
    return run_eval(items, URLSource(VQAClient(url, **kw.pop("client", {}))), answers,
                    settings or GenerationSettings(), **kw)


def test_cli_scores_the_service_answers(vqarad, tmp_path):
    out = tmp_path / "out"
    with FakeVQAService(SCRIPT, api_key="k3y") as svc:
        rc = cli_main(["eval", "--dataset", "vqa-rad", "--data", str(vqarad), "--url", svc.url, "--api-key", "k3y",
                       "--out", str(out), "--no-progress", "--no-chart", "--max-tokens", "32"])
    assert rc == 0
    assert {r["auth"] for r in svc.requests} == {"Bearer k3y"}
    assert {r["body"]["max_tokens"] for r in svc.requests} == {32}
    assert {r["body"]["temperature"] for r in svc.requests} == {0}
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    # closed: "No, it is not." -> "no it is not" (gt no): gate ("no" in it) and substring hold, first yes/no
    # word is "no" -> 1 on all three. "left" vs gt "left": substring 1, strict 1 (whole word), but gated 0
    # (neither "yes" nor "no" occurs in "left"). So gated 1/2, substring 2/2, strict 2/2.
    assert report["closed"]["n"] == 2
    assert report["closed"]["llava_med_gated"] == 0.5
    assert report["closed"]["substring"] == 1.0
    assert report["closed"]["strict"] == 1.0
    # open recall: "two nodules" -> {2, nodules} covers gt {2}: 1; "right lung" covers 1 of {left, lung}: 0.5.
    assert report["open"]["recall"] == pytest.approx(0.75)
    assert report["meta"]["source"] == "url" and report["meta"]["errors"] == 0
    assert report["latency"]["n"] == 4


def test_answer_file_is_what_llava_med_evaluator_pairs(vqarad, tmp_path):
    """LLaVA-Med's run_eval.py asserts gt['id'] == pred['question_id'] position by position: ids keep the data
    set's JSON type (int qids) and the file is in data set order even when answers arrive out of order."""
    # The first question is answered after all the others, the third after the second and fourth.
    questions = list(SCRIPT)
    answered = {q: threading.Event() for q in questions}
    after = {questions[0]: questions[1:], questions[2]: [questions[1], questions[3]]}

    def reply(body):
        q = body["question"]
        for other in after.get(q, []):
            answered[other].wait(30)  # the timeout only ends a hang (a client that asks one at a time)
        answered[q].set()
        return 200, {}, {"answer": SCRIPT[q], "model": "m"}

    answers = tmp_path / "answers.jsonl"
    with FakeVQAService({q: reply for q in questions}) as svc:
        summary = _run(svc.url, _items(vqarad), answers, concurrency=4)
    assert summary.asked == 4 and summary.errors == 0
    assert svc.max_in_flight >= 2  # the requests overlapped
    truth = [r for r in fx.VQA_RAD_RECORDS if r["phrase_type"].startswith("test")]
    lines = _lines(answers)
    assert [line["question_id"] for line in lines] == [r["qid"] for r in truth]
    assert all(type(line["question_id"]) is int for line in lines)
    assert [line["prompt"] for line in lines] == [r["question"] for r in truth]
    assert [line["text"] for line in lines] == [SCRIPT[r["question"]] for r in truth]
    assert all(line["model_id"] == "m" and line["latency_s"] > 0 for line in lines)


def test_image_bytes_reach_the_service_unchanged(vqarad, tmp_path):
    with FakeVQAService(SCRIPT) as svc:
        _run(svc.url, _items(vqarad), tmp_path / "a.jsonl")
    sent = {r["image_sha256"] for r in svc.requests}
    assert sent == {hashlib.sha256((vqarad / "VQA_RAD Image Folder" / "synpic200.jpg").read_bytes()).hexdigest()}
    assert {r["mime"] for r in svc.requests} == {"image/jpeg"}


def test_sampling_seed_is_per_question(vqarad, tmp_path):
    with FakeVQAService(SCRIPT) as svc:
        _run(svc.url, _items(vqarad), tmp_path / "a.jsonl", GenerationSettings(64, 0.7, seed=10), concurrency=2)
    by_q = {r["question"]: r["body"] for r in svc.requests}
    assert [by_q[q]["seed"] for q in SCRIPT] == [10, 11, 12, 13]  # seed + position in the split
    assert {b["temperature"] for b in by_q.values()} == {0.7}


def test_a_rejected_question_is_recorded_and_asked_again(vqarad, tmp_path):
    script = dict(SCRIPT, **{"Where is the nodule?": lambda body: error(413, "image too large", code="too_large")})
    answers = tmp_path / "a.jsonl"
    with FakeVQAService(script) as svc:
        summary = _run(svc.url, _items(vqarad), answers)
    assert (summary.asked, summary.errors) == (4, 1)
    failed = [line for line in _lines(answers) if "error" in line]
    assert [(f["question_id"], f["text"]) for f in failed] == [(4, "")]
    assert failed[0]["error"]["status"] == 413 and failed[0]["error"]["code"] == "too_large"
    assert "image too large" in failed[0]["error"]["message"]
    with FakeVQAService(SCRIPT) as svc:
        summary = _run(svc.url, _items(vqarad), answers)
    assert svc.questions() == ["Where is the nodule?"]  # only the failed one
    assert (summary.resumed, summary.asked, summary.errors) == (3, 1, 0)
    assert [line["text"] for line in _lines(answers)] == list(SCRIPT.values())


def test_cli_leaves_failed_questions_out_of_the_scores(vqarad, tmp_path, capsys):
    script = dict(SCRIPT, **{"Where is the nodule?": lambda body: error(400, "bad image")})
    with FakeVQAService(script) as svc:
        rc = cli_main(["eval", "--dataset", "vqa-rad", "--data", str(vqarad), "--url", svc.url,
                       "--out", str(tmp_path / "o"), "--no-progress", "--no-chart"])
    assert rc == 1
    assert "1 questions failed" in capsys.readouterr().err
    report = json.loads((tmp_path / "o" / "report.json").read_text(encoding="utf-8"))
    assert (report["n"], report["missing"], report["meta"]["errors"]) == (3, 1, 1)
    assert report["open"]["recall"] == 1.0  # only "two nodules" vs 2 is left among the open questions


def test_503_is_retried_after_retry_after(vqarad, tmp_path):
    calls = {"n": 0}
    http_date = email.utils.formatdate(time.time() + 30, usegmt=True)

    def busy_twice(body):
        calls["n"] += 1
        if calls["n"] == 1:
            return error(503, "queue full", "overloaded", headers={"Retry-After": "2"})
        if calls["n"] == 2:
            return error(503, "loading", "overloaded", headers={"Retry-After": http_date})
        return 200, {}, {"answer": "No", "model": "m"}

    slept = []
    with FakeVQAService({"Is the heart enlarged?": busy_twice}) as svc:
        client = VQAClient(svc.url, sleep=slept.append, max_wait_s=20)
        jpg = (vqarad / "VQA_RAD Image Folder" / "synpic200.jpg").read_bytes()
        assert client.vqa(jpg, "Is the heart enlarged?")["answer"] == "No"
    assert slept[0] == 2.0
    assert slept[1] == 20  # ~30 s by the HTTP date, capped at max_wait_s


def test_503_retries_are_bounded_and_stop_the_run(vqarad, tmp_path):
    always = {q: (lambda body: error(503, "loading", "overloaded")) for q in SCRIPT}
    slept = []
    answers = tmp_path / "a.jsonl"
    with FakeVQAService(always) as svc:
        client = VQAClient(svc.url, sleep=slept.append, max_retries=3, max_wait_s=3)
        with pytest.raises(ServiceError, match="after 3 retries"):
            run_eval(_items(vqarad), URLSource(client), answers, GenerationSettings(), progress=False)
    assert slept[:3] == [1.0, 2.0, 3]  # no Retry-After: 1, 2, 4 s backoff, capped at 3
    assert answers.read_text(encoding="utf-8") == ""  # nothing answered, nothing recorded as an answer


def test_wrong_key_and_no_server_stop_the_run(vqarad, tmp_path):
    with FakeVQAService(SCRIPT, api_key="right") as svc:
        with pytest.raises(ServiceError, match="--api-key"):
            _run(svc.url, _items(vqarad), tmp_path / "a.jsonl", client={"api_key": "wrong"})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(ServiceError, match="cannot reach"):
        _run("http://127.0.0.1:%d" % port, _items(vqarad), tmp_path / "b.jsonl")
    rc = cli_main(["eval", "--dataset", "vqa-rad", "--data", str(vqarad), "--url", "http://127.0.0.1:%d" % port,
                   "--answers", str(tmp_path / "c.jsonl"), "--no-progress"])
    assert rc == 1


def test_a_slow_answer_is_a_timeout_for_that_question(vqarad, tmp_path):
    released = threading.Event()  # the slow answer is held until the run is over: only the timeout ends it
    script = dict(SCRIPT, **{"Is the heart enlarged?": lambda body: (released.wait(60), (200, {}, {"answer": "x"}))[1]})
    answers = tmp_path / "a.jsonl"
    with FakeVQAService(script) as svc:
        try:
            summary = _run(svc.url, _items(vqarad), answers, client={"timeout_s": 3.0})
        finally:
            released.set()
    assert summary.errors == 1
    failed = [line for line in _lines(answers) if "error" in line]
    assert failed[0]["question_id"] == 2 and failed[0]["error"]["type"] == "timeout"


def test_resume_asks_only_the_rest_and_refuses_other_settings(vqarad, tmp_path):
    answers = tmp_path / "a.jsonl"
    items = _items(vqarad)
    with FakeVQAService(SCRIPT) as svc:
        _run(svc.url, items[:2], answers)
    with open(answers, "ab") as f:
        f.write(b'{"question_id": 4, "text": "ri')  # a run killed mid-write
    with FakeVQAService(SCRIPT) as svc:
        summary = _run(svc.url, items, answers)
        assert svc.questions() == ["Where is the nodule?", "Left or right lung?"]
        assert (summary.resumed, summary.asked) == (2, 2)
        with pytest.raises(PredictionsError, match="temperature=0.0 .now 0.7"):
            _run(svc.url, items, answers, GenerationSettings(temperature=0.7, seed=1))
        _run(svc.url, items, answers, GenerationSettings(temperature=0.7, seed=1), fresh=True)
    assert len(_lines(answers)) == 4 and {line["metadata"]["temperature"] for line in _lines(answers)} == {0.7}


def test_cli_argument_errors(vqarad, tmp_path, capsys):
    base = ["eval", "--dataset", "vqa-rad", "--data", str(vqarad), "--url", "http://127.0.0.1:9"]
    assert cli_main(base + ["--no-progress"]) == 2
    assert "--out DIR" in capsys.readouterr().err
    assert cli_main(base + ["--out", str(tmp_path), "--max-tokens", "0"]) == 2
    assert cli_main(base[:-1] + ["127.0.0.1:9", "--out", str(tmp_path)]) == 1
    assert "base address" in capsys.readouterr().err


def test_helpers():
    assert data_url(b"\x89PNG\r\n\x1a\nrest").startswith("data:image/png;base64,iVBORw0KGgpyZXN0")
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(email.utils.formatdate(time.time() - 10, usegmt=True)) == 0.0
    assert RequestError("m", 400, "t", "c").to_json() == {"message": "m", "type": "t", "code": "c", "status": 400}


def test_concurrency_is_bounded(vqarad, tmp_path):
    with FakeVQAService(SCRIPT, overlap=2) as svc:
        _run(svc.url, _items(vqarad), tmp_path / "a.jsonl", concurrency=2)
    assert svc.max_in_flight == 2
    assert threading.active_count() < 50
