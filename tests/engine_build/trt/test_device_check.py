"""scripts/device-check on a host without TensorRT: it says which step failed, prints its table, exits 1."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine_build.trt.bundles import write_bundle

ROOT = Path(__file__).resolve().parents[3]


def test_device_check_reports_the_failing_step_without_tensorrt(tmp_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed: the real device check runs instead")
    except ImportError:
        pass
    fp32 = write_bundle(tmp_path / "fp32")
    fp16 = write_bundle(tmp_path / "fp16", "float16")
    int8 = write_bundle(tmp_path / "int8", "int8")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "device-check"), str(fp32), "--fp16", str(fp16),
                           "--int8", str(int8), "--workdir", str(tmp_path / "work")],
                          capture_output=True, text=True, cwd=str(ROOT))
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["precision", "greedy", "top-1"]
    assert [x.split()[0] for x in lines[1:]] == ["fp16", "int8"]
    assert all(x.endswith("build-engines failed") for x in lines[1:])
    assert "`tensorrt` Python package is not installed" in proc.stderr
