"""Reading a generation request's body: only after the key and an admission ticket, a few at a time.

A 40 MB JSON body costs several times its size while it is read and parsed (the bytes, the parsed
string, the decoded image). The routes take a ticket before they read (a full queue is a 503 with
the body unread), and `body_slot` lets at most `max_body_readers` requests read and parse at once,
so a burst of big bodies costs a bounded amount of memory, not one body per client.
"""
from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict

from fastapi import Request

from server.api.errors import APIError
from server.service.core import Service

_SLOTS: Dict[int, asyncio.Semaphore] = {}  # per service; made on the event loop (Python 3.8 binds a loop)


@asynccontextmanager
async def body_slot(service: Service) -> AsyncIterator[None]:
    slots = _SLOTS.get(id(service))
    if slots is None:
        slots = _SLOTS[id(service)] = asyncio.Semaphore(service.settings.max_body_readers)
    async with slots:
        yield


async def read_json(request: Request) -> Any:
    """The body parsed as JSON; 400 invalid_json for anything else (nesting too deep for the parser included)."""
    buf = bytearray()  # grows in place: no list of chunks joined into a second copy
    async for chunk in request.stream():
        buf += chunk
    try:
        return json.loads(buf)
    except (ValueError, RecursionError):
        raise APIError(400, "the body is not valid JSON (or nests deeper than a request needs)",
                       "invalid_json") from None


__all__ = ["body_slot", "read_json"]
