"""The OpenAPI document: FastAPI's, completed with what the routes' models cannot say.

- Streams. OpenAPI before 3.2 reads the `schema` of a `text/event-stream` response as one event
  (`{data, event, id, retry}`), and so do schemathesis and code generators. Each 200 stream is
  documented that way: `data` is JSON of the route's event type (components `VqaStreamEvent`,
  `ChatStreamEvent`), or the final `[DONE]`.
- This server's caps, which are settings rather than model constants: the `maximum` of max_tokens and
  the `maxLength` of the question, so clients (and the fuzzer) see the limits the handlers enforce.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Union

from fastapi import FastAPI
from pydantic import TypeAdapter

from server.api import sse
from server.api.errors import ErrorResponse
from server.api.schemas.chat import ChatCompletionChunk, ChatCompletionRequest
from server.api.schemas.vqa import VqaDelta, VqaResponse
from server.service.settings import Settings

_REF = "#/components/schemas/"

# Component name -> what one event's `data` holds (an error after the stream began is an ErrorResponse).
STREAM_EVENTS: Dict[str, Any] = {
    "VqaStreamEvent": Union[VqaDelta, VqaResponse, ErrorResponse],
    "ChatStreamEvent": Union[ChatCompletionChunk, ErrorResponse],
}


def sse_content(component: str) -> Dict[str, Any]:
    """The `content` entry of a 200 response that streams `component` events, then `data: [DONE]`."""
    if component not in STREAM_EVENTS:
        raise KeyError("no stream event type %r; known: %s" % (component, ", ".join(STREAM_EVENTS)))
    data = {
        "type": "string",
        "description": "JSON of %s; `[DONE]` in the last event" % component,
        "if": {"const": "[DONE]"},
        "else": {"contentMediaType": "application/json", "contentSchema": {"$ref": _REF + component}},
    }
    event = {
        "type": "object",
        "title": "ServerSentEvent",
        "required": ["data"],
        "properties": {"data": data, "event": {"type": "string"}, "id": {"type": "string"},
                       "retry": {"type": "integer"}},
    }
    return {sse.MEDIA_TYPE: {"schema": event}}


def chat_request_body() -> Dict[str, Any]:
    """The chat route's requestBody: the route reads its body itself (after auth and admission), so
    FastAPI does not see the model; install_openapi adds the component."""
    return {"required": True,
            "content": {"application/json": {"schema": {"$ref": _REF + "ChatCompletionRequest"}}}}


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Replace `app.openapi` with FastAPI's generator followed by the additions above."""
    generate: Callable[[], Dict[str, Any]] = app.openapi

    def openapi() -> Dict[str, Any]:
        if app.openapi_schema is None:
            doc = generate()  # caches the document in app.openapi_schema; completed in place
            _add_component(doc, "ChatCompletionRequest", ChatCompletionRequest, "validation")
            _add_stream_events(doc)
            _add_caps(doc, settings)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _add_component(doc: Dict[str, Any], name: str, type_: Any, mode: Any) -> None:
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    schema = TypeAdapter(type_).json_schema(ref_template=_REF + "{model}", mode=mode)
    for def_name, definition in schema.pop("$defs", {}).items():
        components.setdefault(def_name, definition)  # the routes' own models win: same classes
    schema["title"] = name
    components[name] = schema


def _add_stream_events(doc: Dict[str, Any]) -> None:
    for name, event_type in STREAM_EVENTS.items():
        _add_component(doc, name, event_type, "serialization")


def _integer_branches(prop: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """The integer schema(s) of a property: itself, or the integer branch of Optional[int]'s anyOf."""
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") == "integer":
            yield branch


def _add_caps(doc: Dict[str, Any], settings: Settings) -> None:
    vqa_body = doc["paths"]["/v1/vqa"]["post"]["requestBody"]["content"]
    request_schemas = [vqa_body["application/json"]["schema"], vqa_body["multipart/form-data"]["schema"],
                       doc["components"]["schemas"]["ChatCompletionRequest"]]
    for schema in request_schemas:
        props = schema["properties"]
        for name in ("max_tokens", "max_completion_tokens"):
            for branch in _integer_branches(props.get(name, {})):
                branch["maximum"] = settings.max_tokens_cap
        if "question" in props:
            props["question"]["maxLength"] = settings.max_question_chars


__all__ = ["STREAM_EVENTS", "chat_request_body", "install_openapi", "sse_content"]
