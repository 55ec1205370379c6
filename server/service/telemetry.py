"""Host telemetry: CPU, memory, disk, temperatures and this process through psutil, on any host;
on a Jetson also GPU load, the iGPU's RAM, power rails, nvpmodel and jetson_clocks through jtop
(server/service/jetson.py), "unavailable" with the reason elsewhere.

Values are sampled per call; CPU percentages are since the previous call (0 on the first).
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, Optional

import psutil

from server.service.jetson import JtopConfig, JtopTelemetry


class HostTelemetry:
    def __init__(self, disk_path: Path, jtop: Optional[JtopConfig] = None) -> None:
        self.disk_path = disk_path
        self.process = psutil.Process()
        self.process.cpu_percent(None)  # start the interval the next call measures
        psutil.cpu_percent(None)
        self.jetson = JtopTelemetry(jtop if jtop is not None else JtopConfig())

    def start(self) -> None:
        self.jetson.start()

    def stop(self) -> None:
        self.jetson.stop()

    def energy_j(self, t0: float, t1: float) -> Optional[float]:
        """Joules the device drew from t0 to t1 (time.monotonic()), where power is readable (jtop)."""
        return self.jetson.energy_j(t0, t1)

    def snapshot(self) -> Dict[str, Any]:
        vm = psutil.virtual_memory()
        swap = psutil.swap_memory()
        proc = self.process
        with proc.oneshot():
            process = {
                "pid": proc.pid, "rss_bytes": proc.memory_info().rss, "cpu_percent": proc.cpu_percent(None),
                "threads": proc.num_threads(), "uptime_s": round(time.time() - proc.create_time(), 3),
            }
        return {
            "platform": {"system": platform.system(), "machine": platform.machine(), "release": platform.release(),
                         "python": platform.python_version()},
            "cpu": {"count": psutil.cpu_count() or 0, "percent": psutil.cpu_percent(None),
                    "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
            "memory": {"total_bytes": vm.total, "available_bytes": vm.available, "used_percent": vm.percent,
                       "swap_total_bytes": swap.total, "swap_used_bytes": swap.used},
            "disk": self._disk(),
            "temperatures_c": _temperatures(),
            "process": process,
            "jetson": self.jetson.snapshot(),
        }

    def _disk(self) -> Optional[Dict[str, Any]]:
        try:
            du = psutil.disk_usage(str(self.disk_path))
        except OSError:
            return None
        return {"path": "bundle", "total_bytes": du.total, "free_bytes": du.free, "used_percent": du.percent}


def _temperatures() -> Dict[str, float]:
    """The hottest reading per sensor chip (thermal zones on Jetson), where the OS exposes them."""
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return {}
    try:
        sensors = reader()
    except (OSError, RuntimeError):
        return {}
    return {name: max(t.current for t in temps) for name, temps in sensors.items() if temps}


__all__ = ["HostTelemetry"]
