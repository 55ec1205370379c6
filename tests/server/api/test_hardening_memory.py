"""Issue 13 item 1: a burst of big bodies costs a bounded amount of the server's memory.

The server (max-concurrency 1, max-queue 1: two tickets) checks the key and takes a ticket before it
reads a body, and reads at most two bodies at once; unauthenticated bodies are answered 401 unread.
Measured on the server process itself: its peak RSS (VmHWM, reset through /proc/PID/clear_refs) over
the burst, against its RSS before it, and its RSS after the burst.
"""
from __future__ import annotations

import os
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Optional

import pytest

from tests.server.conftest import start_server
from tests.server.service_process import ServerProcess, serving

KEY = "memory-key-0123456789"
MIB = 1024 * 1024
BODY_MIB = 40
BURST = 8
# Two bodies in (two tickets, two body readers), each costing its bytes, the parsed string and the
# decoded image bytes (~2.75x the body): ~220 MiB, plus what an earlier burst left resident and
# allocator slack (measured: 190-345 MiB over repeated bursts). The base commit read and decoded all
# eight: 862 MiB here, 1.1 GiB in the issue.
PEAK_BOUND_MIB = 500
# What stays resident once a burst is over (measured: ~140 MiB, the same after every burst; the base
# commit kept ~1 GiB in the run).
AFTER_BOUND_MIB = 256


def _status_kb(pid: int, field: str) -> int:
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))  # type: ignore[union-attr]


def _reset_peak(pid: int) -> None:
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
    except OSError:
        pytest.skip("cannot reset the server's peak RSS here")


@pytest.fixture(scope="module")
def server(service_log_dir: Path) -> Iterator[ServerProcess]:
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("peak RSS needs Linux /proc")
    with serving(start_server(service_log_dir, api_keys=KEY, max_concurrency=1, max_queue=1,
                              max_body_bytes=64 * MIB, max_image_bytes=48 * MIB)) as s:
        yield s


def _post(port: int, path: str, body: bytes, key: Optional[str]) -> int:
    """POST over a raw socket; the status, or 0 when the server closed before answering (it may stop
    reading a refused body). The socket timeout only ends a hang; nothing here depends on timing."""
    head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        path, len(body))
    if key:
        head += "Authorization: Bearer %s\r\n" % key
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall((head + "\r\n").encode())
        try:
            view = memoryview(body)
            for i in range(0, len(body), MIB):
                s.sendall(view[i:i + MIB])
        except OSError:
            pass  # answered (and closed) before the whole body was sent
        try:
            first = s.recv(4096)
        except OSError:
            return 0
    m = re.match(rb"HTTP/1\.1 (\d{3})", first)
    return int(m.group(1)) if m else 0


def _big_body(path: str) -> bytes:
    filler = b"A" * (BODY_MIB * MIB)  # base64 of zeros: decodes, then is no image format (415)
    if path == "/v1/vqa":
        return b'{"question": "what is shown?", "image": "' + filler + b'"}'
    return (b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, '
            b'{"type": "image_url", "image_url": {"url": "data:image/png;base64,' + filler + b'"}}]}]}')


@pytest.mark.parametrize("path", ["/v1/vqa", "/v1/chat/completions"])
def test_a_burst_of_big_bodies_costs_bounded_memory(server: ServerProcess, path: str) -> None:
    pid = server.proc.pid
    body = _big_body(path)
    start = _status_kb(pid, "VmRSS")
    _reset_peak(pid)
    with ThreadPoolExecutor(BURST) as pool:
        statuses = list(pool.map(lambda _: _post(server.port, path, body, KEY), range(BURST)))
    peak = (_status_kb(pid, "VmHWM") - start) // 1024
    after = (_status_kb(pid, "VmRSS") - start) // 1024
    assert all(s in (0, 415, 503) for s in statuses), statuses
    assert statuses.count(415) >= 1, statuses  # some bodies were read and refused as no image
    assert statuses.count(503) + statuses.count(0) >= 1, statuses  # the rest were turned away unread
    assert peak < PEAK_BOUND_MIB, "peak RSS rose %d MiB over the burst (%s)" % (peak, statuses)
    assert after < AFTER_BOUND_MIB, "RSS stayed %d MiB above its start after the burst" % after


@pytest.mark.parametrize("path", ["/v1/vqa", "/v1/chat/completions"])
def test_unauthenticated_bodies_are_refused_unread(server: ServerProcess, path: str) -> None:
    """The 401 comes while the client has sent the headers and one byte of a 40 MB body: the server
    does not wait for (or read) the rest."""
    for key in (None, "wrong-key"):
        head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
            path, BODY_MIB * MIB)
        if key:
            head += "X-Api-Key: %s\r\n" % key
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
            s.sendall((head + "\r\n{").encode())
            first = s.recv(4096)  # a timeout here (the base commit on chat) means it waits for the body
        assert first.startswith(b"HTTP/1.1 401"), first[:200]
    pid = server.proc.pid
    start = _status_kb(pid, "VmRSS")
    _reset_peak(pid)
    body = _big_body(path)
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda _: _post(server.port, path, body, None), range(6)))
    assert set(statuses) <= {0, 401} and 401 in statuses, statuses
    assert (_status_kb(pid, "VmHWM") - start) // 1024 < 64, "unauthenticated bodies were read"
