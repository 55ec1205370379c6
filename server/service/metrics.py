"""Prometheus metrics of the service, named after vLLM's (`vllm:time_to_first_token_seconds` ...).

One registry per app, so two apps in one process (tests) do not share counts. Label values come
from fixed sets in this package (reasons, finish reasons, route names) or from the device (jtop's rail
and sensor names, the nvpmodel name), never from a request.
"""
from __future__ import annotations

from typing import Any, Iterator, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PREFIX = "tinyllava:"
# Seconds: from a few ms (tiny models, cache hits) to minutes (long answers on a loaded Jetson).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
_TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)

REJECT_REASONS = ("queue_full", "draining", "not_ready")
ABORT_REASONS = ("client_disconnect", "timeout", "shutdown")
FINISH_REASONS = ("stop", "length")
ROUTES = ("vqa", "chat")


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ttft = Histogram(PREFIX + "time_to_first_token_seconds", "Admission to first generated token.",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram(PREFIX + "e2e_request_latency_seconds", "Admission to last token of a finished request.",
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram(PREFIX + "request_queue_time_seconds", "Admission to the start of generation.",
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.time_per_token = Histogram(PREFIX + "time_per_output_token_seconds", "Decode time per token after "
                                        "the first.", buckets=_TOKEN_BUCKETS, registry=r)
        self.running = Gauge(PREFIX + "num_requests_running", "Requests generating now.", registry=r)
        self.waiting = Gauge(PREFIX + "num_requests_waiting", "Admitted requests not generating yet.", registry=r)
        self.prompt_tokens = Counter(PREFIX + "prompt_tokens", "Prompt positions (image tokens included).",
                                     registry=r)
        self.generation_tokens = Counter(PREFIX + "generation_tokens", "Generated tokens.", registry=r)
        self.cached_tokens = Counter(PREFIX + "prefix_cache_hit_tokens", "Prompt positions reused from the KV "
                                     "cache.", registry=r)
        self.success = Counter(PREFIX + "request_success", "Finished requests by finish reason.",
                               ["finish_reason"], registry=r)
        self.rejected = Counter(PREFIX + "request_rejected", "Requests refused before admission, by reason.",
                                ["reason"], registry=r)
        self.aborted = Counter(PREFIX + "request_aborted", "Admitted requests ended early, by reason.",
                               ["reason"], registry=r)
        self.requests = Counter(PREFIX + "http_requests", "Generation requests by route and status class.",
                                ["route", "status"], registry=r)
        self.energy = Counter(PREFIX + "energy_joules", "Device energy drawn while generating answers (where "
                              "power is readable: jtop).", registry=r)
        for reason in REJECT_REASONS:  # present at 0, so a scrape can tell "none" from "not exported"
            self.rejected.labels(reason=reason)
        for reason in ABORT_REASONS:
            self.aborted.labels(reason=reason)
        for reason in FINISH_REASONS:
            self.success.labels(finish_reason=reason)

    def reject(self, reason: str) -> None:
        assert reason in REJECT_REASONS, reason
        self.rejected.labels(reason=reason).inc()

    def abort(self, reason: str) -> None:
        assert reason in ABORT_REASONS, reason
        self.aborted.labels(reason=reason).inc()

    def count_request(self, route: str, status: int) -> None:
        assert route in ROUTES, route
        self.requests.labels(route=route, status="%dxx" % (status // 100)).inc()

    def attach_device(self, jetson: Any) -> None:
        """Export the latest jtop sample (server/service/jetson.py) as gauges, read at each scrape."""
        self.registry.register(_DeviceCollector(jetson))

    def render(self) -> Tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _DeviceCollector:
    """Jetson gauges from the telemetry thread's latest sample; only `device_telemetry_available` off-Jetson."""

    def __init__(self, jetson: Any) -> None:
        self.jetson = jetson

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # names depend on the device; describe nothing so registration never collects early

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sample = self.jetson.latest if self.jetson.status == "ok" else None
        yield GaugeMetricFamily(PREFIX + "device_telemetry_available", "1 when jtop telemetry is read, 0 when it "
                                "is unavailable (GET /v1/system says why).", value=1 if sample is not None else 0)
        if sample is None:
            return
        scalars = (("device_power_watts", "Total board power.", sample.power_w),
                   ("device_gpu_load_percent", "GPU load.", sample.gpu_load_percent),
                   ("device_ram_total_bytes", "RAM, total.", sample.ram_total_bytes),
                   ("device_ram_used_bytes", "RAM in use (the iGPU's share included).", sample.ram_used_bytes),
                   ("device_gpu_shared_ram_bytes", "RAM the integrated GPU holds.", sample.gpu_shared_ram_bytes),
                   ("device_jetson_clocks", "1 when jetson_clocks pins the clocks at their maximum.",
                    None if sample.jetson_clocks is None else int(sample.jetson_clocks)))
        for name, doc, value in scalars:
            if value is not None:
                yield GaugeMetricFamily(PREFIX + name, doc, value=value)
        rails = GaugeMetricFamily(PREFIX + "device_rail_power_watts", "Power per rail (INA3221).", labels=["rail"])
        for rail, watts in sorted(sample.rails_w.items()):
            rails.add_metric([rail], watts)
        yield rails
        temps = GaugeMetricFamily(PREFIX + "device_temperature_celsius", "Temperature per sensor.", labels=["sensor"])
        for sensor, celsius in sorted(sample.temperatures_c.items()):
            temps.add_metric([sensor], celsius)
        yield temps
        if sample.nvpmodel is not None:
            mode = GaugeMetricFamily(PREFIX + "device_nvpmodel_info", "The active power mode (nvpmodel), as a label.",
                                     labels=["mode"])
            mode.add_metric([sample.nvpmodel], 1)
            yield mode


__all__ = ["ABORT_REASONS", "FINISH_REASONS", "REJECT_REASONS", "ServiceMetrics"]
