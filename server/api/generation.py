"""From a validated request to an answer: admission, image decode, prompt, the job and its events.

Both API routes (vqa, chat) go through here:
    ticket = admit(service)                            # 503 at once when the queue is full
    prepared = await prepare(service, ticket, ...)     # decode + preprocess + prompt, in a thread
    job = submit(service, ticket, prepared, stream)
    result = await collect(service, request, job)      # or: async for kind, value in events(...)
A watcher stops the job when the client disconnects or the request timeout passes.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence, Tuple

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from models.processor.templates import Turn
from server.api.errors import TIMEOUT, UNAVAILABLE, APIError, note
from server.imaging.images import DecodedImage
from server.runtime.errors import RequestError
from server.runtime.prompt import PromptLayout, scoped
from server.runtime.request import GenerationParams
from server.runtime.results import GenerationResult, ms
from server.service.admission import FINISHED, Job, Overloaded, ShuttingDown, Ticket
from server.service.core import Service

_WATCH_INTERVAL_S = 0.2  # how often a waiting request checks for a disconnect or its deadline
# Every stop string is matched after every token: bound the work one request can ask for.
_MAX_STOPS = 16
_MAX_STOP_CHARS = 256


@dataclass
class Conversation:
    """What the model is asked: the latest question, earlier turns, an optional system prompt."""

    question: str
    history: List[Turn] = dataclasses.field(default_factory=list)
    system: Optional[str] = None


@dataclass
class Prepared:
    layout: PromptLayout  # the prompt checked against the engine, images hashed
    image: DecodedImage
    preprocess_ms: float


def check_text(service: Service, conv: Conversation) -> None:
    """Cheap checks before admission: an empty or over-long question is refused at once."""
    cap = service.settings.max_question_chars
    texts = [conv.question] + [t for turn in conv.history for t in turn]
    if not conv.question.strip():
        raise APIError(400, "the question is empty: ask something about the image", "empty_question",
                       param="question")
    for text in texts + [conv.system or ""]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # JSON's "\ud800": a half of a UTF-16 pair, which no tokenizer can take
            raise APIError(400, "the text holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape without its "
                           "pair): send valid Unicode", "invalid_text", param="question") from None
    longest = max(len(t) for t in texts + [conv.system or ""])
    if longest > cap:
        raise APIError(400, "a text of %d characters is over this server's cap of %d per question "
                       "(TINYLLAVA_MAX_QUESTION_CHARS): shorten it" % (longest, cap), "question_too_long",
                       param="question")


def generation_params(service: Service, max_tokens: Optional[int], temperature: Optional[float],
                      top_p: Optional[float], top_k: Optional[int], seed: Optional[int],
                      stop: Any = None) -> GenerationParams:
    s = service.settings
    if max_tokens is not None and max_tokens > s.max_tokens_cap:
        raise APIError(400, "max_tokens %d is over this server's cap of %d (TINYLLAVA_MAX_TOKENS_CAP): ask for "
                       "fewer" % (max_tokens, s.max_tokens_cap), "max_tokens_too_large", param="max_tokens")
    stops: Sequence[str] = () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)
    if len(stops) > _MAX_STOPS or any(len(x) > _MAX_STOP_CHARS for x in stops):
        raise APIError(400, "stop takes at most %d strings of at most %d characters each" % (_MAX_STOPS,
                       _MAX_STOP_CHARS), "invalid_parameter", param="stop")
    try:
        return GenerationParams(max_tokens=max_tokens or min(s.default_max_tokens, s.max_tokens_cap),
                                temperature=temperature or 0.0, top_p=1.0 if top_p is None else top_p,
                                top_k=top_k or 0, seed=seed, stop=tuple(stops))
    except RequestError as e:
        raise APIError(400, str(e), "invalid_parameter") from None


def admit(service: Service) -> Ticket:
    assert service.admission is not None  # require_ready checked it
    try:
        return service.admission.admit()
    except ShuttingDown:
        service.metrics.reject("draining")
        raise
    except Overloaded:
        service.metrics.reject("queue_full")
        raise


async def prepare(service: Service, ticket: Ticket, data: bytes, frame: Optional[int],
                  conv: Conversation, scope: str) -> Prepared:
    """Decode and preprocess the image and tokenise the prompt (in a thread); the ticket is released on error.

    `scope` (deps.client_scope) names whose cached prompt prefixes this request may reuse."""
    try:
        return await run_in_threadpool(_prepare, service, data, frame, conv, scope)
    except BaseException:
        ticket.release()
        raise


def _prepare(service: Service, data: bytes, frame: Optional[int], conv: Conversation, scope: str) -> Prepared:
    t0 = time.perf_counter()
    pipeline = service.pipeline
    assert pipeline is not None
    image, pixels = pipeline.images(data, frame)  # cached by the bytes' sha256: follow-ups skip decoding
    ids = pipeline.processor.prompt_ids(conv.question, conv.history, conv.system)
    # Checks the prompt against the engine now (ContextLengthError -> 400); the worker runs this layout.
    layout = scoped(pipeline.runtime.generator.prepare(ids, pixels), scope)
    return Prepared(layout, image, ms(time.perf_counter() - t0))


def submit(service: Service, request: Request, ticket: Ticket, prepared: Prepared, params: GenerationParams,
           stream: bool) -> Job:
    assert service.admission is not None
    note(request, input_sha256=prepared.image.sha256, image_format=prepared.image.format,
         image_width=prepared.image.width, image_height=prepared.image.height)
    deadline = ticket.t_admitted + service.settings.request_timeout
    job = Job(ticket, prepared.layout, params, stream, deadline)
    service.admission.submit(job)
    return job


async def collect(service: Service, request: Request, job: Job) -> GenerationResult:
    """Wait for the job's result; a disconnect or the deadline stops it."""
    async for kind, value in events(service, request, job):
        if kind == "done":
            return value  # type: ignore[no-any-return]
    raise AssertionError("events() ends with done or raises")  # pragma: no cover


async def events(service: Service, request: Request, job: Job) -> AsyncIterator[Tuple[str, Any]]:
    """The job's ("delta", StreamDelta) events, then ("done", GenerationResult); errors raise APIError."""
    watcher = asyncio.ensure_future(_watch(service, request, job))
    try:
        while True:
            kind, value = await job.events.get()
            if kind == "error":
                raise _error(value)
            if kind == "aborted":
                raise _aborted(service, value)
            yield kind, value
            if kind == "done":
                return
    finally:
        watcher.cancel()
        if job.state != FINISHED:  # our consumer went away (disconnect, cancelled task)
            assert service.admission is not None
            service.admission.cancel(job, "client_disconnect")


async def _watch(service: Service, request: Request, job: Job) -> None:
    assert service.admission is not None
    while job.state != FINISHED:
        await asyncio.sleep(_WATCH_INTERVAL_S)
        if time.monotonic() > job.deadline:
            service.admission.cancel(job, "timeout")
            return
        if await request.is_disconnected():
            service.admission.cancel(job, "client_disconnect")
            return


def _error(exc: BaseException) -> APIError:
    if isinstance(exc, RequestError):
        return APIError(400, str(exc), "invalid_request")
    return APIError(500, "generation failed: the server log has the details", "generation_failed", "server_error")


def _aborted(service: Service, reason: str) -> APIError:
    if reason == "timeout":
        return APIError(504, "the request took longer than this server's request timeout of %gs "
                        "(TINYLLAVA_REQUEST_TIMEOUT): ask for fewer max_tokens or retry when it is less busy"
                        % service.settings.request_timeout, "request_timeout", TIMEOUT)
    if reason == "shutdown":
        return APIError(503, "the server shut down before the answer was finished: retry", "shutting_down",
                        UNAVAILABLE, headers={"Retry-After": "5"})
    return APIError(499, "the client closed the request", "client_disconnect")


def note_result(request: Request, result: GenerationResult, job: Job, prepared: Prepared) -> Dict[str, Any]:
    """Note a finished request's figures for the access log (no patient data) and return the
    response's `timings` object: the runtime's, plus preprocessing and queue time, and energy_j
    where the device's power is readable."""
    t = result.timings
    started = job.t_started if job.t_started is not None else job.ticket.t_admitted
    out = t.to_dict()
    out["preprocess_ms"] = prepared.preprocess_ms
    out["queue_ms"] = ms(started - job.ticket.t_admitted)
    service: Service = request.app.state.service
    # The board's energy over the generation (start to last token), where power is readable (jtop);
    # with more than one request generating at once each one counts the shared board power.
    energy = service.telemetry.energy_j(started, started + t.total_ms / 1000.0)
    if energy is not None:
        out["energy_j"] = round(energy, 3)
        service.metrics.energy.inc(energy)
    note(request, prompt_tokens=t.prompt_tokens, completion_tokens=t.completion_tokens,
         cached_tokens=t.cached_tokens, finish_reason=result.finish_reason, ttft_ms=t.ttft_ms,
         total_ms=t.total_ms, queue_ms=out["queue_ms"], preprocess_ms=prepared.preprocess_ms)
    return out


__all__ = ["Conversation", "Prepared", "admit", "check_text", "collect", "events", "generation_params",
           "note_result", "prepare", "submit"]
