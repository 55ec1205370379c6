"""schemathesis against the live service's /openapi.json: every documented operation, 50 examples per
operation, request media type and generation mode (valid and invalid inputs), deterministic.

Every check schemathesis has (the CLI's `--checks all`), on a server with an API key and on one
without. Passing means: no 5xx for any input; every response matches the document: body (SSE events
included), status code, content type, headers; a schema-valid request is accepted (ST202: the schema
says what the handlers take) and a schema-invalid one refused; with an API key set, every operation
that declares security refuses requests without the key or with a wrong one (ignored_auth; left out
on the server without keys, where the routes are open by design).

Generated strings never decode as an image, so every valid case of the generation routes gets a real
PNG put in (a JSON schema cannot say "a PNG"): their other fields (options, stream flags, stop
strings, text) then reach the model, and the 200 answers, JSON and SSE, are validated too.

schemathesis 4 needs Python >= 3.9: the Python 3.8 run skips this module (FastAPI builds the same
document from the same models there).
"""
from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from tests.server.conftest import MAIN_SERVER_ENV
from tests.server.service_inputs import data_url, png
from tests.server.service_process import ServerProcess, serving

schemathesis = pytest.importorskip("schemathesis", minversion="4.0",
                                   reason="schemathesis 4 (Python >= 3.9, in the `test` extra) is not installed")
hypothesis = pytest.importorskip("hypothesis")

from schemathesis.checks import CHECKS as REGISTERED_CHECKS  # noqa: E402
from schemathesis.checks import load_all_checks  # noqa: E402
from schemathesis.errors import FailureGroup  # noqa: E402

API_KEY = "fuzz-key-0123456789abcdef"
AUTH = {"Authorization": "Bearer " + API_KEY}
HEALTH = {"/health", "/live", "/ready"}  # no inputs and no key: one example each is all there is
GENERATION_PATHS = ("/v1/vqa", "/v1/chat/completions")
EXAMPLES = 50
IMAGE = png(width=32, height=32, seed=41)


def all_checks(keyed: bool) -> List[Any]:
    """Every registered check (the CLI's `--checks all`); ignored_auth only where a key is set."""
    load_all_checks()
    return [c for c in REGISTERED_CHECKS.get_all() if keyed or c.__name__ != "ignored_auth"]


@pytest.fixture(scope="module", params=["with-key", "without-key"])
def fuzz_server(request: pytest.FixtureRequest, service_log_dir: Path) -> Iterator[ServerProcess]:
    env = dict(MAIN_SERVER_ENV, TINYLLAVA_API_KEYS=API_KEY) if request.param == "with-key" else dict(MAIN_SERVER_ENV)
    with serving(ServerProcess(service_log_dir, env)) as server:
        server.headers = AUTH if request.param == "with-key" else {}  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module")
def openapi_doc(fuzz_server: ServerProcess) -> Dict[str, Any]:
    with fuzz_server.client(headers=fuzz_server.headers) as c:  # type: ignore[attr-defined]
        return c.get("/openapi.json").json()  # type: ignore[no-any-return]


def test_auth_errors_are_documented(openapi_doc: Dict[str, Any]) -> None:
    """Every operation but the health probes declares the key schemes and documents the 401."""
    for path, item in openapi_doc["paths"].items():
        for method, op in item.items():
            if path in HEALTH:
                assert "security" not in op, (method, path)
                continue
            schemes = {name for requirement in op["security"] for name in requirement}
            assert schemes == {"HTTPBearer", "APIKeyHeader"}, (method, path, schemes)
            assert "401" in op["responses"], (method, path)


def _operations(doc: Dict[str, Any], base_url: str) -> Iterator[Tuple[str, Any]]:
    """(label, schemathesis operation) per operation and request media type.

    schemathesis draws a body media type per case and seldom leaves the first one, so an operation
    with several (the /v1/vqa JSON body and multipart form) is loaded once per media type, alone.
    """
    for path, item in doc["paths"].items():
        for method, op in item.items():
            media_types = list(op.get("requestBody", {}).get("content", {})) or [None]
            for media_type in media_types:
                one = copy.deepcopy(doc)
                one["paths"] = {path: {method: copy.deepcopy(op)}}
                if media_type is not None:
                    body = one["paths"][path][method]["requestBody"]
                    body["content"] = {media_type: body["content"][media_type]}
                schema = schemathesis.openapi.from_dict(one)
                schema.config.update(base_url=base_url)
                (result,) = list(schema.get_all_operations())
                yield "%s %s [%s]" % (method.upper(), path, media_type or "no body"), result.ok()


def _with_a_real_image(case: Any, stream: bool) -> None:
    """A decodable image in a generated body (and, when `stream`, a streamed answer asked for)."""
    body = case.body
    if not isinstance(body, dict):
        return
    if case.operation.path == "/v1/vqa":
        form = case.media_type == "multipart/form-data"
        body["image"] = IMAGE if form else data_url(IMAGE)
        body.pop("frame", None)  # the index of a frame depends on the image: this PNG has one
        if stream:
            body["stream"] = "true" if form else True
    elif case.operation.path == "/v1/chat/completions":
        messages = body.get("messages") if isinstance(body.get("messages"), list) else []
        first = messages[0] if messages and isinstance(messages[0], dict) else {}
        text = first.get("content") if isinstance(first.get("content"), str) else "What is shown?"
        body["messages"] = [{"role": "user", "content": [
            {"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": data_url(IMAGE)}}]}]
        if stream:
            body["stream"] = True


def _fuzz(label: str, operation: Any, mode: Any, answered: Counter, headers: Dict[str, str],
          checks: List[Any]) -> Tuple[int, List[str]]:
    """Sends `EXAMPLES` cases; returns how many were sent and up to 3 failure reports.

    No shrinking, and a failing case does not stop the run: every case is sent, so one failure does
    not hide the next.
    """
    sent: List[int] = [0]
    failures: List[str] = []

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck),
                         phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
    def run(case: Any) -> None:
        sent[0] += 1
        if mode.is_positive:
            _with_a_real_image(case, stream=sent[0] % 2 == 0)
        try:
            response = case.call_and_validate(headers=headers, checks=checks, timeout=30)
        except (FailureGroup, Exception) as e:  # the failed checks (a BaseExceptionGroup), or a transport error
            if len(failures) < 3:
                failures.append("%s, %s: %s" % (label, mode.value, str(e)[:3000]))
            return
        if response.status_code == 200 and operation.path in GENERATION_PATHS:
            answered[response.headers["content-type"][0].split(";")[0]] += 1

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        if mode.is_positive:  # negative mode on an operation without inputs: nothing to make invalid
            raise
    return sent[0], failures


def test_api_conforms_to_its_schema(fuzz_server: ServerProcess, openapi_doc: Dict[str, Any]) -> None:
    failures: List[str] = []
    answered: Counter = Counter()
    labels = []
    for label, operation in _operations(openapi_doc, fuzz_server.url):
        labels.append(label)
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            sent, found = _fuzz(label, operation, mode, answered, fuzz_server.headers,  # type: ignore[attr-defined]
                                all_checks(bool(fuzz_server.headers)))  # type: ignore[attr-defined]
            failures += found
            if operation.path not in HEALTH and mode.is_positive:
                assert sent >= EXAMPLES, (label, sent)
    assert not failures, "\n\n".join(failures)
    assert "POST /v1/vqa [multipart/form-data]" in labels and len(labels) >= 10
    # The generation routes answered, both ways, so their 200 schemas (JSON and per SSE event) were checked.
    assert answered["application/json"] >= 10 and answered["text/event-stream"] >= 10, answered
    assert '"status": 5' not in fuzz_server.logs()
