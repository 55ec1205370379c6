"""quantize: FP16 / TensorRT INT8 (QDQ) / CPU INT8 bundles of the tiny presets, validated against the FP32
bundle on ONNX Runtime CPU through `tinyllava-med validate`, plus what their manifests and graphs promise."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from engine_build.export import export_bundle  # noqa: E402
from engine_build.quantize import DEFAULT_EXCLUDE, QuantizeError, QuantizeOptions, quantize_bundle  # noqa: E402
from engine_build.trt_gate import check_bundle  # noqa: E402
from server.cli import main as cli  # noqa: E402
from server.runtime.bundle import SCHEMA_VERSION, load_manifest  # noqa: E402

PRESETS = ("tiny", "tiny-phi", "tiny-clip")
# precision -> (min greedy-sequence agreement, min top-1 agreement): the bar, not tuned to pass
BAR = {"fp16": (0.90, 0.99), "int8": (0.0, 0.95), "int8-cpu": (0.0, 0.95)}


@pytest.fixture(scope="module")
def fp32_bundles(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    from models.checkpoint.writer import make_checkpoint

    out = {}
    for p in PRESETS:
        d = tmp_path_factory.mktemp("q-" + p)
        ckpt = make_checkpoint(d / "ckpt", p, "llava", seed=0, progress=False)
        out[p] = export_bundle(str(ckpt), str(d / "fp32"), max_context=128)
    return out


@pytest.fixture(scope="module")
def quantized(fp32_bundles: Dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Dict[Tuple[str, str], Path]:
    out = {}
    for p, b in fp32_bundles.items():
        for prec in BAR:
            dst = tmp_path_factory.mktemp("q") / ("%s-%s" % (p, prec))
            assert cli(["quantize", str(b), "--precision", prec, "--out", str(dst)]) == 0
            out[(p, prec)] = dst
    return out


@pytest.mark.parametrize("precision", list(BAR))
@pytest.mark.parametrize("preset", PRESETS)
def test_fidelity_against_the_fp32_bundle(preset: str, precision: str, fp32_bundles, quantized,
                                          capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    greedy, top1 = BAR[precision]
    rc = cli(["validate", str(quantized[(preset, precision)]), "--reference", str(fp32_bundles[preset]),
              "--min-greedy", str(greedy), "--min-top1", str(top1), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["probes"] >= 14
    assert rc == 0, (report["greedy_agreement"], report["top1_agreement"])
    assert report["max_logit_diff"] > 0  # the candidate really is another graph


@pytest.mark.parametrize("preset", PRESETS)
def test_fp16_keeps_norms_softmax_and_rotary_in_fp32(preset: str, quantized) -> None:
    b = quantized[(preset, "fp16")]
    m = load_manifest(b)
    assert m.precision == "float16" and m.schema_version == SCHEMA_VERSION and m.embeddings.dtype == "float16"
    assert np.load(b / "embed_tokens.npy", mmap_mode="r").dtype == np.float16
    model = onnx.shape_inference.infer_shapes(onnx.load(str(b / "decoder.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.output)
             + list(model.graph.input)}
    assert types["inputs_embeds"] == types["past_key"] == types["new_key"] == onnx.TensorProto.FLOAT16
    assert types["logits"] == onnx.TensorProto.FLOAT
    pins = set(m.quantization["graphs"]["decoder"]["fp32_nodes"])
    nodes = {n.name: n for n in model.graph.node}
    for op in ("Softmax", "ReduceMean", "Sqrt", "Cos", "Sin"):
        named = [n for n, node in nodes.items() if node.op_type == op]
        assert named and set(named) <= pins, op
        for n in named:  # computed in FP32 in the converted graph, not just listed
            assert types[nodes[n].output[0]] == onnx.TensorProto.FLOAT, n
    matmuls = [n for n, node in nodes.items() if node.op_type == "MatMul" and n not in pins]
    assert all(types[nodes[n].output[0]] == onnx.TensorProto.FLOAT16 for n in matmuls) and matmuls
    if preset == "tiny-phi":  # Phi: the Q.K^T MatMul too (known FP16 overflow)
        assert any("MatMul" in n and "self_attn" in n for n in pins)


@pytest.mark.parametrize("preset", PRESETS)
def test_trt_int8_is_symmetric_qdq_on_weight_matmuls_and_passes_the_gate(preset: str, quantized) -> None:
    b = quantized[(preset, "int8")]
    for report in check_bundle(b).values():
        assert report.ok, report.format()
        assert report.opset <= 17
    m = load_manifest(b)
    q = m.quantization
    assert m.precision == "int8" and q["cpu_only"] is False
    assert q["exclude"] == list(DEFAULT_EXCLUDE)
    assert q["calibration"]["source"] == "builtin-probes" and len(q["calibration"]["sha256"]) == 64
    assert q["calibration"]["samples"]["decoder"] > q["calibration"]["samples"]["vision"] > 0
    import onnxruntime

    assert q["tools"]["onnxruntime"] == onnxruntime.__version__ and q["tools"]["onnx"] == onnx.__version__
    dec = onnx.load(str(b / "decoder.onnx"))
    inits = {t.name: t for t in dec.graph.initializer}
    zps = [onnx.numpy_helper.to_array(inits[n.input[2]]) for n in dec.graph.node
           if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    # per-channel weights: a DequantizeLinear over a weight with one scale per output column
    per_channel = [n for n in dec.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                   and len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1]
    assert per_channel
    quantized_nodes = set(q["graphs"]["decoder"]["quantized_nodes"])
    excluded = set(q["graphs"]["decoder"]["excluded"])
    assert any(n.startswith("/lm_head/") for n in excluded) and not any(n.startswith("/language_model/layers.0/") for n in quantized_nodes)
    consumers = {i for n in dec.graph.node if n.name in quantized_nodes for i in n.input}
    assert all(n.op_type in ("MatMul", "Gemm") for n in dec.graph.node if n.name in quantized_nodes)
    assert any(i.endswith("_DequantizeLinear_Output") for i in consumers)
    assert q["graphs"]["vision"]["quantized_nodes"]  # the vision tower is quantized too


def test_cpu_int8_is_refused_by_the_trt_gate_and_marked_cpu_only(quantized, tmp_path: Path) -> None:
    b = quantized[("tiny", "int8-cpu")]
    m = load_manifest(b)
    assert m.precision == "int8-cpu" and m.quantization["cpu_only"] is True
    reports = check_bundle(b)
    assert not reports["decoder.onnx"].ok
    assert any("MatMulInteger" in v or "DynamicQuantizeLinear" in v for v in reports["decoder.onnx"].violations)
    from engine_build.trt.build import EngineBuildError, _check_precision

    with pytest.raises(EngineBuildError, match="CPU only"):
        _check_precision(m, "int8")


def test_quantized_bundles_answer_through_ask(quantized, capsys: pytest.CaptureFixture) -> None:
    from models.probes import SAMPLE_IMAGE

    for prec in BAR:
        capsys.readouterr()
        rc = cli(["ask", "--bundle", str(quantized[("tiny", prec)]), "--image", str(SAMPLE_IMAGE), "--question",
                  "Is there a fracture?", "--max-tokens", "4", "--json"])
        out = json.loads(capsys.readouterr().out)
        assert rc == 0 and len(out["output_token_ids"]) >= 1, prec


def test_quantize_refuses_what_it_cannot_do(fp32_bundles, quantized, tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="quantize from the FP32 bundle"):
        quantize_bundle(str(quantized[("tiny", "fp16")]), str(tmp_path / "a"), QuantizeOptions("int8"))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("x")
    with pytest.raises(QuantizeError, match="not empty"):
        quantize_bundle(str(fp32_bundles["tiny"]), str(tmp_path / "b"), QuantizeOptions("fp16"))
    with pytest.raises(QuantizeError, match="not one of"):
        quantize_bundle(str(fp32_bundles["tiny"]), str(tmp_path / "c"), QuantizeOptions("int4"))


def test_vision_only_int8_and_calibration_images(fp32_bundles, tmp_path: Path) -> None:
    from models.probes import builtin_images

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name, im in builtin_images()[:2]:
        im.save(imgs / (name + ".png"))
    out = quantize_bundle(str(fp32_bundles["tiny"]), str(tmp_path / "v"),
                          QuantizeOptions("int8", graphs=("vision",), calibration=imgs))
    m = load_manifest(out)
    q = m.quantization
    assert q["graphs"]["decoder"]["precision"] == "float32" and q["graphs"]["vision"]["precision"] == "int8"
    assert q["calibration"]["images"] == 2 and q["calibration"]["source"] == str(imgs)
    assert (out / "decoder.onnx").read_bytes() == (fp32_bundles["tiny"] / "decoder.onnx").read_bytes()
    default = load_manifest(fp32_bundles["tiny"])  # noqa: F841 - the source is untouched and still loads


def test_schema_1_bundles_stay_readable() -> None:
    from tests.server.service_process import DEFAULT_BUNDLE

    raw = json.loads((DEFAULT_BUNDLE / "manifest.json").read_text())
    m = load_manifest(DEFAULT_BUNDLE)
    assert raw["schema_version"] in (1, SCHEMA_VERSION) and m.quantization == {} and m.engines == {}
