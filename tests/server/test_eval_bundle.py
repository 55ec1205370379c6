"""`eval --bundle` on a tiny random bundle, and `eval --url` against the real service serving the same bundle:
both must give identical answers and scores (greedy). Needs torch to build the bundle (skipped in the 3.8 run)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
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


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(bundle, port, log_path):
    """The real service in a child process, as a user starts it; waits for /health to answer 200."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    cmd = [sys.executable, "-m", "server", "serve", "--bundle", str(bundle), "--host", "127.0.0.1",
           "--port", str(port)]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            log.close()
            raise AssertionError("the server exited with %s:\n%s" % (proc.returncode, Path(log_path).read_text()))
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=2) as r:
                if r.status == 200:
                    return proc, log
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    proc.terminate()
    log.close()
    raise AssertionError("the server did not become healthy in 90 s:\n%s" % Path(log_path).read_text())


def test_url_and_bundle_give_identical_answers_and_scores(tiny_bundle, vqarad, tmp_path):
    try:
        import server.app  # noqa: F401
    except ImportError as e:
        pytest.skip("the service (server.app) is not importable here: %s" % e)
    from server.cli import COMMANDS

    if "serve" not in COMMANDS:
        pytest.skip("no `serve` command in server.cli yet")
    port = _free_port()
    proc, log = _serve(tiny_bundle, port, tmp_path / "server.log")
    try:
        assert _eval(vqarad, tmp_path / "url", "--url", "http://127.0.0.1:%d" % port, "--concurrency", "2") == 0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert _eval(vqarad, tmp_path / "bundle", "--bundle", str(tiny_bundle)) == 0
    via_url = _lines(tmp_path / "url" / "answers.jsonl")
    local = _lines(tmp_path / "bundle" / "answers.jsonl")
    assert [(p["question_id"], p["text"]) for p in via_url] == [(p["question_id"], p["text"]) for p in local]
    reports = [json.loads((tmp_path / d / "report.json").read_text(encoding="utf-8")) for d in ("url", "bundle")]
    for key in ("n", "missing", "closed", "open", "breakdown"):
        assert reports[0][key] == reports[1][key], key
