"""A stdlib HTTP client for a running tinyllava-med service's `POST /v1/vqa` (what `eval --url` asks).

urllib only, no third-party client: it runs on the device side too (Python 3.8, no extra runtime dependency).
Failures are split by who can fix them: a question the service rejects (4xx on its input, a timeout) is a
RequestError for that question; an unusable service (unreachable, wrong URL or key, still 503 after the
bounded retries, an answer that is not the contract's JSON) is a ServiceError that stops the run.
"""
from __future__ import annotations

import base64
import email.utils
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, Optional, Tuple

from server.eval.errors import RequestError, ServiceError

# Statuses that say the run itself is misconfigured: every other question would fail the same way.
_FATAL_STATUSES = {401: "the API key was refused: pass the server's key with --api-key",
                   403: "the API key was refused: pass the server's key with --api-key",
                   404: "no /v1/vqa endpoint there: is --url the base address of a tinyllava-med server?",
                   405: "no /v1/vqa endpoint there: is --url the base address of a tinyllava-med server?"}
# 503 = loading or queue full; 429 = rate limited. Both say "come back later", usually with Retry-After.
_RETRY_STATUSES = (429, 503)
_MIME = {"png": "image/png", "jpeg": "image/jpeg", "dicom": "application/dicom"}


def image_mime(data: bytes) -> str:
    """The media type of an image file from its first bytes, sniffed as the service does (server.imaging.images);
    the data URL type is informative."""
    from server.imaging.images import sniff_format

    return _MIME.get(sniff_format(data) or "", "application/octet-stream")


def data_url(data: bytes) -> str:
    return "data:%s;base64,%s" % (image_mime(data), base64.b64encode(data).decode("ascii"))


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date, RFC 9110 10.2.3); None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class VQAClient:
    """Asks one question about one image per call; safe to share between threads (no state per request).

    A 503/429 is retried up to `max_retries` times, after the Retry-After delay (else 1, 2, 4 ... s), each
    wait capped at `max_wait_s`."""

    def __init__(self, url: str, api_key: Optional[str] = None, timeout_s: float = 300.0, max_retries: int = 8,
                 max_wait_s: float = 60.0, sleep: Callable[[float], None] = time.sleep) -> None:
        if not url.startswith(("http://", "https://")):
            raise ServiceError("--url %r: give the server's base address, e.g. http://127.0.0.1:8000" % url)
        self.url = url.rstrip("/")
        self.endpoint = self.url + "/v1/vqa"
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        self._sleep = sleep

    def vqa(self, image: bytes, question: str, max_tokens: int = 64, temperature: float = 0.0,
            seed: Optional[int] = None) -> Dict[str, Any]:
        """The service's answer object {answer, model, usage, timings, request_id}."""
        body: Dict[str, Any] = {"image": data_url(image), "question": question, "max_tokens": max_tokens,
                                "temperature": temperature}
        if seed is not None:
            body["seed"] = seed
        payload = json.dumps(body).encode("utf-8")
        attempt = 0
        while True:
            status, headers, raw = self._post(payload)
            if status == 200:
                return self._parse_answer(raw)
            message, err_type, code = _error_fields(raw)
            if status in _RETRY_STATUSES:
                if attempt >= self.max_retries:
                    raise ServiceError("%s still answers %d (%s) after %d retries; lower --concurrency or wait "
                                       "until it is ready, then rerun to resume" % (self.url, status, message,
                                                                                  attempt))
                delay = retry_after_seconds(headers.get("Retry-After"))
                self._sleep(min(self.max_wait_s, delay if delay is not None else float(2 ** attempt)))
                attempt += 1
                continue
            if status in _FATAL_STATUSES:
                raise ServiceError("%s answered %d (%s): %s" % (self.endpoint, status, message,
                                                                _FATAL_STATUSES[status]))
            raise RequestError("HTTP %d: %s" % (status, message), status=status, error_type=err_type, code=code)

    def _post(self, payload: bytes) -> Tuple[int, Any, bytes]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = "Bearer %s" % self.api_key
        req = urllib.request.Request(self.endpoint, data=payload, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            try:
                return e.code, e.headers, e.read()
            finally:
                e.close()
        except socket.timeout:
            raise RequestError("no answer within %.0f s (raise --timeout?)" % self.timeout_s,
                               error_type="timeout") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, socket.timeout):
                raise RequestError("no answer within %.0f s (raise --timeout?)" % self.timeout_s,
                                   error_type="timeout") from None
            raise ServiceError("cannot reach %s (%s): is `tinyllava-med serve` running there?"
                               % (self.url, e.reason)) from None
        except (ConnectionError, OSError) as e:
            raise ServiceError("connection to %s failed (%s): is `tinyllava-med serve` running there?"
                               % (self.url, e)) from None

    def _parse_answer(self, raw: bytes) -> Dict[str, Any]:
        try:
            obj = json.loads(raw.decode("utf-8"))
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or not isinstance(obj.get("answer"), str):
            raise ServiceError("%s answered 200 without the {\"answer\": ...} object of /v1/vqa (got %r): is "
                               "--url a tinyllava-med server?" % (self.endpoint, raw[:200]))
        return obj


def _error_fields(raw: bytes) -> Tuple[str, str, Any]:
    """(message, type, code) of an OpenAI-shaped error body, or the body's start when it is not one."""
    try:
        err = json.loads(raw.decode("utf-8")).get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict):
        return str(err.get("message", "")), str(err.get("type") or ""), err.get("code")
    text = raw[:200].decode("utf-8", "replace").strip()
    return text or "no message", "", None
