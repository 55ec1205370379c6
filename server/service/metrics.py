"""Prometheus metrics of the service, named after vLLM's (`vllm:time_to_first_token_seconds` ...).

One registry per app, so two apps in one process (tests) do not share counts. Label values come
from fixed sets in this package (reasons, finish reasons, route names), never from a request.
"""
from __future__ import annotations

from typing import Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
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

    def render(self) -> Tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["ABORT_REASONS", "FINISH_REASONS", "REJECT_REASONS", "ServiceMetrics"]
