"""GET /live, /ready, /health: probes for orchestrators and technicians; no API key needed.

/live is 200 as soon as the process serves HTTP. /ready (and /health, its llama.cpp-style alias
with a few more facts) is 200 only once the bundle is loaded and a warm-up generation ran, and
503 while loading (or building engines on a device's first start), after a failed load, and while
draining on shutdown.
"""
from __future__ import annotations

import time
from typing import Optional

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from server.api.deps import ServiceDep
from server.service.core import Service

router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    status: str = "alive"


class Readiness(BaseModel):
    status: str = Field(description="ready | loading | building | failed | draining")
    model: str
    error: Optional[str] = Field(None, description="why loading failed")
    detail: Optional[str] = Field(None, description="what a service that is not ready yet is doing "
                                                     "(\"building engines ...\" on a device's first start)")
    uptime_s: Optional[float] = None
    running: Optional[int] = None
    waiting: Optional[int] = None


_NOT_READY = {503: {"model": Readiness, "description": "Loading, building engines, failed to load, or draining."}}


def _readiness(service: Service, detail: bool) -> JSONResponse:
    body = Readiness(status=service.status, model=service.model_id, error=service.error, detail=service.detail)
    if detail:
        body.uptime_s = round(time.time() - service.started, 3)
        body.running, body.waiting = service.queue_depth()
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if service.ready else 503)


@router.get("/live", response_model=Liveness, summary="Liveness: the process answers HTTP")
async def live() -> Liveness:
    return Liveness()


@router.get("/ready", response_model=Readiness, responses=_NOT_READY, summary="Readiness: 200 once loaded and warm")
async def ready(service: ServiceDep) -> JSONResponse:
    return _readiness(service, detail=False)


@router.get("/health", response_model=Readiness, responses=_NOT_READY, summary="Readiness with queue facts")
async def health(service: ServiceDep) -> JSONResponse:
    return _readiness(service, detail=True)
