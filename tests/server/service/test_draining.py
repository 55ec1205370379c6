"""DrainingServer in-process: the first signal drains (503s, socket kept), exit once nothing is in
flight or at the drain timeout, a second signal stops waiting. No socket is opened: the test drives
handle_exit as uvicorn's signal handler would and reads should_exit, the flag uvicorn's loop polls."""
from __future__ import annotations

import logging
import signal

import pytest
import uvicorn

from server.service.core import DRAINING, LOADING, Service
from server.service.draining import DrainingServer
from server.service.settings import Settings
from tests.server.service_process import DEFAULT_BUNDLE, wait_until


async def _app(scope, receive, send) -> None:  # never called: no server is started
    raise AssertionError("not served")


def _server(drain_timeout: float) -> DrainingServer:
    service = Service(Settings(bundle=DEFAULT_BUNDLE))
    return DrainingServer(uvicorn.Config(_app), service, drain_timeout=drain_timeout)


def test_first_signal_drains_and_exits_when_the_last_request_ends() -> None:
    server = _server(drain_timeout=600)
    assert server.service.status == LOADING
    server.service.in_flight = 2
    server.handle_exit(signal.SIGTERM, None)
    assert server.service.status == DRAINING
    assert not server.should_exit  # two requests still in flight: uvicorn keeps serving them
    server.service.in_flight = 1
    assert not server.should_exit and not server.force_exit
    server.service.in_flight = 0
    wait_until(lambda: server.should_exit, "the drain to end")
    assert not server.force_exit  # an ordinary shutdown: uvicorn's lifespan shutdown still runs


def test_nothing_in_flight_exits_at_once() -> None:
    server = _server(drain_timeout=600)
    server.handle_exit(signal.SIGINT, None)
    wait_until(lambda: server.should_exit, "the drain to end")


def test_drain_timeout_cuts_off_what_is_still_running(caplog: pytest.LogCaptureFixture) -> None:
    server = _server(drain_timeout=0)
    server.service.in_flight = 1  # never ends
    with caplog.at_level(logging.WARNING, logger="server.service.draining"):
        server.handle_exit(signal.SIGTERM, None)
        wait_until(lambda: server.should_exit, "the drain timeout")
    assert server.service.in_flight == 1
    assert any("drain timeout" in r.getMessage() and "1 request" in r.getMessage() for r in caplog.records)


def test_second_signal_stops_waiting() -> None:
    server = _server(drain_timeout=600)
    server.service.in_flight = 1
    server.handle_exit(signal.SIGTERM, None)
    assert not server.should_exit
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit and server.force_exit
    server.service.in_flight = 0  # lets the drain thread end
