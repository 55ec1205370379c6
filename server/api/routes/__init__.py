"""One router per resource; server/app.py includes ROUTERS in this order.

A new resource (the technicians' page at '/', for one) is a module here with a `router`, added below.
"""
from __future__ import annotations

from server.api.routes import chat, docs, health, metrics, models, page, system, vqa

ROUTERS = (health.router, vqa.router, chat.router, models.router, system.router, metrics.router, page.router,
           docs.router)

__all__ = ["ROUTERS"]
