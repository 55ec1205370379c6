"""uvicorn with a draining shutdown: on SIGTERM (or Ctrl-C) finish in-flight requests, then exit.

uvicorn's own shutdown closes the listening socket at once, so a request arriving during the
drain would be refused at the TCP level. Here the first signal only marks the service as draining:
the socket stays open, new API requests and /ready answer 503 (a load balancer moves on), and
requests in flight run on. When none is left, or after drain_timeout, uvicorn shuts down as usual;
requests still running then are stopped and answer 503 shutting_down first. Requests still
receiving their body are not waited for (a client trickling a body would hold the drain to its
end): uvicorn cuts them, and the middleware answers them 503. A second signal stops waiting.
"""
from __future__ import annotations

import logging
import threading
import time
from types import FrameType
from typing import Optional

import uvicorn

from server.service.core import Service

log = logging.getLogger(__name__)

_POLL_S = 0.05
_ANSWER_S = 5.0  # how long stopped requests get to send their 503 before uvicorn shuts down


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: Service, drain_timeout: float) -> None:
        super().__init__(config)
        self.service = service
        self.drain_timeout = drain_timeout
        self._draining = False

    def handle_exit(self, sig: int, frame: Optional[FrameType]) -> None:
        if self._draining:
            log.info("second signal: shutting down without waiting for the drain")
            self.should_exit = True
            self.force_exit = True
            return
        self._draining = True
        self.service.begin_drain()
        threading.Thread(target=self._drain, name="drain", daemon=True).start()

    def _drain(self) -> None:
        service = self.service
        end = time.monotonic() + self.drain_timeout
        while service.busy > 0 and time.monotonic() < end:
            time.sleep(_POLL_S)
        if service.busy > 0:
            # Each then answers 503 shutting_down (a stream: an error event and [DONE]) instead of being
            # cancelled by uvicorn with a bare 500.
            log.warning("drain timeout: %d request(s) still in flight are stopped", service.busy)
            service.abort_in_flight()
            end = time.monotonic() + _ANSWER_S
            while service.busy > 0 and time.monotonic() < end:
                time.sleep(_POLL_S)
        self.should_exit = True


__all__ = ["DrainingServer"]
