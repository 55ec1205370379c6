"""Issue 13's attacks on single requests, replayed against a real keyed server: lone surrogates (item 2),
deep JSON (3), the API documents without a key (4), `..` past the remote-image allow-list (7), file
content in the logs at debug level (8), the prefix cache across API keys (10), and the schema looser
than the handlers (11).

Remote images come from a plain HTTP server on 127.0.0.1 started here, which records every path asked of
it: the allow-list holds when no request left /images/.
"""
from __future__ import annotations

import io
import posixpath
import struct
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import httpx
import jsonschema
import pytest

from tests.server.conftest import start_server
from tests.server.service_inputs import b64, canary_ct_dicom, data_url, png
from tests.server.service_process import ServerProcess, local_http_host, serving

KEY_A = "hardening-key-aaaaaaaaaaaa"
KEY_B = "hardening-key-bbbbbbbbbbbb"
AUTH_A = {"Authorization": "Bearer " + KEY_A}
AUTH_B = {"X-Api-Key": KEY_B}
IMAGE = png(width=48, height=48, seed=71)
DOCS = ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect")
CHARSET_CANARY = "CHARSETCANARY"
ICC_CANARY = b"ICCNAMECANARY"


class _ImageHost(BaseHTTPRequestHandler):
    paths: List[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(IMAGE)))
        self.end_headers()
        self.wfile.write(IMAGE)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    with local_http_host(_ImageHost) as url:
        yield url


@pytest.fixture(scope="module")
def server(service_log_dir: Path, image_host: str) -> Iterator[ServerProcess]:
    with serving(start_server(service_log_dir, api_keys=KEY_A + "," + KEY_B, log_level="debug",
                              remote_image_prefixes=image_host + "/images/", max_tokens_cap=16,
                              default_max_tokens=4)) as s:
        yield s


def _chat(url: str, question: str, system: str = "", earlier: Optional[Tuple[str, str]] = None) -> Dict[str, Any]:
    """A chat body: the image with the first question, then (`earlier` = (first question, its answer))
    the answer and `question` as a follow-up."""
    messages: List[Dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": [{"type": "text", "text": earlier[0] if earlier else question},
                                                 {"type": "image_url", "image_url": {"url": url}}]})
    if earlier:
        messages += [{"role": "assistant", "content": earlier[1]}, {"role": "user", "content": question}]
    return {"messages": messages, "max_tokens": 4}


# ---- item 2: a lone UTF-16 surrogate is a 400, not a TypeError in the tokenizer ----

@pytest.mark.parametrize("route,body", [
    ("/v1/vqa", '{"question": "is it \\ud800 here?", "image": "%s"}' % data_url(IMAGE)),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff?"},'
                             ' {"type": "image_url", "image_url": {"url": "%s"}}]}]}' % data_url(IMAGE)),
    ("/v1/chat/completions", '{"messages": [{"role": "system", "content": "be \\ud83d brief"}, {"role": "user",'
                             ' "content": [{"type": "text", "text": "what?"},'
                             ' {"type": "image_url", "image_url": {"url": "%s"}}]}]}' % data_url(IMAGE)),
], ids=["vqa-question", "chat-text", "chat-system"])
def test_a_lone_surrogate_is_a_400(server: ServerProcess, route: str, body: str) -> None:
    with server.client(headers=dict(AUTH_A, **{"Content-Type": "application/json"})) as c:
        r = c.post(route, content=body.encode("ascii"))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_text" and "surrogate" in r.json()["error"]["message"]


# ---- item 3: JSON nested past the parser's recursion limit is a 400 on both routes ----

@pytest.mark.parametrize("route", ["/v1/vqa", "/v1/chat/completions"])
def test_deeply_nested_json_is_a_400(server: ServerProcess, route: str) -> None:
    with server.client(headers=dict(AUTH_A, **{"Content-Type": "application/json"})) as c:
        r = c.post(route, content=b"[" * 100000)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_json"
        assert c.get("/ready").status_code == 200
    assert '"status": 500' not in server.logs()


# ---- item 4: the API documents need the key when one is set; open on a server without keys ----

def test_api_documents_need_the_key(server: ServerProcess, main_server: ServerProcess) -> None:
    for path in DOCS:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": "wrong"}):
            r = httpx.get(server.url + path, headers=headers)
            assert r.status_code == 401, (path, headers, r.status_code)
            assert "paths" not in r.text
        for headers in (AUTH_A, AUTH_B):
            assert httpx.get(server.url + path, headers=headers).status_code == 200, path
        assert httpx.get(main_server.url + path).status_code == 200, path  # no keys configured: open
    doc = httpx.get(server.url + "/openapi.json", headers=AUTH_A).json()
    assert "/v1/vqa" in doc["paths"] and "/docs" not in doc["paths"]
    page = httpx.get(server.url + "/docs", headers=AUTH_A).text
    assert "swagger" in page.lower() and "/openapi.json" in page


# ---- item 7: the allow-list compares resolved paths, not string prefixes ----

def _outside_images(paths: List[str]) -> List[str]:
    resolved = [posixpath.normpath(urllib.parse.unquote(urllib.parse.urlsplit(p).path)) for p in paths]
    return [p for p in resolved if not p.startswith("/images/")]


@pytest.mark.parametrize("tail", ["images/../secret.png", "images/%2e%2e/secret.png", "images/%2E%2e/x/../../s.png",
                                  "images/./../secret.png", "images/..%2fsecret.png", "imagesX/secret.png"])
def test_remote_urls_that_leave_the_prefix_are_refused(server: ServerProcess, image_host: str, tail: str) -> None:
    before = len(_ImageHost.paths)
    with server.client(headers=AUTH_A) as c:
        r = c.post("/v1/vqa", json={"question": "what is shown?", "image": image_host + "/" + tail})
        chat = c.post("/v1/chat/completions", json=_chat(image_host + "/" + tail, "what is shown?"))
    for response in (r, chat):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "remote_image_refused"
    assert _outside_images(_ImageHost.paths[before:]) == []


def test_remote_urls_under_the_prefix_are_fetched(server: ServerProcess, image_host: str) -> None:
    before = len(_ImageHost.paths)
    with server.client(headers=AUTH_A) as c:
        ok = c.post("/v1/vqa", json={"question": "what is shown?", "image": image_host + "/images/a/../b.png"})
    assert ok.status_code == 200, ok.text
    assert [urllib.parse.urlsplit(p).path for p in _ImageHost.paths[before:]] == ["/images/b.png"]


# ---- item 8: third-party loggers that quote file content stay silent, at debug level too ----

def _dicom_with_charset(charset: str) -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(canary_ct_dicom()))
    ds.SpecificCharacterSet = charset
    ds.StudyDescription = "plain ascii text"
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def _png_with_icc_name(name: bytes) -> bytes:
    data = png(width=40, height=40, seed=73)
    payload = name + b"\0\0" + zlib.compress(b"\0" * 128)  # name, NUL, compression method 0, profile
    chunk = struct.pack(">I", len(payload)) + b"iCCP" + payload + struct.pack(">I", zlib.crc32(b"iCCP" + payload))
    end_ihdr = 8 + 25  # signature, then the IHDR chunk (4 + 4 + 13 + 4)
    return data[:end_ihdr] + chunk + data[end_ihdr:]


def test_file_content_is_not_logged_at_debug_level(server: ServerProcess) -> None:
    start = len(server.logs())
    with server.client(headers=AUTH_A) as c:
        for _ in range(2):
            dcm = c.post("/v1/vqa", files={"image": ("x.dcm", _dicom_with_charset(CHARSET_CANARY))},
                         data={"question": "what is shown?"})
            assert dcm.status_code in (200, 400), dcm.text
            icc = c.post("/v1/vqa", json={"question": "what is shown?", "image": b64(_png_with_icc_name(ICC_CANARY))})
            assert icc.status_code == 200, icc.text
    logs = server.logs()[start:]
    assert '"level": "debug"' in logs  # the server does log at debug
    assert CHARSET_CANARY not in logs and CHARSET_CANARY.lower() not in logs.lower()
    assert ICC_CANARY.decode() not in logs


# ---- item 10: a cached prompt prefix is shared within one API key, never across keys ----

def test_prefix_cache_is_scoped_to_the_api_key(server: ServerProcess) -> None:
    image = data_url(png(width=56, height=56, seed=79))
    question = "is this finding consistent with metastatic cancer?"
    with server.client(headers=AUTH_A) as a, server.client(headers=AUTH_B) as b:
        first = a.post("/v1/chat/completions", json=_chat(image, question))
        assert first.status_code == 200, first.text
        answer = first.json()["choices"][0]["message"]["content"].strip()
        follow = a.post("/v1/chat/completions", json=_chat(image, "how large is it?", earlier=(question, answer)))
        assert follow.status_code == 200, follow.text
        # The attack: another client guesses A's question on the same image, and reads cached_tokens.
        guess = b.post("/v1/chat/completions", json=_chat(image, question))
        assert guess.status_code == 200, guess.text
    # The same key keeps its follow-up speed-up: system, image and first question come from the cache.
    assert follow.json()["usage"]["prompt_tokens_details"]["cached_tokens"] >= first.json()["usage"]["prompt_tokens"] - 1
    assert follow.json()["timings"]["images_encoded"] == 0
    # Key B sends its first generation request here: another key's cache gives it nothing, not even the
    # shared system prompt (on the base commit: everything up to the end of A's first question).
    assert guess.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert guess.json()["timings"]["images_encoded"] == 1


# ---- item 11: what the schema allows, the handlers accept (and what they refuse, it refuses) ----

def _validator(doc: Dict[str, Any], schema: Dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(dict(schema, components=doc["components"]))


@pytest.mark.parametrize("route,body", [
    ("/v1/chat/completions", {"messages": [{"role": "", "content": "hello"}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": ""}}]}]}),
    ("/v1/vqa", {"question": "what is shown?", "image": ""}),
    ("/v1/vqa", {"question": " ", "image": b64(IMAGE)}),
], ids=["empty-role", "empty-image-url", "empty-image", "blank-question"])
def test_bodies_the_handlers_refuse_are_outside_the_schema(server: ServerProcess, route: str,
                                                           body: Dict[str, Any]) -> None:
    doc = httpx.get(server.url + "/openapi.json", headers=AUTH_A).json()
    schema = doc["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]
    r = httpx.post(server.url + route, json=body, headers=AUTH_A)
    assert 400 <= r.status_code < 500, r.text
    assert not _validator(doc, schema).is_valid(body), "the schema allows a body the handler refuses: %s" % r.text


def test_the_schema_still_allows_what_the_handlers_accept(server: ServerProcess) -> None:
    doc = httpx.get(server.url + "/openapi.json", headers=AUTH_A).json()
    chat_schema = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    vqa_schema = doc["paths"]["/v1/vqa"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    chat = _chat(data_url(IMAGE), "what is shown?", system="be brief")
    chat["messages"][0]["role"] = "developer"  # OpenAI's newer name for "system"
    vqa = {"question": "what is shown?", "image": b64(IMAGE)}
    for route, schema, body in (("/v1/chat/completions", chat_schema, chat), ("/v1/vqa", vqa_schema, vqa)):
        assert _validator(doc, schema).is_valid(body), route
        assert httpx.post(server.url + route, json=body, headers=AUTH_A).status_code == 200, route
