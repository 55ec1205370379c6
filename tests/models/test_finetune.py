"""finetune: the loss mask, converters, held-out loss going down, resume, LoRA, frozen tower, and
that the result loads, exports and answers with the existing commands. Trains for seconds on tiny data."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors  # noqa: E402

from models.checkpoint.reader import read_all_tensors, read_checkpoint  # noqa: E402
from models.checkpoint.writer import make_checkpoint  # noqa: E402
from models.config import IMAGE_TOKEN_INDEX  # noqa: E402
from models.finetune.convert import to_conversations  # noqa: E402
from models.finetune.data import IGNORE_INDEX, encode  # noqa: E402
from models.finetune.train import TrainConfig, finetune  # noqa: E402
from models.processor import Processor, TextTokenizer  # noqa: E402
from models.processor.templates import Template  # noqa: E402
from models.synthetic.dataset import make_dataset  # noqa: E402
from server.eval.datasets import load_dataset  # noqa: E402

I = IGNORE_INDEX


def _word_tokenizer() -> TextTokenizer:
    words = ["<unk>", "<s>", "</s>", "SYS", "USER", ":", "ASSISTANT", "Is", "it", "CT", "?", "yes", "Where",
             "left", "side", "Describe"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return TextTokenizer(tok, eos_token="</s>")


def test_labels_are_the_assistant_tokens_and_their_separator_only() -> None:
    tok = _word_tokenizer()
    template = Template("t", "SYS", sep2="</s>")
    record = {"image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nIs it CT?"}, {"from": "gpt", "value": "yes"},
        {"from": "human", "value": "Where?"}, {"from": "gpt", "value": "left side"}]}
    ex = encode(tok, template, record)
    # "SYS USER: <image>\nIs it CT? ASSISTANT: yes</s>USER: Where? ASSISTANT: left side</s>", one word a token;
    # the second chunk's BOS is dropped (LLaVA tokenizer_image_token), the image is one sentinel.
    words = ["<s>", "SYS", "USER", ":", None, "Is", "it", "CT", "?", "ASSISTANT", ":", "yes", "</s>",
             "USER", ":", "Where", "?", "ASSISTANT", ":", "left", "side", "</s>"]
    learned = {11, 12, 19, 20, 21}  # yes </s> left side </s>
    expect_ids = [IMAGE_TOKEN_INDEX if w is None else tok.token_to_id(w) for w in words]
    assert ex.input_ids == expect_ids
    assert ex.labels == [expect_ids[i] if i in learned else I for i in range(len(words))]
    # The ids are what inference's encoder makes of the same text.
    text = "SYS USER: <image>\nIs it CT? ASSISTANT: yes</s>USER: Where? ASSISTANT: left side</s>"
    assert tok.encode_with_image(text) == expect_ids


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ft") / "tiny-start", "tiny", "llava", seed=1, progress=False)


def test_real_tokenizer_prefix_is_the_served_prompt_and_labels_decode_to_the_answer(tiny_ckpt: Path) -> None:
    ckpt = read_checkpoint(tiny_ckpt)
    proc = Processor(ckpt.config, TextTokenizer(ckpt.load_tokenizer()))
    # "2" is SentencePiece "▁" + "2" (digits split): the "▁" the model must generate is learned too.
    for question, reply in (("Where is the lesion?", "left"), ("How many lesions are there?", "2"),
                            ("Is there a lesion?", "yes")):
        record = {"image": "a.png", "conversations": [{"from": "human", "value": "<image>\n" + question},
                                                      {"from": "gpt", "value": reply}]}
        ex = encode(proc.tokenizer, proc.template, record)
        prompt = proc.prompt_ids(question)
        assert ex.input_ids[:len(prompt)] == prompt
        assert all(label == I for label in ex.labels[:len(prompt)])
        answer = [t for t in ex.labels if t != I]
        assert answer == ex.input_ids[len(prompt):] and answer[-1] == proc.eos_id
        assert proc.decode(answer) == reply


@pytest.fixture(scope="module")
def vqa_rad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("vqarad") / "d", seed=0, train=24, test=6, fmt="vqa-rad",
                        progress=False)


@pytest.mark.parametrize("fmt", ["vqa-rad", "slake"])
def test_converters_give_one_conversation_per_eval_item(tmp_path: Path, fmt: str) -> None:
    root = make_dataset(tmp_path / "d", seed=0, train=5, test=3, fmt=fmt, progress=False)
    records, images = to_conversations(fmt, root, "train")
    items = load_dataset(fmt, root, "train")
    assert len(records) == len(items)
    for rec, item in zip(records, items):
        assert (images / rec["image"]).resolve() == item.image_path.resolve()
        assert rec["conversations"] == [{"from": "human", "value": "<image>\n" + item.question},
                                        {"from": "gpt", "value": item.answer}]


def test_pathvqa_converter(tmp_path: Path) -> None:
    from tests.server.eval_fixtures import PATHVQA_TEST, write_pathvqa

    records, images = to_conversations("pathvqa", write_pathvqa(tmp_path), "test")
    assert [r["conversations"][1]["value"] for r in records] == [q["answer"] for q in PATHVQA_TEST]
    assert all((images / r["image"]).is_file() for r in records)


def test_finetune_lowers_held_out_loss_and_the_result_loads_exports_and_answers(
        tiny_ckpt: Path, vqa_rad: Path, tmp_path: Path) -> None:
    train, images = to_conversations("vqa-rad", vqa_rad, "train")
    held_out, _ = to_conversations("vqa-rad", vqa_rad, "test")
    out = tmp_path / "tuned"
    summary = finetune(tiny_ckpt, train, images, out, TrainConfig(epochs=2, lr=3e-3, batch_size=16),
                       eval_records=held_out, progress=False)
    assert summary["eval_loss_after"] < 0.8 * summary["eval_loss_before"]
    # frozen tower by default: the vision tensors are the starting checkpoint's
    before, after = read_all_tensors(tiny_ckpt), read_all_tensors(out)
    assert sorted(before) == sorted(after)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("vision_tower."))
    assert not torch.equal(before["connector.linear_1.weight"], after["connector.linear_1.weight"])
    assert read_checkpoint(out).layout == "llava"

    from server.cli import main

    bundle = tmp_path / "bundle"
    assert main(["export", str(out), "--out", str(bundle)]) == 0
    image = next(iter(sorted((images).glob("*.png"))))
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["ask", "--bundle", str(bundle), "--image", str(image), "--question", "Is this an MRI image?",
                     "--max-tokens", "8", "--json"]) == 0
    answer = json.loads(buf.getvalue())["answer"]
    assert answer in ("yes", "no")  # a yes/no question after VQA training gets a yes/no answer


def test_resumed_run_equals_an_uninterrupted_one(tiny_ckpt: Path, vqa_rad: Path, tmp_path: Path) -> None:
    train, images = to_conversations("vqa-rad", vqa_rad, "train")
    train = train[:40]
    cfg = TrainConfig(epochs=1, lr=1e-3, batch_size=4, grad_accum=2, save_every=2)
    finetune(tiny_ckpt, train, images, tmp_path / "whole", cfg, progress=False)
    stopped = finetune(tiny_ckpt, train, images, tmp_path / "parts", TrainConfig(**{**cfg.__dict__, "max_steps": 3}),
                       progress=False)
    assert (tmp_path / "parts" / "trainer_state.pt").is_file() and stopped["history"][-1][0] == 3
    with pytest.raises(Exception, match="other data or settings"):
        finetune(tiny_ckpt, train[:20], images, tmp_path / "parts", cfg, resume=True, progress=False)
    finetune(tiny_ckpt, train, images, tmp_path / "parts", cfg, resume=True, progress=False)
    a, b = read_all_tensors(tmp_path / "whole"), read_all_tensors(tmp_path / "parts")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not (tmp_path / "parts" / "trainer_state.pt").exists()


def test_lora_trains_adapters_and_merges_them(tiny_ckpt: Path, vqa_rad: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    train, images = to_conversations("vqa-rad", vqa_rad, "train")
    finetune(tiny_ckpt, train[:64], images, tmp_path / "lora", TrainConfig(epochs=1, lr=1e-2, batch_size=16, lora_r=4),
             progress=False)
    before, after = read_all_tensors(tiny_ckpt), read_all_tensors(tmp_path / "lora")
    assert sorted(before) == sorted(after)  # merged: no adapter tensors left, same names
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "language_model.layers.0.self_attn.q_proj.weight" in changed
    assert "connector.linear_2.weight" in changed
    # LoRA touches only the adapted linears: embeddings, norms, lm_head and the tower stay
    assert not {k for k in changed if "embed_tokens" in k or "norm" in k or k.startswith(("lm_head", "vision"))}
