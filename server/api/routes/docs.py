"""GET /openapi.json, /docs, /docs/oauth2-redirect, /redoc: FastAPI's API documents, behind the key.

FastAPI serves these without any dependency; here they are ordinary routes with the API-key
dependency, so a server with keys shows its API (routes, caps) only to key holders, and a server
without keys shows it to anyone, as before.
"""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse

from server.api.deps import AuthDep

OPENAPI_URL = "/openapi.json"
router = APIRouter(include_in_schema=False, dependencies=[AuthDep])


@router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=request.app.title + " - Swagger UI",
                               oauth2_redirect_url="/docs/oauth2-redirect")


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=OPENAPI_URL, title=request.app.title + " - ReDoc")


__all__ = ["OPENAPI_URL", "router"]
