"""Giving freed memory back to the OS after big requests (glibc only; a no-op elsewhere).

A 40 MB JSON body is read, parsed and decoded into several buffers of that order; freed, glibc keeps
much of that in its heap (its mmap threshold rises to the size of the last big free), so resident
memory after a burst would stay at the burst's peak. malloc_trim(0) hands the free pages back.
Before that, a garbage collection: a refused request's exception and traceback form a reference
cycle with the frames that hold its body and image buffers, which plain reference counting never
frees (and the next automatic collection may be many requests away).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from typing import Any, Optional

log = logging.getLogger(__name__)

TRIM_AFTER_BYTES = 4 * 1024 * 1024  # request bodies at least this big trim the heap when they finish

_libc: Optional[Any] = None
_looked = False


def _malloc_trim() -> Optional[Any]:
    global _libc, _looked
    if not _looked:
        _looked = True
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            _libc = libc if libc is not None and hasattr(libc, "malloc_trim") else None
        except OSError:
            _libc = None
    return _libc


def release_memory() -> bool:
    """Free unreachable cycles, then return free heap pages to the OS; True when glibc's malloc_trim ran."""
    gc.collect()
    libc = _malloc_trim()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


__all__ = ["TRIM_AFTER_BYTES", "release_memory"]
