"""Answer file (resume, torn lines, LLaVA-Med form), scoring of an answer file against a data set, the
report files, `--compare`, and the `eval` command. Expected numbers are worked out by hand in comments."""
from __future__ import annotations

import argparse
import json
import sys

import pytest

from server.commands import eval as eval_cmd
from server.eval.datasets import load_dataset
from server.eval.errors import PredictionsError, ReportError
from server.eval.predictions import Prediction, PredictionWriter, read_predictions
from server.eval.report import (
    compare_reports,
    load_report,
    render_comparison,
    render_markdown,
    write_chart,
    write_report,
)
from server.eval.scoring import latency_stats, score_predictions
from tests.server import eval_fixtures as fx

# Answers to the VQA-RAD fixture's test split (qids 2..5), with latencies 1..4 s.
ANSWERS_A = [("2", "Normal"), ("3", "There are two nodules."), ("4", "left lung"), ("5", "Left.")]
ANSWERS_B = [("2", "No"), ("3", "2"), ("4", "right lung"), ("5", "Left.")]


def _write_answers(path, answers):
    with PredictionWriter(path, resume=False) as w:
        for k, (qid, text) in enumerate(answers):
            w.write(Prediction(question_id=qid, text=text, prompt="q", latency_s=float(k + 1)))
    return path


def _items(tmp_path):
    return load_dataset("vqa-rad", fx.write_vqa_rad(tmp_path / "vqarad"), "test")


def test_writer_resumes_after_a_torn_last_line(tmp_path):
    path = tmp_path / "out" / "predictions.jsonl"
    with PredictionWriter(path) as w:
        w.write(Prediction("a", "yes", latency_s=0.5))
        w.write(Prediction("b", "no"))
    complete = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b'{"question_id": "c", "text": "pa')  # killed mid-write
    assert [p.question_id for p in read_predictions(path)] == ["a", "b"]
    with PredictionWriter(path) as w:
        assert w.done == {"a", "b"}
        assert path.read_bytes() == complete  # the torn tail is cut off before appending
        w.write(Prediction("c", "left"))
        with pytest.raises(PredictionsError, match="already"):
            w.write(Prediction("a", "again"))
    preds = read_predictions(path)
    assert [(p.question_id, p.text, p.latency_s) for p in preds] == [("a", "yes", 0.5), ("b", "no", None),
                                                                     ("c", "left", None)]


def test_a_bad_line_before_the_end_is_an_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question_id": 1, "text": "x"}\nnot json\n{"question_id": 2, "text": "y"}\n')
    with pytest.raises(PredictionsError, match="line 2 is not JSON"):
        read_predictions(path)
    path.write_text('{"question_id": 1}\n')
    with pytest.raises(PredictionsError, match="'question_id' and 'text'"):
        read_predictions(path)


def test_reads_llava_med_answer_files(tmp_path):
    # model_vqa_med.py's form: integer ids, answer_id/model_id/metadata, last line without newline
    path = tmp_path / "answer-file.jsonl"
    lines = [{"question_id": 101, "prompt": "Is there a fracture?\n<image>", "text": "No", "answer_id": "x1",
              "model_id": "llava-med", "metadata": {}},
             {"question_id": 102, "prompt": "What bone?", "text": "The femur", "answer_id": "x2",
              "model_id": "llava-med", "metadata": {}}]
    path.write_text("\n".join(json.dumps(rec) for rec in lines))
    preds = read_predictions(path)
    assert [(p.question_id, p.text) for p in preds] == [("101", "No"), ("102", "The femur")]
    assert preds[0].extra["model_id"] == "llava-med"
    with PredictionWriter(path) as w:  # a newline is added before appending to such a file
        w.write(Prediction("103", "yes"))
    assert [p.question_id for p in read_predictions(path)] == ["101", "102", "103"]


def test_score_predictions_golden(tmp_path):
    items = _items(tmp_path)
    preds = read_predictions(_write_answers(tmp_path / "a.jsonl", ANSWERS_A))
    report = score_predictions(items, preds, meta={"dataset": "vqa-rad", "split": "test"})
    # closed: qid 2 gt "No" vs "Normal" -> gated 1, substring 1, strict 0;
    #         qid 5 gt "left" vs "Left." -> gated 0, substring 1, strict 1
    assert report["closed"] == pytest.approx({"n": 2, "llava_med_gated": 0.5, "substring": 1.0, "strict": 0.5})
    # open: qid 3 gt "2" vs "there are 2 nodules": P 1/4, R 1, F1 0.4, exact 0, LLaVA-Med 1/4, substring 1;
    #       qid 4 gt "left lung" vs "left lung": all 1. Means: R 1, P 0.625, F1 0.7, exact 0.5
    assert report["open"] == pytest.approx({"n": 2, "recall": 1.0, "precision": 0.625, "f1": 0.7,
                                            "exact_match": 0.5, "llava_med_exact_match": 0.625, "substring": 1.0})
    assert (report["n"], report["missing"], report["schema_version"]) == (4, 0, 1)
    qt = report["breakdown"]["question_type"]
    assert list(qt) == ["COUNT", "POS", "SIZE"]
    # POS holds qid 4 (open, all 1) and qid 5 (closed: gated 0, substring 1, strict 1)
    assert qt["POS"]["n"] == 2
    assert qt["POS"]["closed"] == pytest.approx({"n": 1, "llava_med_gated": 0.0, "substring": 1.0, "strict": 1.0})
    assert qt["POS"]["open"]["recall"] == 1.0
    assert "open" not in qt["SIZE"] and qt["SIZE"]["closed"]["strict"] == 0.0
    assert set(report["breakdown"]) == {"answer_type", "question_type"}  # VQA-RAD has no modality/content type
    # latencies 1, 2, 3, 4: mean 2.5; p50 at position 1.5 -> 2.5; p90 at 2.7 -> 3 + 0.7 = 3.7; max 4
    assert report["latency"] == pytest.approx({"n": 4, "mean_s": 2.5, "p50_s": 2.5, "p90_s": 3.7, "max_s": 4.0})


def test_latency_stats_edge_cases():
    assert latency_stats([]) is None
    assert latency_stats([0.2]) == pytest.approx({"n": 1, "mean_s": 0.2, "p50_s": 0.2, "p90_s": 0.2, "max_s": 0.2})


def test_ids_must_match_the_data_set(tmp_path):
    items = _items(tmp_path)
    preds = [Prediction(q, t) for q, t in ANSWERS_A]
    with pytest.raises(PredictionsError, match="not in this data set split"):
        score_predictions(items, preds + [Prediction("999", "yes")])
    with pytest.raises(PredictionsError, match="1 of 4 questions have no answer"):
        score_predictions(items, preds[:3])
    partial = score_predictions(items, preds[:3], allow_missing=True)
    # qid 5 left out: closed is qid 2 only -> gated 1, strict 0
    assert (partial["n"], partial["missing"], partial["closed"]["n"], partial["closed"]["strict"]) == (3, 1, 1, 0.0)


def test_write_report_files(tmp_path):
    items = _items(tmp_path)
    report = score_predictions(items, [Prediction(q, t) for q, t in ANSWERS_A],
                               meta={"dataset": "vqa-rad", "split": "test"})
    written = write_report(report, tmp_path / "out", rows=[{"qid": "2"}], chart=False)
    assert set(written) == {"json", "markdown", "per_question"}
    back = load_report(written["json"])
    for section, keys in (("closed", {"n", "llava_med_gated", "substring", "strict"}),
                          ("open", {"n", "recall", "precision", "f1", "exact_match"})):
        assert keys <= set(back[section])
        assert all(0.0 <= back[section][k] <= 1.0 for k in keys - {"n"})
    assert "breakdown" in back and back["latency"] is None  # no latencies in these predictions
    md = written["markdown"].read_text()
    assert "# Evaluation: vqa-rad test" in md
    assert "| LLaVA-Med (yes/no gated substring) | 50.00 |" in md
    assert "| token recall (headline) | 100.00 |" in md
    assert "| POS | 2 | 1 | 0.00 | 100.00 | 100.00 | 1 | 100.00 | 100.00 | 100.00 |" in md


def test_load_report_refuses_other_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"closed": 1}')
    with pytest.raises(ReportError, match="not an eval report"):
        load_report(path)


def test_compare_reports(tmp_path):
    items = _items(tmp_path)
    a = score_predictions(items, [Prediction(q, t, latency_s=1.0) for q, t in ANSWERS_A])
    b = score_predictions(items, [Prediction(q, t, latency_s=0.75) for q, t in ANSWERS_B])
    rows = {name: (va, vb, d) for name, va, vb, d, _ in compare_reports(a, b)}
    # B closed: qid 2 "No" vs "No" strict 1, qid 5 strict 1 -> 100 %; A 50 % -> +50 points
    assert rows["closed strict"] == pytest.approx((50.0, 100.0, 50.0))
    # B open recall: qid 3 "2" vs "2" = 1, qid 4 "right lung" vs "left lung" = 1/2 -> 75 %; A 100 % -> -25
    assert rows["open recall"] == pytest.approx((100.0, 75.0, -25.0))
    assert rows["latency mean"] == pytest.approx((1.0, 0.75, -0.25))
    table = render_comparison(a, b)
    assert "| closed strict (%) | 50.00 | 100.00 | +50.00 |" in table
    assert "| latency mean (s) | 1.000 | 0.750 | -0.250 |" in table


def test_chart_is_optional(tmp_path, monkeypatch):
    items = _items(tmp_path)
    report = score_predictions(items, [Prediction(q, t) for q, t in ANSWERS_A])
    # As if not installed, whatever an earlier test imported: a None entry makes each import fail.
    for name in ("matplotlib", "matplotlib.backends.backend_agg", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)
    assert write_chart(report, tmp_path / "c.png") is None
    assert not (tmp_path / "c.png").exists()
    assert "chart" not in write_report(report, tmp_path / "out")


def test_chart_png(tmp_path):
    pytest.importorskip("matplotlib")
    items = _items(tmp_path)
    report = score_predictions(items, [Prediction(q, t) for q, t in ANSWERS_A])
    path = write_chart(report, tmp_path / "accuracy.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _run(argv):
    p = argparse.ArgumentParser()
    eval_cmd.add_arguments(p)
    return eval_cmd.main(p.parse_args(argv))


def test_eval_command_scores_and_compares(tmp_path, capsys):
    root = fx.write_vqa_rad(tmp_path / "vqarad")
    a = _write_answers(tmp_path / "a.jsonl", ANSWERS_A)
    b = _write_answers(tmp_path / "b.jsonl", ANSWERS_B)
    assert _run(["--dataset", "vqa-rad", "--data", str(root), "--predictions", str(a),
                 "--out", str(tmp_path / "ra"), "--no-chart"]) == 0
    assert "| strict (first yes/no word) | 50.00 |" in capsys.readouterr().out
    report = json.loads((tmp_path / "ra" / "report.json").read_text())
    assert report["meta"]["dataset"] == "vqa-rad" and report["closed"]["llava_med_gated"] == 0.5
    assert len((tmp_path / "ra" / "per_question.jsonl").read_text().splitlines()) == 4
    assert _run(["--dataset", "vqa-rad", "--data", str(root), "--predictions", str(b),
                 "--out", str(tmp_path / "rb"), "--no-chart"]) == 0
    capsys.readouterr()
    assert _run(["--compare", str(tmp_path / "ra" / "report.json"), str(tmp_path / "rb" / "report.json")]) == 0
    assert "+50.00" in capsys.readouterr().out


def test_eval_command_limit_and_errors(tmp_path, capsys):
    root = fx.write_vqa_rad(tmp_path / "vqarad")
    a = _write_answers(tmp_path / "a.jsonl", ANSWERS_A)
    # --limit 1 scores qid 2 only ("Normal" vs "No": gated 1, strict 0)
    assert _run(["--dataset", "vqa-rad", "--data", str(root), "--predictions", str(a), "--limit", "1"]) == 0
    assert "| Closed (n=1) | % |" in capsys.readouterr().out
    assert _run(["--dataset", "vqa-rad", "--data", str(root), "--bundle", str(tmp_path)]) == 2
    assert "give --out DIR" in capsys.readouterr().err  # the answer file needs a home
    assert _run(["--dataset", "slake", "--data", str(root), "--predictions", str(a)]) == 1
    assert "SLAKE" in capsys.readouterr().err
    assert _run(["--predictions", str(a)]) == 2
    assert "--dataset and --data are required" in capsys.readouterr().err


def test_markdown_without_breakdown_or_answers():
    report = score_predictions([], [])
    md = render_markdown(report)
    assert "| Closed (n=0) | % |" in md and "| LLaVA-Med (yes/no gated substring) | – |" in md
