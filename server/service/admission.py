"""Admission: a bounded queue in front of worker threads that own the generators.

A Generator holds one KV cache and serves one request at a time, so each worker thread owns one
(max_concurrency workers; 1 by default, since a device runs one engine at full speed). At most
max_queue more requests wait; the next one is refused at once (Overloaded -> 503 + Retry-After)
instead of queueing without bound. A request holds its place from admit() until its Ticket is
released, so time spent decoding its image counts against the queue too.

Jobs talk to the asyncio side through an asyncio.Queue fed with call_soon_threadsafe. A job is
cancelled by its consumer (client gone, deadline passed) or by shutdown: a queued job gives its
place back at once, a running one is stopped between two tokens and its stream closed.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from server.runtime.errors import RequestError
from server.runtime.generator import Generator
from server.runtime.prompt import PromptLayout
from server.runtime.request import GenerationParams
from server.runtime.results import GenerationResult
from server.service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

QUEUED, RUNNING, FINISHED = "queued", "running", "finished"

_HOLD_POLL_S = 0.01


def hold_while(path: Path, stop: threading.Event) -> None:
    """Testing knob (Settings.hold_file): wait while `path` exists, or until `stop` is set."""
    while path.exists() and not stop.wait(_HOLD_POLL_S):
        pass


class Overloaded(Exception):
    """No place in the queue: the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDown(Overloaded):
    """The server stopped taking work (the drain ran out): retry on another instance."""


class Ticket:
    """A place in the service, from admission until release() (idempotent)."""

    def __init__(self, admission: "Admission") -> None:
        self._admission = admission
        self.t_admitted = time.monotonic()
        self.released = False
        self.running = False

    def release(self) -> None:
        self._admission._release(self)


class Job:
    """One generation request: what to run, and the channel its events come back on.

    Events (kind, value): ("delta", StreamDelta) when streaming, then ("done", GenerationResult);
    or ("error", exception); or ("aborted", reason) after cancel().
    """

    def __init__(self, ticket: Ticket, layout: PromptLayout, params: GenerationParams, stream: bool,
                 deadline: float) -> None:
        self.ticket = ticket
        self.layout = layout  # checked and laid out (images hashed) once, when the request arrived
        self.params = params
        self.stream = stream
        self.deadline = deadline  # time.monotonic() after which the job is aborted with "timeout"
        self.state = QUEUED
        self.abort_reason: Optional[str] = None
        self.t_started: Optional[float] = None
        self.cancelled = threading.Event()
        self.events: "asyncio.Queue[Tuple[str, Any]]" = asyncio.Queue()
        self._loop = asyncio.get_running_loop()  # jobs are made on the event loop, by a route

    def emit(self, kind: str, value: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop has closed (shutdown): nobody is listening
            pass


class Admission:
    def __init__(self, generators: Sequence[Generator], max_queue: int, metrics: ServiceMetrics,
                 token_delay: float = 0.0, hold_file: Optional[Path] = None) -> None:
        if not generators:
            raise ValueError("admission needs at least one generator")
        self.capacity = len(generators) + max_queue
        self.metrics = metrics
        self.token_delay = token_delay
        self.hold_file = hold_file
        self._lock = threading.Lock()
        self._alive = 0  # tickets not yet released
        self._running = 0
        self._jobs: List[Job] = []  # queued or running, for shutdown
        self._closed = False  # after close(): nothing new is admitted or run
        self._queue: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._threads = [threading.Thread(target=self._work, args=(g,), name="generator-%d" % i, daemon=True)
                         for i, g in enumerate(generators)]
        for t in self._threads:
            t.start()

    # ---- the asyncio side ---------------------------------------------------------------

    def admit(self) -> Ticket:
        """A place in the service, or Overloaded when running + waiting would pass the capacity."""
        with self._lock:
            if self._closed:
                raise ShuttingDown("the server is shutting down: retry on another instance or in a moment",
                                   retry_after=5)
            if self._alive >= self.capacity:
                raise Overloaded("the server is busy: %d requests are running or waiting, the most it holds; "
                                 "retry in a moment" % self._alive)
            self._alive += 1
            ticket = Ticket(self)
            self._update_gauges()
        return ticket

    def submit(self, job: Job) -> None:
        with self._lock:
            self._jobs.append(job)
            closed = self._closed
        if closed:  # prepared while the drain ran out: answered like the jobs close() stopped
            self.cancel(job, "shutdown")
            return
        self._queue.put(job)

    def cancel(self, job: Job, reason: str) -> None:
        """Stop a job (no-op once finished); its consumer gets ("aborted", reason)."""
        with self._lock:
            if job.state == FINISHED or job.abort_reason is not None:
                return
            job.abort_reason = reason
            job.cancelled.set()
            queued = job.state == QUEUED
            if queued:
                job.state = FINISHED
                self._jobs.remove(job)
        if queued:
            job.ticket.release()
        self.metrics.abort(reason)
        job.emit("aborted", reason)

    def close(self) -> None:
        """Admit nothing more and abort every job ("shutdown"): their consumers answer 503 shutting_down."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs)
        for job in jobs:
            self.cancel(job, "shutdown")

    def stop(self, timeout: float = 5.0) -> None:
        """Abort every job ("shutdown"), then stop the workers."""
        self.close()
        for _ in self._threads:
            self._queue.put(None)
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._alive - self._running

    # ---- bookkeeping --------------------------------------------------------------------

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket.released:
                return
            ticket.released = True
            self._alive -= 1
            if ticket.running:
                self._running -= 1
            self._update_gauges()

    def _update_gauges(self) -> None:  # holds self._lock
        self.metrics.running.set(self._running)
        self.metrics.waiting.set(self.waiting)  # the property takes no lock

    def _start(self, job: Job) -> bool:
        with self._lock:
            if job.state != QUEUED:
                return False  # cancelled while it waited
            job.state = RUNNING
            job.ticket.running = True
            job.t_started = time.monotonic()
            self._running += 1
            self._update_gauges()
        self.metrics.queue_time.observe(job.t_started - job.ticket.t_admitted)
        return True

    def _finish(self, job: Job) -> None:
        with self._lock:
            job.state = FINISHED
            if job in self._jobs:
                self._jobs.remove(job)
        job.ticket.release()

    # ---- the worker side ----------------------------------------------------------------

    def _work(self, generator: Generator) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if not self._start(job):
                continue
            outcome: Optional[Tuple[str, Any]] = None
            try:
                if time.monotonic() > job.deadline:
                    self.cancel(job, "timeout")
                    continue
                result = self._generate(generator, job)
                if result is not None:
                    self._observe(job, result)
                    outcome = ("done", result)
            except RequestError as e:  # a request the engine refused mid-run: the consumer answers 4xx
                outcome = ("error", e)
            except Exception as e:  # noqa: BLE001 - the consumer answers 500; the worker must live on
                log.error("generation failed", exc_info=True)
                outcome = ("error", e)
            finally:
                self._finish(job)
            if outcome is not None:  # after _finish: a consumer that has its answer finds the job finished
                job.emit(*outcome)

    def _generate(self, generator: Generator, job: Job) -> Optional[GenerationResult]:
        """Run the job; None when it was cancelled or ran past its deadline."""
        first = True
        with generator.stream(job.layout, params=job.params) as stream:
            for delta in stream:
                if first:
                    self.metrics.ttft.observe(time.monotonic() - job.ticket.t_admitted)
                    first = False
                if job.cancelled.is_set():
                    return None
                if time.monotonic() > job.deadline:
                    self.cancel(job, "timeout")
                    return None
                if job.stream:
                    job.emit("delta", delta)
                if self.token_delay > 0 and delta.finish_reason is None:
                    job.cancelled.wait(self.token_delay)
                if self.hold_file is not None and (delta.text or delta.finish_reason is not None):
                    hold_while(self.hold_file, job.cancelled)  # after what a client sees, and before the end
            if job.cancelled.is_set():  # cancelled while held after the last token
                return None
            return stream.result

    def _observe(self, job: Job, result: GenerationResult) -> None:
        m = self.metrics
        t = result.timings
        m.e2e.observe(time.monotonic() - job.ticket.t_admitted)
        m.prompt_tokens.inc(t.prompt_tokens)
        m.generation_tokens.inc(t.completion_tokens)
        m.cached_tokens.inc(t.cached_tokens)
        if t.completion_tokens > 1 and t.decode_ms > 0:
            m.time_per_token.observe(t.decode_ms / 1000.0 / (t.completion_tokens - 1))
        m.success.labels(finish_reason=result.finish_reason).inc()


__all__ = ["Admission", "Job", "Overloaded", "ShuttingDown", "Ticket", "hold_while"]
