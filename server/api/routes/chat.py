"""POST /v1/chat/completions: OpenAI's chat API, so apps written for vLLM / llama.cpp / Ollama work as is."""
from __future__ import annotations

import time
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from server.api import generation as gen
from server.api import sse
from server.api.body import body_slot, read_json
from server.api.conversation import ChatInput, parse_messages
from server.api.deps import AuthDep, ReadyService, client_scope, require_served_model
from server.api.errors import APIError, error_body, error_responses, note
from server.api.image_input import image_bytes, is_remote
from server.api.openapi import chat_request_body, sse_content
from server.api.schemas.chat import STREAM_DESCRIPTION, ChatCompletion, ChatCompletionRequest
from server.api.schemas.common import usage_of
from server.runtime.results import GenerationResult
from server.service.admission import Job
from server.service.core import Service

router = APIRouter(tags=["chat"], dependencies=[AuthDep])


@router.post(
    "/v1/chat/completions", response_model=ChatCompletion, summary="OpenAI-compatible chat about one image",
    description="Messages with `image_url` parts (data URLs). " + STREAM_DESCRIPTION,
    responses={200: {"content": sse_content("ChatStreamEvent")},
               **error_responses([400, 401, 404, 413, 415, 422, 503, 504])},
    openapi_extra={"requestBody": chat_request_body()},
)
async def chat_completions(request: Request, service: ReadyService) -> Response:
    # The body is read here, not by FastAPI: the key (router dependency) and a place in the queue come first.
    ticket = gen.admit(service)
    try:
        body, chat, data = await _read(request, service)
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        params = gen.generation_params(service, max_tokens, body.temperature, body.top_p, body.top_k, body.seed,
                                       body.stop)
    except BaseException:
        ticket.release()
        raise
    prepared = await gen.prepare(service, ticket, data, None, chat.conversation, client_scope(request))
    job = gen.submit(service, request, ticket, prepared, params, body.stream)
    completion_id = "chatcmpl-" + request.state.request_id
    created = int(time.time())
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = _stream(service, request, job, prepared, completion_id, created, include_usage)
        return StreamingResponse(chunks, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
    result = await gen.collect(service, request, job)
    timings = gen.note_result(request, result, job, prepared)
    return JSONResponse({
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": service.model_id,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                     "finish_reason": result.finish_reason, "logprobs": None}],
        "usage": usage_of(result.timings).model_dump(),
        "timings": timings,
    })


async def _read(request: Request, service: Service) -> Tuple[ChatCompletionRequest, ChatInput, bytes]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/json", ""):
        raise APIError(415, "send the request as application/json (OpenAI's chat format)", "unsupported_media_type")
    async with body_slot(service):
        try:
            body = ChatCompletionRequest.model_validate(await read_json(request))
        except ValidationError as e:
            raise RequestValidationError(e.errors()) from None
        require_served_model(service, body.model)
        chat = parse_messages(body.messages, service.settings.max_messages)
        gen.check_text(service, chat.conversation)
        if not is_remote(chat.image_url):
            return body, chat, await image_bytes(service.settings, chat.image_url, "image_url", bare_base64=False)
    return body, chat, await image_bytes(service.settings, chat.image_url, "image_url")  # no body slot held


async def _stream(service: Service, request: Request, job: Job, prepared: gen.Prepared, completion_id: str,
                  created: int, include_usage: bool) -> AsyncIterator[bytes]:
    def chunk(choices: List[Dict[str, Any]], **extra: Any) -> bytes:
        body: Dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                "model": service.model_id, "choices": choices}
        if include_usage:
            body["usage"] = None  # OpenAI: null on every chunk but the last
        body.update(extra)
        return sse.event(body)

    def choice(delta: Dict[str, Any], finish_reason: Optional[str] = None) -> Dict[str, Any]:
        return {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}

    try:
        yield chunk([choice({"role": "assistant", "content": ""})])
        async for kind, value in gen.events(service, request, job):
            if kind == "delta":
                if value.text:
                    yield chunk([choice({"content": value.text})])
                continue
            result: GenerationResult = value
            timings = gen.note_result(request, result, job, prepared)
            yield chunk([choice({}, result.finish_reason)], timings=timings)
            if include_usage:
                yield chunk([], usage=usage_of(result.timings).model_dump())
    except APIError as e:
        note(request, error_code=e.code)
        yield sse.event(error_body(e.message, e.type, e.code))
    yield sse.DONE
