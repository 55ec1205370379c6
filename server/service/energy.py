"""Energy from sampled power: a bounded trace of (time, watts) and its integral over an interval.

jtop reports the board's total power every sampling interval (0.5 s here by default), while an answer
may take less than one interval. Power between two samples is taken as linear (the trapezoid rule);
at the ends of an interval the power is interpolated between the samples around it, or held at the
nearest sample when none lies beyond (the answer is computed right after the request ends, before
the next sample comes). An interval farther than `max_gap` from any sample has no energy: the
telemetry stalled and a figure would be invented.
"""
from __future__ import annotations

import bisect
import threading
from collections import deque
from typing import Deque, List, Optional, Sequence, Tuple

Sample = Tuple[float, float]  # (time.monotonic() seconds, watts)


def energy_j(samples: Sequence[Sample], t0: float, t1: float, max_gap: float) -> Optional[float]:
    """Joules drawn from t0 to t1 (seconds, the samples' clock): the trapezoid rule over the samples
    inside, with the power at t0 and t1 interpolated (or held at the nearest sample past the ends).
    None when there is no sample, or when any stretch of the interval is more than `max_gap` from a sample."""
    if not samples or t1 < t0:
        return None
    times = [t for t, _ in samples]
    if t0 < times[0] - max_gap or t1 > times[-1] + max_gap:
        return None
    lo = bisect.bisect_right(times, t0)  # samples[lo:hi] lie strictly inside (t0, t1)
    hi = bisect.bisect_left(times, t1, lo)
    points: List[Sample] = [(t0, _power_at(samples, times, t0))]
    points += list(samples[lo:hi])
    points.append((t1, _power_at(samples, times, t1)))
    if any(tb - ta > max_gap for (ta, _), (tb, _) in zip(points, points[1:])):
        return None  # a stall inside the interval: no sample covers part of it
    return sum((tb - ta) * (pa + pb) / 2.0 for (ta, pa), (tb, pb) in zip(points, points[1:]))


def _power_at(samples: Sequence[Sample], times: Sequence[float], t: float) -> float:
    i = bisect.bisect_left(times, t)
    if i < len(times) and times[i] == t:
        return samples[i][1]
    if i == 0:
        return samples[0][1]
    if i == len(times):
        return samples[-1][1]
    (ta, pa), (tb, pb) = samples[i - 1], samples[i]
    return pa + (pb - pa) * (t - ta) / (tb - ta)


class PowerTrace:
    """The last `capacity` power samples, appended by the telemetry thread, read by requests."""

    def __init__(self, capacity: int, max_gap: float) -> None:
        self.max_gap = max_gap
        self._samples: Deque[Sample] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, t: float, watts: float) -> None:
        with self._lock:
            if self._samples and t <= self._samples[-1][0]:
                return  # the clock is monotonic; a repeated timestamp adds nothing
            self._samples.append((t, watts))

    def samples(self) -> List[Sample]:
        with self._lock:
            return list(self._samples)

    def energy_j(self, t0: float, t1: float) -> Optional[float]:
        return energy_j(self.samples(), t0, t1, self.max_gap)


__all__ = ["PowerTrace", "Sample", "energy_j"]
