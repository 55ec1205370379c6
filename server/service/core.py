"""What the routes share: settings, the model once loaded, admission, metrics, readiness, drain.

The bundle's manifest is read at once (a bad --bundle fails at startup, and /v1/models answers
while loading); verifying, opening and warming the graphs happen in a background thread, so /live
answers immediately and /ready says 503 until a warm-up generation has succeeded.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import List, Optional, Tuple

from PIL import Image

from server.runtime.bundle import Manifest, read_manifest
from server.runtime.generator import Generator
from server.runtime.pipeline import BundlePipeline
from server.runtime.request import GenerationParams
from server.service.admission import Admission, hold_while
from server.service.engines import ensure_engines, resolve_builder
from server.service.jetson import JtopConfig
from server.service.metrics import ServiceMetrics
from server.service.settings import Settings
from server.service.telemetry import HostTelemetry

log = logging.getLogger(__name__)

LOADING, BUILDING, READY, FAILED, DRAINING = "loading", "building", "ready", "failed", "draining"


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.api_keys: List[str] = settings.load_api_keys()
        self.bundle_dir = settings.bundle_dir
        self.manifest: Manifest = read_manifest(self.bundle_dir)
        self.model_id = self.manifest.model.name
        self.started = time.time()
        self.status = LOADING
        self.error: Optional[str] = None
        self.detail: Optional[str] = None  # what a not-ready service is doing ("building engines ...")
        self.pipeline: Optional[BundlePipeline] = None
        self.admission: Optional[Admission] = None
        self.telemetry = HostTelemetry(self.bundle_dir, JtopConfig(interval_s=settings.jtop_interval,
                                                                   socket=settings.jtop_socket))
        self.metrics.attach_device(self.telemetry.jetson)
        self.in_flight = 0  # API requests in progress (health probes not counted)
        self.reading = 0  # of those, the ones still receiving their body: the drain does not wait for these
        self._thread: Optional[threading.Thread] = None

    @property
    def ready(self) -> bool:
        return self.status == READY

    def queue_depth(self) -> Tuple[int, int]:
        """(running, waiting) requests; (0, 0) before the model is loaded."""
        adm = self.admission
        return (adm.running, adm.waiting) if adm is not None else (0, 0)

    def start(self) -> None:
        self.telemetry.start()
        self._thread = threading.Thread(target=self._load, name="bundle-loader", daemon=True)
        self._thread.start()

    def begin_drain(self) -> None:
        """From now on /ready and new API requests answer 503; in-flight requests go on."""
        log.info("draining: %d request(s) in flight", self.in_flight)
        self.status = DRAINING

    @property
    def busy(self) -> int:
        """Requests the drain waits for: in flight and past reading their body."""
        return self.in_flight - self.reading

    def abort_in_flight(self) -> None:
        """The drain ran out: admit nothing more; queued and running requests answer 503 shutting_down."""
        if self.admission is not None:
            self.admission.close()

    def stop(self) -> None:
        self.telemetry.stop()
        if self.admission is not None:
            self.admission.stop()
        if self.pipeline is not None:
            self.pipeline.runtime.close()

    def _load(self) -> None:
        s = self.settings
        try:
            if s.build_engines:
                self._build_engines()
            t0 = time.perf_counter()
            pipeline = BundlePipeline(self.bundle_dir, image_limits=self.settings.image_limits, backend=s.backend)
            first = pipeline.runtime.generator
            generators = [first] + [first.sibling() for _ in range(s.max_concurrency - 1)]
            for g in generators:
                _warm_up(pipeline, g)
            if s.warmup_delay > 0:
                time.sleep(s.warmup_delay)
            if s.hold_file is not None:
                hold_while(s.hold_file, threading.Event())
            self.pipeline = pipeline
            self.admission = Admission(generators, s.max_queue, self.metrics, token_delay=s.token_delay,
                                       hold_file=s.hold_file)
            if self.status == LOADING:  # not while draining: a drain that began during loading stands
                self.status = READY
            log.info("model ready", extra={"model": self.model_id, "load_s": round(time.perf_counter() - t0, 3),
                                           "providers": pipeline.runtime.engine.providers})
        except Exception as e:  # noqa: BLE001 - reported through /ready and the log; the process stays up
            self.status = FAILED
            self.error = "%s: %s" % (type(e).__name__, e)
            log.error("the bundle could not be loaded: %s", self.error)

    def _build_engines(self) -> None:
        """First start: the bundle's engines for this device, built before loading (minutes), then cached."""
        s = self.settings

        def building() -> None:
            if self.status == LOADING:
                self.status = BUILDING
                self.detail = ("building engines (%s) for this device: the first start takes minutes; later starts "
                               "reuse them" % s.precision)

        ensure_engines(resolve_builder(s.engine_builder), self.bundle_dir, s.precision, on_build=building)
        if self.status == BUILDING:
            self.status, self.detail = LOADING, None


def _warm_up(pipeline: BundlePipeline, generator: Generator) -> None:
    """One short generation: the first run of a graph pays its allocations (and TensorRT its tactics)."""
    processor = pipeline.processor
    size = processor.image_config.size
    pixels = processor.pixels(Image.new("RGB", (size, size), (128, 128, 128)))
    generator.generate(processor.prompt_ids("warm-up"), pixels, GenerationParams(max_tokens=2))
    generator.reset()
    generator.image_cache.clear()


__all__ = ["BUILDING", "DRAINING", "FAILED", "LOADING", "READY", "Service"]
