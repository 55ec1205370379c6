"""Jetson telemetry through jetson-stats (jtop): GPU load, RAM and the iGPU's share, power, temperatures.

jtop is a client of the host's `jtop.service`, which serves /run/jtop.sock; in a container the socket is
mounted and jetson-stats must be the host's version (docs/jetson.md). A thread reads every sample jtop
delivers: the latest one feeds /v1/system and the Prometheus gauges, and total power goes into a
PowerTrace from which each answer's energy is integrated. Without jetson-stats, the socket or the
service, the telemetry is "unavailable" with the reason and the fix; nothing else changes.

Keys (jetson_stats `jtop/jtop.py` and `jtop/core/*.py`, tags 4.2.12 and 7.2.2): `stats` is the same flat
dict in 4.x and 7.x ('GPU' in %, 'Power TOT' and 'Power <rail>' in mW, 'Temp <sensor>' in °C with -256
for an offline sensor, 'jetson_clocks' 'ON'/'OFF', 'nvp model'); `memory['RAM']` has tot/used/shared in
KB (shared = RAM the iGPU holds); `power` is {'rail': {name: {volt, curr, power, avg, ...}}, 'tot':
{power, avg, ...}} in mV/mA/mW (on AGX Xavier 'tot' is the sum of the rails; 7.x may name a 'VIN' rail
the total). 7.x adds memory['RAM']['shared_label'] and NVML-read GPUs whose status fields may be None.
3.x (jtop/jtop.py, tag 3.1.4) differs: `power` is a (total, rails) tuple of {cur, avg} in mW, the flat
total is 'power cur', and RAM comes from `ram` = {use, shared, tot} in KB instead of `memory['RAM']`.
"""
from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from server.service.energy import PowerTrace

log = logging.getLogger(__name__)

JTOP_SOCKET = Path("/run/jtop.sock")  # jetson_stats jtop/service.py: JTOP_PIPE
_OFFLINE_C = -256.0  # jetson_stats jtop/core/temperature.py: TEMPERATURE_OFFLINE
_KB = 1024


@dataclass
class JetsonSample:
    """One jtop reading in SI units (W, bytes, %, °C); None where the board does not report it."""

    gpu_load_percent: Optional[float] = None
    ram_total_bytes: Optional[int] = None
    ram_used_bytes: Optional[int] = None
    gpu_shared_ram_bytes: Optional[int] = None  # RAM the integrated GPU holds (part of ram_used)
    power_w: Optional[float] = None  # total board power
    rails_w: Dict[str, float] = field(default_factory=dict)
    temperatures_c: Dict[str, float] = field(default_factory=dict)
    nvpmodel: Optional[str] = None
    jetson_clocks: Optional[bool] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def parse_jtop(stats: Dict[str, Any], memory: Optional[Dict[str, Any]] = None, power: Any = None,
               ram: Optional[Dict[str, Any]] = None) -> JetsonSample:
    """One sample from jtop's `stats`, `memory` and `power` properties (4.x, 7.x), or 3.x's `stats`,
    `power` tuple and `ram`."""
    s = JetsonSample()
    gpu = stats.get("GPU")
    if isinstance(gpu, (int, float)):
        s.gpu_load_percent = float(gpu)
    table = memory.get("RAM") if isinstance(memory, dict) else None
    if not isinstance(table, dict) and isinstance(ram, dict):  # 3.x: 'use' for 'used'
        table = {"tot": ram.get("tot"), "used": ram.get("use"), "shared": ram.get("shared")}
    if isinstance(table, dict) and table.get("tot"):
        s.ram_total_bytes = int(table["tot"]) * _KB
        s.ram_used_bytes = int(table.get("used") or 0) * _KB
        if table.get("shared") is not None:
            s.gpu_shared_ram_bytes = int(table["shared"]) * _KB
    s.power_w, s.rails_w = _power(stats, power)
    for key, value in stats.items():
        if key.startswith("Temp ") and isinstance(value, (int, float)) and value > _OFFLINE_C:
            s.temperatures_c[key[len("Temp "):]] = float(value)
    if isinstance(stats.get("nvp model"), str):
        s.nvpmodel = stats["nvp model"]
    if stats.get("jetson_clocks") in ("ON", "OFF"):
        s.jetson_clocks = stats["jetson_clocks"] == "ON"
    return s


def _power(stats: Dict[str, Any], power: Any) -> Tuple[Optional[float], Dict[str, float]]:
    """(total W, {rail: W}): from the structured `power` (4.x+) or the flat stats keys."""
    rails: Dict[str, float] = {}
    total: Optional[float] = None
    if isinstance(power, tuple) and len(power) == 2:  # 3.x: (total, rails) with 'cur' in mW
        tot3, rails3 = power
        rails = {name: r["cur"] / 1000.0 for name, r in (rails3 or {}).items()
                 if isinstance(r, dict) and isinstance(r.get("cur"), (int, float))}
        if isinstance(tot3, dict) and isinstance(tot3.get("cur"), (int, float)):
            total = tot3["cur"] / 1000.0
    elif isinstance(power, dict) and isinstance(power.get("rail"), dict):
        for name, rail in power["rail"].items():
            if isinstance(rail, dict) and isinstance(rail.get("power"), (int, float)) and rail.get("online", True):
                rails[name] = rail["power"] / 1000.0
        tot = power.get("tot")
        if isinstance(tot, dict) and isinstance(tot.get("power"), (int, float)):
            total = tot["power"] / 1000.0
    if not rails:
        rails = {k[len("Power "):]: v / 1000.0 for k, v in stats.items()
                 if k.startswith("Power ") and k != "Power TOT" and isinstance(v, (int, float))}
    if total is None:
        flat = stats.get("Power TOT", stats.get("power cur"))
        if isinstance(flat, (int, float)):
            total = flat / 1000.0
    return total, rails


@dataclass
class JtopConfig:
    interval_s: float = 0.5  # jtop's sampling interval; answers shorter than this get interpolated power
    socket: Path = JTOP_SOCKET
    trace_s: float = 3600.0  # power history kept for the energy of answers (long answers on a loaded device)
    module: str = "jtop"  # the import name of jetson-stats (a fake one in tests)


class JtopTelemetry:
    """The jtop reader thread; `status` is "starting", "ok" or "unavailable" (then `reason` says why)."""

    def __init__(self, config: JtopConfig) -> None:
        self.config = config
        # A stall of more than two intervals leaves a gap no energy figure covers.
        self.trace = PowerTrace(capacity=max(16, int(config.trace_s / config.interval_s)),
                                max_gap=2.5 * config.interval_s)
        self.status = "starting"
        self.reason: Optional[str] = None
        self.version: Optional[str] = None
        self.latest: Optional[JetsonSample] = None
        self.samples = 0
        self._stop = threading.Event()
        self._settled = threading.Event()  # set at the first sample, or once unavailable
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        """Checks jetson-stats and the socket now (so /v1/system is "unavailable" at once off-Jetson),
        then reads in a thread."""
        try:
            module = importlib.import_module(self.config.module)
        except ImportError:
            return self._unavailable("jetson-stats (jtop) is not installed: on a Jetson, install the host's "
                                     "version, pip install 'jetson-stats==X.Y.Z' (docs/jetson.md)")
        if not os.path.exists(str(self.config.socket)):
            return self._unavailable("%s is missing: run jtop.service on the host (sudo systemctl start "
                                     "jtop.service) and mount the socket into the container (-v %s:%s)"
                                     % (self.config.socket, JTOP_SOCKET, JTOP_SOCKET))
        self.version = getattr(module, "__version__", None)
        self._thread = threading.Thread(target=self._run, args=(module,), name="jtop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def wait_settled(self, timeout: float) -> bool:
        """Wait until the first sample came or the telemetry turned unavailable; False on timeout."""
        return self._settled.wait(timeout)

    def energy_j(self, t0: float, t1: float) -> Optional[float]:
        """Joules the board drew between two time.monotonic() readings; None without power readings."""
        if self.status != "ok":
            return None
        return self.trace.energy_j(t0, t1)

    def snapshot(self) -> Dict[str, Any]:
        if self.status != "ok" or self.latest is None:
            out: Dict[str, Any] = {"status": self.status if self.status != "ok" else "starting"}
            if self.reason:
                out["reason"] = self.reason
            return out
        return dict(self.latest.to_dict(), status="ok", jetson_stats=self.version, interval_s=self.config.interval_s)

    def _unavailable(self, reason: str) -> None:
        self.status, self.reason = "unavailable", reason
        self._settled.set()
        log.info("jetson telemetry unavailable: %s", reason)

    def _run(self, module: Any) -> None:
        exc_type = getattr(module, "JtopException", RuntimeError)
        try:
            with module.jtop(interval=self.config.interval_s) as j:
                while not self._stop.is_set() and j.ok():
                    # 3.x has `ram` where 4.x and later have `memory`
                    self._record(parse_jtop(j.stats, getattr(j, "memory", None), j.power, getattr(j, "ram", None)))
        except exc_type as e:  # the service is down, or its version is not the client's
            self._unavailable("jtop.service refused the connection (%s): check it runs on the host and that "
                              "the container's jetson-stats is the host's version" % str(e).replace("\n", " "))
            return
        except (OSError, EOFError) as e:  # the socket went away (service restarted)
            self._unavailable("lost the connection to jtop.service (%s): restart the container" % e)
            return
        if not self._stop.is_set():
            self._unavailable("jtop.service closed the connection: restart the container")

    def _record(self, sample: JetsonSample) -> None:
        now = time.monotonic()
        if sample.power_w is not None:
            self.trace.add(now, sample.power_w)
        self.latest = sample
        self.samples += 1
        self.status = "ok"
        self._settled.set()


__all__ = ["JTOP_SOCKET", "JetsonSample", "JtopConfig", "JtopTelemetry", "parse_jtop"]
