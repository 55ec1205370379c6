"""POST /v1/vqa: the curl path, `curl -F image=@ct.dcm -F question="..." http://host:8000/v1/vqa`."""
from __future__ import annotations

from typing import Any, AsyncIterator, Dict, Tuple

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from python_multipart.exceptions import FormParserError
from starlette.datastructures import UploadFile

from server.api import generation as gen
from server.api import sse
from server.api.body import body_slot, read_json
from server.api.deps import AuthDep, ReadyService, client_scope, require_served_model
from server.api.errors import APIError, error_body, error_responses, note
from server.api.image_input import image_bytes, is_remote
from server.api.openapi import sse_content
from server.api.schemas.common import usage_of
from server.api.schemas.vqa import STREAM_DESCRIPTION, VqaJsonRequest, VqaOptions, VqaResponse, request_body_schema
from server.runtime.results import GenerationResult
from server.service.admission import Job
from server.service.core import Service

router = APIRouter(tags=["vqa"], dependencies=[AuthDep])

_FORM_MAX_FIELDS = 32  # the options are about a dozen; anything past this is not a VQA form


@router.post(
    "/v1/vqa", response_model=VqaResponse, summary="Answer a question about one image",
    description="JSON (`image` as base64 or a data URL) or a multipart form (`image` file + `question`). "
                + STREAM_DESCRIPTION,
    responses={200: {"content": sse_content("VqaStreamEvent")},
               **error_responses([400, 401, 404, 413, 415, 422, 503, 504])},
    openapi_extra={"requestBody": request_body_schema()},
)
async def vqa(request: Request, service: ReadyService) -> Response:
    ticket = gen.admit(service)  # before the body is read: a full queue costs no memory
    try:
        options, data = await _read(request, service)
        require_served_model(service, options.model)
        conv = gen.Conversation(options.question)
        gen.check_text(service, conv)
        params = gen.generation_params(service, options.max_tokens, options.temperature, options.top_p,
                                       options.top_k, options.seed, options.stop)
    except BaseException:
        ticket.release()
        raise
    prepared = await gen.prepare(service, ticket, data, options.frame, conv, client_scope(request))
    job = gen.submit(service, request, ticket, prepared, params, options.stream)
    if options.stream:
        return StreamingResponse(_stream(service, request, job, prepared), media_type=sse.MEDIA_TYPE,
                                 headers=sse.HEADERS)
    result = await gen.collect(service, request, job)
    return JSONResponse(_body(service, request, result, job, prepared))


async def _read(request: Request, service: Service) -> Tuple[VqaOptions, bytes]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if ctype == "multipart/form-data":
            async with body_slot(service), request.form(max_files=1, max_fields=_FORM_MAX_FIELDS) as form:
                upload = form.get("image")
                if not isinstance(upload, UploadFile):
                    raise APIError(400, "attach the image as a file part named 'image' (curl -F image=@scan.dcm)",
                                   "image_missing", param="image")
                fields = {k: v for k, v in form.multi_items() if k != "image" and isinstance(v, str)}
                options = VqaOptions.model_validate(fields)
                data = await upload.read()
            return options, data
        if ctype in ("application/json", ""):
            async with body_slot(service):
                req = VqaJsonRequest.model_validate(await read_json(request))
                if not is_remote(req.image):
                    return req, await image_bytes(service.settings, req.image, "image")
            return req, await image_bytes(service.settings, req.image, "image")  # a fetch holds no body slot
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None
    except FormParserError:
        # Starlette turns only its own MultiPartException into a 400; python-multipart's parse errors
        # (a body that does not follow its boundary) escape as 500s. The parser's text can quote the body.
        raise APIError(400, "the multipart body is malformed (parts must follow the boundary in Content-Type): "
                       "let curl or your HTTP library build it, e.g. curl -F image=@scan.png -F question=...",
                       "invalid_multipart") from None
    raise APIError(415, "send the request as multipart/form-data (curl -F image=@file -F question=...) or as "
                   "application/json", "unsupported_media_type")


def _body(service: Service, request: Request, result: GenerationResult, job: Job,
          prepared: gen.Prepared) -> Dict[str, Any]:
    timings = gen.note_result(request, result, job, prepared)
    return {
        "answer": result.text.strip(),
        "model": service.model_id,
        "finish_reason": result.finish_reason,
        "usage": usage_of(result.timings).model_dump(),
        "timings": timings,
        "request_id": request.state.request_id,
        "image": prepared.image.metadata(),
    }


async def _stream(service: Service, request: Request, job: Job,
                  prepared: gen.Prepared) -> AsyncIterator[bytes]:
    rid = request.state.request_id
    try:
        async for kind, value in gen.events(service, request, job):
            if kind == "delta":
                if value.text:
                    yield sse.event({"request_id": rid, "delta": value.text})
            else:
                yield sse.event(_body(service, request, value, job, prepared))
    except APIError as e:
        note(request, error_code=e.code)
        yield sse.event(error_body(e.message, e.type, e.code))
    yield sse.DONE
