"""Server-sent events framing: `data: <json>` blocks, ended by `data: [DONE]` (OpenAI's convention)."""
from __future__ import annotations

import json
from typing import Any, Dict

DONE = b"data: [DONE]\n\n"
# No caching, and no proxy buffering (nginx honours X-Accel-Buffering), so tokens arrive as made.
HEADERS: Dict[str, str] = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MEDIA_TYPE = "text/event-stream"


def event(data: Any) -> bytes:
    # json.dumps escapes CR and LF inside strings, so one event stays on one line.
    return b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n\n"


__all__ = ["DONE", "HEADERS", "MEDIA_TYPE", "event"]
