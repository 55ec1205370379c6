"""Structured logs for the service: one JSON object per line on stderr.

What may be logged is metadata about a request (ids, route, status, sizes, hashes, timings), never
its content. Exceptions are logged with their type and stack frames but WITHOUT their message: a
library error can quote the input it choked on (a question, a DICOM tag value).
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
from typing import Any, Dict

ACCESS_LOGGER = "tinyllava.access"
# Libraries whose log lines quote the file they read: pydicom names tag values ("Unknown encoding
# 'X'" for a SpecificCharacterSet), Pillow chunk contents (an ICC profile's name, at debug). They are
# silenced at every level; our own code reports what went wrong with an upload, without its content.
CONTENT_LOGGERS = ("pydicom", "PIL")
_WARNING_HEAD = re.compile(r"^(?P<file>[^\n]*?):(?P<line>\d+): (?P<category>\w+):")
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


class ContentFilter(logging.Filter):
    """Drops the records of CONTENT_LOGGERS and keeps only the origin of a Python warning, not its text
    (library warnings, e.g. pydicom's on an odd tag, quote the value)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in CONTENT_LOGGERS:
            return False
        if record.name == "py.warnings":
            m = _WARNING_HEAD.match(record.getMessage())
            record.msg = "a library warning (its text is withheld: it can quote file content)"
            record.args = ()
            if m is not None:
                record.warning_category = m.group("category")
                record.warning_origin = "%s:%s" % (m.group("file"), m.group("line"))
        return True


def configure_logging(level: str = "info") -> None:
    """Route every logger (uvicorn's included) through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContentFilter())
    for name in CONTENT_LOGGERS:  # and never format them in the first place
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    logging.captureWarnings(True)
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


__all__ = ["ACCESS_LOGGER", "CONTENT_LOGGERS", "ContentFilter", "JsonFormatter", "configure_logging"]
