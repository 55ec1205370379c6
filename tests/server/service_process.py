"""The real service in a subprocess (`python -m server.cli serve`), for the end-to-end service tests.

Like vLLM's RemoteOpenAIServer: a free port, the tiny embedded bundle, settings through TINYLLAVA_*
environment variables, stderr captured to a file (the tests grep the logs), SIGTERM to stop.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import httpx

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = ROOT / "server" / "assets" / "default-bundle"
# The earlier default: the `tiny` preset with random weights (make-checkpoint seed 0). Its answers run to
# max_tokens instead of stopping after a word, as the trained demo's do: the tests that need a request still
# generating when something happens (a drain, a deadline, a stream shown piece by piece) serve it.
RANDOM_BUNDLE = ROOT / "tests" / "server" / "assets" / "random-bundle"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sse_events(text: str) -> List[Any]:
    """The `data:` payloads of an SSE body: JSON objects, and the final "[DONE]"."""
    out: List[Any] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: "):]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll until `condition()` holds: the tests wait on observable events (a gauge, a status), never on time.

    The timeout only stops a test that would otherwise hang; it is no bound on how fast the server is."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("still waiting, after %.0f s, for %s" % (timeout, what))
        time.sleep(0.02)


class ServerProcess:
    def __init__(self, log_dir: Path, env: Optional[Dict[str, str]] = None, bundle: Path = DEFAULT_BUNDLE,
                 port: Optional[int] = None) -> None:
        self.port = port if port is not None else free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log_path = log_dir / ("server-%d.log" % self.port)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TINYLLAVA_")}
        full_env.update(env or {})
        full_env["PYTHONUNBUFFERED"] = "1"
        self._log = open(self.log_path, "wb")
        cmd = [sys.executable, "-m", "server.cli", "serve", "--bundle", str(bundle), "--port", str(self.port)]
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, path: str, status: int = 200, timeout: float = 60.0) -> float:
        """Poll until `path` answers `status`; returns the seconds since the process started."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited with %s:\n%s" % (self.proc.returncode, self.logs()[-3000:]))
            try:
                if httpx.get(self.url + path, timeout=2.0).status_code == status:
                    return time.monotonic() - self.t_start
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise TimeoutError("%s did not answer %d within %.0f s:\n%s" % (path, status, timeout, self.logs()[-3000:]))

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 30.0), **kwargs)  # type: ignore[arg-type]

    def metric(self, name: str, headers: Optional[Dict[str, str]] = None) -> float:
        """The value of one sample line of /metrics, e.g. 'tinyllava:request_rejected_total{reason="queue_full"}'."""
        text = httpx.get(self.url + "/metrics", headers=headers, timeout=10.0).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise KeyError("%s not in /metrics" % name)

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


    def gauges(self) -> Tuple[float, float]:
        """(running, waiting) requests, as /metrics reports them."""
        return self.metric("tinyllava:num_requests_running"), self.metric("tinyllava:num_requests_waiting")


__all__ = ["DEFAULT_BUNDLE", "ROOT", "ServerProcess", "free_port", "sse_events", "wait_until"]


@contextlib.contextmanager
def serving(server: ServerProcess) -> Iterator[ServerProcess]:
    """The server once /ready answers 200; stopped when the block ends, however it ends."""
    try:
        server.wait_for("/ready")
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def local_http_host(handler: "type[BaseHTTPRequestHandler]") -> Iterator[str]:
    """A plain HTTP server on a free local port, one thread per request; yields its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield "http://127.0.0.1:%d" % httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
