"""Bounded admission under a burst, and cancellation freeing capacity (reliability anchors 2 and 3).

The tiny model decodes a token in well under a millisecond, so the servers here add a per-token
delay (TINYLLAVA_TOKEN_DELAY) to stand in for a slow device: requests then overlap as they would
on a Jetson. The delay changes no answer (greedy decoding, same tokens).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import httpx
import pytest

from tests.server.conftest import start_server
from tests.server.service_inputs import b64, png
from tests.server.service_process import ServerProcess, sse_events

QUESTION = "Is there a fracture of the vertebral body?"


def _burst(server: ServerProcess, n: int, body: Dict[str, Any]) -> List[Dict[str, Any]]:
    """n clients, connections opened first, released together; status, seconds and headers of each."""
    results: List[Dict[str, Any]] = [{} for _ in range(n)]
    barrier = threading.Barrier(n)

    def client(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            c.get("/live")  # the connection is open before the burst
            barrier.wait()
            t0 = time.monotonic()
            r = c.post("/v1/vqa", json=body)
            results[i] = {"status": r.status_code, "seconds": time.monotonic() - t0, "headers": r.headers,
                          "json": r.json()}

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


@pytest.mark.parametrize("concurrency,queue,clients", [(1, 4, 20), (2, 1, 8)])
def test_full_queue_answers_503_at_once(service_log_dir: Path, concurrency: int, queue: int, clients: int) -> None:
    server = start_server(service_log_dir, max_concurrency=concurrency, max_queue=queue, token_delay=0.04)
    try:
        server.wait_for("/ready")
        body = {"image": b64(png(seed=42)), "question": QUESTION, "max_tokens": 8}
        with server.client() as c:
            solo = c.post("/v1/vqa", json=body).json()["answer"]
        results = _burst(server, clients, body)
        accepted = [r for r in results if r["status"] == 200]
        rejected = [r for r in results if r["status"] == 503]
        assert len(accepted) == concurrency + queue and len(rejected) == clients - concurrency - queue, \
            [r["status"] for r in results]
        for r in rejected:
            assert r["json"]["error"]["code"] == "queue_full"
            assert int(r["headers"]["retry-after"]) >= 1
            assert r["seconds"] < 0.1, r["seconds"]
        assert all(r["json"]["answer"] == solo for r in accepted)
        assert server.metric('tinyllava:request_rejected_total{reason="queue_full"}') == len(rejected)
        assert server.metric("tinyllava:e2e_request_latency_seconds_count") == 1 + len(accepted)
    finally:
        server.stop()


def test_abandoned_requests_free_the_engine(service_log_dir: Path) -> None:
    server = start_server(service_log_dir, max_queue=32, token_delay=0.02, max_tokens_cap=200)
    try:
        server.wait_for("/ready")
        long_body = {"image": b64(png(seed=9)), "question": QUESTION, "max_tokens": 150}  # ~3 s each
        streams, plain = 20, 4

        def abandon_stream() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                with c.stream("POST", "/v1/vqa", json={**long_body, "stream": True}) as r:
                    end = time.monotonic() + 0.5
                    for _ in r.iter_bytes():
                        if time.monotonic() > end:
                            break
                    # leaving the block closes the connection mid-stream

        def abandon_plain() -> None:
            try:
                httpx.post(server.url + "/v1/vqa", json=long_body, timeout=0.5)
            except httpx.TimeoutException:
                pass

        threads = [threading.Thread(target=abandon_stream) for _ in range(streams)]
        threads += [threading.Thread(target=abandon_plain) for _ in range(plain)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        t0 = time.monotonic()
        r = httpx.post(server.url + "/v1/vqa", json={**long_body, "max_tokens": 4}, timeout=10)
        assert r.status_code == 200 and time.monotonic() - t0 < 5.0
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            gauges = (server.metric("tinyllava:num_requests_running"), server.metric("tinyllava:num_requests_waiting"))
            if gauges == (0, 0):
                break
            time.sleep(0.05)
        assert gauges == (0, 0)
        assert server.metric('tinyllava:request_aborted_total{reason="client_disconnect"}') == streams + plain
        # Nothing ran to the end: every long request was stopped (only the short one succeeded).
        assert server.metric("tinyllava:e2e_request_latency_seconds_count") == 1
    finally:
        server.stop()


def test_request_timeout(service_log_dir: Path) -> None:
    server = start_server(service_log_dir, request_timeout=1.0, token_delay=0.05)
    try:
        server.wait_for("/ready")
        body = {"image": b64(png(seed=4)), "question": QUESTION, "max_tokens": 60}  # ~3 s: over the timeout
        with server.client() as c:
            t0 = time.monotonic()
            plain = c.post("/v1/vqa", json=body)
            assert time.monotonic() - t0 < 3.0
            streamed = c.post("/v1/vqa", json={**body, "stream": True})
            quick = c.post("/v1/vqa", json={**body, "max_tokens": 3})
        assert plain.status_code == 504 and plain.json()["error"]["code"] == "request_timeout"
        events = sse_events(streamed.text)
        assert streamed.status_code == 200 and events[-1] == "[DONE]"
        assert events[-2]["error"]["code"] == "request_timeout" and "delta" in events[0]
        assert quick.status_code == 200
        assert server.metric('tinyllava:request_aborted_total{reason="timeout"}') == 2
    finally:
        server.stop()
