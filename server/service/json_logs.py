"""Structured logs for the service: one JSON object per line on stderr.

What may be logged is metadata about a request (ids, route, status, sizes, hashes, timings), never
its content. Exceptions are logged with their type and stack frames but WITHOUT their message: a
library error can quote the input it choked on (a question, a DICOM tag value).
"""
from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any, Dict

ACCESS_LOGGER = "tinyllava.access"
# Attribute names a LogRecord has of its own; everything else on a record came from `extra=`.
# (color_message: uvicorn's copy of a message with ANSI colours.)
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime",
                                                                                   "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: Dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + ".%03dZ" % record.msecs,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, _, tb = record.exc_info
            out["exc_type"] = exc_type.__name__
            out["exc_frames"] = [
                "%s:%d in %s" % (f.filename, f.lineno or 0, f.name) for f in traceback.extract_tb(tb)
            ]
        return json.dumps(out, default=str, ensure_ascii=True)


def configure_logging(level: str = "info") -> None:
    """Route every logger (uvicorn's included) through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
    # uvicorn's access line quotes the raw path and query string: ours (ACCESS_LOGGER) replaces it.
    logging.getLogger("uvicorn.access").disabled = True


__all__ = ["ACCESS_LOGGER", "JsonFormatter", "configure_logging"]
