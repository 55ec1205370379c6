"""Lifecycle: /live at once, /ready and /health 503 until loaded and warm; SIGTERM drains."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict

import httpx

from tests.server.conftest import start_server
from tests.server.service_inputs import b64, png
from tests.server.service_process import RANDOM_BUNDLE, ROOT, wait_until


def test_live_at_once_ready_after_warm_up(service_log_dir: Path, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.touch()  # loading cannot finish while it exists: the early answers are the loading ones
    server = start_server(service_log_dir, hold_file=hold)
    try:
        server.wait_for("/live", 200, timeout=60)
        with server.client(timeout=30.0) as c:
            live, ready, health = c.get("/live"), c.get("/ready"), c.get("/health")
            early = c.post("/v1/vqa", json={"image": b64(png()), "question": "What is shown?"})
            models = c.get("/v1/models")
        assert live.status_code == 200
        assert ready.status_code == 503 and ready.json()["status"] == "loading"
        assert health.status_code == 503 and health.json()["status"] == "loading"
        assert early.status_code == 503 and early.json()["error"]["code"] == "not_ready"
        assert int(early.headers["retry-after"]) > 0
        assert models.status_code == 200 and models.json()["data"][0]["ready"] is False
        hold.unlink()
        server.wait_for("/ready", 200, timeout=60)
        with server.client() as c:
            assert c.get("/health").json()["status"] == "ready"
            r = c.post("/v1/vqa", json={"image": b64(png()), "question": "What?", "max_tokens": 2})
            assert r.status_code == 200
            assert server.metric('tinyllava:request_rejected_total{reason="not_ready"}') == 1
    finally:
        server.stop()


def test_sigterm_drains_in_flight_requests(service_log_dir: Path, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    # A drain timeout no test step comes near: the request in flight ends when the test lets it.
    server = start_server(service_log_dir, RANDOM_BUNDLE, hold_file=hold, drain_timeout=300)  # runs to 40 tokens
    try:
        server.wait_for("/ready")
        result: Dict[str, Any] = {}

        def long_request() -> None:
            r = httpx.post(server.url + "/v1/vqa", json={"image": b64(png()), "question": "What is shown?",
                                                         "max_tokens": 40}, timeout=120)
            result["status"] = r.status_code
            result["body"] = r.json()

        hold.touch()
        worker = threading.Thread(target=long_request)
        worker.start()
        wait_until(lambda: server.gauges() == (1, 0), "the request to be generating")
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("/ready", 503)  # the drain has begun (the model was ready before)
        with server.client(timeout=30.0) as c:
            refused = c.post("/v1/vqa", json={"image": b64(png()), "question": "And now?", "max_tokens": 2})
            ready = c.get("/ready")
            live = c.get("/live")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
        assert "retry-after" in refused.headers
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        assert live.status_code == 200
        assert "status" not in result  # still held: the drain waits for it
        hold.unlink()
        worker.join(120)
        assert result["status"] == 200 and result["body"]["usage"]["completion_tokens"] == 40
        assert server.proc.wait(120) == 0
        logs = server.logs()
        assert "draining" in logs and "Application shutdown complete" in logs
    finally:
        server.stop()


def test_serve_refuses_a_missing_bundle_and_bad_settings(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "server.cli", "serve"]
    missing = subprocess.run(cmd + ["--bundle", str(tmp_path / "nope")], cwd=str(ROOT), capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad = subprocess.run(cmd + ["--port", "70000", "--max-queue", "-1"], cwd=str(ROOT), capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "port" in bad.stderr and "max_queue" in bad.stderr
