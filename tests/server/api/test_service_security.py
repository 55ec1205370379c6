"""API keys on every route but the health probes; CORS off unless configured; no patient data in
logs or metrics, through every route and its error paths."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest

from tests.server.conftest import start_server
from tests.server.service_inputs import (
    CANARIES,
    CANARY_FILENAME,
    CANARY_ID,
    CANARY_NAME,
    CANARY_QUESTION,
    b64,
    canary_ct_dicom,
    data_url,
)
from tests.server.service_process import ServerProcess, serving

KEYS = ("env-key-0123456789", "env-key-abcdefghij")
FILE_KEY = "file-key-zyxwvutsrq"
ORIGIN = "https://clinic.example"
HEALTH = {"/health", "/live", "/ready"}


@pytest.fixture(scope="module")
def keyed_server(service_log_dir: Path) -> Iterator[ServerProcess]:
    key_file = service_log_dir / "keys.txt"
    key_file.write_text("# one key per line\n%s\n" % FILE_KEY)
    server = start_server(service_log_dir, api_keys=",".join(KEYS), api_key_file=key_file, cors_origins=ORIGIN)
    with serving(server):
        yield server


def _operations(doc: Dict[str, Any]) -> List[Any]:
    ops = []
    for path, item in doc["paths"].items():
        for method in item:
            ops.append((method.upper(), re.sub(r"\{[^}]+\}", "x", path), path))
    return ops


def test_every_route_but_health_needs_a_key(keyed_server: ServerProcess) -> None:
    doc = httpx.get(keyed_server.url + "/openapi.json", headers={"X-Api-Key": KEYS[0]}).json()
    ops = _operations(doc)
    assert len([op for op in ops if op[2] not in HEALTH]) >= 6
    with keyed_server.client() as c:
        for method, url, path in ops:
            for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"X-Api-Key": "wrong-key"},
                            {"Authorization": "Basic " + KEYS[0]}):
                r = c.request(method, url, headers=headers, json={} if method == "POST" else None)
                if path in HEALTH:
                    assert r.status_code == 200, (path, r.status_code)
                else:
                    assert r.status_code == 401, (method, path, headers, r.status_code)
                    assert r.json()["error"]["code"] == "invalid_api_key"
                    assert r.headers["www-authenticate"] == "Bearer"


def test_each_configured_key_opens_every_route(keyed_server: ServerProcess) -> None:
    with keyed_server.client() as c:
        for headers in ({"Authorization": "Bearer " + KEYS[0]}, {"Authorization": "Bearer " + KEYS[1]},
                        {"X-Api-Key": FILE_KEY}):
            assert c.get("/v1/models", headers=headers).status_code == 200
            assert c.get("/metrics", headers=headers).status_code == 200
            assert c.get("/v1/system", headers=headers).status_code == 200
            r = c.post("/v1/vqa", headers=headers, files={"image": ("a.dcm", canary_ct_dicom())},
                       data={"question": "What is shown?", "max_tokens": "2"})
            assert r.status_code == 200, r.text
    assert KEYS[0] not in keyed_server.logs() and FILE_KEY not in keyed_server.logs()


def test_cors_only_for_configured_origins(keyed_server: ServerProcess, main_server: ServerProcess) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    ok = httpx.options(keyed_server.url + "/v1/vqa", headers={"Origin": ORIGIN, **preflight})
    assert ok.headers.get("access-control-allow-origin") == ORIGIN
    other = httpx.options(keyed_server.url + "/v1/vqa", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
    off = httpx.options(main_server.url + "/v1/vqa", headers={"Origin": ORIGIN, **preflight})
    assert "access-control-allow-origin" not in off.headers


def _chat(text: str, url: str, **extra: Any) -> Dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": text},
                                                      {"type": "image_url", "image_url": {"url": url}}]}], **extra}


def test_no_patient_data_in_logs_or_metrics(main_server: ServerProcess) -> None:
    dicom = canary_ct_dicom()
    assert CANARY_NAME.encode() in dicom and CANARY_ID.encode() in dicom
    dicom_url = data_url(dicom, "application/dicom")
    q = CANARY_QUESTION
    form = {"question": q, "max_tokens": "3"}
    files = {"image": (CANARY_FILENAME, dicom, "application/dicom")}
    follow_up = _chat(q, dicom_url, max_tokens=3)
    follow_up["messages"] += [{"role": "assistant", "content": CANARY_NAME}, {"role": "user", "content": q}]
    sent: List[httpx.Response] = []
    with main_server.client() as c:
        ok = [
            c.post("/v1/vqa", files=files, data=form),
            c.post("/v1/vqa", files=files, data={**form, "stream": "true"}),
            c.post("/v1/vqa", json={"image": b64(dicom), "question": q, "max_tokens": 3}),
            c.post("/v1/chat/completions", json=_chat(q, dicom_url, max_tokens=3)),
            c.post("/v1/chat/completions", json=_chat(q, dicom_url, max_tokens=3, stream=True)),
            c.post("/v1/chat/completions", json=follow_up),
        ]
        assert [r.status_code for r in ok] == [200] * len(ok), [r.text for r in ok]
        failing = [
            c.post("/v1/vqa", files=files, data={**form, "frame": "7"}),
            c.post("/v1/vqa", files=files, data={**form, "question": (q + " ") * 80}),
            c.post("/v1/vqa", files=files, data={**form, "question": q + " <image>"}),
            c.post("/v1/vqa", files=files, data={**form, "max_tokens": "9999"}),
            c.post("/v1/vqa", files=files, data={**form, "model": CANARY_ID}),
            c.post("/v1/vqa", files={"image": (CANARY_FILENAME, CANARY_NAME.encode() * 50)}, data=form),
            c.post("/v1/vqa", json={"image": CANARY_NAME, "question": q}),
            c.post("/v1/vqa", json={"image": b64(dicom), "question": q, "temperature": CANARY_ID}),
            c.post("/v1/vqa", content=("{" + q).encode(), headers={"content-type": "application/json"}),
            c.post("/v1/chat/completions", json=_chat(q, dicom_url, model=CANARY_ID)),
            c.post("/v1/chat/completions", json=_chat(q, "https://pacs.example/%s/%s" % (CANARY_ID, CANARY_NAME))),
            c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": [
                {"type": CANARY_NAME}, {"type": "image_url", "image_url": {"url": dicom_url}}]}]}),
            c.post("/v1/chat/completions", json={"messages": [{"role": CANARY_ID, "content": q}]}),
            c.get("/v1/models/" + CANARY_ID),
            c.get("/" + CANARY_NAME),
            c.get("/v1/models", params={"patient": CANARY_NAME}),
        ]
        assert all(400 <= r.status_code < 500 or r.request.method == "GET" for r in failing), \
            [(r.status_code, r.text[:200]) for r in failing]
        sent = ok + failing
        metrics = c.get("/metrics").text
    logs = main_server.logs()
    for canary in CANARIES:
        assert canary.lower() not in logs.lower(), canary
        assert canary.lower() not in metrics.lower(), canary
    # ... while the audit trail is there: one line per request, with the upload's hash.
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "tinyllava.access"]
    for r in sent:
        rid = r.headers["x-request-id"]
        assert len([line for line in access if line["request_id"] == rid]) == 1
    digest = ok[0].json()["image"]["sha256"]
    assert sum(1 for line in access if line.get("input_sha256") == digest) >= 5
