"""A stand-in for a running tinyllava-med service: stdlib http.server implementing the `POST /v1/vqa` contract
(JSON body with a base64 data-URL image; {answer, model, usage, timings, request_id}; OpenAI-shaped errors;
Bearer key; 503 + Retry-After). It records every request it receives so tests can check what the client sent.

Answers are scripted per question text; a scripted value may be a callable (request body -> (status, headers,
payload)) to simulate a rejection, an overload or a slow answer.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple

from PIL import Image

Reply = Tuple[int, Dict[str, str], Dict[str, Any]]


def error(status: int, message: str, err_type: str = "invalid_request_error", code: Any = None,
          headers: Optional[Dict[str, str]] = None) -> Reply:
    return status, dict(headers or {}), {"error": {"message": message, "type": err_type, "code": code}}


class FakeVQAService:
    def __init__(self, answers: Dict[str, Any], api_key: Optional[str] = None, model: str = "fake-med",
                 overlap: int = 0) -> None:
        self.answers = answers
        self.api_key = api_key
        self.model = model
        # Each request is held until `overlap` requests have been in flight together (0: not held),
        # so a client's concurrency shows however fast or slow this machine is.
        self.overlap = overlap
        self.requests: List[Dict[str, Any]] = []  # {"question", "image_sha256", "mime", "body", "auth"}
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> "FakeVQAService":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def questions(self) -> List[str]:
        return [r["question"] for r in self.requests]

    def _reply(self, body: Dict[str, Any], auth: Optional[str]) -> Reply:
        if self.api_key is not None and auth != "Bearer %s" % self.api_key:
            return error(401, "invalid API key", "authentication_error", "invalid_api_key")
        image = str(body.get("image", ""))
        if not image.startswith("data:") or ";base64," not in image:
            return error(400, "image must be a data URL")
        raw = base64.b64decode(image.split(",", 1)[1])
        try:
            Image.open(io.BytesIO(raw)).load()
        except OSError:
            return error(400, "could not decode the image")
        with self._lock:
            self.requests.append({"question": body.get("question"), "image_sha256": hashlib.sha256(raw).hexdigest(),
                                  "mime": image[5:image.index(";")], "body": body, "auth": auth})
        scripted = self.answers.get(body.get("question"))
        if scripted is None:
            return error(400, "no scripted answer for this question")
        if callable(scripted):
            return scripted(body)
        return 200, {}, {"answer": scripted, "model": self.model, "request_id": "req-%d" % len(self.requests),
                         "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
                         "timings": {"total_ms": 1.0}}

    def _handler(self) -> Callable[..., BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                if self.path != "/v1/vqa":
                    return self._send(*error(404, "not found", "not_found_error"))
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode("utf-8"))
                with service._lock:
                    service.in_flight += 1
                    service.max_in_flight = max(service.max_in_flight, service.in_flight)
                    service._lock.notify_all()
                    # The timeout only ends a hang (a client that never overlaps): max_in_flight then shows it.
                    service._lock.wait_for(lambda: service.max_in_flight >= service.overlap, timeout=30)
                try:
                    reply = service._reply(body, self.headers.get("Authorization"))
                finally:
                    with service._lock:
                        service.in_flight -= 1
                self._send(*reply)

            def _send(self, status: int, headers: Dict[str, str], payload: Dict[str, Any]) -> None:
                data = json.dumps(payload).encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        return Handler
