"""GET / and /static/*: the technicians' page (plain HTML + JS, no build step, no external resources).

The page is public, like a login screen: it holds no data. Its API calls (/v1/vqa, /v1/system)
carry the key the technician types, so no auth dependency here. Left out of the OpenAPI document:
it is not an API, and the schema's auth test expects every documented route to need a key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from fastapi import APIRouter
from fastapi.responses import FileResponse

from server.api.errors import APIError

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"

# An allow-list, not a directory mount: nothing else under server/ can be reached by a crafted path.
_ASSETS: Dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

# The page loads only its own files and talks only to this server (the clinic network has no
# internet); the CSP makes the browser enforce that, and blocks injected inline script besides.
_HEADERS: Dict[str, str] = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' blob: data:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate, so an upgraded server never runs an old app.js
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS)


@router.get("/static/{name}")
async def asset(name: str) -> FileResponse:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise APIError(404, "no such file: the page's assets are %s" % ", ".join(sorted(_ASSETS)), "not_found")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=_HEADERS)


__all__ = ["STATIC_DIR", "router"]
