"""Processor tests that need only numpy, Pillow and `tokenizers` (they also run under Python 3.8).

The transformers parity checks are in test_processor.py; these pin the documented prompt text,
LLaVA's expand2square / tokenizer_image_token semantics (tests/models/processor_refs.py), and
the image pipeline's shapes, dtypes and constants.
"""
from __future__ import annotations

import dataclasses
import io
from typing import Callable

import numpy as np
import pytest
from PIL import Image
from tokenizers import Tokenizer

from models.config import IMAGE_TOKEN_INDEX, ConfigError, ImageConfig, preset
from models.processor import ImageError, Processor, PromptError, TextTokenizer, TokenizerError
from models.processor.image import preprocess, shortest_edge_size
from models.processor.templates import TEMPLATES, get_template
from models.tokenizer_build import train_bpe
from tests.models.processor_refs import IMAGES, ct_like, tokenizer_image_token

VICUNA = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
LLAVA = ("A chat between a curious human and an artificial intelligence assistant. "
         "The assistant gives helpful, detailed, and polite answers to the human's questions.")


# ---- templates (the documented TinyLLaVA / LLaVA prompt format) ---------------------------

def test_vicuna_v1_single_turn_is_the_documented_prompt() -> None:
    got = get_template("vicuna_v1").prompt("Is there a fracture?")
    assert got == VICUNA + " USER: <image>\nIs there a fracture? ASSISTANT:"


def test_vicuna_v1_multi_turn_puts_the_image_in_the_first_turn_only() -> None:
    got = get_template("vicuna_v1").prompt("Where is it?", [("Is there a mass?", "Yes."), ("Is it large?", "No.")])
    assert got == (VICUNA + " USER: <image>\nIs there a mass? ASSISTANT: Yes.</s>"
                   "USER: Is it large? ASSISTANT: No.</s>USER: Where is it? ASSISTANT:")


def test_llava_v1_and_phi_variants() -> None:
    assert get_template("llava_v1").prompt("Q?") == LLAVA + " USER: <image>\nQ? ASSISTANT:"
    assert get_template("phi").prompt("Q?", [("A?", "B.")]) == (
        VICUNA + " USER: <image>\nA? ASSISTANT: B.<|endoftext|>USER: Q? ASSISTANT:")
    assert {n: t.stop_str for n, t in TEMPLATES.items()} == {
        "vicuna_v1": "</s>", "llava_v1": "</s>", "phi": "<|endoftext|>"}


def test_template_errors() -> None:
    with pytest.raises(ConfigError, match="unknown prompt template"):
        get_template("chatml")
    with pytest.raises(PromptError, match="reserved marker"):
        get_template("vicuna_v1").prompt("look at <image> here")
    with pytest.raises(PromptError, match="must be a string"):
        get_template("vicuna_v1").prompt(None)  # type: ignore[arg-type]


# ---- image ------------------------------------------------------------------------------

def _reference_pixels(img: Image.Image, cfg: ImageConfig) -> np.ndarray:
    """LLaVA's pipeline written out with numpy: pad with the mean colour (expand2square), resize
    with Pillow bicubic, centre-crop, x/255, (x - mean) / std."""
    rgb = np.asarray(img.convert("RGB"))
    h, w = rgb.shape[:2]
    if cfg.aspect == "pad" and h != w:
        side = max(h, w)
        canvas = np.empty((side, side, 3), np.uint8)
        canvas[:] = [int(m * 255) for m in cfg.mean]
        top, left = (side - h) // 2, (side - w) // 2
        canvas[top:top + h, left:left + w] = rgb
        rgb = canvas
    h, w = rgb.shape[:2]
    if cfg.resize == "exact":
        th, tw = cfg.size, cfg.size
    else:
        th, tw = (cfg.size, int(cfg.size * w / h)) if h <= w else (int(cfg.size * h / w), cfg.size)
    out = np.asarray(Image.fromarray(rgb).resize((tw, th), Image.BICUBIC)).astype(np.float64)
    y0, x0 = (th - cfg.size) // 2, (tw - cfg.size) // 2
    out = out[y0:y0 + cfg.size, x0:x0 + cfg.size] / 255.0
    return ((out - np.array(cfg.mean)) / np.array(cfg.std)).transpose(2, 0, 1)[None].astype(np.float32)


@pytest.mark.parametrize("make", [make for _, make in IMAGES], ids=[n for n, _ in IMAGES])
@pytest.mark.parametrize("name", ["tiny", "tiny-clip"])
@pytest.mark.parametrize("aspect", ["pad", "square"])
def test_pixels_follow_llava_pipeline(make: Callable[[], Image.Image], name: str, aspect: str) -> None:
    cfg = dataclasses.replace(preset(name).image, aspect=aspect)
    got = preprocess(make(), cfg)
    assert got.shape == (1, 3, cfg.size, cfg.size) and got.dtype == np.float32
    np.testing.assert_allclose(got, _reference_pixels(make(), cfg), rtol=0, atol=1e-5)


def test_pad_fill_is_the_mean_colour() -> None:
    cfg = preset("tiny").image  # SigLIP: mean 0.5 -> fill 127 -> (127/255 - 0.5) / 0.5
    x = preprocess(Image.new("RGB", (200, 20), (255, 0, 0)), cfg)
    np.testing.assert_allclose(x[0, :, 0, 0], [(127 / 255 - 0.5) / 0.5] * 3, atol=1e-6)
    np.testing.assert_allclose(x[0, :, cfg.size // 2, cfg.size // 2], [1.0, -1.0, -1.0], atol=1e-6)
    clip = preset("tiny-clip").image
    assert clip.pad_fill == (122, 116, 104)  # LLaVA's CLIP grey, as in its gradio demo


def test_clip_shortest_edge_truncates_like_transformers() -> None:
    assert shortest_edge_size(480, 640, 336) == (336, 448)
    assert shortest_edge_size(641, 480, 336) == (448, 336)  # 336 * 641 / 480 = 448.7 -> 448
    assert shortest_edge_size(100, 100, 56) == (56, 56)


def test_bytes_input_and_errors() -> None:
    img = ct_like(120, 90)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    cfg = preset("tiny").image
    np.testing.assert_array_equal(preprocess(buf.getvalue(), cfg), preprocess(img, cfg))
    with pytest.raises(ImageError, match="could not decode"):
        preprocess(b"not an image", cfg)
    with pytest.raises(ImageError, match="expected a PIL image"):
        preprocess("ct.png", cfg)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="aspect"):
        preprocess(img, dataclasses.replace(cfg, aspect="crop"))


# ---- tokenizer (GPT-2 style BPE: trained with `tokenizers` only) --------------------------

@pytest.fixture(scope="module")
def phi_tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(train_bpe(tmp_path_factory.mktemp("phi_tok"), 1024))


QUESTIONS = [
    ("Is there a pleural effusion?", None),
    ("What modality is this?", [("Is there a mass in the liver?", "Yes, a 2.5 cm lesion.")]),
    ("  Leading spaces and a newline\ninside?", [("a", "b"), ("Ünïcödé 🙂?", "42")]),
]


@pytest.mark.parametrize("question,history", QUESTIONS)
def test_phi_prompt_ids_follow_llava(phi_tokenizer_json: str, question, history) -> None:
    proc = Processor(preset("tiny-phi"), phi_tokenizer_json)
    raw = Tokenizer.from_file(phi_tokenizer_json)
    want = tokenizer_image_token(proc.prompt(question, history), lambda s: raw.encode(s).ids, None)
    got = proc.prompt_ids(question, history)
    assert got == want
    assert got.count(IMAGE_TOKEN_INDEX) == 1
    assert proc.bos_id is None and proc.eos_id == 0 == raw.token_to_id("<|endoftext|>")
    # The history separators are the special token itself, not its characters.
    assert got.count(proc.eos_id) == len(history or [])
    head, tail = proc.prompt(question, history).split("<image>")
    cut = got.index(IMAGE_TOKEN_INDEX)
    assert raw.decode(got[:cut], skip_special_tokens=False) == head
    assert raw.decode(got[cut + 1:], skip_special_tokens=False) == tail


def test_system_text_replaces_the_templates(phi_tokenizer_json: str) -> None:
    proc = Processor(preset("tiny-phi"), phi_tokenizer_json)
    system = "You are a careful radiologist."
    prompt = proc.prompt("Is there a fracture?", [("What is this?", "An X-ray.")], system)
    assert prompt.startswith(system + " USER: <image>\n") and VICUNA not in prompt
    assert proc.prompt("Is there a fracture?").startswith(VICUNA + " ")
    want = proc.tokenizer.encode_with_image(prompt, IMAGE_TOKEN_INDEX)
    assert proc.prompt_ids("Is there a fracture?", [("What is this?", "An X-ray.")], system) == want


def test_decode_skips_specials_and_sentinels(phi_tokenizer_json: str) -> None:
    tok = TextTokenizer.from_file(phi_tokenizer_json)
    ids = tok.encode("The liver is normal.<|endoftext|>")
    assert ids[-1] == tok.eos_id
    assert tok.decode([IMAGE_TOKEN_INDEX] + ids) == "The liver is normal."


def test_tokenizer_file_errors(tmp_path, phi_tokenizer_json: str) -> None:
    with pytest.raises(TokenizerError, match="expected a tokenizer.json"):
        TextTokenizer.from_file(tmp_path / "missing.json")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="could not read"):
        TextTokenizer.from_file(tmp_path)
    with pytest.raises(TokenizerError, match="end-of-sequence id"):
        TextTokenizer(TextTokenizer.from_file(phi_tokenizer_json).backend, eos_token_ids=[10 ** 7])


def test_eos_comes_from_the_checkpoint_ids_and_the_template_stop_is_extra(phi_tokenizer_json: str) -> None:
    backend = TextTokenizer.from_file(phi_tokenizer_json).backend
    endoftext = backend.token_to_id("<|endoftext|>")
    # A template stop string the tokenizer lacks is no error: the EOS is the tokenizer's own.
    tok = TextTokenizer(backend, eos_token="</s>")
    assert (tok.eos_token, tok.eos_id, tok.stop_ids) == ("<|endoftext|>", endoftext, (endoftext,))
    # The checkpoint's ids (a list, as generation_config may hold) win; the template's stop is added.
    dot = backend.token_to_id(".")
    tok = TextTokenizer(backend, eos_token="<|endoftext|>", eos_token_ids=[dot, 7])
    assert (tok.eos_token, tok.eos_id, tok.stop_ids) == (".", dot, (dot, 7, endoftext))
