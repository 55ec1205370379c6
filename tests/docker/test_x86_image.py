"""The x86 CPU image builds from docker/Dockerfile and serves: /ready turns 200 and a question gets an answer.

Needs a reachable Docker engine (and the package index for the build); skips with the reason otherwise.
Slow (a full image build), so it is marked `slow`.
"""
from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "models" / "assets" / "sample_ct.png"


def _docker() -> str:
    exe = shutil.which("docker")
    if exe is None:
        pytest.skip("no docker CLI on this machine")
    r = subprocess.run([exe, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        pytest.skip("no Docker engine reachable: %s" % (r.stderr.strip().splitlines() or ["docker info failed"])[-1])
    return exe


@pytest.mark.slow
def test_x86_image_builds_and_serves() -> None:
    httpx = pytest.importorskip("httpx")
    docker = _docker()
    tag = "tinyllava-med-test:%s" % uuid.uuid4().hex[:8]
    build = subprocess.run([docker, "build", "-f", "docker/Dockerfile", "-t", tag, "."], cwd=ROOT,
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    name = "tinyllava-med-test-%s" % uuid.uuid4().hex[:8]
    # The image's own HEALTHCHECK (GET /ready) decides readiness: Docker's health_status events are read
    # as they come (subscribed before the container starts, so none is missed), no sleeping or polling.
    events = subprocess.Popen([docker, "events", "--filter", "container=%s" % name, "--filter",
                               "event=health_status", "--filter", "event=die", "--format", "{{.Status}}"],
                              stdout=subprocess.PIPE, text=True)
    try:
        run = subprocess.run([docker, "run", "-d", "--name", name, "-p", "127.0.0.1::8000", tag],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        port = subprocess.run([docker, "port", name, "8000/tcp"], capture_output=True, text=True,
                              check=True).stdout.split(":")[-1].strip()
        base = "http://127.0.0.1:%s" % port
        assert events.stdout is not None
        status = ""
        for line in events.stdout:  # "health_status: healthy", "health_status: unhealthy" or "die"
            status = line.strip()
            if status in ("health_status: healthy", "health_status: unhealthy", "die"):
                break
        logs = subprocess.run([docker, "logs", name], capture_output=True, text=True)
        assert status == "health_status: healthy", (status, logs.stderr[-4000:])
        assert httpx.get(base + "/ready", timeout=10.0).status_code == 200
        with SAMPLE.open("rb") as f:
            r = httpx.post(base + "/v1/vqa", files={"image": ("ct.png", f, "image/png")},
                           data={"question": "Is there a fracture?", "max_tokens": "4"}, timeout=120.0)
        assert r.status_code == 200, r.text
        assert r.json()["answer"] is not None
        whoami = subprocess.run([docker, "exec", name, "id", "-u"], capture_output=True, text=True).stdout.strip()
        assert whoami == "10001"
        no_torch = subprocess.run([docker, "exec", name, "python3", "-c", "import torch"], capture_output=True)
        assert no_torch.returncode != 0
    finally:
        events.kill()
        events.wait()
        subprocess.run([docker, "rm", "-f", name], capture_output=True)
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
