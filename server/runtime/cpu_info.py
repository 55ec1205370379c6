"""Physical CPU cores available to this process (ONNX Runtime's intra-op default is one thread per
physical core: hyper-threads share the FMA units a GEMM saturates)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Set, Tuple


def _allowed_cpus() -> Set[int]:
    try:
        return set(os.sched_getaffinity(0))  # a container's CPU set, not the host's
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def physical_cores() -> int:
    """Distinct (package, core) pairs among the CPUs this process may run on; at least 1.

    Reads /sys topology (present on x86 and on Jetson's ARM cores alike); where it is missing,
    every allowed logical CPU counts as a core.
    """
    allowed = _allowed_cpus()
    cores: Set[Tuple[str, str]] = set()
    for cpu in allowed:
        topo = Path("/sys/devices/system/cpu/cpu%d/topology" % cpu)
        try:
            package = (topo / "physical_package_id").read_text().strip()
            core = (topo / "core_id").read_text().strip()
        except OSError:
            return max(1, len(allowed))
        cores.add((package, core))
    return max(1, len(cores))
