"""Issue 13 item 5: slow remote image fetches do not stall the service.

An image host on 127.0.0.1 holds every request until the test releases it (an Event, not a delay).
With 45 requests naming its images, the health routes must answer while the fetches hang; fetches
count against admission (max-concurrency 1 + max-queue 8: nine tickets, the rest 503 unfetched) and
run in their own pool (remote_image_workers at once, never the shared thread pool's 40).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Iterator, List

import httpx
import pytest

from tests.server.conftest import start_server
from tests.server.service_inputs import png
from tests.server.service_process import ServerProcess, local_http_host, serving

IMAGE = png(width=32, height=32, seed=83)
BURST = 45
WORKERS = 4
HANG_S = 60.0  # only a hang takes this long


class _SlowHost(BaseHTTPRequestHandler):
    release = threading.Event()
    lock = threading.Condition()
    active = 0
    most_active = 0
    seen = 0

    def do_GET(self) -> None:  # noqa: N802
        cls = type(self)
        with cls.lock:
            cls.active += 1
            cls.seen += 1
            cls.most_active = max(cls.most_active, cls.active)
            cls.lock.notify_all()
        cls.release.wait(HANG_S * 2)
        with cls.lock:
            cls.active -= 1
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(IMAGE)))
        self.end_headers()
        self.wfile.write(IMAGE)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def slow_host() -> Iterator[str]:
    with local_http_host(_SlowHost) as url:
        try:
            yield url + "/images/"
        finally:
            _SlowHost.release.set()  # before the host shuts down: its handlers are waiting on it


@pytest.fixture(scope="module")
def server(service_log_dir: Path, slow_host: str) -> Iterator[ServerProcess]:
    with serving(start_server(service_log_dir, remote_image_prefixes=slow_host, remote_image_workers=WORKERS,
                              max_concurrency=1, max_queue=8, remote_image_timeout=HANG_S * 2)) as s:
        yield s


def test_health_answers_while_remote_fetches_hang(server: ServerProcess, slow_host: str) -> None:
    def ask(i: int) -> int:
        body = {"question": "what is shown?", "image": slow_host + "scan-%d.png" % i, "max_tokens": 2}
        return httpx.post(server.url + "/v1/vqa", json=body, timeout=HANG_S * 3).status_code

    with ThreadPoolExecutor(BURST) as pool:
        futures = [pool.submit(ask, i) for i in range(BURST)]
        with _SlowHost.lock:  # the image host has WORKERS fetches hanging on it
            assert _SlowHost.lock.wait_for(lambda: _SlowHost.active >= WORKERS, HANG_S)
        try:
            # While they hang (nothing has been released), the probes answer.
            probes: List[int] = []
            with server.client(timeout=HANG_S) as c:
                for path in ("/live", "/ready", "/health", "/metrics", "/ready"):
                    probes.append(c.get(path).status_code)
            hanging = not _SlowHost.release.is_set() and _SlowHost.active >= WORKERS
            # Every request has arrived: nine hold tickets (fetching, or waiting for a fetch thread), the
            # others were refused. Only then is the host released, so the counts below are exact.
            refused = 'tinyllava:request_rejected_total{reason="queue_full"}'
            for _ in range(100000):
                if server.metric(refused) >= BURST - 9:
                    break
        finally:
            _SlowHost.release.set()
        statuses = [f.result() for f in futures]
    assert probes == [200] * 5 and hanging
    # Fetches took tickets: nine admitted (and fetched), the other 36 refused before any fetch.
    assert statuses.count(200) == 9 and statuses.count(503) == BURST - 9, statuses
    assert _SlowHost.seen == 9
    assert _SlowHost.most_active <= WORKERS  # the fetch pool's size, not the shared pool's
