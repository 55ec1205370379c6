"""Errors in OpenAI's shape, {"error": {"message", "type", "code", "param"}}, for every failure.

Bad input is a 4xx with a message a person can act on; only a bug is a 500, and its message names
the request id, not the exception (which could quote the input). Handlers record the error code in
the request's log line (never the message).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, Mapping, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.processor.templates import PromptError
from server.imaging.limits import ImageInputError
from server.runtime.errors import ContextLengthError, RequestError
from server.service.admission import Overloaded, ShuttingDown

log = logging.getLogger(__name__)

INVALID = "invalid_request_error"
AUTH = "authentication_error"
UNAVAILABLE = "service_unavailable_error"
TIMEOUT = "timeout_error"
SERVER = "server_error"


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: Optional[str] = None
    param: Optional[str] = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class APIError(Exception):
    def __init__(self, status: int, message: str, code: str, type_: str = INVALID, param: Optional[str] = None,
                 headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type_
        self.param = param
        self.headers = dict(headers or {})


def error_body(message: str, type_: str, code: Optional[str], param: Optional[str] = None) -> Dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def note(request: Request, **fields: Any) -> None:
    """Add fields to the request's one log line (server/api/middleware.py writes it)."""
    log_fields = getattr(request.state, "log", None)
    if log_fields is not None:
        log_fields.update(fields)


def error_response(request: Request, err: APIError) -> JSONResponse:
    note(request, error_code=err.code)
    return JSONResponse(error_body(err.message, err.type, err.code, err.param), status_code=err.status,
                        headers=err.headers)


def _validation_message(exc: RequestValidationError) -> APIError:
    parts = []
    first_param = None
    for e in exc.errors()[:3]:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        param = ".".join(loc) or "body"
        first_param = first_param or param
        parts.append("%s: %s" % (param, e.get("msg", "invalid")))
    return APIError(400, "invalid request: " + "; ".join(parts), "invalid_request", param=first_param)


def _http_code(status: int) -> str:
    return {404: "not_found", 405: "method_not_allowed", 408: "body_timeout", 413: "body_too_large"}.get(
        status, "http_%d" % status)


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(request, exc)

    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, _validation_message(exc))

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = AUTH if exc.status_code == 401 else INVALID if exc.status_code < 500 else SERVER
        message = exc.detail if isinstance(exc.detail, str) else "HTTP %d" % exc.status_code
        if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            message = "no such route or method (%s %s): the API is listed at /docs" % (request.method,
                                                                                   request.url.path[:100])
        return error_response(request, APIError(exc.status_code, message, _http_code(exc.status_code), type_,
                                                headers=getattr(exc, "headers", None)))

    async def image_error(request: Request, exc: ImageInputError) -> JSONResponse:
        return error_response(request, APIError(exc.status, exc.message, exc.code, param="image"))

    async def prompt_error(request: Request, exc: Exception) -> JSONResponse:
        code = "context_length_exceeded" if isinstance(exc, ContextLengthError) else "invalid_request"
        return error_response(request, APIError(400, str(exc), code))

    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        code = "shutting_down" if isinstance(exc, ShuttingDown) else "queue_full"
        return error_response(request, APIError(503, str(exc), code, UNAVAILABLE,
                                                headers={"Retry-After": str(exc.retry_after)}))

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        rid = getattr(request.state, "request_id", "?")
        return error_response(request, APIError(500, "internal error (request %s): the server log has the details"
                                                % rid, "internal_error", SERVER))

    app.add_exception_handler(APIError, api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(ImageInputError, image_error)  # type: ignore[arg-type]
    app.add_exception_handler(PromptError, prompt_error)
    app.add_exception_handler(RequestError, prompt_error)
    app.add_exception_handler(Overloaded, overloaded)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, internal)


_DESCRIPTIONS = {
    400: "Invalid request: a field is missing or out of range, or the prompt does not fit the context.",
    401: "Missing or wrong API key (send `Authorization: Bearer KEY` or `X-Api-Key: KEY`).",
    404: "Unknown model.",
    413: "Body or image over the server's caps.",
    415: "Unsupported content type or image format.",
    422: "The image could not be decoded (truncated, damaged, no pixel data, frame out of range).",
    503: "Not ready yet, draining, or the queue is full: retry after the `Retry-After` seconds.",
    504: "The request ran past the server's request timeout.",
    500: "A server bug; the message names the request id to look up in the server log.",
}
_DEFAULT = {"model": ErrorResponse, "description": "Any other error, in the same shape."}


def error_responses(codes: Iterable[Union[int, str]]) -> Dict[Union[int, str], Dict[str, Any]]:
    """OpenAPI `responses` entries in the error shape, for a route's decorator.

    A `default` entry documents the rest (500) and replaces FastAPI's generated 422 schema: request
    validation errors here are 400s in the error shape.
    """
    out: Dict[Union[int, str], Dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": ErrorResponse, "description": _DESCRIPTIONS[int(code)]}
    out["default"] = _DEFAULT
    return out


__all__ = ["APIError", "ErrorDetail", "ErrorResponse", "error_body", "error_response", "error_responses",
           "install_error_handlers", "note"]
