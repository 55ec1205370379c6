"""`eval --bundle` on a tiny random bundle, and `eval --url` against the real service serving the same bundle:
both must give identical answers and scores (greedy). Needs torch to build the bundle (skipped in the 3.8 run)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.cli import main as cli_main
from server.eval.datasets import load_dataset
from tests.server import eval_fixtures as fx

MAX_TOKENS = 8  # the tiny bundle's context is 128 tokens; its prompts take about 70


@pytest.fixture(scope="module")
def vqarad(tmp_path_factory):
    return fx.write_vqa_rad(tmp_path_factory.mktemp("vqarad"))


@pytest.fixture(scope="module")
def pipeline(tiny_bundle):
    from server.runtime.pipeline import BundlePipeline

    return BundlePipeline(tiny_bundle)


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def _eval(vqarad, out, *source):
    return cli_main(["eval", "--dataset", "vqa-rad", "--data", str(vqarad), *source, "--out", str(out),
                     "--max-tokens", str(MAX_TOKENS), "--no-progress", "--no-chart"])


def test_bundle_answers_are_the_pipeline_answers(tiny_bundle, pipeline, vqarad, tmp_path, capsys):
    assert _eval(vqarad, tmp_path / "o", "--bundle", str(tiny_bundle), "--concurrency", "3") == 0
    assert "--concurrency 3 is ignored" in capsys.readouterr().err
    lines = _lines(tmp_path / "o" / "answers.jsonl")
    items = load_dataset("vqa-rad", vqarad, "test")
    assert [line["question_id"] for line in lines] == [int(item.qid) for item in items]
    for line, item in zip(lines, items):
        expected = pipeline.ask(item.image_path.read_bytes(), item.question, max_tokens=MAX_TOKENS)
        assert line["text"] == expected["answer"]
        assert line["usage"]["completion_tokens"] == len(expected["output_token_ids"])
        assert line["latency_s"] > 0 and line["metadata"]["temperature"] == 0.0
    report = json.loads((tmp_path / "o" / "report.json").read_text(encoding="utf-8"))
    assert report["n"] == 4 and report["meta"]["source"] == "bundle"


def test_sampling_uses_seed_plus_position(tiny_bundle, pipeline, vqarad, tmp_path):
    args = ["--bundle", str(tiny_bundle), "--temperature", "0.7", "--seed", "5", "--limit", "2"]
    assert _eval(vqarad, tmp_path / "o", *args) == 0
    items = load_dataset("vqa-rad", vqarad, "test")[:2]
    texts = [line["text"] for line in _lines(tmp_path / "o" / "answers.jsonl")]
    assert texts == [pipeline.ask(it.image_path.read_bytes(), it.question, max_tokens=MAX_TOKENS, temperature=0.7,
                                  seed=5 + i)["answer"] for i, it in enumerate(items)]


def test_url_and_bundle_give_identical_answers_and_scores(tiny_bundle, vqarad, tmp_path):
    """The real service (`tinyllava-med serve` in a child process) on the same bundle: what --url records must be
    what --bundle records, question by question, and so must every score; greedy, and sampled with a seed."""
    from tests.server.service_process import ServerProcess

    runs = {"greedy": [], "sampled": ["--temperature", "0.7", "--seed", "3"]}
    # No queue: with 4 requests in flight the service refuses some (503 + Retry-After) and the client retries.
    server = ServerProcess(tmp_path, env={"TINYLLAVA_MAX_QUEUE": "0"}, bundle=Path(tiny_bundle))
    try:
        server.wait_for("/health", 200, timeout=90)
        for name, flags in runs.items():
            rc = _eval(vqarad, tmp_path / ("url-" + name), "--url", server.url, "--concurrency", "4", *flags)
            assert rc == 0, server.logs()[-3000:]
        assert server.metric('tinyllava:request_rejected_total{reason="queue_full"}') > 0
    finally:
        server.stop()
    for name, flags in runs.items():
        assert _eval(vqarad, tmp_path / ("bundle-" + name), "--bundle", str(tiny_bundle), *flags) == 0
        via_url = _lines(tmp_path / ("url-" + name) / "answers.jsonl")
        local = _lines(tmp_path / ("bundle-" + name) / "answers.jsonl")
        assert [(p["question_id"], p["text"], p["model_id"]) for p in via_url] == \
            [(p["question_id"], p["text"], p["model_id"]) for p in local], name
        assert all(p["request_id"] for p in via_url)
        reports = [json.loads((tmp_path / (d + name) / "report.json").read_text(encoding="utf-8"))
                   for d in ("url-", "bundle-")]
        for key in ("n", "missing", "closed", "open", "breakdown"):
            assert reports[0][key] == reports[1][key], (name, key)
    greedy, sampled = (_lines(tmp_path / ("bundle-" + name) / "answers.jsonl") for name in runs)
    assert [p["text"] for p in greedy] != [p["text"] for p in sampled]  # the sampled run did sample
