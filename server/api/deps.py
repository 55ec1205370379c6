"""Dependencies of the routes: the service, API-key auth, readiness.

All are `async def`: FastAPI runs a plain `def` dependency in the shared thread pool, so with the pool
busy (image decodes) even /ready would wait for a thread.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import List, Optional

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from typing_extensions import Annotated

from server.api.errors import AUTH, UNAVAILABLE, APIError, note
from server.service.core import FAILED, Service

bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
api_key_scheme = APIKeyHeader(name="X-Api-Key", auto_error=False, description="X-Api-Key: <API key>")


async def get_service(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


ServiceDep = Annotated[Service, Depends(get_service)]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def key_id(key: str) -> str:
    """A key's fingerprint for the audit log: names which key was used without revealing it."""
    return _digest(key).hex()[:12]


def match_key(given: str, keys: List[str]) -> Optional[str]:
    """The configured key equal to `given`, compared in constant time (equal-length digests, no early exit)."""
    given_digest = _digest(given)
    found = None
    for key in keys:
        if hmac.compare_digest(given_digest, _digest(key)):
            found = key
    return found


BearerDep = Annotated[Optional[HTTPAuthorizationCredentials], Security(bearer_scheme)]
ApiKeyHeaderDep = Annotated[Optional[str], Security(api_key_scheme)]


async def require_api_key(request: Request, service: ServiceDep, bearer: BearerDep,
                          header_key: ApiKeyHeaderDep) -> None:
    if not service.api_keys:
        return
    given = bearer.credentials if bearer is not None else header_key
    key = match_key(given, service.api_keys) if given else None
    if key is None:
        raise APIError(401, "a valid API key is required: send `Authorization: Bearer KEY` or `X-Api-Key: KEY`"
                       if not given else "the API key is not valid", "invalid_api_key", AUTH,
                       headers={"WWW-Authenticate": "Bearer"})
    request.state.key_id = key_id(key)
    note(request, key_id=request.state.key_id)


def client_scope(request: Request) -> str:
    """Whose requests may share cached prompt prefixes: one API key's, or (no keys) one client address's.

    A shared prefix shows in `cached_tokens` (and in the time to the first token), so reuse across
    clients would tell one client how much of another's prompt matches its guess.
    """
    key = getattr(request.state, "key_id", None)
    if key is not None:
        return "key:" + key
    return "client:" + (request.client.host if request.client is not None else "?")


def require_served_model(service: Service, model: Optional[str]) -> None:
    """404 model_not_found unless `model` is None (not given) or the id this server serves."""
    if model is not None and model != service.model_id:
        raise APIError(404, "model %r is not served here; this server serves %r (GET /v1/models)"
                       % (model[:100], service.model_id), "model_not_found", param="model")


async def require_ready(service: ServiceDep) -> Service:
    """The service once its model is loaded and warm; 503 + Retry-After before that."""
    if not service.ready or service.admission is None or service.pipeline is None:
        service.metrics.reject("not_ready")
        if service.status == FAILED:
            raise APIError(503, "the model failed to load; the operator must fix the bundle (see /ready and the "
                           "server log)", "model_load_failed", UNAVAILABLE)
        if service.detail:  # a first-start engine build takes minutes, not seconds: say so
            raise APIError(503, "the server is %s; /ready says when it is done" % service.detail, "not_ready",
                           UNAVAILABLE, headers={"Retry-After": "30"})
        raise APIError(503, "the model is %s: retry in a few seconds" % service.status, "not_ready", UNAVAILABLE,
                       headers={"Retry-After": "2"})
    return service


AuthDep = Depends(require_api_key)
ReadyService = Annotated[Service, Depends(require_ready)]

__all__ = ["AuthDep", "ReadyService", "ServiceDep", "client_scope", "get_service", "key_id", "match_key", "require_api_key",
           "require_ready"]
