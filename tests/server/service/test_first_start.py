"""First start on a device: engines are built before the service reports ready, once, and reused.

The builder is a fake module on PYTHONPATH (no TensorRT here) that blocks inside build_engines() until
the test releases it through a FIFO, so the test sees the service while the build is under way.
"""
from __future__ import annotations

import os
import textwrap
import threading
import time
from pathlib import Path
from typing import Dict, List

import httpx
import pytest

from server.service.engines import BuilderMissing, ensure_engines, resolve_builder
from tests.server.service_process import DEFAULT_BUNDLE, ROOT, ServerProcess

FAKE_BUILDER = textwrap.dedent('''
    """A fake engine builder: engines_ready / build_engines, as engine_build.trt.build provides them."""
    import os
    from pathlib import Path

    def _plan(bundle_dir, precision):
        return Path(os.environ["FAKE_ENGINE_CACHE"]) / (precision + ".plan")

    def engines_ready(bundle_dir, precision):
        return _plan(bundle_dir, precision).exists()

    def build_engines(bundle_dir, precision):
        with open(os.environ["FAKE_BUILD_LOG"], "a") as log:
            log.write("%s %s\\n" % (precision, bundle_dir))
        with open(os.environ["FAKE_BUILD_GATE"]) as gate:  # blocks until the test opens the FIFO and closes it
            gate.read()
        _plan(bundle_dir, precision).write_text("plan")
''')


def _env(tmp_path: Path) -> Dict[str, str]:
    (tmp_path / "builder").mkdir(exist_ok=True)
    (tmp_path / "builder" / "fake_trt_builder.py").write_text(FAKE_BUILDER)
    (tmp_path / "cache").mkdir(exist_ok=True)
    gate = tmp_path / "gate"
    if not gate.exists():
        os.mkfifo(str(gate))
    return {"PYTHONPATH": "%s:%s" % (tmp_path / "builder", ROOT), "TINYLLAVA_BUILD_ENGINES": "1",
            "TINYLLAVA_PRECISION": "int8", "TINYLLAVA_ENGINE_BUILDER": "fake_trt_builder",
            "FAKE_ENGINE_CACHE": str(tmp_path / "cache"), "FAKE_BUILD_LOG": str(tmp_path / "builds.log"),
            "FAKE_BUILD_GATE": str(gate)}


def _open_gate(server: ServerProcess, gate: Path, timeout: float = 120.0) -> int:
    """The FIFO's write end, once the builder holds its read end (it is then inside build_engines).

    A blocking open returns exactly when the reader opens: it runs in a thread, so the wait can end
    early if the server exits instead."""
    opened: List[int] = []
    t = threading.Thread(target=lambda: opened.append(os.open(str(gate), os.O_WRONLY)), daemon=True)
    t.start()
    end = time.monotonic() + timeout
    while t.is_alive() and time.monotonic() < end:
        t.join(timeout=1.0)  # wakes at once when the open returns
        if t.is_alive() and server.proc.poll() is not None:
            os.close(os.open(str(gate), os.O_RDONLY | os.O_NONBLOCK))  # let the blocked open return
            raise RuntimeError("server exited:\n%s" % server.logs()[-3000:])
    if not opened:
        raise TimeoutError("the builder never started:\n%s" % server.logs()[-3000:])
    return opened[0]


def _builds(tmp_path: Path) -> List[str]:
    log = tmp_path / "builds.log"
    return log.read_text().splitlines() if log.exists() else []


def test_ready_only_after_the_build_then_reused_on_restart(tmp_path: Path) -> None:
    env = _env(tmp_path)
    server = ServerProcess(tmp_path, env=env)
    try:
        fd = _open_gate(server, tmp_path / "gate")  # the builder is now blocked inside build_engines()
        server.wait_for("/ready", status=503)
        ready = httpx.get(server.url + "/ready").json()
        assert ready["status"] == "building" and "building engines (int8)" in ready["detail"]
        assert httpx.get(server.url + "/live").status_code == 200
        r = httpx.post(server.url + "/v1/vqa", files={"image": b"x"}, data={"question": "q"})
        assert r.status_code == 503  # no request runs (or builds) while engines are being built
        assert "building engines" in r.json()["error"]["message"]  # minutes, not "retry in a few seconds"
        assert int(r.headers["retry-after"]) >= 30
        assert not (tmp_path / "cache" / "int8.plan").exists()
        os.write(fd, b"go")
        os.close(fd)  # EOF: build_engines() returns
        server.wait_for("/ready", status=200)
        assert httpx.get(server.url + "/ready").json()["status"] == "ready"
    finally:
        server.stop()
    assert _builds(tmp_path) == ["int8 %s" % DEFAULT_BUNDLE]
    assert (tmp_path / "cache" / "int8.plan").exists()

    # A restart finds the engines ready: no build (a build would block on the FIFO, nobody writes it).
    again = ServerProcess(tmp_path, env=env)
    try:
        again.wait_for("/ready", status=200)
    finally:
        again.stop()
    assert _builds(tmp_path) == ["int8 %s" % DEFAULT_BUNDLE]


def test_serve_without_a_builder_fails_with_the_fix(tmp_path: Path) -> None:
    env = {"TINYLLAVA_BUILD_ENGINES": "1", "TINYLLAVA_ENGINE_BUILDER": "no_such_trt_builder"}
    server = ServerProcess(tmp_path, env=env)
    try:
        server.wait_for("/ready", status=503)
        body = _settled_ready(server)
        assert body["status"] == "failed" and "TensorRT builder not installed" in body["error"]
    finally:
        server.stop()


def _settled_ready(server: ServerProcess) -> Dict[str, object]:
    for _ in range(3000):
        body = httpx.get(server.url + "/ready").json()
        if body["status"] not in ("loading", "building"):
            return body  # type: ignore[no-any-return]
    raise AssertionError("the service never left loading")


def test_resolve_builder_reports_a_missing_builder() -> None:
    with pytest.raises(BuilderMissing, match="TensorRT builder not installed"):
        resolve_builder("no_such_trt_builder")


class _Builder:
    def __init__(self, ready: bool, builds_make_ready: bool = True) -> None:
        self.ready, self.builds_make_ready, self.built = ready, builds_make_ready, 0
        self.name = "fake"

    def engines_ready(self, bundle_dir: Path, precision: str) -> bool:
        return self.ready

    def build_engines(self, bundle_dir: Path, precision: str) -> None:
        self.built += 1
        self.ready = self.builds_make_ready


def test_ensure_engines_builds_only_when_needed() -> None:
    calls: List[str] = []
    ready = _Builder(ready=True)
    assert ensure_engines(ready, Path("b"), "fp16", on_build=lambda: calls.append("x")) is False  # type: ignore[arg-type]
    assert ready.built == 0 and calls == []
    missing = _Builder(ready=False)
    assert ensure_engines(missing, Path("b"), "fp16", on_build=lambda: calls.append("x")) is True  # type: ignore[arg-type]
    assert missing.built == 1 and calls == ["x"]
    broken = _Builder(ready=False, builds_make_ready=False)
    with pytest.raises(RuntimeError, match="still not ready"):
        ensure_engines(broken, Path("b"), "fp16")  # type: ignore[arg-type]
