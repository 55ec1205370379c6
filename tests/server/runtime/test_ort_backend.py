"""The ONNX Runtime engine on graphs with the bundle's exact I/O: dims, feeding, providers, loading."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

onnx = pytest.importorskip("onnx")  # building graphs needs onnx, which the Python 3.8 (Jetson) venv lacks

from onnx import numpy_helper  # noqa: E402

from models.config import IMAGE_TOKEN_INDEX, ModelConfig, TextConfig, VisionConfig  # noqa: E402
from server.runtime import (  # noqa: E402
    EngineDims,
    EngineError,
    GenerationParams,
    OrtEngine,
    OrtOptions,
    TensorRTOptions,
    load_runtime,
)
from server.runtime.bundle import BundleError, GraphSpec, Manifest, TensorSpec, write_manifest  # noqa: E402
from server.runtime.cpu_info import physical_cores  # noqa: E402
from server.runtime.ort_backend import resolve_providers, session_options  # noqa: E402
from tests.server.onnx_stubs import decoder_reference, decoder_stub, vision_stub  # noqa: E402
from tests.server.tiny_tokenizers import llama_style  # noqa: E402

L, KVH, D, M, V = 2, 2, 4, 16, 32


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("graphs")
    w = decoder_stub(d / "decoder.onnx", L, KVH, D, M, V)
    w2 = vision_stub(d / "vision.onnx", num_tokens=4, hidden=KVH * D)
    return d, w, w2


def test_dims_and_decode_against_numpy(graphs) -> None:
    d, w, w2 = graphs
    eng = OrtEngine(d / "decoder.onnx", d / "vision.onnx")
    assert eng.dims == EngineDims(L, KVH, D, M, V, KVH * D, 4, np.dtype(np.float32))
    assert eng.providers == {"decoder": ["CPUExecutionProvider"], "vision": ["CPUExecutionProvider"]}
    rng = np.random.default_rng(0)
    embeds = rng.normal(size=(1, 3, KVH * D)).astype(np.float32)
    mask = np.zeros((1, M), np.int64)
    mask[0, :5] = 1
    past = np.zeros((L, 1, KVH, M, D), np.float32)
    logits, k, v = eng.decode(embeds, np.arange(5, 8)[None], past, past, mask)
    want = decoder_reference(w, embeds, mask, L, KVH, D)
    for got, ref in zip((logits, k, v), want):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert logits.dtype == np.float32
    px = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(eng.encode_image(px), px.reshape(1, 4, -1) @ w2, rtol=1e-5, atol=1e-5)


def test_float16_graph_sets_dtype_and_casts_inputs(tmp_path: Path) -> None:
    w = decoder_stub(tmp_path / "decoder.onnx", L, KVH, D, M, V, dtype=np.float16)
    eng = OrtEngine(tmp_path / "decoder.onnx")
    assert eng.dtype == np.float16 and eng.num_image_tokens == 0
    embeds = np.ones((1, 1, KVH * D), np.float32)  # float32 in: the engine casts to the graph's type
    past = np.zeros((L, 1, KVH, M, D), np.float16)
    logits, k, _ = eng.decode(embeds, np.zeros((1, 1), np.int64), past, past, np.zeros((1, M), np.int64))
    assert k.dtype == np.float16 and logits.dtype == np.float32
    np.testing.assert_allclose(logits[0], w.sum(axis=0), rtol=1e-5)


def test_unavailable_providers_fall_back_to_cpu_with_a_warning(graphs, caplog) -> None:
    d, _, _ = graphs
    caplog.set_level(logging.WARNING, logger="server.runtime.ort_backend")
    eng = OrtEngine(d / "decoder.onnx", options=OrtOptions(providers=("tensorrt", "cuda")))
    assert eng.providers["decoder"] == ["CPUExecutionProvider"]
    assert "TensorrtExecutionProvider is not in this onnxruntime build" in caplog.text
    assert "CUDAExecutionProvider is not in this onnxruntime build" in caplog.text


def test_provider_names() -> None:
    assert resolve_providers(["trt", "CUDA", "cuda", "cpu"]) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers([]) == ["CPUExecutionProvider"]
    with pytest.raises(EngineError, match="unknown execution provider"):
        resolve_providers(["gpu"])


def test_graph_missing_a_contract_input_is_refused(tmp_path: Path) -> None:
    decoder_stub(tmp_path / "decoder.onnx", L, KVH, D, M, V, drop_input="past_mask")
    with pytest.raises(EngineError, match="missing: past_mask"):
        OrtEngine(tmp_path / "decoder.onnx")


def test_manifest_dims_are_checked(graphs) -> None:
    d, _, _ = graphs
    wrong = EngineDims(L, KVH, D, M * 2, V, KVH * D, 4, np.dtype(np.float32))
    with pytest.raises(EngineError, match="max context .* is 16 but the manifest says 32"):
        OrtEngine(d / "decoder.onnx", d / "vision.onnx", expected=wrong)


def test_session_options() -> None:
    so = session_options(OrtOptions(disable_prepacking=True, graph_optimization="basic"))
    assert so.get_session_config_entry("session.disable_prepacking") == "1"
    assert so.intra_op_num_threads == physical_cores()
    assert session_options(OrtOptions(intra_op_threads=3)).intra_op_num_threads == 3
    with pytest.raises(EngineError, match="graph_optimization"):
        session_options(OrtOptions(graph_optimization="max"))


def test_tensorrt_provider_options() -> None:
    t = TensorRTOptions(fp16=True, engine_cache_path="/cache", engine_cache_prefix="tlm", timing_cache_path="/tc",
                        profiles={"decoder": ("inputs_embeds:1x1x8", "inputs_embeds:1x64x8", "inputs_embeds:1x512x8")})
    opts = t.provider_options("decoder", device_id=1)
    assert opts["device_id"] == "1" and opts["trt_fp16_enable"] == "1" and opts["trt_int8_enable"] == "0"
    assert opts["trt_engine_cache_enable"] == "1" and opts["trt_engine_cache_path"] == "/cache"
    assert opts["trt_engine_cache_prefix"] == "tlm_decoder"
    assert opts["trt_timing_cache_enable"] == "1" and opts["trt_timing_cache_path"] == "/tc"
    assert opts["trt_profile_opt_shapes"] == "inputs_embeds:1x64x8"
    assert "trt_profile_min_shapes" not in t.provider_options("vision")


def _bundle(tmp_path: Path) -> Path:
    tok = llama_style()
    vocab = tok.get_vocab_size()
    h = KVH * D
    decoder_stub(tmp_path / "decoder.onnx", L, KVH, D, M, vocab)
    vision_stub(tmp_path / "vision.onnx", image_size=8, num_tokens=4, hidden=h)
    np.save(tmp_path / "embed_tokens.npy", np.random.default_rng(2).normal(size=(vocab, h)).astype(np.float32))
    tok.save(str(tmp_path / "tokenizer.json"))
    model = ModelConfig(
        "stub",
        VisionConfig("siglip", image_size=8, patch_size=4, hidden_size=h, intermediate_size=16, num_layers=2,
                     num_heads=2, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh"),
        TextConfig("llama", vocab_size=vocab, hidden_size=h, intermediate_size=16, num_layers=L, num_heads=KVH,
                   num_kv_heads=KVH, max_position_embeddings=M))
    spec = lambda n, s, t="float32": TensorSpec(n, s, t)  # noqa: E731
    manifest = Manifest(
        model=model, template="vicuna_v1", precision="float32", opset=17, max_context=M,
        graphs={"vision": GraphSpec("vision.onnx", [spec("pixel_values", [1, 3, 8, 8])],
                                    [spec("image_embeds", [1, 4, h])]),
                "decoder": GraphSpec("decoder.onnx", [spec("inputs_embeds", [1, "S", h])],
                                     [spec("logits", [1, vocab])])},
        embeddings=spec("embed_tokens.npy", [vocab, h]),
        tokenizer={"file": "tokenizer.json", "bos_token_id": 1, "eos_token_id": 2, "add_bos": True})
    write_manifest(tmp_path, manifest)
    return tmp_path


def test_load_runtime_end_to_end(tmp_path: Path) -> None:
    rt = load_runtime(_bundle(tmp_path), providers=["cuda", "cpu"])
    assert rt.engine.dims.num_image_tokens == 4 and rt.engine.max_context == M
    assert isinstance(rt.embed_tokens, np.memmap)
    px = np.random.default_rng(3).normal(size=(1, 3, 8, 8)).astype(np.float32)
    r = rt.generator.generate([1, 5, IMAGE_TOKEN_INDEX, 7], px, GenerationParams(max_tokens=5, ignore_eos=True))
    assert r.timings.prompt_tokens == 7
    # Independently: the stub's logits are inputs_embeds[:, -1] @ W + sum(past_mask) (onnx_stubs.py),
    # and the constant does not move the argmax, so greedy decoding takes argmax(E[previous] @ W),
    # starting from the last prompt token (7), with W read back from the bundle's decoder.onnx.
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "decoder.onnx")).graph.initializer}
    w, table = inits["W"], np.load(tmp_path / "embed_tokens.npy")
    expected, previous = [], 7
    for _ in range(5):
        logits = table[previous] @ w
        top2 = np.sort(logits)[-2:]
        assert top2[1] - top2[0] > 1e-3  # a clear winner: the constant offset and rounding cannot change it
        previous = int(np.argmax(logits))
        expected.append(previous)
    assert r.output_ids == expected
    assert r.text == Tokenizer.from_file(str(tmp_path / "tokenizer.json")).decode(expected)


def test_load_runtime_refuses_an_altered_bundle(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    table = np.load(bundle / "embed_tokens.npy")
    table[0, 0] += 1
    np.save(bundle / "embed_tokens.npy", table)
    with pytest.raises(BundleError, match="embed_tokens.npy fails its sha256 check"):
        load_runtime(bundle)
