"""The README's curl examples, run verbatim with bash from the repository root against a real server.

The examples live between `<!-- curl-examples` and `<!-- /curl-examples -->` in README.md, each in a
```bash block. The server is the one the README starts (`tinyllava-med serve`: the embedded default
bundle, default settings) on 127.0.0.1:8000, the address the examples use. When port 8000 is taken on
this machine, the server runs on a free port and only the port in the examples' text is rewritten.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from models.synthetic.dataset import SAMPLES
from server.runtime.pipeline import BundlePipeline
from tests.server.service_process import DEFAULT_BUNDLE, ROOT, ServerProcess, serving, sse_events

README = ROOT / "README.md"
README_ADDRESS = "127.0.0.1:8000"
ASSETS = ROOT / "models" / "assets"
_SECTION = re.compile(r"<!-- curl-examples.*?-->(.*?)<!-- /curl-examples -->", re.S)
_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)

pytestmark = pytest.mark.skipif(shutil.which("curl") is None or shutil.which("base64") is None,
                                reason="the README's examples need curl and coreutils' base64")


def readme_examples() -> List[str]:
    section = _SECTION.search(README.read_text(encoding="utf-8"))
    assert section is not None, "README.md has no <!-- curl-examples --> ... <!-- /curl-examples --> section"
    return _BLOCK.findall(section.group(1))


def _port_8000_free() -> bool:
    # Under pytest-xdist each worker that runs a test of this module starts its own server: only the
    # first worker may take 8000, or a second server fails to bind and its fixture talks to the first.
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        return False
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8000))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def readme_server(service_log_dir: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(service_log_dir, bundle=DEFAULT_BUNDLE, port=8000 if _port_8000_free() else None)
    with serving(server):
        yield server




def run_example(server: ServerProcess, block: str) -> str:
    # Verbatim but for the port when 8000 was taken; -e and pipefail so that every command must succeed.
    text = block.replace(README_ADDRESS, "127.0.0.1:%d" % server.port)
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", text], cwd=str(ROOT), capture_output=True,
                          timeout=60)
    assert proc.returncode == 0, (block, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc.stdout.decode("utf-8")


def _json_values(text: str) -> Tuple[List[Any], List[str]]:
    """The JSON documents and the other (non-JSON) lines of a concatenated output, in order."""
    decoder = json.JSONDecoder()
    docs: List[Any] = []
    lines: List[str] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
        elif text[i] == "{":
            doc, i = decoder.raw_decode(text, i)
            docs.append(doc)
        else:
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            lines.append(text[i:end])
            i = end
    return docs, lines


def _check_usage(usage: Dict[str, Any]) -> None:
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_readme_has_the_examples() -> None:
    blocks = readme_examples()
    assert len(blocks) >= 4
    assert all(README_ADDRESS in b for b in blocks)


def test_multipart_example(readme_server: ServerProcess, model_id: str, reference: BundlePipeline) -> None:
    (block,) = [b for b in readme_examples() if "-F image=@" in b]
    assert "-F image=@models/assets/synthetic_mri_abdomen.dcm" in block and '-F question="Is there a lesion?"' in block
    assert "max_tokens" not in block  # so the server's default, 256 (server/service/settings.py), applies
    body = json.loads(run_example(readme_server, block))
    expected = reference.ask((ASSETS / "synthetic_mri_abdomen.dcm").read_bytes(), "Is there a lesion?", max_tokens=256)
    assert body["answer"] == expected["answer"]
    # A pasted curl gets the right answer: the sample was drawn with no lesion (models/synthetic SAMPLES).
    assert SAMPLES["synthetic_mri_abdomen.dcm"]["lesions"] == 0 and body["answer"] == "no"
    assert body["model"] == model_id and body["finish_reason"] == expected["finish_reason"]
    assert body["image"]["format"] == "dicom"
    _check_usage(body["usage"])
    assert body["usage"]["prompt_tokens"] == expected["timings"]["prompt_tokens"]
    # completion_tokens counts a stop token too; output_token_ids does not
    assert body["usage"]["completion_tokens"] == (len(expected["output_token_ids"])
                                                  + (expected["finish_reason"] == "stop"))


def test_streamed_json_example(readme_server: ServerProcess, model_id: str) -> None:
    (block,) = [b for b in readme_examples() if '"stream": true' in b and "/v1/vqa" in b]
    out = run_example(readme_server, block)
    assert out.rstrip("\n").endswith("data: [DONE]")
    events = sse_events(out)
    assert events[-1] == "[DONE]"
    final, deltas = events[-2], events[:-2]
    assert deltas and all(set(e) == {"request_id", "delta"} for e in deltas)
    assert final["answer"] == "".join(e["delta"] for e in deltas).strip()
    assert final["model"] == model_id and final["usage"]["completion_tokens"] <= 16  # "max_tokens": 16
    assert "synthetic_xray_chest.png" in block and '"question": "Where is the lesion?"' in block
    assert final["answer"] == SAMPLES["synthetic_xray_chest.png"]["side"]  # drawn on the patient's right
    _check_usage(final["usage"])


def test_chat_completions_example(readme_server: ServerProcess, model_id: str, reference: BundlePipeline) -> None:
    (block,) = [b for b in readme_examples() if "/v1/chat/completions" in b]
    # One user message: a single text part and the sample image, no system message, no history.
    assert '"max_tokens": 16' in block and block.count('"role"') == 1 and '"role": "user"' in block
    assert '{"type": "text", "text": "What imaging modality was used?"}' in block
    assert "base64 -w0 models/assets/synthetic_ct_head.png" in block
    body = json.loads(run_example(readme_server, block))
    assert body["object"] == "chat.completion" and body["model"] == model_id
    expected = reference.ask((ASSETS / "synthetic_ct_head.png").read_bytes(), "What imaging modality was used?",
                             max_tokens=16)
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip() == expected["answer"]
    assert expected["answer"] == SAMPLES["synthetic_ct_head.png"]["modality"] == "CT"
    assert choice["finish_reason"] == expected["finish_reason"]
    assert body["usage"]["completion_tokens"] <= 16  # "max_tokens": 16
    _check_usage(body["usage"])
    assert body["usage"]["prompt_tokens"] == expected["timings"]["prompt_tokens"]


def test_health_models_metrics_system_example(readme_server: ServerProcess, model_id: str) -> None:
    (block,) = [b for b in readme_examples() if "/health" in b]
    docs, lines = _json_values(run_example(readme_server, block))
    health, models, system = docs  # curl -s prints each JSON body without a newline; grep's lines between
    assert health["status"] == "ready" and health["model"] == model_id
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [model_id]
    names = {line.split()[0] for line in lines}
    assert names == {"tinyllava:num_requests_running", "tinyllava:num_requests_waiting"}, lines
    assert all(float(line.split()[1]) >= 0 for line in lines)
    assert system["service"]["model"] == model_id and system["memory"]["total_bytes"] > 0
