"""ONNX Runtime is an install choice (pyproject.toml extras), not a hard requirement: the Jetson image
installs NVIDIA's GPU build, which PyPI's CPU `onnxruntime` would overwrite. Without any flavour, the
commands that need it say how to install one, and `doctor` still runs and names the fix.

A subprocess hides onnxruntime with an import hook (as in a bare `pip install tinyllava-med`).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HIDE = textwrap.dedent("""
    import sys

    class Hide:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "onnxruntime":
                raise ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")
            return None

    sys.meta_path.insert(0, Hide())
    from server.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _cli(*argv: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run([sys.executable, "-c", HIDE] + list(argv), cwd=str(ROOT), capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, timeout=300)


def test_commands_that_need_onnxruntime_name_the_install() -> None:
    for command in (["serve"], ["bench", "--bundle", "x"], ["ask", "--help"]):
        r = _cli(*command)
        if command[-1] == "--help":  # parsing and help never need ONNX Runtime
            assert r.returncode == 0, r.stderr
            continue
        assert r.returncode == 2, (command, r.stderr)
        assert "needs ONNX Runtime, which is not installed" in r.stderr
        assert "pip install 'tinyllava-med[cpu]'" in r.stderr
        assert "Traceback" not in r.stderr


def test_doctor_runs_without_onnxruntime_and_fails_with_the_fix() -> None:
    r = _cli("doctor", "--json")
    assert r.returncode == 1, r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["onnxruntime"]["status"] == "fail"
    assert "tinyllava-med[cpu]" in checks["onnxruntime"]["fix"]


def test_runtime_dependencies_leave_the_flavour_to_extras_and_the_scripts_install_cpu() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    deps = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert "onnxruntime" not in re.findall(r'"([a-z0-9_.-]+)', deps)
    assert re.search(r'^cpu = \["onnxruntime>=[\d.]+"\]', text, re.M)
    assert re.search(r'^gpu = \["onnxruntime-gpu>=[\d.]+"\]', text, re.M)
    # README's set-up commands (scripts/quickstart, scripts/test) go through install_project, which adds `cpu`;
    # the Python 3.8 run installs it too.
    venv = (ROOT / "scripts" / "_venv.sh").read_text(encoding="utf-8")
    assert 'pip install -q -e ".[cpu${1:+,$1}]"' in venv
    assert 'install_project ""' in (ROOT / "scripts" / "quickstart").read_text(encoding="utf-8")
    assert '-e ".[cpu]"' in (ROOT / "scripts" / "test-py38").read_text(encoding="utf-8")
