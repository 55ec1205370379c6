"""`tinyllava-med bench` end to end on a tiny bundle: structure and sanity of the comparison, not speed.

The two systems run in separate processes; the checks are that they did the same work (prompt
positions counted independently from the tokenizer, exactly N generated tokens, identical greedy
tokens from the same weights) and that the follow-up question reused the image and prefix.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Tuple

import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("safetensors")  # the export extra's, imported by models.checkpoint.writer

from tokenizers import Tokenizer  # noqa: E402

from engine_build.export import export_bundle  # noqa: E402
from models.checkpoint.writer import make_checkpoint  # noqa: E402
from models.config import preset  # noqa: E402
from server import cli  # noqa: E402
from server.bench.protocol import BenchError  # noqa: E402
from server.bench.runner import DEFAULT_FOLLOWUP, DEFAULT_QUESTION, format_report, goals, ratios  # noqa: E402

NEW_TOKENS = 5
PRESET = "tiny"
# LLaVA conversation.py conv_vicuna_v1, written out here rather than taken from our template code.
VICUNA = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions. USER: <image>\n%s ASSISTANT:")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench")
    ckpt = make_checkpoint(root / "ckpt", PRESET, "llava", seed=0)
    bundle = export_bundle(str(ckpt), str(root / "bundle"))
    return Path(ckpt), Path(bundle)


def _text_positions(bundle: Path, question: str) -> int:
    """LLaVA tokenizer_image_token, counted with the plain tokenizer: each chunk around <image> is
    encoded with special tokens and the second chunk's BOS is dropped."""
    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    before, after = (VICUNA % question).split("<image>")
    return len(tok.encode(before).ids) + len(tok.encode(after).ids) - 1


@pytest.fixture(scope="module")
def report(tiny: Tuple[Path, Path]) -> Dict:
    ckpt, bundle = tiny
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli.main(["bench", "--bundle", str(bundle), "--checkpoint", str(ckpt), "--baseline", "transformers",
                       "--new-tokens", str(NEW_TOKENS), "--json"])
    assert rc == 0
    return json.loads(out.getvalue())


def test_both_systems_do_the_same_work(tiny: Tuple[Path, Path], report: Dict) -> None:
    _, bundle = tiny
    n_image = preset(PRESET).num_image_tokens
    expected = {"first": n_image + _text_positions(bundle, DEFAULT_QUESTION),
                "followup": n_image + _text_positions(bundle, DEFAULT_FOLLOWUP)}
    rows = {(r["system"], r["question"]): r for r in report["rows"]}
    assert set(rows) == {(s, q) for s in ("ours", "transformers") for q in ("first", "followup")}
    for (system, question), row in rows.items():
        assert row["prompt_tokens"] == expected[question], (system, question)
        assert row["generated_tokens"] == NEW_TOKENS
        for key in ("prefill_ms", "ttft_ms", "decode_tokens_per_s"):
            assert row[key] > 0, (system, question, key)
        assert row["peak_rss_mb"] > 0
        assert row["ttft_ms"] >= row["prefill_ms"]
    # Same weights, same ids and pixels, greedy through EOS: the token streams must agree.
    assert report["matching_prefix_tokens"] == NEW_TOKENS
    assert report["systems"]["ours"]["output_ids"] == report["systems"]["transformers"]["output_ids"]


def test_followup_reuses_image_and_prefix_only_in_ours(report: Dict) -> None:
    rows = {(r["system"], r["question"]): r for r in report["rows"]}
    n_image = preset(PRESET).num_image_tokens
    ours_first, ours_follow = rows[("ours", "first")], rows[("ours", "followup")]
    assert ours_first["image_encode_ms"] > 0 and ours_first["cached_tokens"] == 0
    assert ours_follow["image_encode_ms"] == 0  # embeddings from the image cache
    # system prompt + image reused: at least the image positions, never the question's own tokens
    assert n_image < ours_follow["cached_tokens"] < ours_follow["prompt_tokens"]
    for q in ("first", "followup"):
        hf = rows[("transformers", q)]
        assert hf["image_encode_ms"] > 0 and hf["cached_tokens"] == 0


def test_ratios_and_table(report: Dict) -> None:
    # How each ratio is formed is checked by test_ratios_and_goals_by_hand; here, what a real run gives.
    r = report["ratios"]
    ours = report["systems"]["ours"]
    hf = report["systems"]["transformers"]
    assert set(r) >= {"decode_tokens_per_s", "ttft", "peak_rss", "followup_ttft_over_first"}
    assert all(value is not None and value > 0 for value in r.values()), r
    # the bundle's architecture is the tiny preset's (its model name is the checkpoint directory's)
    assert report["goals_for"] == PRESET
    assert list(report["goals"]) == ["followup_ttft_over_first"]
    assert report["goals"]["followup_ttft_over_first"]["target"] == "<= 0.2"
    assert ours["threads"] >= 1 and hf["threads"] >= 1
    text = format_report(report)
    for label in ("ours, first question", "ours, follow-up", "transformers, first question",
                  "transformers, follow-up", "decode tok/s, ours / transformers"):
        assert label in text


def test_ratios_and_goals_by_hand() -> None:
    def system(tok_s: float, ttft_first: float, ttft_follow: float, rss: float) -> Dict:
        return {"peak_rss_mb": rss, "questions": {"first": {"decode_tokens_per_s": tok_s, "ttft_ms": ttft_first},
                                                  "followup": {"decode_tokens_per_s": tok_s, "ttft_ms": ttft_follow}}}

    r = ratios({"ours": system(30.0, 50.0, 5.0, 300.0), "transformers": system(10.0, 200.0, 150.0, 600.0)})
    assert r == {"decode_tokens_per_s": 3.0, "ttft": 0.25, "peak_rss": 0.5, "followup_ttft_over_first": 0.1,
                 "transformers_followup_ttft_over_first": 0.75}
    assert ratios({"ours": system(30.0, 30.0, 10.0, 300.0)}) == {"followup_ttft_over_first": 0.3333}
    got = goals({"ttft": 0.25, "peak_rss": 1.5, "decode_tokens_per_s": None},
                (("ttft", "<=", 1.0), ("peak_rss", "<=", 1.0), ("decode_tokens_per_s", ">=", 1.5)))
    assert got == {"ttft": {"target": "<= 1", "value": 0.25, "met": True},
                   "peak_rss": {"target": "<= 1", "value": 1.5, "met": False},
                   "decode_tokens_per_s": {"target": ">= 1.5", "value": None, "met": None}}


def test_bench_decodes_the_image_through_the_service_path(tiny: Tuple[Path, Path], tmp_path: Path) -> None:
    from server.imaging.images import DEFAULT_LIMITS
    from server.bench.runner import run

    side = int(DEFAULT_LIMITS.max_side) + 1  # a header the service refuses (413) before decoding
    big = tmp_path / "wide.png"
    Image.new("L", (side, 1)).save(big)
    _, bundle = tiny
    with pytest.raises(BenchError, match="413 image_too_large"):
        run(bundle, big, DEFAULT_QUESTION, DEFAULT_FOLLOWUP, 2, 1, 1, [])


def test_baseline_needs_checkpoint(tiny: Tuple[Path, Path]) -> None:
    _, bundle = tiny
    from server.commands import bench

    parser = cli.build_parser()
    args = parser.parse_args(["bench", "--bundle", str(bundle), "--baseline", "transformers"])
    with pytest.raises(BenchError, match="--checkpoint"):
        bench.main(args)
