"""Checkpoint layouts: what make_checkpoint writes, what read_checkpoint / load_model return.

Oracles: transformers (LlavaForConditionalGeneration / SiglipVisionModel / CLIPVisionModel /
LlamaForCausalLM / PhiForCausalLM state dicts, AutoProcessor), the safetensors library reading
the files independently, hand-written key names from the published checkpoints, and the
writer's seed (every tensor is a pure function of (seed, internal name)).
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # export-side code: skipped in the torch-free Python 3.8 run
pytest.importorskip("safetensors")

from safetensors import safe_open  # noqa: E402

from models.checkpoint.config_read import config_from_json  # noqa: E402
from models.checkpoint.layouts import detect_layout  # noqa: E402
from models.checkpoint.reader import load_model, read_checkpoint  # noqa: E402
from models.checkpoint.spec import param_spec  # noqa: E402
from models.checkpoint.writer import init_tensor, make_checkpoint  # noqa: E402
from models.config import PRESETS, preset  # noqa: E402
from models.llava import build_model  # noqa: E402

SEED = 7
TINY = ("tiny", "tiny-phi", "tiny-clip")
FORMATS = ("llava", "factory", "hf")
# Image tokens per (preset, format), worked out by hand: 56/14 = 4 -> 16 patches (+1 CLS for CLIP).
# llava keeps all SigLIP patches and drops CLIP's CLS; factory drops token 0 for every tower
# (TinyLLaVA_Factory #203); hf "full" keeps all SigLIP patches, "default" drops CLIP's CLS.
IMAGE_TOKENS = {("tiny", "llava"): 16, ("tiny", "factory"): 15, ("tiny", "hf"): 16,
                ("tiny-phi", "llava"): 16, ("tiny-phi", "factory"): 15, ("tiny-phi", "hf"): 16,
                ("tiny-clip", "llava"): 16, ("tiny-clip", "factory"): 16, ("tiny-clip", "hf"): 16}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Dict[Tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("ckpts")
    return {(p, f): make_checkpoint(root / ("%s-%s" % (p, f)), p, f, seed=SEED, progress=False)
            for p in TINY for f in FORMATS}


def stored(path: Path) -> Dict[str, torch.Tensor]:
    """Every tensor of a directory's safetensors files, read with the safetensors library alone."""
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            out.update({k: h.get_tensor(k) for k in h.keys()})
    return out


# ---- param_spec against the model and against transformers ------------------------------------

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_param_spec_used_is_exactly_the_model(name: str) -> None:
    cfg = preset(name)
    model = build_model(cfg, device="meta")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == param_spec(cfg, used_only=True)


@pytest.mark.parametrize("name", TINY)
def test_param_spec_full_matches_transformers(name: str) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = preset(name)
    v, t = cfg.vision, cfg.text
    vkw = dict(hidden_size=v.hidden_size, intermediate_size=v.intermediate_size, num_hidden_layers=v.num_layers,
               num_attention_heads=v.num_heads, image_size=v.image_size, patch_size=v.patch_size)
    if v.family == "siglip":
        tower = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**vkw))
    else:
        tower = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**vkw))
    want = {"vision_tower." + k.replace("vision_model.", "", 1): tuple(p.shape) for k, p in tower.state_dict().items()
            if not k.endswith("position_ids")}
    tkw = dict(vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
               num_hidden_layers=t.num_layers, num_attention_heads=t.num_heads, num_key_value_heads=t.num_kv_heads)
    if t.family == "llama":
        lm = transformers.LlamaForCausalLM(transformers.LlamaConfig(**tkw))
    else:
        lm = transformers.PhiForCausalLM(transformers.PhiConfig(**tkw))
    want.update({k.replace("model.", "language_model.", 1): tuple(p.shape) for k, p in lm.state_dict().items()})
    if t.family == "phi":
        want["lm_head.bias"] = (t.vocab_size,)  # PhiForCausalLM: Linear(bias=True)
        assert "lm_head.bias" in lm.state_dict()
    full = param_spec(cfg, used_only=False)
    assert {k: s for k, s in full.items() if not k.startswith("connector.")} == want


# ---- what the writer puts on disk ---------------------------------------------------------------

def test_llava_names_are_bczhou_names(checkpoints: Dict[Tuple[str, str], Path]) -> None:
    path = checkpoints[("tiny", "llava")]
    keys = set(stored(path))
    for key in ("model.embed_tokens.weight", "model.layers.1.self_attn.o_proj.weight", "model.norm.weight",
                "lm_head.weight", "model.mm_projector.0.weight", "model.mm_projector.2.bias",
                "model.vision_tower.vision_tower.vision_model.encoder.layers.2.mlp.fc2.bias",
                "model.vision_tower.vision_tower.vision_model.head.probe"):
        assert key in keys
    assert all(k.startswith(("model.", "lm_head.")) for k in keys)
    cj = json.loads((path / "config.json").read_text())
    assert (cj["model_type"], cj["architectures"]) == ("tiny_llava", ["TinyLlavaLlamaForCausalLM"])
    assert cj["mm_vision_tower"] == "siglip_vision_tower" and cj["mm_projector_type"] == "mlp2x_gelu"
    assert (path / "tokenizer.model").is_file() and not (path / "tokenizer.json").exists()
    tower = set(stored(path / "siglip_vision_tower"))
    assert "vision_model.encoder.layers.0.self_attn.q_proj.weight" in tower and all(
        k.startswith("vision_model.") for k in tower)
    phi = set(stored(checkpoints[("tiny-phi", "llava")]))
    assert {"model.final_layernorm.bias", "model.layers.0.self_attn.dense.bias", "lm_head.bias"} <= phi


def test_factory_names(checkpoints: Dict[Tuple[str, str], Path]) -> None:
    path = checkpoints[("tiny-phi", "factory")]
    keys = set(stored(path))
    for key in ("language_model.model.embed_tokens.weight", "language_model.model.final_layernorm.weight",
                "language_model.lm_head.bias", "connector._connector.0.weight", "connector._connector.2.bias",
                "vision_tower._vision_tower.vision_model.post_layernorm.weight"):
        assert key in keys
    cj = json.loads((path / "config.json").read_text())
    assert cj["model_type"] == "tinyllava" and cj["text_config"]["model_type"] == "phi"
    assert (path / "vocab.json").is_file() and (path / "merges.txt").is_file()


@pytest.mark.parametrize("name", TINY)
def test_hf_names_are_what_transformers_saves(checkpoints: Dict[Tuple[str, str], Path], tmp_path: Path,
                                              name: str) -> None:
    transformers = pytest.importorskip("transformers")
    path = checkpoints[(name, "hf")]
    ref = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig.from_pretrained(path))
    ref.save_pretrained(tmp_path)
    theirs = {k: tuple(v.shape) for k, v in stored(tmp_path).items()}
    ours = {k: tuple(v.shape) for k, v in stored(path).items()}
    assert ours == theirs


# ---- round trips --------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", TINY)
def test_round_trip(checkpoints: Dict[Tuple[str, str], Path], name: str, fmt: str) -> None:
    path = checkpoints[(name, fmt)]
    ck = read_checkpoint(path)
    cfg = ck.config
    assert ck.layout == fmt == detect_layout(json.loads((path / "config.json").read_text()))
    assert set(ck.tensors) == set(param_spec(cfg, used_only=True))
    for internal, t in ck.tensors.items():
        if fmt == "hf" and internal == "lm_head.bias":  # HF Llava's lm_head has no bias
            assert torch.count_nonzero(t) == 0
            continue
        assert torch.equal(t, init_tensor(internal, t.shape, SEED)), internal
    # every value is read from the files (as the safetensors library reads them), not made up
    disk = list(stored(path).values()) + (list(stored(ck.vision_tower_path).values()) if ck.vision_tower_path else [])
    for internal, t in ck.tensors.items():
        if not (fmt == "hf" and internal == "lm_head.bias"):
            assert any(d.shape == t.shape and torch.equal(d, t) for d in disk), internal
    # the config: the preset, with the layout's image-token convention and the tokenizer's ids
    want = preset(name)
    assert cfg.num_image_tokens == IMAGE_TOKENS[(name, fmt)]
    assert dataclasses.replace(cfg.text, bos_token_id=None, eos_token_id=0, pad_token_id=0) == \
        dataclasses.replace(want.text, bos_token_id=None, eos_token_id=0, pad_token_id=0)
    assert (cfg.connector, cfg.template, cfg.image.aspect) == (want.connector, want.template, want.image.aspect)
    v = cfg.vision
    assert (v.hidden_size, v.num_layers, v.feature_layer, v.family) == (
        want.vision.hidden_size, want.vision.num_layers, want.vision.feature_layer, want.vision.family)
    tok = ck.load_tokenizer()
    assert tok.get_vocab_size() <= cfg.text.vocab_size
    eos = "</s>" if cfg.text.family == "llama" else "<|endoftext|>"
    assert tok.token_to_id(eos) == cfg.text.eos_token_id


def test_llava_tower_dir_wins_and_embedded_copy_is_a_fallback(checkpoints: Dict[Tuple[str, str], Path],
                                                              tmp_path: Path) -> None:
    import shutil

    src = checkpoints[("tiny", "llava")]
    ck = read_checkpoint(src)
    assert ck.vision_tower_path == src / "siglip_vision_tower"
    tower = stored(src / "siglip_vision_tower")
    assert torch.equal(ck.tensors["vision_tower.encoder.layers.1.mlp.fc1.weight"],
                       tower["vision_model.encoder.layers.1.mlp.fc1.weight"])
    # without the tower's weights the checkpoint's own copy (identical values) is used
    dst = tmp_path / "ck"
    shutil.copytree(src, dst)
    (dst / "siglip_vision_tower" / "model.safetensors").unlink()
    ck2 = read_checkpoint(dst)
    assert all(torch.equal(ck2.tensors[k], ck.tensors[k]) for k in ck.tensors)


def test_hub_tower_name_with_the_tower_folder_beside_it(checkpoints: Dict[Tuple[str, str], Path],
                                                       tmp_path: Path) -> None:
    """bczhou/TinyLLaVA-3.1B: mm_vision_tower is a hub id and the tower ships in siglip_vision_tower/;
    the folder may hold a full SiglipModel config (vision half in vision_config)."""
    import shutil

    dst = Path(shutil.copytree(checkpoints[("tiny", "llava")], tmp_path / "ck"))
    cj = json.loads((dst / "config.json").read_text())
    cj["mm_vision_tower"] = "bczhou/TinyLLaVA-3.1B-SigLIP"
    (dst / "config.json").write_text(json.dumps(cj))
    tower_cfg = dst / "siglip_vision_tower" / "config.json"
    vision = json.loads(tower_cfg.read_text())
    tower_cfg.write_text(json.dumps({"model_type": "siglip", "text_config": {"hidden_size": 16},
                                     "vision_config": dict(vision, model_type="siglip_vision_model")}))
    ck = read_checkpoint(dst)
    assert ck.vision_tower_path == dst / "siglip_vision_tower"
    assert ck.config.vision == read_checkpoint(checkpoints[("tiny", "llava")]).config.vision


def test_bczhou_tower_without_last_layer_and_head_loads(checkpoints: Dict[Tuple[str, str], Path],
                                                        tmp_path: Path) -> None:
    """bczhou's towers hold 26 of 27 layers and no head (the loader deleted them before saving)."""
    import shutil

    from safetensors.torch import save_file

    dst = tmp_path / "ck"
    shutil.copytree(checkpoints[("tiny", "llava")], dst)
    f = dst / "siglip_vision_tower" / "model.safetensors"
    kept = {k: v.clone() for k, v in stored(f.parent).items() if ".layers.2." not in k and ".head." not in k}
    save_file(kept, str(f), metadata={"format": "pt"})
    ck = read_checkpoint(dst)
    assert ck.config.vision.num_layers == 3 and "vision_tower.encoder.layers.1.mlp.fc2.bias" in ck.tensors


def test_sharded_checkpoint(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path / "ck", "tiny", "llava", seed=SEED, max_shard_bytes=64 * 1024, progress=False)
    shards = sorted(p.name for p in path.glob("model-*.safetensors"))
    assert len(shards) >= 3 and shards[0] == "model-00001-of-%05d.safetensors" % len(shards)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    files = stored(path)
    assert set(index["weight_map"]) == set(files)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in files.values())
    ck = read_checkpoint(path)
    assert all(torch.equal(t, init_tensor(n, t.shape, SEED)) for n, t in ck.tensors.items())


def test_float16_checkpoint_and_dtype_conversion(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path / "ck", "tiny-phi", "factory", seed=SEED, dtype="float16", progress=False)
    assert json.loads((path / "config.json").read_text())["torch_dtype"] == "float16"
    ck = read_checkpoint(path)
    assert {t.dtype for t in ck.tensors.values()} == {torch.float16}
    w = "language_model.layers.0.mlp.fc1.weight"
    assert torch.equal(ck.tensors[w], init_tensor(w, ck.tensors[w].shape, SEED).half())
    as32 = read_checkpoint(path, dtype=torch.float32)
    assert as32.tensors[w].dtype == torch.float32 and torch.equal(as32.tensors[w], ck.tensors[w].float())
    model, cfg = load_model(path, dtype=torch.float32)
    assert model.language_model.layers[0].mlp.fc1.weight.dtype == torch.float32


@pytest.mark.parametrize("name", TINY)
def test_load_model_runs(checkpoints: Dict[Tuple[str, str], Path], name: str) -> None:
    model, cfg = load_model(checkpoints[(name, "llava")])
    assert not any(p.is_meta for p in model.parameters())
    pixels = torch.randn(1, 3, cfg.vision.image_size, cfg.vision.image_size)
    with torch.no_grad():
        emb = model.encode_image(pixels)
    assert emb.shape == (1, cfg.num_image_tokens, cfg.text.hidden_size) and torch.isfinite(emb).all()


# ---- transformers as the oracle for the hf layout --------------------------------------------------

@pytest.mark.parametrize("name", TINY)
def test_hf_layout_loads_in_transformers(checkpoints: Dict[Tuple[str, str], Path], name: str) -> None:
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    from models.processor.image import preprocess
    from models.processor.templates import get_template

    path = checkpoints[(name, "hf")]
    model, info = transformers.LlavaForConditionalGeneration.from_pretrained(path, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    ck = read_checkpoint(path)
    theirs = model.state_dict()
    for internal, t in ck.tensors.items():
        if internal == "lm_head.bias":
            continue  # HF Llava runs without it; we load zeros
        hf_name = internal if internal.startswith("lm_head.") else "model." + internal.replace(
            "connector.", "multi_modal_projector.", 1)
        assert torch.equal(theirs[hf_name], t), internal
    tc, cfg = model.config.text_config, ck.config
    assert (tc.num_key_value_heads, tc.rope_parameters["rope_theta"], model.config.image_token_index) == (
        cfg.text.num_kv_heads, cfg.text.rope_theta, ck.image_token_id)

    processor = transformers.AutoProcessor.from_pretrained(path)
    image = Image.fromarray(np.random.RandomState(0).randint(0, 255, (40, 70, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a mass?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == get_template(cfg.template).prompt("Is there a mass?")
    inputs = processor(text=prompt, images=image, return_tensors="pt")
    # transformers counts image tokens from its own processor settings; ours from the config
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == cfg.num_image_tokens
    assert processor.image_token_id == ck.image_token_id
    np.testing.assert_allclose(inputs["pixel_values"].numpy(), preprocess(image, cfg.image), atol=1e-6)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == cfg.text.vocab_size and torch.isfinite(logits).all()


# ---- configs as the published checkpoints write them -------------------------------------------

def test_bczhou_tinyllava_1_5b_config_is_the_full_preset() -> None:
    """config.json of bczhou/TinyLLaVA-1.5B (keys and values from its HF page, see
    shared/reference/tinyllava_med_model.md sections 4-5), typed out by hand."""
    cj = {
        "architectures": ["TinyLlavaLlamaForCausalLM"], "model_type": "tiny_llava", "attention_bias": False,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 2048, "image_aspect_ratio": "pad",
        "intermediate_size": 5632, "max_position_embeddings": 2048, "mm_hidden_size": 1152,
        "mm_patch_merge_type": "flat", "mm_projector_type": "mlp2x_gelu", "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False, "mm_vision_select_feature": "patch", "mm_vision_select_layer": -2,
        "mm_vision_tower": "bczhou/TinyLLaVA-1.5B-SigLIP", "num_attention_heads": 32, "num_hidden_layers": 22,
        "num_key_value_heads": 4, "pad_token": "<unk>", "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": None, "rope_theta": 10000.0, "tie_word_embeddings": False, "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right", "torch_dtype": "float16", "transformers_version": "4.37.2",
        "use_cache": True, "vocab_size": 32000,
    }
    assert detect_layout(cj) == "llava"
    cfg = config_from_json(cj, "llava", name="tinyllava-med-1.5b")
    want = preset("tinyllava-med-1.5b")
    assert cfg == dataclasses.replace(want, text=dataclasses.replace(want.text, pad_token_id=None))
    assert cfg.num_image_tokens == 729


def test_tinyllava_factory_phi_config() -> None:
    """tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B: nested configs, square images, 728 image tokens."""
    cj = {
        "architectures": ["TinyLlavaForConditionalGeneration"], "model_type": "tinyllava",
        "llm_model_name_or_path": "microsoft/phi-2", "connector_type": "mlp2x_gelu", "hidden_size": 2560,
        "image_aspect_ratio": "square", "image_token_index": -200, "pad_token": "<|endoftext|>", "pad_token_id": 50256,
        "vision_feature_layer": -2, "vision_feature_select_strategy": "patch", "tokenizer_model_max_length": 3072,
        "text_config": {"model_type": "phi", "vocab_size": 51200, "hidden_size": 2560, "intermediate_size": 10240,
                        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                        "partial_rotary_factor": 0.4, "hidden_act": "gelu_new", "layer_norm_eps": 1e-05,
                        "max_position_embeddings": 2048, "rope_theta": 10000.0, "qk_layernorm": False,
                        "bos_token_id": 50256, "eos_token_id": 50256},
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
                          "num_hidden_layers": 27, "num_attention_heads": 16, "image_size": 384, "patch_size": 14,
                          "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-06},
    }
    assert detect_layout(cj) == "factory"
    cfg = config_from_json(cj, "factory")
    want = preset("tinyllava-phi-3.1b")
    assert cfg.text == want.text
    assert cfg.num_image_tokens == 728 and cfg.image.aspect == "square" and cfg.template == "phi"


def test_hf_layout_accepts_the_other_transformers_spellings(checkpoints: Dict[Tuple[str, str], Path],
                                                            tmp_path: Path) -> None:
    """transformers 4.x wrote vision_tower.vision_model.*; 5.x modules are model.language_model.* / lm_head.*."""
    import shutil

    from safetensors.torch import save_file

    src = checkpoints[("tiny-clip", "hf")]
    dst = Path(shutil.copytree(src, tmp_path / "ck"))
    renamed = {}
    for k, v in stored(src).items():
        k = k.replace("vision_tower.", "vision_tower.vision_model.", 1) if k.startswith("vision_tower.") else k
        k = k.replace("language_model.model.", "model.language_model.", 1).replace("language_model.lm_head", "lm_head")
        renamed[k] = v.clone()
    save_file(renamed, str(dst / "model.safetensors"), metadata={"format": "pt"})
    a, b = read_checkpoint(src), read_checkpoint(dst)
    assert a.tensors.keys() == b.tensors.keys() and all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


# ---- memory: tensors are views of the file, not copies ---------------------------------------------

def _rss_anon_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024.0
    pytest.skip("no RssAnon in /proc/self/status")
    raise AssertionError


def test_reading_does_not_copy_the_weights(tmp_path: Path) -> None:
    """A 256 MB fp32 checkpoint (two 128 MB tables) is read and touched without growing the
    process's anonymous memory: the tensors are memory-mapped file pages (loading the 6 GB
    TinyLLaVA-Med checkpoint must not need 12 GB)."""
    base = preset("tiny")
    cfg = dataclasses.replace(base, text=dataclasses.replace(base.text, vocab_size=1 << 19))
    path = make_checkpoint(tmp_path / "big", cfg, "hf", progress=False)
    build_model(base, device="meta")  # torch's one-time meta-device setup (~70 MB) is not weights
    table_mb = (1 << 19) * cfg.text.hidden_size * 4 / 2 ** 20  # 128

    before = _rss_anon_mb()
    ck = read_checkpoint(path)
    n_values = sum(int(t.numel()) for t in ck.tensors.values())
    checksum = sum(float(t.sum()) for t in ck.tensors.values())  # touches every page
    assert _rss_anon_mb() - before < 0.25 * table_mb, "read_checkpoint copied the tensors"
    assert n_values >= 2 * (1 << 19) * cfg.text.hidden_size  # both tables were read, not skipped
    assert math.isfinite(checksum)

    before = _rss_anon_mb()
    model, _ = load_model(path)
    touched = float(model.lm_head.weight.detach().sum()) + float(model.language_model.embed_tokens.weight.detach().sum())
    assert _rss_anon_mb() - before < 0.25 * table_mb, "load_model copied the tensors"
    assert math.isfinite(touched)
    # the model's table is the file's, not a fresh initialisation
    assert torch.equal(model.lm_head.weight.detach(), next(t for k, t in ck.tensors.items() if k.endswith("lm_head.weight")))

    before = _rss_anon_mb()  # the measurement does see a real copy
    copy = model.lm_head.weight.detach().clone()
    assert _rss_anon_mb() - before > 0.8 * table_mb
    del copy


# ---- tokenizers -------------------------------------------------------------------------------------

def test_sentencepiece_conversion_is_cached_outside_the_checkpoint(checkpoints: Dict[Tuple[str, str], Path],
                                                                   tmp_path: Path) -> None:
    import sentencepiece as spm

    path = checkpoints[("tiny", "llava")]
    before = sorted(p.name for p in path.iterdir())
    ck = read_checkpoint(path)
    assert ck.tokenizer_source.kind == "sentencepiece"
    tok = ck.load_tokenizer(cache_dir=tmp_path / "cache")
    cached = list((tmp_path / "cache").glob("*.json"))
    assert len(cached) == 1 and sorted(p.name for p in path.iterdir()) == before
    again = ck.load_tokenizer(cache_dir=tmp_path / "cache")
    sp = spm.SentencePieceProcessor(model_file=str(path / "tokenizer.model"))
    text = "Is there a 2.5 cm mass in the left kidney?"
    assert again.encode(text).ids == tok.encode(text).ids == [sp.bos_id()] + sp.encode(text)


def test_gpt2_vocab_and_merges_tokenize_like_transformers(checkpoints: Dict[Tuple[str, str], Path],
                                                          tmp_path: Path) -> None:
    import shutil

    transformers = pytest.importorskip("transformers")
    dst = Path(shutil.copytree(checkpoints[("tiny-phi", "factory")], tmp_path / "ck"))
    (dst / "tokenizer.json").unlink()
    ck = read_checkpoint(dst)
    assert ck.tokenizer_source.kind == "bpe-vocab"
    ours = ck.load_tokenizer()
    theirs = transformers.GPT2TokenizerFast(vocab=str(dst / "vocab.json"), merges=str(dst / "merges.txt"))
    for text in ("Is there a mass?<|endoftext|>USER: hi", "  two spaces and a tab\t", "héllo 12345"):
        assert ours.encode(text).ids == theirs.encode(text)
