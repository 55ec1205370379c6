"""`tinyllava-med doctor`: on this machine (no GPU) it proves ONNX Runtime's CPU provider and exits 0;
its JSON follows docs/doctor.schema.json; on a stand-in Jetson root the missing GPU pieces fail with fixes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from server.commands.doctor import report
from server.commands.doctor_checks import PROBE, run_checks
from tests.server.service_process import DEFAULT_BUNDLE, ROOT

SCHEMA = json.loads((ROOT / "docs" / "doctor.schema.json").read_text())
# A Jetson AGX Xavier's /etc/nv_tegra_release on JetPack 5.1.2 (L4T R35.4.1).
NV_TEGRA_RELEASE = ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
                    "DATE: Tue Aug  1 19:57:35 UTC 2023\n")


def _doctor(*argv: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "server.cli", "doctor"] + list(argv), cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=300)


def _checks(rep: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {c["name"]: c for c in rep["checks"]}


def _validate(rep: Dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(rep, SCHEMA)


def test_doctor_here_proves_cpu_and_exits_0() -> None:
    import onnxruntime as ort

    proc = _doctor("--json", "--bundle", str(DEFAULT_BUNDLE))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads(proc.stdout)
    _validate(rep)
    assert rep["ok"] is True and rep["exit_status"] == 0 and rep["failed"] == []
    c = _checks(rep)
    assert c["python"]["facts"]["version"] == "%d.%d.%d" % sys.version_info[:3]
    assert c["l4t"]["status"] == "skip" and c["cuda"]["status"] == "skip"  # no Jetson, no NVIDIA GPU here
    assert c["tensorrt"]["status"] == "skip"
    orc = c["onnxruntime"]
    assert orc["status"] == "ok" and orc["facts"]["version"] == ort.__version__
    assert orc["facts"]["available"] == ort.get_available_providers()
    assert orc["facts"]["proven"] == ["CPUExecutionProvider"]
    assert c["bundle"]["status"] == "ok" and c["bundle"]["facts"]["precision"] == "float32"
    assert c["engines"]["status"] == "skip" and c["power"]["status"] == "skip"


def test_doctor_text_output() -> None:
    proc = _doctor("--bundle", str(DEFAULT_BUNDLE))
    assert proc.returncode == 0
    assert "[ok  ] onnxruntime" in proc.stdout and "proven: CPU" in proc.stdout
    assert proc.stdout.strip().endswith("OK: this device can serve the bundle")


def test_doctor_fails_on_a_broken_bundle(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    proc = _doctor("--json", "--bundle", str(tmp_path))
    assert proc.returncode == 1
    rep = json.loads(proc.stdout)
    _validate(rep)
    assert rep["failed"] == ["bundle"] and _checks(rep)["bundle"]["fix"]


def test_doctor_usage_error_exits_2() -> None:
    assert _doctor("--precision", "int4").returncode == 2


def test_on_a_jetson_without_gpu_pieces_each_fails_with_the_fix(tmp_path: Path) -> None:
    """A stand-in root with Xavier's nv_tegra_release, no CUDA, no GPU nodes; no TensorRT importable and
    ONNX Runtime's CPU build, as here: every GPU piece is required on a Jetson."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text(NV_TEGRA_RELEASE)
    jtop = {"status": "unavailable", "reason": "/run/jtop.sock is missing: ..."}
    checks = run_checks(DEFAULT_BUNDLE, root=tmp_path, builder_module="no_such_trt_builder", jetson_snapshot=jtop)
    rep = report(checks, DEFAULT_BUNDLE)
    _validate(rep)
    c = _checks(rep)
    assert c["l4t"]["status"] == "ok" and c["l4t"]["facts"] == {"l4t": "35.4.1", "jetpack": "5.1.2",
                                                                "machine": c["l4t"]["facts"]["machine"]}
    assert c["cuda"]["status"] == "fail" and "--runtime nvidia" in c["cuda"]["fix"]
    assert c["tensorrt"]["status"] == "fail" and "Jetson image" in c["tensorrt"]["fix"]
    assert c["onnxruntime"]["status"] == "fail" and "onnxruntime_gpu" in c["onnxruntime"]["fix"]
    assert c["engines"]["status"] == "fail" and "TensorRT builder not installed" in c["engines"]["summary"]
    assert c["power"]["status"] == "warn" and c["power"]["fix"] == jtop["reason"]
    assert rep["exit_status"] == 1 and set(rep["failed"]) == {"cuda", "tensorrt", "onnxruntime", "engines"}


def test_probe_graph_is_x_plus_x() -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(PROBE))
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Add"]
    assert list(model.graph.node[0].input) == ["x", "x"] and model.opset_import[0].version <= 17
