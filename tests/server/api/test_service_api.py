"""The service end to end: /v1/vqa (multipart, JSON, SSE), OpenAI chat (plain, streamed, multi-turn),
models, system, metrics and the OpenAPI document, against a real server on the tiny bundle.

The oracle for answers is the runtime's own path (`tinyllava-med ask --bundle`, BundlePipeline),
itself checked against transformers in the runtime tests: the service must give the same greedy
answer for the same image and question, so its decode, prompt and history mapping are right.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List

from server.runtime.pipeline import BundlePipeline
from tests.server.service_inputs import b64, canary_ct_dicom, data_url, jpeg, png
from tests.server.service_process import DEFAULT_BUNDLE, ServerProcess, sse_events

QUESTION = "Is there a fracture of the vertebral body?"




def test_vqa_multipart_matches_the_runtime(main_server: ServerProcess, reference: BundlePipeline,
                                           model_id: str) -> None:
    image = png(seed=3)
    with main_server.client() as c:
        r = c.post("/v1/vqa", files={"image": ("scan.png", image, "image/png")},
                   data={"question": QUESTION, "max_tokens": "12"})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = reference.ask(image, QUESTION, max_tokens=12)
    assert body["answer"] == expected["answer"]
    assert body["model"] == model_id
    assert body["finish_reason"] == expected["finish_reason"]
    usage = body["usage"]
    assert usage["prompt_tokens"] == expected["timings"]["prompt_tokens"]
    assert usage["completion_tokens"] == len(expected["output_token_ids"]) + (expected["finish_reason"] == "stop")
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["image"]["format"] == "png" and body["image"]["width"] == 64 and body["image"]["height"] == 48
    for key in ("queue_ms", "preprocess_ms", "ttft_ms", "prefill_ms", "decode_ms", "total_ms"):
        assert body["timings"][key] >= 0


def test_vqa_json_base64_and_data_url_match_multipart(main_server: ServerProcess) -> None:
    image = jpeg(seed=5)
    with main_server.client() as c:
        form = c.post("/v1/vqa", files={"image": ("x.jpg", image, "image/jpeg")},
                      data={"question": QUESTION, "max_tokens": "8"}).json()
        bare = c.post("/v1/vqa", json={"image": b64(image), "question": QUESTION, "max_tokens": 8}).json()
        url = c.post("/v1/vqa", json={"image": data_url(image, "image/jpeg"), "question": QUESTION,
                                      "max_tokens": 8}).json()
    assert form["answer"] == bare["answer"] == url["answer"]
    assert form["image"]["sha256"] == bare["image"]["sha256"] == url["image"]["sha256"]
    assert form["image"]["format"] == "jpeg"


def test_vqa_dicom_upload(main_server: ServerProcess) -> None:
    with main_server.client() as c:
        r = c.post("/v1/vqa", files={"image": ("ct.dcm", canary_ct_dicom(), "application/dicom")},
                   data={"question": QUESTION, "max_tokens": "4"})
    assert r.status_code == 200, r.text
    assert r.json()["image"]["format"] == "dicom" and r.json()["image"]["modality"] == "CT"


def test_vqa_stream_deltas_add_up_to_the_answer(main_server: ServerProcess) -> None:
    image = png(seed=7)
    with main_server.client() as c:
        plain = c.post("/v1/vqa", json={"image": b64(image), "question": QUESTION, "max_tokens": 10}).json()
        r = c.post("/v1/vqa", json={"image": b64(image), "question": QUESTION, "max_tokens": 10, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    final = events[-2]
    deltas = "".join(e["delta"] for e in events[:-2])
    assert final["answer"] == plain["answer"] == deltas.strip()
    assert final["usage"] == {**plain["usage"], "prompt_tokens_details": final["usage"]["prompt_tokens_details"]}
    assert all(e["request_id"] == final["request_id"] for e in events[:-2])


def _chat(image: bytes, question: str, history: List[Any] = (), **extra: Any) -> Dict[str, Any]:
    first_q = history[0][0] if history else question
    messages: List[Dict[str, Any]] = [{"role": "user", "content": [
        {"type": "text", "text": first_q}, {"type": "image_url", "image_url": {"url": data_url(image)}}]}]
    if history:
        messages.append({"role": "assistant", "content": history[0][1]})
        for q, a in history[1:]:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": question})
    return {"messages": messages, **extra}


def test_chat_completion_matches_the_runtime(main_server: ServerProcess, reference: BundlePipeline,
                                             model_id: str) -> None:
    image = png(seed=11)
    with main_server.client() as c:
        r = c.post("/v1/chat/completions", json=_chat(image, QUESTION, model=model_id, max_tokens=12))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == model_id and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip() == reference.ask(image, QUESTION, max_tokens=12)["answer"]
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert "ttft_ms" in body["timings"]


def test_chat_multi_turn_maps_onto_history_and_reuses_the_prefix(main_server: ServerProcess,
                                                                  reference: BundlePipeline) -> None:
    image = png(seed=13)
    q1, q2 = "What organ is shown?", "Is it enlarged?"
    with main_server.client() as c:
        first = c.post("/v1/chat/completions", json=_chat(image, q1, max_tokens=6)).json()
        a1 = first["choices"][0]["message"]["content"].strip()
        follow = c.post("/v1/chat/completions", json=_chat(image, q2, history=[(q1, a1)], max_tokens=6)).json()
    expected = reference.ask(image, q2, max_tokens=6, history=[(q1, a1)])
    assert follow["choices"][0]["message"]["content"].strip() == expected["answer"]
    assert follow["usage"]["prompt_tokens"] == expected["timings"]["prompt_tokens"]
    # The follow-up shares system + image + first question with the request before it.
    cached = follow["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= first["usage"]["prompt_tokens"] - 1
    assert follow["timings"]["images_encoded"] == 0


def test_chat_stream_chunks(main_server: ServerProcess) -> None:
    image = png(seed=17)
    with main_server.client() as c:
        plain = c.post("/v1/chat/completions", json=_chat(image, QUESTION, max_tokens=9)).json()
        r = c.post("/v1/chat/completions", json=_chat(image, QUESTION, max_tokens=9, stream=True,
                                                      stream_options={"include_usage": True}))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(ch["object"] == "chat.completion.chunk" and ch["id"] == chunks[0]["id"] for ch in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    finals = [ch for ch in chunks if ch["choices"] and ch["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert "ttft_ms" in finals[0]["timings"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == plain["usage"]["total_tokens"]
    assert all(ch["usage"] is None for ch in chunks[:-1])


def test_models_and_system(main_server: ServerProcess, model_id: str) -> None:
    with main_server.client() as c:
        models = c.get("/v1/models").json()
        one = c.get("/v1/models/" + model_id)
        missing = c.get("/v1/models/no-such-model")
        system = c.get("/v1/system").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [model_id]
    with open(DEFAULT_BUNDLE / "manifest.json", encoding="utf-8") as f:  # what the served bundle was exported with
        assert one.status_code == 200 and one.json()["max_context"] == json.load(f)["max_context"]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert system["memory"]["total_bytes"] > 0 and system["process"]["rss_bytes"] > 0
    assert system["service"]["model"] == model_id and system["service"]["status"] == "ready"


def test_metrics_count_every_request_and_token(main_server: ServerProcess) -> None:
    count = "tinyllava:e2e_request_latency_seconds_count"
    before = {n: main_server.metric(n) for n in (count, "tinyllava:prompt_tokens_total",
                                                 "tinyllava:generation_tokens_total")}
    prompt = completion = 0
    with main_server.client() as c:
        for i in range(3):
            usage = c.post("/v1/vqa", json={"image": b64(png(seed=20 + i)), "question": QUESTION,
                                            "max_tokens": 5}).json()["usage"]
            prompt += usage["prompt_tokens"]
            completion += usage["completion_tokens"]
    assert main_server.metric(count) - before[count] == 3
    assert main_server.metric("tinyllava:prompt_tokens_total") - before["tinyllava:prompt_tokens_total"] == prompt
    assert (main_server.metric("tinyllava:generation_tokens_total")
            - before["tinyllava:generation_tokens_total"]) == completion
    text = main_server.client().get("/metrics").text
    assert 'tinyllava:http_requests_total{route="vqa",status="2xx"}' in text
    for name in ("tinyllava:time_to_first_token_seconds_bucket", "tinyllava:request_queue_time_seconds_count",
                 "tinyllava:num_requests_running", "tinyllava:num_requests_waiting",
                 'tinyllava:request_rejected_total{reason="queue_full"}'):
        assert name in text


def test_openapi_documents_bodies_and_errors(main_server: ServerProcess) -> None:
    doc = main_server.client().get("/openapi.json").json()
    vqa = doc["paths"]["/v1/vqa"]["post"]
    assert set(vqa["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert vqa["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
    error_ref = "#/components/schemas/ErrorResponse"
    for path in ("/v1/vqa", "/v1/chat/completions"):
        responses = doc["paths"][path]["post"]["responses"]
        for code in ("400", "401", "413", "503"):
            assert responses[code]["content"]["application/json"]["schema"]["$ref"] == error_ref
        assert "422" in responses and "text/event-stream" in responses["200"]["content"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_openapi_documents_each_stream_event_and_the_caps(main_server: ServerProcess) -> None:
    """Found by schemathesis: the 200 streams were documented as `{"type": "string"}`, which OpenAPI < 3.2
    (and schemathesis) read as the schema of one event: every event of a real stream violated it."""
    doc = main_server.client().get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for path, component, members in (("/v1/vqa", "VqaStreamEvent", ["VqaDelta", "VqaResponse", "ErrorResponse"]),
                                     ("/v1/chat/completions", "ChatStreamEvent",
                                      ["ChatCompletionChunk", "ErrorResponse"])):
        event = doc["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
        assert event["type"] == "object" and event["required"] == ["data"]
        data = event["properties"]["data"]
        assert data["type"] == "string" and data["if"] == {"const": "[DONE]"}
        assert data["else"] == {"contentMediaType": "application/json",
                                "contentSchema": {"$ref": "#/components/schemas/" + component}}
        assert [ref["$ref"].rsplit("/", 1)[1] for ref in schemas[component]["anyOf"]] == members
    # Every event of a real stream is one of the documented members (its required fields, no more needed).
    body = {"image": b64(png(seed=43)), "question": QUESTION, "max_tokens": 6, "stream": True}
    events = sse_events(main_server.client().post("/v1/vqa", json=body).text)
    assert events[-1] == "[DONE]"
    kinds = [next(m for m in ("VqaDelta", "VqaResponse") if set(schemas[m]["required"]) <= set(e))
             for e in events[:-1]]
    assert kinds[-1] == "VqaResponse" and set(kinds[:-1]) <= {"VqaDelta"}
    # The server's caps (TINYLLAVA_MAX_TOKENS_CAP=64, TINYLLAVA_MAX_QUESTION_CHARS=2000 in conftest) are documented.
    vqa = doc["paths"]["/v1/vqa"]["post"]["requestBody"]["content"]
    for props in (vqa["application/json"]["schema"]["properties"], vqa["multipart/form-data"]["schema"]["properties"]):
        assert {"type": "integer", "minimum": 1, "maximum": 64} in props["max_tokens"]["anyOf"]
        assert props["question"]["maxLength"] == 2000
    chat = schemas["ChatCompletionRequest"]["properties"]
    for name in ("max_tokens", "max_completion_tokens"):
        assert {"type": "integer", "minimum": 1, "maximum": 64} in chat[name]["anyOf"]
