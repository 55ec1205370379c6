"""Backend choice: auto falls back to ONNX Runtime where no TensorRT plans can run; tensorrt says what to do;
plan records are matched to this TensorRT version and GPU."""
from __future__ import annotations

import pytest

from server.runtime import OrtEngine, load_runtime
from server.runtime.bundle import BundleError, load_manifest
from server.runtime.trt_backend import select_plans
from tests.server.service_process import DEFAULT_BUNDLE


def _no_tensorrt() -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return
    pytest.skip("tensorrt is installed here")


def test_auto_falls_back_to_onnxruntime_without_tensorrt() -> None:
    _no_tensorrt()
    rt = load_runtime(DEFAULT_BUNDLE, backend="auto")
    assert isinstance(rt.engine, OrtEngine) and rt.engine.providers["decoder"] == ["CPUExecutionProvider"]
    rt.close()


def test_tensorrt_backend_without_tensorrt_is_a_clear_error() -> None:
    _no_tensorrt()
    from engine_build.trt.compat import TensorRTUnavailable

    with pytest.raises(TensorRTUnavailable, match="not installed.*--backend onnxruntime"):
        load_runtime(DEFAULT_BUNDLE, backend="tensorrt")
    with pytest.raises(BundleError, match="backend 'cuda' is not one of"):
        load_runtime(DEFAULT_BUNDLE, backend="cuda")


def test_plans_are_selected_for_this_tensorrt_and_gpu_only() -> None:
    m = load_manifest(DEFAULT_BUNDLE, check_hashes=False)

    def rec(graph: str, trt: str, dev: str, cc: str, prec: str = "fp16") -> dict:
        return {"graph": graph, "tensorrt": trt, "device": dev, "compute_capability": cc, "precision": prec,
                "file": "engines/%s-%s-%s.plan" % (graph, prec, dev)}

    m.engines = {"a": rec("decoder", "8.5.2.2", "Xavier", "7.2"), "b": rec("vision", "8.5.2.2", "Xavier", "7.2"),
                 "c": rec("decoder", "10.3.0", "Xavier", "7.2"), "d": rec("vision", "8.5.2.2", "Orin", "8.7"),
                 "e": rec("decoder", "8.5.2.2", "Xavier", "7.2", "int8")}
    assert {g: r["file"] for g, r in select_plans(m, "8.5.2.2", "Xavier", "7.2", "fp16").items()} == {
        "decoder": "engines/decoder-fp16-Xavier.plan", "vision": "engines/vision-fp16-Xavier.plan"}
    assert select_plans(m, "10.3.0", "Xavier", "7.2") == {}  # a decoder plan alone is not a usable set
    assert select_plans(m, "8.5.2.2", "Orin", "8.7") == {}
    assert select_plans(m, "8.5.2.2", "Xavier", "7.2", "int8") == {}  # no int8 vision plan
