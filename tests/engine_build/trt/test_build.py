"""engine_build/trt up to the TensorRT calls, against a fake `tensorrt` (no TensorRT or GPU here):
version gating, network flags, profiles from the manifest, FP32 pins, cache keys, plan records,
idempotent rebuilds, engine I/O dtypes. Torch- and onnx-free: runs in the Python 3.8 venv too."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine_build.trt import compat
from engine_build.trt.build import EngineBuildError, PlanBuilder, build_engines, engines_ready
from engine_build.trt.cache import cache_key
from engine_build.trt.device import DeviceInfo
from engine_build.trt.profiles import graph_profiles
from server.runtime.bundle import bundle_hash, load_manifest
from tests.engine_build.trt.bundles import KVH, D, H, L, M, write_bundle
from tests.engine_build.trt.fake_tensorrt import DataType, FakeEngine, TensorIOMode, make_tensorrt

XAVIER = DeviceInfo("Xavier", "7.2", 32 << 30)
F, HF = DataType.FLOAT, DataType.HALF
LAYERS = {
    "vision.onnx": [("/vision/MatMul", [F]), ("/vision/ReduceMean", [F])],
    "decoder.onnx": [("/lm/Cos", [F]), ("/lm/Softmax", [F]), ("/lm/MatMul", [F]), ("/lm/Shape", [DataType.INT64])],
}
PINS = {"vision": ["/vision/ReduceMean"], "decoder": ["/lm/Cos", "/lm/Softmax", "/lm/Shape", "/not/in/network"]}


@pytest.mark.parametrize("version,flags", [("8.5.2.2", 1), ("8.6.1", 1), ("10.3.0", 0), ("10.13.0.35", 0)])
def test_explicit_batch_only_below_10(version: str, flags: int, tmp_path: Path) -> None:
    trt = make_tensorrt(version, LAYERS)
    PlanBuilder(trt, XAVIER).build(write_bundle(tmp_path / "b"), "fp16")
    assert [n.flags for n in trt.calls["networks"]] == [flags, flags]  # EXPLICIT_BATCH is bit 0


@pytest.mark.parametrize("version,message", [("11.0.0", "TensorRT 11 removes the FP16/INT8 builder flags"),
                                             ("11.4.1", "install TensorRT 10.x"), ("8.4.3", "too old")])
def test_unsupported_versions_are_refused(version: str, message: str) -> None:
    with pytest.raises(compat.TensorRTUnavailable, match=message):
        PlanBuilder(make_tensorrt(version, LAYERS), XAVIER)


def test_missing_tensorrt_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import builtins

    real = builtins.__import__

    def no_trt(name, *a, **k):  # type: ignore[no-untyped-def]
        if name in ("tensorrt", "cuda"):
            raise ImportError("No module named %r" % name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_trt)
    with pytest.raises(compat.TensorRTUnavailable, match="`tensorrt` Python package is not installed.*--backend onnxruntime"):
        build_engines(write_bundle(tmp_path / "b"), "fp16")
    assert engines_ready(tmp_path / "b", "fp16") is False


def test_no_gpu_is_a_clear_error() -> None:
    from engine_build.trt.device import current_device

    class NoGpu:
        @staticmethod
        def cudaGetDeviceCount():  # cuda-python returns (error, value)
            return (100, 0)  # cudaErrorNoDevice

    with pytest.raises(compat.TensorRTUnavailable, match="is a GPU visible"):
        current_device(NoGpu())


def test_profiles_come_from_the_manifest(tmp_path: Path) -> None:
    m = load_manifest(write_bundle(tmp_path / "b"))
    assert graph_profiles(m, "vision") == []  # static shapes: no profile
    decode, prefill = graph_profiles(m, "decoder", prefill_chunk=32)
    assert decode.name == "decode" and prefill.name == "prefill"
    assert decode.shapes["inputs_embeds"] == ((1, 1, H), (1, 1, H), (1, 1, H))
    assert prefill.shapes["inputs_embeds"] == ((1, 1, H), (1, 32, H), (1, 32, H))
    assert prefill.shapes["position_ids"] == ((1, 1), (1, 32), (1, 32))
    kv = (L, 1, KVH, M, D)
    assert prefill.shapes["past_key"] == (kv, kv, kv) and decode.shapes["past_mask"] == ((1, M),) * 3
    # a chunk beyond the context is capped at max_context
    assert graph_profiles(m, "decoder", prefill_chunk=10 * M)[1].shapes["position_ids"][2] == (1, M)


def test_build_configures_tensorrt_and_records_plans(tmp_path: Path) -> None:
    b = write_bundle(tmp_path / "b", "float16", pins=PINS)
    trt = make_tensorrt("8.5.2.2", LAYERS)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    records = PlanBuilder(trt, XAVIER, prefill_chunk=32).build(b, "fp16", workspace_mb=512, timing_cache=cache)
    assert sorted(trt.calls["parsed"]) == ["decoder.onnx", "vision.onnx"]
    cfg = dict(zip(trt.calls["parsed"], trt.calls["configs"]))
    vision_cfg, decoder_cfg = cfg["vision.onnx"], cfg["decoder.onnx"]
    nets = dict(zip(trt.calls["parsed"], trt.calls["networks"]))
    assert decoder_cfg.pools == {trt.MemoryPoolType.WORKSPACE: 512 << 20}
    assert trt.BuilderFlag.FP16 in decoder_cfg.flags and trt.BuilderFlag.INT8 not in decoder_cfg.flags
    assert trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS in decoder_cfg.flags
    assert [p.shapes["inputs_embeds"] for p in decoder_cfg.profiles] == [((1, 1, H),) * 3,
                                                                         ((1, 1, H), (1, 32, H), (1, 32, H))]
    assert vision_cfg.profiles == []
    net = {x.name: x for x in nets["decoder.onnx"].layers}
    assert net["/lm/Cos"].precision == F and net["/lm/Cos"].output_types == {0: F}
    assert net["/lm/Shape"].precision == F and net["/lm/Shape"].output_types == {}  # int output: no type forced
    assert net["/lm/MatMul"].precision is None  # not pinned: TensorRT picks FP16
    assert cache.read_bytes() == b"old+timed+timed"  # read, then written back after each build
    m = load_manifest(b)  # the bundle still verifies: file hashes unchanged, plans recorded
    assert set(m.engines) == {r["key"] for r in records.values()}
    dec = records["decoder"]
    assert dec["tensorrt"] == "8.5.2.2" and dec["device"] == "Xavier" and dec["compute_capability"] == "7.2"
    assert dec["fp32_pinned_layers"] == 3 and dec["precision"] == "fp16" and dec["prefill_chunk"] == 32
    assert (b / dec["file"]).read_bytes().startswith(b"PLAN")
    assert dec["key"] == cache_key("8.5.2.2", XAVIER, "fp16", bundle_hash(m), "decoder", 32)


def test_int8_sets_int8_and_fp16_and_needs_an_int8_bundle(tmp_path: Path) -> None:
    trt = make_tensorrt("10.3.0", LAYERS)
    with pytest.raises(EngineBuildError, match="quantize it first"):
        PlanBuilder(trt, XAVIER).build(write_bundle(tmp_path / "fp32"), "int8")
    with pytest.raises(EngineBuildError, match="CPU only.*TensorRT cannot build it"):
        PlanBuilder(trt, XAVIER).build(write_bundle(tmp_path / "cpu", "int8-cpu"), "fp16")
    PlanBuilder(trt, XAVIER).build(write_bundle(tmp_path / "q", "int8"), "int8")
    assert {trt.BuilderFlag.INT8, trt.BuilderFlag.FP16} <= set(trt.calls["configs"][-1].flags)
    assert trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS not in trt.calls["configs"][-1].flags  # no pins recorded


def test_rebuild_is_idempotent_and_keys_change_with_what_a_plan_depends_on(tmp_path: Path) -> None:
    b = write_bundle(tmp_path / "b", pins=PINS)
    trt = make_tensorrt("8.5.2.2", LAYERS)
    first = PlanBuilder(trt, XAVIER).build(b, "fp16")
    assert trt.calls["builds"] == 2
    again = PlanBuilder(trt, XAVIER).build(b, "fp16")
    assert trt.calls["builds"] == 2 and again == first  # valid cached plans reused, nothing rebuilt
    (b / first["decoder"]["file"]).write_bytes(b"PLAN-corrupt")  # a damaged plan is rebuilt
    PlanBuilder(trt, XAVIER).build(b, "fp16")
    assert trt.calls["builds"] == 3
    # another device, another TensorRT version: new keys, and the plans are built for them
    orin = DeviceInfo("Orin", "8.7", 64 << 30)
    keys = {PlanBuilder(make_tensorrt(v, LAYERS), dev).key(load_manifest(b), "decoder", "fp16")
            for v, dev in (("8.5.2.2", XAVIER), ("8.5.2.2", orin), ("8.6.1", XAVIER))}
    assert len(keys) == 3
    m = load_manifest(b)
    assert cache_key("8.5.2.2", XAVIER, "fp16", bundle_hash(m), "decoder", 128) != \
        cache_key("8.5.2.2", XAVIER, "int8", bundle_hash(m), "decoder", 128)
    # other graph bytes (a re-exported bundle): another bundle hash, so the old plans do not match
    other = write_bundle(tmp_path / "other", pins=PINS, graph_bytes=b"new graph")
    assert bundle_hash(load_manifest(other)) != bundle_hash(m)


def test_failed_build_says_what_to_do(tmp_path: Path) -> None:
    trt = make_tensorrt("8.5.2.2", LAYERS, fail_build=True)
    with pytest.raises(EngineBuildError, match="smaller --workspace-mb"):
        PlanBuilder(trt, XAVIER).build(write_bundle(tmp_path / "b"), "fp16")
    assert load_manifest(tmp_path / "b").engines == {}


@pytest.mark.parametrize("version,ids_dtype", [("8.5.2.2", DataType.INT32), ("10.3.0", DataType.INT64)])
def test_binding_dtypes_are_read_from_the_engine(version: str, ids_dtype: DataType) -> None:
    trt = make_tensorrt(version, LAYERS)
    eng = FakeEngine({"inputs_embeds": (TensorIOMode.INPUT, HF), "position_ids": (TensorIOMode.INPUT, ids_dtype),
                      "logits": (TensorIOMode.OUTPUT, F)})
    io = compat.io_tensors(trt, eng)
    assert io == {"inputs_embeds": (True, np.dtype(np.float16)),
                  "position_ids": (True, np.dtype(np.int32 if version.startswith("8") else np.int64)),
                  "logits": (False, np.dtype(np.float32))}


def test_cli_without_tensorrt(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    from server.cli import main

    rc = main(["build-engines", str(write_bundle(tmp_path / "b"))])
    assert rc == 2 and "`tensorrt` Python package is not installed" in capsys.readouterr().err


def test_importing_engine_build_trt_imports_no_torch_or_onnx() -> None:
    import subprocess
    import sys

    code = ("import sys, engine_build.trt.build, engine_build.commands.build_engines; "
            "bad = [m for m in ('torch', 'onnx', 'transformers', 'tensorrt') if m in sys.modules]; "
            "print(json.dumps(bad))").replace("import sys,", "import sys, json,")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
