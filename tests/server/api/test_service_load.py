"""Bounded admission under a burst, and cancellation freeing capacity (reliability anchors 2 and 3).

The tiny model decodes a token in well under a millisecond, so these servers get a hold file
(TINYLLAVA_HOLD_FILE): while it exists, every generation pauses after each token, as on a slow
device, but for as long as the test needs rather than for a guessed number of seconds. The tests
then wait on what the server reports (the running/waiting gauges, a status), never on time.
"""
from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any, Dict, List, Tuple

import httpx
import pytest

from tests.server.conftest import start_server
from tests.server.service_inputs import b64, png
from tests.server.service_process import ServerProcess, sse_events, wait_until

QUESTION = "Is there a fracture of the vertebral body?"


def _burst(server: ServerProcess, n: int, body: Dict[str, Any]) -> Tuple[List[Dict[str, Any]], List[threading.Thread]]:
    """n clients, connections opened first, released together; each one's status, headers and body
    land in its slot of the list once its answer arrives. The threads are returned running."""
    results: List[Dict[str, Any]] = [{} for _ in range(n)]
    barrier = threading.Barrier(n)

    def client(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            c.get("/live")  # the connection is open before the burst
            barrier.wait()
            r = c.post("/v1/vqa", json=body)
            results[i] = {"status": r.status_code, "headers": r.headers, "json": r.json()}

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return results, threads


@pytest.mark.parametrize("concurrency,queue,clients", [(1, 4, 20), (2, 1, 8)])
def test_full_queue_answers_503_at_once(service_log_dir: Path, tmp_path: Path, concurrency: int, queue: int,
                                        clients: int) -> None:
    hold = tmp_path / "hold"
    server = start_server(service_log_dir, max_concurrency=concurrency, max_queue=queue, hold_file=hold)
    try:
        server.wait_for("/ready")
        body = {"image": b64(png(seed=42)), "question": QUESTION, "max_tokens": 8}
        with server.client() as c:
            solo = c.post("/v1/vqa", json=body).json()["answer"]
        hold.touch()  # from here on no admitted request can finish
        results, threads = _burst(server, clients, body)
        admitted = concurrency + queue
        wait_until(lambda: server.gauges() == (concurrency, queue), "the admitted requests to run and wait")
        wait_until(lambda: sum(1 for r in results if r) >= clients - admitted, "the refusals")
        # "At once": every refusal has come back while the admitted requests are still held.
        rejected = [r for r in results if r]
        assert len(rejected) == clients - admitted and server.gauges() == (concurrency, queue)
        for r in rejected:
            assert r["status"] == 503 and r["json"]["error"]["code"] == "queue_full", r
            assert int(r["headers"]["retry-after"]) >= 1
        hold.unlink()
        for t in threads:
            t.join(120)
        accepted = [r for r in results if r["status"] == 200]
        assert len(accepted) == admitted, [r["status"] for r in results]
        assert all(r["json"]["answer"] == solo for r in accepted)
        assert server.metric('tinyllava:request_rejected_total{reason="queue_full"}') == len(rejected)
        assert server.metric("tinyllava:e2e_request_latency_seconds_count") == 1 + len(accepted)
    finally:
        server.stop()


def _raw_post(server: ServerProcess, body: Dict[str, Any]) -> socket.socket:
    """A POST /v1/vqa sent on a bare socket, left unanswered: closing the socket abandons it."""
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    s.sendall(b"POST /v1/vqa HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
              % len(data) + data)
    return s


def test_abandoned_requests_free_the_engine(service_log_dir: Path, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    server = start_server(service_log_dir, max_queue=32, max_tokens_cap=200, hold_file=hold)
    try:
        server.wait_for("/ready")
        hold.touch()  # no long request can run to its end: only a disconnect stops it
        long_body = {"image": b64(png(seed=9)), "question": QUESTION, "max_tokens": 150}
        streams, plain = 20, 4

        sockets = [_raw_post(server, long_body) for _ in range(plain)]
        wait_until(lambda: sum(server.gauges()) == plain, "the plain requests to be admitted")
        for s in sockets:
            s.close()  # abandoned while one runs and the others wait

        first_tokens: List[str] = []

        def abandon_stream() -> None:
            with httpx.Client(base_url=server.url, timeout=120) as c:
                with c.stream("POST", "/v1/vqa", json={**long_body, "stream": True}) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: "):
                            first_tokens.append(line)
                            break
                    # leaving the block closes the connection mid-stream, after its first token

        threads = [threading.Thread(target=abandon_stream) for _ in range(streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(first_tokens) == streams
        wait_until(lambda: server.gauges() == (0, 0), "the engine to be free")
        assert server.metric('tinyllava:request_aborted_total{reason="client_disconnect"}') == streams + plain
        hold.unlink()
        r = httpx.post(server.url + "/v1/vqa", json={**long_body, "max_tokens": 4}, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
        # Nothing ran to the end: every long request was stopped (only the short one succeeded).
        assert server.metric("tinyllava:e2e_request_latency_seconds_count") == 1
    finally:
        server.stop()


def test_request_timeout(service_log_dir: Path, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    server = start_server(service_log_dir, request_timeout=3.0, hold_file=hold)
    try:
        server.wait_for("/ready")
        body = {"image": b64(png(seed=4)), "question": QUESTION, "max_tokens": 60}
        hold.touch()  # the long requests cannot finish: only their timeout can end them
        with server.client(timeout=60) as c:
            plain = c.post("/v1/vqa", json=body)
            streamed = c.post("/v1/vqa", json={**body, "stream": True})
            hold.unlink()
            quick = c.post("/v1/vqa", json={**body, "max_tokens": 3})
        assert plain.status_code == 504 and plain.json()["error"]["code"] == "request_timeout"
        events = sse_events(streamed.text)
        assert streamed.status_code == 200 and events[-1] == "[DONE]"
        assert events[-2]["error"]["code"] == "request_timeout" and "delta" in events[0]
        assert quick.status_code == 200
        assert server.metric('tinyllava:request_aborted_total{reason="timeout"}') == 2
    finally:
        server.stop()
