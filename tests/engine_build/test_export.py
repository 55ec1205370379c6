"""Export: bundle contents, the TensorRT 8.5 gate on real exports, refusal of damaged bundles,
fp16 fidelity, and prefix reuse giving the tokens of a fresh run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")

from engine_build.export import ExportError, export_bundle  # noqa: E402
from engine_build.trt_gate import check_bundle  # noqa: E402
from models.probes import builtin_images  # noqa: E402
from server.cli import main as cli  # noqa: E402
from server.runtime import load_runtime  # noqa: E402
from server.runtime.bundle import SCHEMA_VERSION, BundleError, load_manifest  # noqa: E402
from server.runtime.pipeline import BundlePipeline  # noqa: E402


def test_manifest_describes_the_bundle(tiny_bundle: Path) -> None:
    m = load_manifest(tiny_bundle)
    assert m.schema_version == SCHEMA_VERSION and m.opset == 16 and m.precision == "float32"
    assert m.max_context == 128 and m.model.name and m.template == "vicuna_v1"
    files = {p.name for p in tiny_bundle.iterdir()} - {"manifest.json"}
    assert set(m.files) == files == {"vision.onnx", "decoder.onnx", "embed_tokens.npy", "tokenizer.json"}
    dec = m.graphs["decoder"]
    assert [t.name for t in dec.inputs] == ["inputs_embeds", "position_ids", "past_key", "past_value", "past_mask"]
    assert dec.inputs[2].shape == [2, 1, 2, 128, 16]  # tiny: 2 layers, 2 KV heads, head_dim 64/4
    assert m.tokenizer["eos_token"] == "</s>" and m.tokenizer["bos_token_id"] == 1


@pytest.mark.parametrize("opset", [16, 17])
def test_exported_graphs_pass_the_trt85_gate(tiny_checkpoint: Path, tmp_path: Path, opset: int) -> None:
    out = export_bundle(str(tiny_checkpoint), str(tmp_path / "b"), opset=opset, max_context=64)
    reports = check_bundle(out)
    assert set(reports) == {"vision.onnx", "decoder.onnx"}
    for name, report in reports.items():
        assert report.ok, report.format()
        assert report.opset == opset
        assert "LayerNormalization" not in report.ops and "If" not in report.ops, name
    assert "ReduceMean" in reports["vision.onnx"].ops  # LayerNorm decomposed, not dropped


def test_export_refuses_bad_options(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="opset 18 is not supported"):
        export_bundle(str(tiny_checkpoint), str(tmp_path / "a"), opset=18)
    with pytest.raises(ExportError, match="--max-context 10 outside"):
        export_bundle(str(tiny_checkpoint), str(tmp_path / "b"), max_context=10)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        export_bundle(str(tiny_checkpoint), str(tmp_path / "c"))


@pytest.fixture()
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(tiny_bundle, dst)
    return dst


def test_tampered_file_is_refused_by_name(bundle_copy: Path) -> None:
    p = bundle_copy / "decoder.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="decoder.onnx fails its sha256 check"):
        load_runtime(bundle_copy)


def test_truncated_file_is_refused_by_name(bundle_copy: Path) -> None:
    p = bundle_copy / "embed_tokens.npy"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(BundleError, match=r"embed_tokens.npy has \d+ bytes, the manifest says \d+ \(truncated"):
        load_runtime(bundle_copy)


def test_missing_file_is_refused_by_name(bundle_copy: Path) -> None:
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json is missing"):
        load_runtime(bundle_copy)


def test_other_schema_version_is_refused(bundle_copy: Path) -> None:
    p = bundle_copy / "manifest.json"
    m = json.loads(p.read_text())
    m["schema_version"] = SCHEMA_VERSION + 1
    p.write_text(json.dumps(m))
    with pytest.raises(BundleError, match="schema version %d, this runtime reads version %d"
                       % (SCHEMA_VERSION + 1, SCHEMA_VERSION)):
        load_runtime(bundle_copy)


def test_fp16_bundle_fidelity(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--dtype float16 on ORT CPU: identical greedy sequences on >= 90 % of probes, top-1 >= 99 %."""
    b16 = export_bundle(str(tiny_checkpoint), str(tmp_path / "b16"), dtype="float16", max_context=128)
    assert load_manifest(b16).precision == "float16"
    rc = cli(["validate", str(b16), "--reference", str(tiny_checkpoint), "--min-greedy", "0.9", "--min-top1", "0.99",
              "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0, report
    assert report["probes"] >= 10
    assert report["greedy_agreement"] >= 0.9 and report["top1_agreement"] >= 0.99
    assert 0 < report["max_logit_diff"] < 0.1  # fp16 rounding shows, but stays small


def test_validate_fails_against_other_weights(tiny_bundle: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    from models.checkpoint.writer import make_checkpoint

    other = make_checkpoint(tmp_path / "other", "tiny", "llava", seed=7, progress=False)
    rc = cli(["validate", str(tiny_bundle), "--reference", str(other), "--min-greedy", "0.9", "--max-tokens", "8"])
    assert rc == 1
    assert "validation FAILED" in capsys.readouterr().err


def test_follow_up_reuses_image_and_prefix_with_fresh_run_tokens(tiny_bundle: Path) -> None:
    image = builtin_images()[0][1]
    warm = BundlePipeline(tiny_bundle)
    first = warm.ask(image, "Is there a fracture?", max_tokens=16, ignore_eos=True)
    follow = warm.ask(image, "Where is the lesion?", max_tokens=16, ignore_eos=True)
    fresh = BundlePipeline(tiny_bundle, prefix_reuse=False).ask(image, "Where is the lesion?", max_tokens=16,
                                                                ignore_eos=True)
    assert follow["output_token_ids"] == fresh["output_token_ids"]
    t = follow["timings"]
    assert t["images_encoded"] == 0 and t["image_encode_ms"] == 0  # the image positions came from the KV cache
    # everything up to the question is reused: BOS + system + "USER:" + the image tokens at least
    assert t["cached_tokens"] >= first["prompt_token_ids"].index(-200) + 16
    assert fresh["timings"]["cached_tokens"] == 0
