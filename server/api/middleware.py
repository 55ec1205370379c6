"""The ASGI middleware around every HTTP request: request id, body cap, drain gate, one log line.

- Body cap: counted on the bytes actually received, not on Content-Length (which may be absent
  with chunked uploads, or lie). A declared length over the cap is refused before reading; a body
  that grows past it raises BodyTooLarge from receive(), which the error handlers turn into 413.
- Body deadline: from the route's first read, the whole body must arrive within body_timeout
  (BodyTimeout -> 408, connection closed), so a client trickling bytes cannot hold a ticket.
- Memory: a request that brought a big body hands the freed heap back when it ends.
- Drain: while the service drains (SIGTERM), API requests get 503 at once; health probes pass.
  A request uvicorn cancels at the end of the drain answers 503 shutting_down (or, streaming, an
  error event and [DONE]) and is logged at info, not as an error.
- Log: one JSON line per request with id, route template (never the raw path), status, sizes and
  whatever the route noted (input sha256, token counts, timings); never content.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any, Dict

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api import sse
from server.api.errors import UNAVAILABLE, error_body
from server.runtime.results import ms
from server.service.core import DRAINING, Service
from server.service.json_logs import ACCESS_LOGGER
from server.service.memory import TRIM_AFTER_BYTES, release_memory

access_log = logging.getLogger(ACCESS_LOGGER)
log = logging.getLogger(__name__)
_SHUTDOWN_MESSAGE = "the server shut down before the answer was finished: retry"

HEALTH_PATHS = frozenset(["/health", "/live", "/ready"])
GENERATION_ROUTES = {"/v1/vqa": "vqa", "/v1/chat/completions": "chat"}  # route template -> metrics label


class BodyTimeout(StarletteHTTPException):
    def __init__(self, limit: float) -> None:
        super().__init__(408, "the request body did not arrive within this server's body timeout of %gs "
                              "(TINYLLAVA_BODY_TIMEOUT): send it at once, or a smaller image" % limit,
                         headers={"Connection": "close"})


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "the request body is over this server's cap of %d bytes (TINYLLAVA_MAX_BODY_BYTES): "
                              "send a smaller image" % limit)


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        service = self.service
        t0 = time.perf_counter()
        rid = uuid.uuid4().hex
        fields: Dict[str, Any] = {}
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        state["log"] = fields
        health = scope["path"] in HEALTH_PATHS
        cap = service.settings.max_body_bytes
        body_timeout = service.settings.body_timeout
        sizes = {"in": 0, "out": 0, "status": 0}
        body = {"deadline": 0.0, "reading": not health, "ended": False, "sse": False}

        def body_read() -> None:
            if body["reading"]:
                body["reading"] = False
                service.reading -= 1

        async def counted_receive() -> Message:
            if not body["reading"]:  # the body is in (or this is a probe): a wait for a disconnect has no deadline
                return await receive()
            if not body["deadline"]:  # from the first read: time spent waiting for a ticket or slot is not counted
                body["deadline"] = time.monotonic() + body_timeout
            try:
                message = await asyncio.wait_for(receive(), max(0.0, body["deadline"] - time.monotonic()))
            except asyncio.TimeoutError:
                raise BodyTimeout(body_timeout) from None
            if message["type"] == "http.request":
                sizes["in"] += len(message.get("body", b""))
                if sizes["in"] > cap:
                    raise BodyTooLarge(cap)
                if not message.get("more_body", False):
                    body_read()
            else:
                body_read()
            return message

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                sizes["status"] = message["status"]
                message["headers"] = list(message.get("headers", [])) + [(b"x-request-id", rid.encode())]
                body["sse"] = any(k == b"content-type" and v.startswith(b"text/event-stream")
                                  for k, v in message["headers"])
            elif message["type"] == "http.response.body":
                sizes["out"] += len(message.get("body", b""))
                body["ended"] = not message.get("more_body", False)
            await send(message)

        if not health:
            service.in_flight += 1
            service.reading += 1
        try:
            if not health and service.status == DRAINING:
                service.metrics.reject("draining")
                fields["error_code"] = "draining"
                await _send_error(tracked_send, 503, "the server is shutting down: retry on another instance or "
                                  "in a moment", "draining", {"retry-after": "5"})
            elif _declared_length(scope) > cap:
                fields["error_code"] = "body_too_large"
                await _send_error(tracked_send, 413, BodyTooLarge(cap).detail, "body_too_large",
                                  {"connection": "close"})
            else:
                try:
                    await self.app(scope, counted_receive, tracked_send)
                except (BodyTooLarge, BodyTimeout) as e:  # raised where no handler runs (e.g. while streaming)
                    if sizes["status"]:
                        raise
                    code = "body_too_large" if isinstance(e, BodyTooLarge) else "body_timeout"
                    fields["error_code"] = code
                    await _send_error(tracked_send, e.status_code, e.detail, code, {"connection": "close"})
        except asyncio.CancelledError:
            if service.status != DRAINING:
                raise
            # uvicorn cancels what is left once the drain is over: answer it as designed, log it as news.
            fields["error_code"] = "shutting_down"
            log.info("request stopped at shutdown", extra={"request_id": rid})
            if not sizes["status"]:
                await _send_error(tracked_send, 503, _SHUTDOWN_MESSAGE, "shutting_down", {"connection": "close"})
            elif body["sse"] and not body["ended"]:
                event = sse.event(error_body(_SHUTDOWN_MESSAGE, UNAVAILABLE, "shutting_down"))
                await tracked_send({"type": "http.response.body", "body": event + sse.DONE, "more_body": False})
        finally:
            if not health:
                service.in_flight -= 1
                body_read()
                if sizes["in"] >= TRIM_AFTER_BYTES:
                    release_memory()
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            if route in GENERATION_ROUTES and sizes["status"]:
                service.metrics.count_request(GENERATION_ROUTES[route], sizes["status"])
            line = {
                "request_id": rid, "method": scope["method"], "route": route,
                "status": sizes["status"], "bytes_in": sizes["in"], "bytes_out": sizes["out"],
                "duration_ms": ms(time.perf_counter() - t0),
            }
            line.update(fields)
            access_log.log(logging.DEBUG if health else logging.INFO, "request", extra=line)


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0  # the HTTP parser refuses a malformed length before we see it
    return 0


async def _send_error(send: Send, status: int, message: str, code: str, headers: Dict[str, str]) -> None:
    type_ = UNAVAILABLE if status == 503 else "invalid_request_error"
    body = json.dumps(error_body(message, type_, code)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


__all__ = ["BodyTooLarge", "HEALTH_PATHS", "ServiceMiddleware"]
