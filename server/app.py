"""The FastAPI app: `create_app(settings)` wires the service, the routers, errors and middleware.

    uvicorn "server.app:create_app" --factory     # or: tinyllava-med serve
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator, Optional

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from server.api.errors import install_error_handlers
from server.api.middleware import ServiceMiddleware
from server.api.openapi import install_openapi
from server.api.routes import ROUTERS
from server.runtime.bundle import package_version
from server.service.core import Service
from server.service.settings import Settings

DESCRIPTION = (
    "TinyLLaVA-Med on this device: ask about a medical image (PNG, JPEG, DICOM). `POST /v1/vqa` takes a "
    "multipart form or JSON; `POST /v1/chat/completions` is OpenAI's chat API with `image_url` data URLs. "
    "Errors come as `{\"error\": {\"message\", \"type\", \"code\", \"param\"}}`."
)


def create_app(settings: Optional[Settings] = None) -> FastAPI:
    """The app; the bundle starts loading in the background when the app starts (lifespan)."""
    settings = settings if settings is not None else Settings()
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        service.stop()

    # The API documents are routes of their own (server/api/routes/docs.py), behind the API key.
    app = FastAPI(title="TinyLLaVA-Med", version=package_version(), description=DESCRIPTION, lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.service = service
    install_error_handlers(app)
    install_openapi(app, settings)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(ServiceMiddleware, service=service)
    if settings.cors_origins:  # outermost, so preflight requests are answered before auth
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Api-Key"],
                           expose_headers=["X-Request-Id", "Retry-After"])
    return app


__all__ = ["create_app"]
