"""The technicians' page at '/' in headless Chromium: upload (PNG and DICOM), ask, answer shown.

The real server runs in a subprocess with an API key; tests/server/browser/drive.mjs drives Debian's
chromium through playwright-core like a technician (first without the key, then with it) and reports
what the page showed. The oracle is the API itself, called here without a browser: the page must show
the same greedy answer and the server's own error messages.

Needs /usr/bin/chromium, node and `npm ci` in tests/server/browser: scripts/install-browser sets them up
(scripts/test runs it); the test skips with the reason when they are missing.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from tests.server.service_process import ROOT, ServerProcess, serving

pydicom_data = pytest.importorskip("pydicom.data")

BROWSER_DIR = Path(__file__).resolve().parents[1] / "browser"
CHROMIUM = os.environ.get("TINYLLAVA_TEST_CHROMIUM", "/usr/bin/chromium")
SAMPLE_PNG = ROOT / "models" / "assets" / "synthetic_xray_chest.png"  # the demo answers "X-ray": 5 tokens
KEY = "page-test-key-3f9a"
QUESTION = "What modality is this?"
MAX_TOKENS = 12
BAD_BYTES = b"this is a note, not an image\n" * 4


def _missing() -> str:
    if not Path(CHROMIUM).exists():
        return "%s is not installed (scripts/install-browser: apt-get install chromium)" % CHROMIUM
    node = shutil.which("node")
    if node is None:
        return "node is not installed (scripts/install-browser: apt-get install nodejs npm)"
    version = subprocess.run([node, "--version"], stdout=subprocess.PIPE).stdout.decode().strip()
    if int(version.lstrip("v").split(".")[0] or 0) < 20:
        return "playwright-core needs Node.js >= 20; this node is %s" % version
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed (scripts/install-browser: npm ci in %s)" % BROWSER_DIR
    return ""


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    reason = _missing()
    if reason:
        print("SKIP test_page_browser: " + reason)
        pytest.skip(reason)
    with serving(ServerProcess(tmp_path_factory.mktemp("page-server"), {"TINYLLAVA_API_KEYS": KEY})) as server:
        yield server


def _api_vqa(server: ServerProcess, path: Path, key: str = KEY) -> Dict[str, Any]:
    """The same request the page makes, but non-streamed and without a browser: the oracle."""
    headers = {"Authorization": "Bearer " + key} if key else {}
    with server.client() as client, open(path, "rb") as f:
        r = client.post("/v1/vqa", headers=headers, files={"image": (path.name, f)},
                        data={"question": QUESTION, "max_tokens": str(MAX_TOKENS)})
    body = r.json()
    body["status_code"] = r.status_code
    return body


def _drive(server: ServerProcess, tmp_path: Path, config: Dict[str, Any]) -> Dict[str, Any]:
    config = dict(config, url=server.url + "/", chromium=CHROMIUM, screenshotDir=str(tmp_path))
    config_path = tmp_path / "drive.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    proc = subprocess.run(["node", str(BROWSER_DIR / "drive.mjs"), str(config_path)], cwd=str(BROWSER_DIR),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=180)
    assert proc.returncode == 0, "drive.mjs failed:\n%s\nserver log tail:\n%s" % (
        proc.stderr.decode(errors="replace")[-4000:], server.logs()[-2000:])
    return json.loads(proc.stdout.decode("utf-8").strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_page_upload_ask_answer(page_server: ServerProcess, tmp_path: Path) -> None:
    dicom = tmp_path / "CT_small.dcm"
    shutil.copyfile(pydicom_data.get_testdata_file("CT_small.dcm"), dicom)
    bad = tmp_path / "notes.png"
    bad.write_bytes(BAD_BYTES)

    expected_png = _api_vqa(page_server, SAMPLE_PNG)
    expected_dcm = _api_vqa(page_server, dicom)
    expected_bad = _api_vqa(page_server, bad)
    expected_401 = _api_vqa(page_server, SAMPLE_PNG, key="")
    assert expected_png["status_code"] == 200 and expected_dcm["status_code"] == 200
    assert expected_png["answer"] and expected_dcm["answer"], "the oracle answers are empty: pick another question"
    assert 400 <= expected_bad["status_code"] < 500 and expected_401["status_code"] == 401

    case = {"question": QUESTION, "maxTokens": MAX_TOKENS}
    out = _drive(page_server, tmp_path, {
        "withoutKey": dict(case, image=str(SAMPLE_PNG)),
        "apiKey": KEY,
        "cases": [dict(case, image=str(SAMPLE_PNG)), dict(case, image=str(dicom)), dict(case, image=str(bad))],
    })

    assert out["title"] == "TinyLLaVA-Med"
    assert out["health"] == "ready"
    # The embedded synthetic-image demo says what it is, visibly, before anyone asks it anything.
    assert out["modelNote"] and "Not for clinical use" in out["modelNote"]
    assert "tinyllava-med-synthetic-demo" in out["modelNote"]
    # Without the key: the page loads (public), the API refuses, and the server's message is shown.
    assert out["withoutKey"]["state"] == "error" and out["withoutKey"]["errorVisible"]
    assert expected_401["error"]["message"] in out["withoutKey"]["error"]
    assert "API key" in out["systemNoteWithoutKey"]

    png_case, dcm_case, bad_case = out["cases"]
    print("page: answer updates %s, timings %s" % ([c["answerUpdates"] for c in out["cases"]], png_case["timings"]))
    for shown, expected in ((png_case, expected_png), (dcm_case, expected_dcm)):
        assert shown["state"] == "done", shown
        assert not shown["errorVisible"]
        assert shown["answer"] == expected["answer"]  # greedy: the streamed answer equals the API's
        assert shown["contentType"].startswith("text/event-stream")
        if shown is png_case:  # a 5-token answer, shown piece by piece as the stream arrived
            assert shown["answerUpdates"] >= 3, shown
        assert shown["timingsVisible"]
        timings = shown["timings"]
        for name in ("Time to first token", "Prefill", "Image encode", "Total (server)"):
            assert re.match(r"\d+\.\d ms", timings[name]), (name, timings[name])
        assert re.fullmatch(r"\d+\.\d tok/s", timings["Decode"]), timings["Decode"]
        assert timings["Tokens"].startswith("%d prompt" % expected["usage"]["prompt_tokens"])
        assert timings["Model"] == expected["model"]
        assert Path(shown["screenshot"]).stat().st_size > 10_000
    info = expected_dcm["image"]
    assert dcm_case["imageInfo"].startswith("DICOM, %d × %d" % (info["width"], info["height"]))
    assert "modality CT" in dcm_case["imageInfo"]
    assert png_case["imageInfo"].startswith("PNG, ")

    # A file that is not an image: the server's own 4xx message, on the page.
    assert bad_case["state"] == "error" and bad_case["errorVisible"]
    assert expected_bad["error"]["message"] in bad_case["error"]
    assert str(expected_bad["status_code"]) in bad_case["error"]

    # Telemetry once the key is in; the key lives in sessionStorage only.
    assert {"Model", "CPU", "Memory", "Server process"} <= set(out["telemetry"])
    assert out["telemetry"]["Model"].startswith(expected_png["model"])
    assert out["keyInSessionStorage"] == KEY and out["keyInLocalStorage"] == 0

    # Nothing from outside this server (no CDN), no script errors, every control labelled.
    own = (page_server.url + "/", "blob:" + page_server.url + "/")  # blob: the local preview of the PNG
    assert out["requests"] and all(u.startswith(own) for u in out["requests"]), out["requests"]
    assert out["pageErrors"] == []
    assert not [m for m in out["consoleErrors"] if "Content Security Policy" in m], out["consoleErrors"]
    assert all(c["labelled"] for c in out["accessibleNames"]), out["accessibleNames"]
