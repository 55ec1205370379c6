"""uvicorn's h11 protocol with a header deadline: a connection that has not sent a request's complete
headers within `header_timeout` (from connect, or from the end of the previous response) gets 408
and is closed.

uvicorn has no such deadline: a client sending one header byte a second holds a socket and a slot
for as long as it likes (slowloris). The body has its own deadline, counted by the service
middleware (server/api/middleware.py), which can still answer in the error shape; the number of
open connections is capped with uvicorn's `limit_concurrency` (server/commands/serve.py).
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Optional

from uvicorn.protocols.http.h11_impl import H11Protocol


def _timeout_response() -> bytes:
    message = ("the request headers did not arrive within this server's header timeout (TINYLLAVA_HEADER_TIMEOUT): "
               "send the whole request at once")
    error = {"message": message, "type": "invalid_request_error", "code": "header_timeout", "param": None}
    body = json.dumps({"error": error}).encode()
    head = ("HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            "content-length: %d\r\n\r\n" % len(body)).encode("ascii")
    return head + body


class HeaderDeadlineProtocol(H11Protocol):
    header_timeout = 10.0  # set per server by deadline_protocol()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._arm()  # the next request on this connection gets its own header deadline
        super().on_response_complete()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._on_header_timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        waiting_for_headers = self.cycle is None or self.cycle.response_complete
        if waiting_for_headers and not self.transport.is_closing():
            self.transport.write(_timeout_response())
            self.transport.close()


def deadline_protocol(header_timeout: float) -> type:
    """A HeaderDeadlineProtocol class with this server's header timeout (uvicorn makes one per connection)."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": header_timeout})


__all__ = ["HeaderDeadlineProtocol", "deadline_protocol"]
