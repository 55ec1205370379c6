"""energy_j: board power integrated over a request by the trapezoid rule, from a recorded jtop trace."""
from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import List, Tuple

import pytest

from server.service.energy import PowerTrace, energy_j

TRACE = Path(__file__).parent / "data" / "power-trace.csv"
MAX_GAP = 1.25  # 2.5 x jtop's 0.5 s interval, as JtopTelemetry sets it


def recorded() -> List[Tuple[float, float]]:
    """(seconds since the first row, watts) from the CSV's `time` and `Power TOT` (mW) columns."""
    with TRACE.open() as f:
        rows = list(csv.DictReader(f))
    t0 = datetime.fromisoformat(rows[0]["time"])
    return [((datetime.fromisoformat(r["time"]) - t0).total_seconds(), int(r["Power TOT"]) / 1000.0) for r in rows]


def test_trace_reads_as_recorded() -> None:
    assert recorded() == [(0.0, 12.0), (0.5, 18.0), (1.0, 19.0), (1.5, 18.5), (2.0, 13.0), (2.5, 12.5)]


def test_energy_over_a_request_spanning_samples() -> None:
    # From 0.25 s to 2.25 s. Power at the ends, interpolated: P(0.25) = (12 + 18) / 2 = 15 W,
    # P(2.25) = (13 + 12.5) / 2 = 12.75 W. Trapezoids:
    #   0.25 * (15 + 18) / 2 = 4.125;  0.5 * (18 + 19) / 2 = 9.25;  0.5 * (19 + 18.5) / 2 = 9.375
    #   0.5 * (18.5 + 13) / 2 = 7.875; 0.25 * (13 + 12.75) / 2 = 3.21875          sum = 33.84375 J
    assert energy_j(recorded(), 0.25, 2.25, MAX_GAP) == pytest.approx(33.84375, abs=1e-9)


def test_energy_of_a_request_shorter_than_one_interval() -> None:
    # 1.1 s to 1.3 s, between the samples at 1.0 s (19 W) and 1.5 s (18.5 W): -1 W/s.
    # P(1.1) = 18.9, P(1.3) = 18.7; 0.2 * (18.9 + 18.7) / 2 = 3.76 J
    assert energy_j(recorded(), 1.1, 1.3, MAX_GAP) == pytest.approx(3.76, abs=1e-9)


def test_energy_past_the_last_sample_holds_its_power() -> None:
    # The answer is computed before the next sample: 2.4 s to 2.9 s, last sample 12.5 W at 2.5 s.
    # P(2.4) = 13 - 0.5 * 0.8 = 12.6; 0.1 * (12.6 + 12.5) / 2 + 0.4 * 12.5 = 1.255 + 5.0 = 6.255 J
    assert energy_j(recorded(), 2.4, 2.9, MAX_GAP) == pytest.approx(6.255, abs=1e-9)


def test_no_energy_without_samples_near_the_interval() -> None:
    samples = recorded()
    assert energy_j(samples, 1.0, 4.0, MAX_GAP) is None  # 1.5 s past the last sample: telemetry stalled
    assert energy_j(samples, -2.0, 1.0, MAX_GAP) is None  # before the first
    assert energy_j([], 0.0, 1.0, MAX_GAP) is None
    gappy = [(0.0, 10.0), (0.5, 10.0), (3.0, 10.0), (3.5, 10.0)]  # 2.5 s without a sample inside
    assert energy_j(gappy, 0.2, 3.2, MAX_GAP) is None
    assert energy_j(gappy, 0.1, 0.4, MAX_GAP) == pytest.approx(3.0)


def test_power_trace_keeps_the_last_samples_in_order() -> None:
    trace = PowerTrace(capacity=4, max_gap=MAX_GAP)
    for t, w in recorded():
        trace.add(t, w)
    trace.add(2.5, 99.0)  # a repeated timestamp is dropped
    assert trace.samples() == [(1.0, 19.0), (1.5, 18.5), (2.0, 13.0), (2.5, 12.5)]
    # 1.5 s .. 2.0 s: 0.5 * (18.5 + 13) / 2
    assert trace.energy_j(1.5, 2.0) == pytest.approx(7.875)
