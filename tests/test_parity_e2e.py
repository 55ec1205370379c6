"""End to end, three implementations, one set of weights (issues: foundation + export/runtime).

For each tiny family (Llama+SigLIP, Phi+SigLIP, Llama+CLIP) a random checkpoint is written in the
hf layout, so transformers loads it unmodified with from_pretrained (the oracle), our strict reader
loads it into our PyTorch model (`ask --checkpoint`), and the exporter turns it into an ONNX bundle
that ONNX Runtime answers from (`ask --bundle`). All three must produce the same 32 greedy tokens
on every probe, and the last-position prompt logits must agree within 1e-4.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from engine_build.export import export_bundle  # noqa: E402
from models.checkpoint.writer import make_checkpoint  # noqa: E402
from models.config import IMAGE_TOKEN_INDEX  # noqa: E402
from models.pipeline import TorchPipeline  # noqa: E402
from models.probes import probes  # noqa: E402
from server.cli import main as cli  # noqa: E402
from server.runtime.pipeline import BundlePipeline  # noqa: E402
from server.runtime.request import GenerationParams  # noqa: E402

PRESETS = ("tiny", "tiny-phi", "tiny-clip")
NEW_TOKENS = 32
PROBES = list(probes())[::3][:5]  # 5 (image, question) pairs spread over the probe set


@pytest.fixture(scope="module", params=PRESETS)
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, object]:
    root = tmp_path_factory.mktemp(request.param)
    ckpt = make_checkpoint(root / "ckpt", request.param, "hf", seed=1, progress=False)
    bundle = export_bundle(str(ckpt), str(root / "bundle"), max_context=128)
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(str(ckpt), attn_implementation="eager").eval()
    hf.generation_config.eos_token_id = None  # generate all NEW_TOKENS, as ours do with ignore_eos
    hf_proc = transformers.AutoProcessor.from_pretrained(str(ckpt))
    return {"ckpt": ckpt, "bundle": bundle, "hf": hf, "hf_proc": hf_proc,
            "torch": TorchPipeline(ckpt), "ort": BundlePipeline(bundle)}


def _hf_inputs(family: Dict[str, object], prompt_ids: List[int], image) -> Dict[str, "torch.Tensor"]:
    hf, proc = family["hf"], family["hf_proc"]
    # transformers' own processor decides how many image tokens one "<image>" expands to.
    expanded = proc(text="<image>", images=image, return_tensors="pt")
    num_image_tokens = int((expanded["input_ids"] == hf.config.image_token_index).sum())
    pixel_values = expanded["pixel_values"]
    ids: List[int] = []
    for t in prompt_ids:
        ids.extend([hf.config.image_token_index] * num_image_tokens if t == IMAGE_TOKEN_INDEX else [t])
    input_ids = torch.tensor([ids])
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values": pixel_values}


@pytest.mark.parametrize("probe", range(len(PROBES)))
def test_three_way_greedy_and_logits(family: Dict[str, object], probe: int) -> None:
    _, image, question = PROBES[probe]
    ours = family["torch"].ask(image, question, max_tokens=NEW_TOKENS, ignore_eos=True)
    ort = family["ort"].ask(image, question, max_tokens=NEW_TOKENS, ignore_eos=True)
    inputs = _hf_inputs(family, ours["prompt_token_ids"], image)
    with torch.no_grad():
        hf_out = family["hf"].generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False,
                                       pad_token_id=0)[0, inputs["input_ids"].shape[1]:].tolist()
        hf_logits = family["hf"](**inputs).logits[0, -1].float().numpy()

    assert len(hf_out) == NEW_TOKENS
    assert ours["output_token_ids"] == hf_out
    assert ort["output_token_ids"] == hf_out
    assert ort["prompt_token_ids"] == ours["prompt_token_ids"]
    assert ort["answer"] == ours["answer"]

    # Last-position prompt logits: ours (PyTorch) and ours (ONNX Runtime) against transformers.
    from models.generate import generate

    pipe = family["torch"]
    pixels = torch.from_numpy(pipe.processor.pixels(image))
    ref = generate(pipe.model, ours["prompt_token_ids"], pixels, max_new_tokens=1, return_logits=True)
    np.testing.assert_allclose(ref.logits[0].numpy(), hf_logits, atol=1e-4, rtol=0)
    gen = family["ort"].runtime.generator
    run = gen.generate(ours["prompt_token_ids"], pipe.processor.pixels(image),
                       GenerationParams(max_tokens=1, return_logits=True))
    np.testing.assert_allclose(run.logits[0], hf_logits, atol=1e-4, rtol=0)


def test_cli_json_matches_pipelines(family: Dict[str, object], capsys: pytest.CaptureFixture,
                                    tmp_path: Path) -> None:
    """`ask --checkpoint` and `ask --bundle` print the same JSON answer and ids."""
    name, image, question = PROBES[0]
    path = tmp_path / "probe.png"
    image.save(path)
    outs = []
    for flag, src in (("--checkpoint", family["ckpt"]), ("--bundle", family["bundle"])):
        assert cli(["ask", flag, str(src), "--image", str(path), "--question", question, "--max-tokens",
                    str(NEW_TOKENS), "--ignore-eos", "--json"]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    for key in ("answer", "prompt_token_ids", "output_token_ids"):
        assert outs[0][key] == outs[1][key]
    assert len(outs[0]["output_token_ids"]) == NEW_TOKENS
    assert outs[0]["prompt_token_ids"].count(IMAGE_TOKEN_INDEX) == 1
    assert {"ttft_ms", "prefill_ms", "image_encode_ms"} <= set(outs[1]["timings"])
