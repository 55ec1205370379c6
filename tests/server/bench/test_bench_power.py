"""`bench` power and energy-per-answer columns, read through a fake jtop (no Jetson here), and the PNG chart.

The runtime's child runs the embedded demo bundle torch-free (so this runs in the Python 3.8 run too).
The fake replays jtop 7.2.2's recorded Xavier structure, whose total power is constant: each answer's
mean power must then be that reading exactly, and its energy that power times the answer's duration,
whatever the duration was.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict

import pytest

pytest.importorskip("onnxruntime")

from server.bench.runner import DEFAULT_FOLLOWUP, DEFAULT_QUESTION, SAMPLE_IMAGE, format_report, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
BUNDLE = ROOT / "server" / "assets" / "default-bundle"
SERVICE_TESTS = ROOT / "tests" / "server" / "service"
FIXTURE = SERVICE_TESTS / "data" / "jtop-7.2.2-xavier.json"
NEW_TOKENS = 3


def _bench(flags: list) -> Dict[str, Any]:
    return run(BUNDLE, SAMPLE_IMAGE, DEFAULT_QUESTION, DEFAULT_FOLLOWUP, NEW_TOKENS, repeat=2, threads=1,
               ours_flags=flags)


@pytest.fixture(scope="module")
def with_power(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    socket = tmp_path_factory.mktemp("jtop") / "jtop.sock"
    socket.write_text("")  # the child only checks that the socket exists; the fake client talks to no service
    old = {k: os.environ.get(k) for k in ("PYTHONPATH", "FAKE_JTOP_FIXTURE")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(SERVICE_TESTS / "fake_jtop")] +
                                               ([old["PYTHONPATH"]] if old["PYTHONPATH"] else []))
    os.environ["FAKE_JTOP_FIXTURE"] = str(FIXTURE)
    try:
        # A 1 s interval: a stall of 2.5 s would leave a gap, which a busy CI box does not reach.
        return _bench(["--jtop-socket", str(socket), "--jtop-interval", "1.0"])
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_power_and_energy_per_answer_from_jtop(with_power: Dict[str, Any]) -> None:
    recorded = json.loads(FIXTURE.read_text())
    watts = recorded["power"]["tot"]["power"] / 1000.0  # mW in jtop's structure: 20.302 W
    rows = with_power["rows"]
    assert [r["question"] for r in rows] == ["first", "followup"]
    for row in rows:
        assert row["power_w"] == pytest.approx(watts, abs=1e-3)
        # energy = the constant power x the generation's duration (medians of both: linear in the duration)
        assert row["energy_j"] == pytest.approx(watts * row["answer_ms"] / 1000.0, abs=2e-3)
        assert row["answer_ms"] >= row["ttft_ms"] * 0.999  # the interval spans the whole generation
    tele = with_power["systems"]["ours"]["telemetry"]
    assert tele["status"] == "ok" and tele["nvpmodel"] == recorded["stats"]["nvp model"]
    table = format_report(with_power)
    header = [line for line in table.splitlines() if "TTFT ms" in line][0]
    assert "power W" in header and "J/answer" in header
    assert "%.2f" % watts in table
    assert "power: jtop total board power, nvpmodel MAXN" in table


def test_no_power_columns_without_jtop(tmp_path: Path) -> None:
    rep = _bench(["--jtop-socket", str(tmp_path / "absent.sock")])
    assert all(not {"energy_j", "power_w", "answer_ms"} & set(r) for r in rep["rows"])
    tele = rep["systems"]["ours"]["telemetry"]
    assert tele["status"] == "unavailable" and tele["reason"]
    table = format_report(rep)
    assert "J/answer" not in table
    assert "power: unavailable (%s)" % tele["reason"] in table


def test_png_chart_has_energy_panels_only_where_measured(with_power: Dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    from server.bench.chart import write_chart

    out = tmp_path / "bench.png"
    titles = write_chart(with_power, out)
    assert titles[-2:] == ["mean power (W)", "energy per answer (J)"]
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > im.height > 0
    without = dict(with_power, rows=[{k: v for k, v in r.items() if k not in ("power_w", "energy_j")}
                                     for r in with_power["rows"]])
    assert write_chart(without, tmp_path / "b.png") == ["time to first token (ms)", "decode (tokens/s)",
                                                         "peak RSS (MiB)"]
