"""Processor parity with transformers, the oracle: pixels vs the PIL SigLIP / CLIP image
processors, prompt ids vs LLaVA's tokenizer_image_token over transformers' slow SentencePiece
Llama tokenizer and its GPT-2 tokenizer. Needs transformers and sentencepiece (not torch)."""
from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

from PIL import Image  # noqa: E402

from models.config import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD, ImageConfig, preset  # noqa: E402
from models.processor import Processor  # noqa: E402
from models.processor.image import preprocess  # noqa: E402
from models.checkpoint.sentencepiece_convert import convert_sentencepiece  # noqa: E402
from models.tokenizer_build import train_bpe, train_sentencepiece  # noqa: E402
from tests.models.processor_refs import IMAGES, ct_like, expand2square, tokenizer_image_token  # noqa: E402

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])


# ---- pixels ------------------------------------------------------------------------------

def hf_image_processor(cfg: ImageConfig):
    """transformers' PIL image processor for cfg (transformers 5: *ImageProcessorPil; 4.x: the
    default classes, which are the PIL ones)."""
    common = dict(resample=3, image_mean=list(cfg.mean), image_std=list(cfg.std), do_rescale=True,
                  rescale_factor=1 / 255, do_normalize=True, do_convert_rgb=True)
    if cfg.resize == "exact":
        cls = getattr(transformers, "SiglipImageProcessorPil", None) or transformers.SiglipImageProcessor
        return cls(size={"height": cfg.size, "width": cfg.size}, **common)
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": cfg.size}, crop_size={"height": cfg.size, "width": cfg.size},
               do_center_crop=True, **common)


def llava_pixels(img: Image.Image, cfg: ImageConfig) -> np.ndarray:
    """LLaVA: Image.open(f).convert("RGB"); process_images: expand2square with
    tuple(int(x*255) for x in image_mean) when aspect is pad; then the image processor."""
    img = img.convert("RGB")
    if cfg.aspect == "pad":
        img = expand2square(img, tuple(int(x * 255) for x in cfg.mean))
    return hf_image_processor(cfg)(images=img, return_tensors="np")["pixel_values"]


CONFIGS = [
    ImageConfig(size=384, mean=SIGLIP_MEAN, std=SIGLIP_STD, resize="exact"),  # TinyLLaVA-Med
    ImageConfig(size=56, mean=SIGLIP_MEAN, std=SIGLIP_STD, resize="exact"),
    ImageConfig(size=336, mean=CLIP_MEAN, std=CLIP_STD, resize="shortest_edge_crop"),
    ImageConfig(size=56, mean=CLIP_MEAN, std=CLIP_STD, resize="shortest_edge_crop"),
]


@pytest.mark.parametrize("aspect", ["pad", "square"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "%s%d" % (c.resize, c.size))
@pytest.mark.parametrize("make", [m for _, m in IMAGES], ids=[n for n, _ in IMAGES])
def test_pixels_match_transformers(make: Callable[[], Image.Image], cfg: ImageConfig, aspect: str) -> None:
    cfg = dataclasses.replace(cfg, aspect=aspect)
    got = preprocess(make(), cfg)
    want = llava_pixels(make(), cfg)
    assert got.shape == want.shape == (1, 3, cfg.size, cfg.size) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_jpeg_bytes_match_transformers() -> None:
    buf = io.BytesIO()
    ct_like(512, 400).convert("RGB").save(buf, format="JPEG", quality=90)
    cfg = preset("tinyllava-med-1.5b").image
    want = llava_pixels(Image.open(io.BytesIO(buf.getvalue())), cfg)
    np.testing.assert_allclose(preprocess(buf.getvalue(), cfg), want, rtol=0, atol=1e-5)


# ---- prompt ids --------------------------------------------------------------------------

def slow_llama_tokenizer(model_path: Path, legacy: bool):
    """transformers' slow (SentencePiece) Llama tokenizer with BOS, as TinyLLaVA loads it (use_fast=False)."""
    if TRANSFORMERS_MAJOR < 5:
        return transformers.LlamaTokenizer(vocab_file=str(model_path), legacy=legacy)
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

    class SlowLlamaTokenizer(SentencePieceBackend):
        def tokenize(self, text, **kwargs):
            # transformers 4.x LlamaTokenizer.tokenize, which 5.x's generic SentencePiece backend
            # lacks: non-legacy puts the "▁" prefix on the start of the whole text only.
            if self.legacy or len(text) == 0:
                return super().tokenize(text, **kwargs)
            tokens = super().tokenize("\u2581" + text.replace("\u2581", " "), **kwargs)
            if len(tokens) > 1 and tokens[0] == "\u2581" and tokens[1] in self.all_special_tokens:
                tokens = tokens[1:]
            return tokens

    return SlowLlamaTokenizer(vocab_file=str(model_path), legacy=legacy, unk_token="<unk>", bos_token="<s>",
                              eos_token="</s>", special_tokens_pattern="bos")


QUESTIONS: List[Tuple[str, Optional[List[Tuple[str, str]]]]] = [
    ("Is there a pleural effusion in the right lung?", None),
    ("What modality was used?", [("Is the liver normal?", "No, there is a 2.5 cm hypodense lesion.")]),
    ("And now?", [("Q1?", "A1."), ("Ist das Herz vergrößert? 🫀", "Ja."), ("Leading  double  spaces", "x\ny")]),
    ("Numbers 1234 and 5.6 mm\n\nwith blank lines", None),
]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sentencepiece(tmp_path_factory.mktemp("llama"), 1024).parent


@pytest.mark.parametrize("legacy", [True, False])
@pytest.mark.parametrize("template", ["vicuna_v1", "llava_v1"])
def test_llama_prompt_ids_match_slow_tokenizer(tmp_path: Path, llama_dir: Path, legacy: bool, template: str) -> None:
    # The checkpoint's tokenizer_config.json decides legacy, as it does for transformers.
    model = tmp_path / "tokenizer.model"
    shutil.copy(llama_dir / "tokenizer.model", model)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"legacy": legacy}))
    convert_sentencepiece(model).save(str(tmp_path / "tokenizer.json"))
    proc = Processor(preset("tiny"), tmp_path / "tokenizer.json", template=template)
    hf = slow_llama_tokenizer(model, legacy)
    for question, history in QUESTIONS:
        prompt = proc.prompt(question, history)
        want = tokenizer_image_token(prompt, lambda s: hf(s).input_ids, hf.bos_token_id)
        assert proc.prompt_ids(question, history) == want, prompt
    assert (proc.bos_id, proc.eos_id) == (hf.bos_token_id, hf.eos_token_id)
    ids = hf("The liver is normal.").input_ids + [hf.eos_token_id]
    assert proc.decode(ids) == hf.decode(ids, skip_special_tokens=True) == "The liver is normal."


def test_phi_prompt_ids_match_gpt2_tokenizer(tmp_path: Path) -> None:
    tok_json = train_bpe(tmp_path / "bundle", 1024)
    files = tmp_path / "hf"
    files.mkdir()
    for name in ("vocab.json", "merges.txt"):  # only the BPE files: the oracle builds its own pipeline
        shutil.copy(tok_json.parent / name, files / name)
    hf = transformers.GPT2Tokenizer.from_pretrained(str(files))
    proc = Processor(preset("tiny-phi"), tok_json)
    for question, history in QUESTIONS:
        prompt = proc.prompt(question, history)
        want = tokenizer_image_token(prompt, lambda s: hf(s).input_ids, hf.bos_token_id)
        assert proc.prompt_ids(question, history) == want, prompt
    assert proc.eos_id == hf.eos_token_id
    ids = hf("Yes, a small nodule.<|endoftext|>").input_ids
    assert proc.decode(ids) == hf.decode(ids, skip_special_tokens=True) == "Yes, a small nodule."
