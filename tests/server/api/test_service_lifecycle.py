"""Lifecycle: /live at once, /ready and /health 503 until loaded and warm; SIGTERM drains."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict

import httpx

from tests.server.conftest import start_server
from tests.server.service_inputs import b64, png
from tests.server.service_process import ROOT

WARMUP_DELAY_S = 2.0


def test_live_at_once_ready_after_warm_up(service_log_dir: Path) -> None:
    server = start_server(service_log_dir, warmup_delay=WARMUP_DELAY_S)
    try:
        t_live = server.wait_for("/live", 200, timeout=60)
        with server.client(timeout=5.0) as c:
            live, ready, health = c.get("/live"), c.get("/ready"), c.get("/health")
            early = c.post("/v1/vqa", json={"image": b64(png()), "question": "What is shown?"})
            models = c.get("/v1/models")
        assert live.status_code == 200
        assert ready.status_code == 503 and ready.json()["status"] == "loading"
        assert health.status_code == 503 and health.json()["status"] == "loading"
        assert early.status_code == 503 and early.json()["error"]["code"] == "not_ready"
        assert int(early.headers["retry-after"]) > 0
        assert models.status_code == 200 and models.json()["data"][0]["ready"] is False
        t_ready = server.wait_for("/ready", 200, timeout=60)
        assert t_ready - t_live >= WARMUP_DELAY_S * 0.8
        with server.client() as c:
            assert c.get("/health").json()["status"] == "ready"
            r = c.post("/v1/vqa", json={"image": b64(png()), "question": "What?", "max_tokens": 2})
            assert r.status_code == 200
            assert server.metric('tinyllava:request_rejected_total{reason="not_ready"}') == 1
    finally:
        server.stop()


def test_sigterm_drains_in_flight_requests(service_log_dir: Path) -> None:
    drain_s = 10.0
    server = start_server(service_log_dir, token_delay=0.05, drain_timeout=drain_s)
    try:
        server.wait_for("/ready")
        result: Dict[str, Any] = {}

        def long_request() -> None:
            r = httpx.post(server.url + "/v1/vqa", json={"image": b64(png()), "question": "What is shown?",
                                                         "max_tokens": 40}, timeout=30)
            result["status"] = r.status_code
            result["body"] = r.json()

        worker = threading.Thread(target=long_request)
        worker.start()
        time.sleep(0.5)  # the request is generating: 40 tokens x 50 ms
        t_term = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with server.client(timeout=5.0) as c:
            refused = c.post("/v1/vqa", json={"image": b64(png()), "question": "And now?", "max_tokens": 2})
            ready = c.get("/ready")
            live = c.get("/live")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
        assert "retry-after" in refused.headers
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        assert live.status_code == 200
        worker.join(30)
        assert result["status"] == 200 and result["body"]["usage"]["completion_tokens"] == 40
        code = server.proc.wait(drain_s + 5.0)
        assert time.monotonic() - t_term < drain_s + 5.0
        assert code == 0
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
