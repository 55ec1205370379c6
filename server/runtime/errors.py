"""Exception types of the runtime: what went wrong, and what the caller can do about it."""
from __future__ import annotations


class EngineError(RuntimeError):
    """A graph does not match the bundle contract, or no execution provider can run it."""


class RequestError(ValueError):
    """A generation request is invalid (bad ids, image count, sampling values): a client error."""


class ContextLengthError(RequestError):
    """The prompt (image tokens expanded) does not fit in the engine's context."""


class GeneratorBusyError(RuntimeError):
    """A generator owns one KV cache and serves one request at a time; another is in progress."""
