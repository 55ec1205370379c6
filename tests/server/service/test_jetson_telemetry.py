"""jtop telemetry: parsing 4.x / 7.x / 3.x structures, the paths where jtop is missing, and a live
server whose jtop is a fake replaying a recorded structure (energy_j in every answer, /v1/system, /metrics)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterator

import httpx
import pytest

from server.service.jetson import JtopConfig, JtopTelemetry, parse_jtop
from tests.server.service_process import ROOT, ServerProcess, serving

DATA = Path(__file__).parent / "data"
FAKE_JTOP = Path(__file__).parent / "fake_jtop"
SAMPLE = ROOT / "models" / "assets" / "sample_ct.png"
KB = 1024


def fixture(version: str) -> Dict[str, Any]:
    return json.loads((DATA / ("jtop-%s-xavier.json" % version)).read_text())


def test_parse_jtop_4x() -> None:
    d = fixture("4.2.12")
    s = parse_jtop(d["stats"], d["memory"], d["power"])
    assert s.gpu_load_percent == 47.3
    assert s.power_w == pytest.approx(13.438)  # power['tot']['power'] = 13438 mW, the rails' sum on Xavier
    assert s.rails_w == pytest.approx({"GPU": 6.128, "CPU": 1.226, "SOC": 2.144, "CV": 0.0, "VDDRQ": 0.919,
                                       "SYS5V": 3.021})
    assert s.ram_total_bytes == 31928104 * KB and s.ram_used_bytes == 12331092 * KB
    assert s.gpu_shared_ram_bytes == 4817220 * KB  # the iGPU's share of RAM
    assert s.temperatures_c["GPU"] == 41.0 and s.temperatures_c["Tdiode"] == 40.25 and len(s.temperatures_c) == 8
    assert (s.nvpmodel, s.jetson_clocks) == ("MODE_30W_ALL", False)


def test_parse_jtop_7x() -> None:
    d = fixture("7.2.2")
    s = parse_jtop(d["stats"], d["memory"], d["power"])
    assert s.gpu_load_percent == 88.6
    assert s.power_w == pytest.approx(20.302)
    assert s.rails_w["GPU"] == pytest.approx(9.846) and len(s.rails_w) == 6
    assert s.gpu_shared_ram_bytes == 5288044 * KB and s.ram_used_bytes == 13145500 * KB
    assert "CV0" not in s.temperatures_c  # offline: -256 (jtop's TEMPERATURE_OFFLINE)
    assert s.temperatures_c["CPU"] == 49.0
    assert (s.nvpmodel, s.jetson_clocks) == ("MAXN", True)


def test_parse_jtop_3x_names() -> None:
    d = fixture("3.1.4")
    s = parse_jtop(d["stats"], None, tuple(d["power"]), d["ram"])
    assert s.power_w == pytest.approx(9.876)
    assert s.rails_w["SYS5V"] == pytest.approx(2.875)
    assert s.gpu_load_percent == 23.0
    assert s.ram_used_bytes == 9521340 * KB and s.gpu_shared_ram_bytes == 2010112 * KB
    assert s.nvpmodel == "MODE_15W"


def test_parse_flat_stats_alone() -> None:
    """Without the structured properties the flat stats still give power and rails (4.x/7.x keys)."""
    d = fixture("4.2.12")
    s = parse_jtop(d["stats"])
    assert s.power_w == pytest.approx(13.438) and s.rails_w["SOC"] == pytest.approx(2.144)
    assert s.ram_total_bytes is None


def test_unavailable_without_jetson_stats() -> None:
    t = JtopTelemetry(JtopConfig(module="jtop_not_installed_here"))
    t.start()
    snap = t.snapshot()
    assert snap["status"] == "unavailable" and "jetson-stats" in snap["reason"]
    assert t.energy_j(0.0, 1.0) is None


@pytest.fixture
def fake_jtop(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(FAKE_JTOP))
    monkeypatch.setenv("FAKE_JTOP_FIXTURE", str(DATA / "jtop-7.2.2-xavier.json"))
    sys.modules.pop("jtop", None)
    yield
    sys.modules.pop("jtop", None)


def test_unavailable_without_the_socket(fake_jtop: None, tmp_path: Path) -> None:
    t = JtopTelemetry(JtopConfig(socket=tmp_path / "jtop.sock"))
    t.start()
    snap = t.snapshot()
    assert snap["status"] == "unavailable"
    assert str(tmp_path / "jtop.sock") in snap["reason"] and "systemctl start jtop.service" in snap["reason"]


def test_unavailable_when_the_service_refuses(fake_jtop: None, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_JTOP_FAIL", "1")
    sock = tmp_path / "jtop.sock"
    sock.touch()
    t = JtopTelemetry(JtopConfig(socket=sock, interval_s=0.01))
    t.start()
    assert t.wait_settled(30)
    t.stop()
    snap = t.snapshot()
    assert snap["status"] == "unavailable" and "jtop.service is not active" in snap["reason"]


def test_live_samples_feed_snapshot_and_trace(fake_jtop: None, tmp_path: Path) -> None:
    sock = tmp_path / "jtop.sock"
    sock.touch()
    t = JtopTelemetry(JtopConfig(socket=sock, interval_s=0.01))
    t.start()
    assert t.wait_settled(30)
    t.stop()
    snap = t.snapshot()
    assert snap["status"] == "ok" and snap["jetson_stats"] == "fake"
    assert snap["power_w"] == pytest.approx(20.302) and snap["nvpmodel"] == "MAXN"
    samples = t.trace.samples()
    assert samples and all(w == pytest.approx(20.302) for _, w in samples)


def test_server_reports_energy_per_answer(tmp_path: Path) -> None:
    """A real server with the fake jtop (constant 13.438 W): each answer's energy_j is that power times
    its generation time; /v1/system and /metrics carry the sample."""
    sock = tmp_path / "jtop.sock"
    sock.touch()
    env = {"PYTHONPATH": "%s:%s" % (FAKE_JTOP, ROOT), "FAKE_JTOP_FIXTURE": str(DATA / "jtop-4.2.12-xavier.json"),
           "TINYLLAVA_JTOP_SOCKET": str(sock), "TINYLLAVA_JTOP_INTERVAL": "0.2"}
    with serving(ServerProcess(tmp_path, env=env)) as server:
        with server.client() as c:
            system = _wait_for_jetson(c)
            assert system["jetson"]["power_w"] == pytest.approx(13.438)
            assert system["jetson"]["gpu_shared_ram_bytes"] == 4817220 * KB
            r = c.post("/v1/vqa", files={"image": SAMPLE.read_bytes()}, data={"question": "Is there a fracture?",
                                                                               "max_tokens": "8"})
            assert r.status_code == 200, r.text
            timings = r.json()["timings"]
            assert timings["energy_j"] == pytest.approx(13.438 * timings["total_ms"] / 1000.0, abs=2e-3)
            assert timings["energy_j"] > 0
            metrics = c.get("/metrics").text
        assert 'tinyllava:device_rail_power_watts{rail="GPU"} 6.128' in metrics
        assert "tinyllava:device_power_watts 13.438" in metrics
        assert "tinyllava:device_telemetry_available 1.0" in metrics
        assert 'tinyllava:device_nvpmodel_info{mode="MODE_30W_ALL"} 1.0' in metrics
        assert server.metric("tinyllava:energy_joules_total") == pytest.approx(timings["energy_j"], abs=1e-3)


def test_server_without_jtop_has_no_energy(tmp_path: Path) -> None:
    with serving(ServerProcess(tmp_path)) as server:
        with server.client() as c:
            jetson = c.get("/v1/system").json()["jetson"]
            assert jetson["status"] == "unavailable" and "jetson-stats" in jetson["reason"]
            r = c.post("/v1/vqa", files={"image": SAMPLE.read_bytes()}, data={"question": "Is there a fracture?",
                                                                               "max_tokens": "2"})
            assert r.status_code == 200 and "energy_j" not in r.json()["timings"]
        assert server.metric("tinyllava:device_telemetry_available") == 0.0


def _wait_for_jetson(c: httpx.Client) -> Dict[str, Any]:
    """/v1/system once the first jtop sample is in (the reader thread starts with the app)."""
    for _ in range(2000):
        body = c.get("/v1/system").json()
        if body["jetson"]["status"] != "starting":
            assert body["jetson"]["status"] == "ok", body["jetson"]
            return body  # type: ignore[no-any-return]
    raise AssertionError("jtop telemetry never started")
