"""Bad input, through the real server: each case is a 4xx in the error shape with a message a person
can act on, within a few seconds (never a 5xx, never a hang)."""
from __future__ import annotations

import socket
import time
from typing import Any, Dict, Tuple

import httpx
import psutil
import pytest

from tests.server.service_inputs import b64, data_url, jpeg, png, png_bomb, rle_dicom_claiming
from tests.server.service_process import ServerProcess

pydicom_data = pytest.importorskip("pydicom.data")

QUESTION = "What is shown?"
_TIMEOUT_S = 10.0  # a hang shows up as a client timeout, a failure


def check_error(r: httpx.Response, status: int, code: str = "", words: str = "") -> Dict[str, Any]:
    assert r.status_code < 500, (r.status_code, r.text)  # bad input is never a server error
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    assert len(err["message"]) > 20, err  # a sentence, not a bare code
    if code:
        assert err["code"] == code, err
    if words:
        assert words.lower() in err["message"].lower(), err
    return err  # type: ignore[no-any-return]


def post_image(server: ServerProcess, data: bytes, name: str = "upload.bin", **fields: str) -> httpx.Response:
    form = {"question": QUESTION, "max_tokens": "2", **fields}
    return httpx.post(server.url + "/v1/vqa", files={"image": (name, data, "application/octet-stream")},
                      data=form, timeout=_TIMEOUT_S)


def chat(server: ServerProcess, body: Dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=_TIMEOUT_S)


def image_message(text: str = QUESTION, url: str = "") -> Dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text},
                                        {"type": "image_url", "image_url": {"url": url or data_url(png())}}]}


# ---- images -------------------------------------------------------------------------------

def test_non_image_bytes(main_server: ServerProcess) -> None:
    check_error(post_image(main_server, b"%PDF-1.4 this is not an image" * 10), 415, "image_unsupported_format")


@pytest.mark.parametrize("make", [png, jpeg], ids=["png", "jpeg"])
def test_truncated_image(main_server: ServerProcess, make: Any) -> None:
    data = make(width=96, height=96)
    check_error(post_image(main_server, data[: len(data) // 2]), 422, "image_truncated", "ends early")


def test_png_bomb_is_refused_before_decoding(main_server: ServerProcess) -> None:
    bomb = png_bomb(50000)
    proc = psutil.Process(main_server.proc.pid)
    rss0 = proc.memory_info().rss
    check_error(post_image(main_server, bomb, "bomb.png"), 413, "image_too_large")
    assert proc.memory_info().rss - rss0 < 50 * 1024 * 1024  # 50000 x 50000 decoded would be 7.5 GB


# What each of pydicom's damaged files is: the status, code and a word of the message a client gets.
@pytest.mark.parametrize("name,status,code,words", [
    ("MR_truncated.dcm", 422, "image_truncated", "truncated"),  # pixel data 62 bytes short
    ("rtplan_truncated.dcm", 422, "dicom_no_pixel_data", "no pixel data"),  # an RT plan: nothing to show
    ("badVR.dcm", 422, "dicom_invalid", "NumberOfFrames"),  # an RT dose whose NumberOfFrames is not a number
    ("meta_missing_tsyntax.dcm", 422, "dicom_invalid", "Rows"),  # pixel data but no Rows
    ("no_meta.dcm", 415, "image_unsupported_format", "preamble"),  # no 128-byte preamble and 'DICM'
])
def test_pydicom_corrupt_files(main_server: ServerProcess, name: str, status: int, code: str, words: str) -> None:
    path = pydicom_data.get_testdata_file(name)
    with open(path, "rb") as f:
        r = post_image(main_server, f.read(), name)
    check_error(r, status, code, words)


def test_deflated_dicom(main_server: ServerProcess) -> None:
    with open(pydicom_data.get_testdata_file("image_dfl.dcm"), "rb") as f:
        check_error(post_image(main_server, f.read()), 415, "dicom_unsupported_transfer_syntax", "deflate")


def test_rle_dicom_claiming_8192_squared(main_server: ServerProcess) -> None:
    check_error(post_image(main_server, rle_dicom_claiming(8192)), 413, "image_too_large", "8192")


def test_frame_out_of_range(main_server: ServerProcess) -> None:
    check_error(post_image(main_server, png(), frame="3"), 422, "image_frame_out_of_range")


# ---- body and encoding --------------------------------------------------------------------

def test_body_over_the_cap_with_content_length(main_server: ServerProcess) -> None:
    big = b"\0" * (1024 * 1024 + 100)  # the main server's cap is 1 MiB
    check_error(post_image(main_server, big), 413, "body_too_large")


def _raw_chunked_upload(server: ServerProcess, total: int) -> Tuple[int, bytes]:
    """POST a chunked body (no Content-Length) until the server answers; (bytes sent, response head)."""
    chunk = b"A" * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=_TIMEOUT_S) as s:
        s.sendall(b"POST /v1/vqa HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        s.setblocking(False)
        head = b""
        end = time.monotonic() + _TIMEOUT_S
        while time.monotonic() < end and b"\r\n\r\n" not in head:
            try:
                head += s.recv(65536)
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
            if sent < total:
                try:
                    s.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    time.sleep(0.005)
            else:
                time.sleep(0.005)
    return sent, head


def test_chunked_body_over_the_cap_is_counted_as_it_arrives(main_server: ServerProcess) -> None:
    sent, head = _raw_chunked_upload(main_server, 8 * 1024 * 1024)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert sent < 8 * 1024 * 1024  # refused long before the client finished


def test_invalid_base64(main_server: ServerProcess) -> None:
    r = httpx.post(main_server.url + "/v1/vqa", json={"image": "not*base64!", "question": QUESTION},
                   timeout=_TIMEOUT_S)
    check_error(r, 400, "invalid_base64", "base64")
    check_error(chat(main_server, {"messages": [image_message(url="data:image/png;base64,@@@@")]}), 400,
                "invalid_base64")


def test_body_not_json_and_wrong_content_type(main_server: ServerProcess) -> None:
    r = httpx.post(main_server.url + "/v1/vqa", content=b"{not json", headers={"content-type": "application/json"},
                   timeout=_TIMEOUT_S)
    check_error(r, 400)
    r = httpx.post(main_server.url + "/v1/vqa", content=b"x", headers={"content-type": "text/plain"},
                   timeout=_TIMEOUT_S)
    check_error(r, 415, "unsupported_media_type", "multipart")
    check_error(chat(main_server, {"messages": "hello"}), 400, "invalid_request", "messages")


def test_multipart_without_image_file(main_server: ServerProcess) -> None:
    r = httpx.post(main_server.url + "/v1/vqa", files={"question": (None, QUESTION)}, timeout=_TIMEOUT_S)
    check_error(r, 400, "image_missing", "image")


@pytest.mark.parametrize("body", [b"--b0undary\r\n[]--b0undary--\r\n", b"no delimiter in sight"],
                         ids=["garbage-part", "no-delimiter"])
def test_malformed_multipart(main_server: ServerProcess, body: bytes) -> None:
    """Found by schemathesis: a body that does not follow its boundary was a 500 (python-multipart's
    parse error escaped Starlette, which converts only its own)."""
    r = httpx.post(main_server.url + "/v1/vqa", content=body,
                   headers={"content-type": "multipart/form-data; boundary=b0undary"}, timeout=_TIMEOUT_S)
    err = check_error(r, 400, "invalid_multipart", "boundary")
    assert "[]" not in err["message"] and "sight" not in err["message"]  # the body is not echoed


# ---- question and parameters --------------------------------------------------------------

def test_empty_question(main_server: ServerProcess) -> None:
    r = httpx.post(main_server.url + "/v1/vqa", json={"image": b64(png()), "question": "  "}, timeout=_TIMEOUT_S)
    check_error(r, 400, "empty_question", "empty")
    check_error(chat(main_server, {"messages": [image_message(text="")]}), 400, "empty_question")


def test_question_over_its_cap(main_server: ServerProcess) -> None:
    check_error(post_image(main_server, png(), question="why " * 600), 400, "question_too_long", "2000")


def test_question_over_the_context(main_server: ServerProcess) -> None:
    # Under the character cap, but more tokens than the tiny bundle's 256-position context.
    check_error(post_image(main_server, png(), question="abc1 x7 " * 240), 400, "context_length_exceeded")


def test_image_marker_in_the_question(main_server: ServerProcess) -> None:
    check_error(post_image(main_server, png(), question="what is <image> here"), 400, words="<image>")


def test_max_tokens_over_its_cap(main_server: ServerProcess) -> None:
    check_error(post_image(main_server, png(), max_tokens="65"), 400, "max_tokens_too_large", "64")
    check_error(chat(main_server, {"messages": [image_message()], "max_tokens": 1000}), 400, "max_tokens_too_large")


@pytest.mark.parametrize("field,value", [("temperature", "-1"), ("top_p", "0"), ("max_tokens", "0"),
                                         ("max_tokens", "ten"), ("frame", "-2")])
def test_out_of_range_options(main_server: ServerProcess, field: str, value: str) -> None:
    check_error(post_image(main_server, png(), **{field: value}), 400, "invalid_request", field)


# ---- chat ---------------------------------------------------------------------------------

def test_unknown_model_name(main_server: ServerProcess) -> None:
    check_error(chat(main_server, {"model": "gpt-4o", "messages": [image_message()]}), 404, "model_not_found")
    check_error(post_image(main_server, png(), model="llava-13b"), 404, "model_not_found")


def test_unsupported_content_part(main_server: ServerProcess) -> None:
    msg = {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                                       {"type": "image_url", "image_url": {"url": data_url(png())}}]}
    check_error(chat(main_server, {"messages": [msg]}), 400, "unsupported_content_part", "input_audio")


@pytest.mark.parametrize("case", ["no_image", "two_images", "image_in_follow_up", "ends_with_assistant",
                                  "tool_role", "remote_url", "file_url"])
def test_conversation_shape(main_server: ServerProcess, case: str) -> None:
    img = image_message()
    text_only = {"role": "user", "content": QUESTION}
    messages = {
        "no_image": [text_only],
        "two_images": [{"role": "user", "content": img["content"] + img["content"][1:]}],
        "image_in_follow_up": [img, {"role": "assistant", "content": "yes"}, img],
        "ends_with_assistant": [img, {"role": "assistant", "content": "yes"}],
        "tool_role": [img, {"role": "tool", "content": "x"}],
        "remote_url": [image_message(url="https://example.com/ct.png")],
        "file_url": [image_message(url="file:///etc/passwd")],
    }[case]
    check_error(chat(main_server, {"messages": messages}), 400)


def test_too_many_stop_strings(main_server: ServerProcess) -> None:
    check_error(chat(main_server, {"messages": [image_message()], "stop": ["x%d" % i for i in range(50)]}), 400,
                "invalid_parameter", "stop")


def test_n_above_one(main_server: ServerProcess) -> None:
    check_error(chat(main_server, {"messages": [image_message()], "n": 2}), 400, "invalid_request", "n")


def test_no_server_error_was_logged(main_server: ServerProcess) -> None:
    """No request this server has answered so far (whatever ran before, in any order) ended in a 5xx;
    each bad-input request is also checked on its own in check_error."""
    assert '"status": 5' not in main_server.logs()
