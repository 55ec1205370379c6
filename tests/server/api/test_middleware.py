"""ServiceMiddleware in-process: request id, body cap (declared and counted), drain gate, in-flight
count and the access log line, through httpx's ASGI transport (no socket, no model loaded)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Dict, List

import httpx
import pytest
from fastapi import FastAPI, Request

from server.api.errors import install_error_handlers
from server.api.middleware import ServiceMiddleware
from server.service.core import DRAINING, Service
from server.service.json_logs import ACCESS_LOGGER
from server.service.settings import Settings
from tests.server.service_process import DEFAULT_BUNDLE

CAP = 4096


def _app() -> FastAPI:
    service = Service(Settings(bundle=DEFAULT_BUNDLE, max_body_bytes=CAP))
    app = FastAPI()
    app.state.service = service
    app.state.seen: List[Dict[str, Any]] = []
    install_error_handlers(app)

    @app.post("/v1/vqa/{anything}")
    async def vqa(anything: str, request: Request) -> Dict[str, Any]:
        body = await request.body()
        app.state.seen.append({"in_flight": service.in_flight, "bytes": len(body)})
        return {"n": len(body)}

    @app.get("/live")
    async def live() -> Dict[str, Any]:
        app.state.seen.append({"in_flight": service.in_flight})
        return {"status": "ok"}

    app.add_middleware(ServiceMiddleware, service=service)
    return app


def _run(app: FastAPI, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return await c.request(method, path, **kw)

    return asyncio.run(go())


def _access_lines(caplog: pytest.LogCaptureFixture) -> List[logging.LogRecord]:
    return [r for r in caplog.records if r.name == ACCESS_LOGGER]


def test_request_id_in_flight_and_one_log_line_with_the_route_template(caplog: pytest.LogCaptureFixture) -> None:
    app = _app()
    with caplog.at_level(logging.DEBUG, logger=ACCESS_LOGGER):
        r = _run(app, "POST", "/v1/vqa/patient-name-here", content=b"x" * 100)
        live = _run(app, "GET", "/live")
    assert r.status_code == 200 and r.json() == {"n": 100}
    ids = [r.headers["x-request-id"], live.headers["x-request-id"]]
    assert all(len(i) == 32 for i in ids) and ids[0] != ids[1]
    assert app.state.seen[0]["in_flight"] == 1 and app.state.seen[1]["in_flight"] == 0  # probes not counted
    assert app.state.service.in_flight == 0
    lines = _access_lines(caplog)
    assert [(x.route, x.status, x.levelno) for x in lines] == [("/v1/vqa/{anything}", 200, logging.INFO),
                                                              ("/live", 200, logging.DEBUG)]
    assert lines[0].bytes_in == 100 and lines[0].bytes_out == len(r.content) and lines[0].request_id == ids[0]
    assert "patient-name-here" not in caplog.text  # the raw path is never logged


def test_declared_length_over_the_cap_is_refused_before_the_route_runs() -> None:
    app = _app()
    r = _run(app, "POST", "/v1/vqa/a", content=b"x" * (CAP + 1))
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert "TINYLLAVA_MAX_BODY_BYTES" in r.json()["error"]["message"]
    assert app.state.seen == []


def test_chunked_body_over_the_cap_is_refused_without_reading_it_all() -> None:
    app = _app()
    sent = {"chunks": 0}
    total_chunks = 64  # 64 KiB against a 4 KiB cap

    async def body() -> AsyncIterator[bytes]:
        for _ in range(total_chunks):
            sent["chunks"] += 1
            yield b"y" * 1024

    r = _run(app, "POST", "/v1/vqa/a", content=body())  # no Content-Length: only the count can stop it
    assert r.status_code == 413
    assert sent["chunks"] < total_chunks  # stopped past the cap, not after the whole body
    assert app.state.seen == [] and app.state.service.in_flight == 0


def test_draining_refuses_api_requests_and_lets_probes_through() -> None:
    app = _app()
    app.state.service.status = DRAINING
    r = _run(app, "POST", "/v1/vqa/a", content=b"{}")
    assert r.status_code == 503 and r.json()["error"]["code"] == "draining"
    assert int(r.headers["retry-after"]) > 0
    assert _run(app, "GET", "/live").status_code == 200
    assert len(app.state.seen) == 1  # only the probe reached a route
    assert app.state.service.metrics.registry.get_sample_value("tinyllava:request_rejected_total",
                                                               {"reason": "draining"}) == 1
