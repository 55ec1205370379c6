"""GET /metrics: Prometheus text format (server/service/metrics.py lists the series)."""
from __future__ import annotations

from fastapi import APIRouter, Response

from server.api.deps import AuthDep, ServiceDep
from server.api.errors import error_responses

router = APIRouter(tags=["metrics"], dependencies=[AuthDep])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **error_responses([401])})
async def metrics(service: ServiceDep) -> Response:
    body, content_type = service.metrics.render()
    return Response(body, media_type=content_type)
