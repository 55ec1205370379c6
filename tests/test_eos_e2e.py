"""End of sequence from the checkpoint (issue 9): a Phi-2 decoder whose tokenizer ends on </s>.

transformers writes the checkpoint itself (LlavaForConditionalGeneration.save_pretrained with a
Phi text config, the Llama-style tiny tokenizer and processor, which have </s> and no
<|endoftext|>), and its generation_config names a *list* of end-of-sequence ids: </s> and a token
this model really emits a few steps in, so the stop is exercised. transformers' generate (the
reference), `ask --checkpoint` and `ask --bundle` must give the same tokens and stop at the same
place; before, `export` refused such a checkpoint ("looked for <|endoftext|>").
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Dict, List

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from engine_build.export import export_bundle  # noqa: E402
from models.checkpoint.writer import make_checkpoint  # noqa: E402
from models.config import IMAGE_TOKEN_INDEX  # noqa: E402
from models.pipeline import TorchPipeline  # noqa: E402
from models.probes import probes  # noqa: E402
from server.cli import main as cli  # noqa: E402

MAX_TOKENS = 24
_, IMAGE, QUESTION = next(iter(probes()))


def _hf_inputs(hf, proc, prompt_ids: List[int]) -> Dict[str, "torch.Tensor"]:
    expanded = proc(text="<image>", images=IMAGE, return_tensors="pt")
    n_image = int((expanded["input_ids"] == hf.config.image_token_index).sum())
    ids: List[int] = []
    for t in prompt_ids:
        ids.extend([hf.config.image_token_index] * n_image if t == IMAGE_TOKEN_INDEX else [t])
    input_ids = torch.tensor([ids])
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "pixel_values": expanded["pixel_values"]}


def _hf_generate(hf, proc, prompt_ids: List[int]) -> List[int]:
    inputs = _hf_inputs(hf, proc, prompt_ids)
    with torch.no_grad():
        out = hf.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False, pad_token_id=0)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


@pytest.fixture(scope="module")
def phi_with_s(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, object]:
    root = tmp_path_factory.mktemp("phi-eos")
    llama = make_checkpoint(root / "llama", "tiny", "hf", seed=1, progress=False)  # tokenizer + processor
    phi = make_checkpoint(root / "phi", "tiny-phi", "hf", seed=1, progress=False)  # a Phi text config
    lcfg = transformers.AutoConfig.from_pretrained(str(llama))
    text = copy.deepcopy(transformers.AutoConfig.from_pretrained(str(phi)).text_config)
    for key in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(text, key, getattr(lcfg.text_config, key))
    cfg = copy.deepcopy(lcfg)
    cfg.text_config = text
    proc = transformers.AutoProcessor.from_pretrained(str(llama))
    eos_s = proc.tokenizer.convert_tokens_to_ids("</s>")
    assert proc.tokenizer.eos_token == "</s>" and text.eos_token_id == eos_s
    assert "<|endoftext|>" not in proc.tokenizer.get_vocab()  # the Phi template's stop string is absent

    torch.manual_seed(0)
    hf = transformers.LlavaForConditionalGeneration(cfg).eval()
    assert type(hf.model.language_model).__name__ == "PhiModel"
    # A token the model emits a few steps in becomes a second end-of-sequence id.
    ckpt = root / "ckpt"
    proc.save_pretrained(str(ckpt))
    hf.generation_config.eos_token_id = None
    hf.save_pretrained(str(ckpt))
    prompt_ids = TorchPipeline(ckpt).ask(IMAGE, QUESTION, max_tokens=1)["prompt_token_ids"]
    free = _hf_generate(hf, proc, prompt_ids)
    at = next(i for i in range(3, len(free)) if free[i] not in free[:i] and free[i] != eos_s)
    hf.generation_config.eos_token_id = [eos_s, free[at]]
    hf.save_pretrained(str(ckpt))  # writes generation_config.json with the list
    assert json.loads((ckpt / "generation_config.json").read_text())["eos_token_id"] == [eos_s, free[at]]
    return {"ckpt": ckpt, "hf": hf, "proc": proc, "prompt_ids": prompt_ids, "free": free, "at": at,
            "bundle": export_bundle(str(ckpt), str(root / "bundle"), max_context=128)}


def test_same_tokens_from_transformers_ask_checkpoint_and_ask_bundle(phi_with_s, capsys, tmp_path: Path) -> None:
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(str(phi_with_s["ckpt"])).eval()
    want = _hf_generate(hf, phi_with_s["proc"], phi_with_s["prompt_ids"])
    at = phi_with_s["at"]
    assert want == phi_with_s["free"][:at + 1]  # transformers stopped on the list's second id
    image = tmp_path / "probe.png"
    IMAGE.save(image)
    outs = []
    for flag, src in (("--checkpoint", phi_with_s["ckpt"]), ("--bundle", phi_with_s["bundle"])):
        assert cli(["ask", flag, str(src), "--image", str(image), "--question", QUESTION, "--max-tokens",
                    str(MAX_TOKENS), "--json"]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    for out in outs:
        assert out["prompt_token_ids"] == phi_with_s["prompt_ids"]
        assert out["output_token_ids"] == want[:-1]  # ours leave the terminating stop token out
        assert out["finish_reason"] == "stop"
    assert outs[0]["answer"] == outs[1]["answer"]


def test_the_bundle_records_the_checkpoints_eos_ids(phi_with_s) -> None:
    manifest = json.loads((Path(phi_with_s["bundle"]) / "manifest.json").read_text())
    eos_s = phi_with_s["proc"].tokenizer.convert_tokens_to_ids("</s>")
    stop = phi_with_s["free"][phi_with_s["at"]]
    assert manifest["tokenizer"]["eos_token_id"] == eos_s and manifest["tokenizer"]["eos_token"] == "</s>"
    assert manifest["tokenizer"]["stop_token_ids"] == [eos_s, stop]
