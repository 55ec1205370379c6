"""Admission in-process: capacity, the queue, cancellation and shutdown, on real Generators.

The engine is the numpy ToyEngine behind a gate: each decoder call blocks until the test opens the
gate, so "a request is running" and "a request waits" are states the test holds, not timings.
"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, List, Tuple

import pytest

from server.runtime.generator import Generator
from server.runtime.request import GenerationParams
from server.service.admission import Admission, Job, Overloaded
from server.service.metrics import ServiceMetrics
from tests.server.fake_engines import ToyEngine

HANG_S = 60  # only ends a test that would otherwise hang


class GatedEngine(ToyEngine):
    """Every decoder call waits for the gate; `entered` counts the calls that reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def decode(self, *args):
        self.entered.release()
        self.gate.wait(HANG_S)
        return super().decode(*args)


class _Ids:
    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


def _setup(n_generators: int = 1, max_queue: int = 1) -> Tuple[GatedEngine, Admission, ServiceMetrics]:
    engine = GatedEngine()
    first = Generator(engine, engine.embed_table, _Ids())
    generators = [first] + [first.sibling() for _ in range(n_generators - 1)]
    metrics = ServiceMetrics()
    return engine, Admission(generators, max_queue, metrics), metrics


def _sample(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value("tinyllava:" + name, labels or None)
    assert value is not None, name
    return value


def _gauges(metrics: ServiceMetrics) -> Tuple[float, float]:
    return _sample(metrics, "num_requests_running"), _sample(metrics, "num_requests_waiting")


def _job(adm: Admission, max_tokens: int = 4, stream: bool = False, deadline: float = float("inf")) -> Job:
    layout = Generator(ToyEngine(), ToyEngine().embed_table, _Ids()).prepare([1, 2, 3])
    return Job(adm.admit(), layout, GenerationParams(max_tokens=max_tokens), stream, deadline)


async def _events_until_end(job: Job) -> List[Tuple[str, Any]]:
    out: List[Tuple[str, Any]] = []
    while not out or out[-1][0] == "delta":
        out.append(await asyncio.wait_for(job.events.get(), HANG_S))
    return out


def test_capacity_is_generators_plus_queue_and_release_gives_a_place_back() -> None:
    async def body() -> None:
        engine, adm, metrics = _setup(n_generators=2, max_queue=1)
        try:
            tickets = [adm.admit() for _ in range(3)]
            assert _gauges(metrics) == (0, 3)  # admitted, none generating yet
            with pytest.raises(Overloaded) as e:
                adm.admit()
            assert e.value.retry_after >= 1 and "busy" in str(e.value)
            tickets[0].release()
            tickets[0].release()  # idempotent: one place back, not two
            assert _gauges(metrics) == (0, 2)
            tickets.append(adm.admit())
            with pytest.raises(Overloaded):
                adm.admit()
        finally:
            engine.gate.set()
            adm.stop()

    asyncio.run(body())


def test_a_job_gives_what_the_generator_gives_and_frees_its_place() -> None:
    async def body() -> None:
        engine, adm, metrics = _setup()
        engine.gate.set()
        try:
            want = Generator(ToyEngine(), ToyEngine().embed_table, _Ids()).generate([1, 2, 3], None,
                                                                                  GenerationParams(max_tokens=4))
            plain, streamed = _job(adm), _job(adm, stream=True)
            adm.submit(plain)
            adm.submit(streamed)
            (kind, result), = await _events_until_end(plain)
            assert kind == "done" and result.output_ids == want.output_ids
            events = await _events_until_end(streamed)
            assert [k for k, _ in events] == ["delta"] * len(want.output_ids) + ["done"]
            assert [d.token_id for _, d in events[:-1]] == want.output_ids
            assert _gauges(metrics) == (0, 0)
            assert _sample(metrics, "request_success_total", finish_reason=want.finish_reason) == 2
            assert _sample(metrics, "generation_tokens_total") == 2 * len(want.output_ids)
        finally:
            adm.stop()

    asyncio.run(body())


def test_a_queued_job_cancelled_leaves_at_once_and_a_running_one_between_tokens() -> None:
    async def body() -> None:
        engine, adm, metrics = _setup(max_queue=1)
        try:
            running, queued = _job(adm, max_tokens=8), _job(adm, max_tokens=8)
            adm.submit(running)
            assert engine.entered.acquire(timeout=HANG_S)  # its prefill is at the gate
            adm.submit(queued)
            assert _gauges(metrics) == (1, 1)
            with pytest.raises(Overloaded):
                adm.admit()

            adm.cancel(queued, "client_disconnect")
            assert await asyncio.wait_for(queued.events.get(), HANG_S) == ("aborted", "client_disconnect")
            assert _gauges(metrics) == (1, 0)  # its place is back while the other still runs
            third = adm.admit()
            third.release()

            adm.cancel(running, "timeout")
            adm.cancel(running, "timeout")  # a second cancel is a no-op
            engine.gate.set()
            assert await asyncio.wait_for(running.events.get(), HANG_S) == ("aborted", "timeout")
            while _gauges(metrics) != (0, 0):  # the worker finishes the step it was in, then lets go
                await asyncio.sleep(0.01)
            assert running.events.empty()  # no "done" after the abort
            assert _sample(metrics, "request_aborted_total", reason="client_disconnect") == 1
            assert _sample(metrics, "request_aborted_total", reason="timeout") == 1
            assert _sample(metrics, "request_success_total", finish_reason="length") == 0
        finally:
            engine.gate.set()
            adm.stop()

    asyncio.run(body())


def test_a_job_past_its_deadline_is_aborted_as_timeout() -> None:
    async def body() -> None:
        engine, adm, metrics = _setup()
        engine.gate.set()
        try:
            job = _job(adm, deadline=time.monotonic() - 1.0)  # already past when a worker takes it
            adm.submit(job)
            assert await asyncio.wait_for(job.events.get(), HANG_S) == ("aborted", "timeout")
            assert _sample(metrics, "request_aborted_total", reason="timeout") == 1
        finally:
            adm.stop()

    asyncio.run(body())


def test_stop_aborts_every_job_as_shutdown_and_ends_the_workers() -> None:
    async def body() -> None:
        engine, adm, metrics = _setup(max_queue=2)
        jobs = [_job(adm, max_tokens=8) for _ in range(3)]
        for job in jobs:
            adm.submit(job)
        assert engine.entered.acquire(timeout=HANG_S)
        stopper = threading.Thread(target=adm.stop, kwargs={"timeout": HANG_S})
        stopper.start()
        for job in jobs:
            assert await asyncio.wait_for(job.events.get(), HANG_S) == ("aborted", "shutdown")
        engine.gate.set()
        stopper.join(HANG_S)
        assert not any(t.is_alive() for t in adm._threads)
        assert _sample(metrics, "request_aborted_total", reason="shutdown") == 3

    asyncio.run(body())


def test_admission_needs_a_generator() -> None:
    with pytest.raises(ValueError, match="at least one generator"):
        Admission([], 1, ServiceMetrics())
