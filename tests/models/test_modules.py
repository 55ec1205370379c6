"""Parity of each model family against transformers (the oracle) on the tiny presets.

Weights are copied from the HF module into ours with strict load_state_dict: our submodule names
equal HF's inner names, so a strict load is itself a check of the parameter-name contract.
HF parameters are perturbed first so LayerNorm/bias names that HF initialises to constants matter.
"""
from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    CLIPVisionModel,
    LlamaForCausalLM,
    LlavaForConditionalGeneration,
    PhiForCausalLM,
    SiglipVisionModel,
)
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector  # noqa: E402

from engine_build.hf_reference import (  # noqa: E402
    copy_hf_llava_weights,
    hf_input_ids,
    hf_llava_config,
    hf_text_config,
    hf_vision_config,
    vision_state_from_hf,
)
from models.config import IMAGE_TOKEN_INDEX, ModelConfig, preset  # noqa: E402
from models.connector import MlpGeluConnector  # noqa: E402
from models.generate import generate, select_next_token  # noqa: E402
from models.llava import VISION_TOWERS, build_model  # noqa: E402
from models.vision_encoder import select_image_features  # noqa: E402

VISION_ATOL = 1e-5
LOGITS_ATOL = 1e-4


def _perturb(module: torch.nn.Module, scale: float = 0.1) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)


def _with_vision(name: str, **changes: object) -> ModelConfig:
    cfg = preset(name)
    return cfg.replace(vision=dataclasses.replace(cfg.vision, **changes))


# ---- vision towers ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,changes", [
    ("tiny", {}),  # SigLIP, LLaVA/bczhou: all patches kept
    ("tiny", {"patch_drops_first": True}),  # SigLIP, TinyLLaVA_Factory: first patch dropped
    ("tiny", {"feature_layer": -1}),
    ("tiny", {"feature_layer": 1, "select_strategy": "full"}),
    ("tiny-clip", {}),  # CLIP: CLS dropped
    ("tiny-clip", {"select_strategy": "full"}),  # CLIP: CLS kept
])
def test_vision_tower_matches_hf_hidden_state(name: str, changes: dict) -> None:
    torch.manual_seed(0)
    v = _with_vision(name, **changes).vision
    hf_cls = SiglipVisionModel if v.family == "siglip" else CLIPVisionModel
    hf = hf_cls(hf_vision_config(v)).eval()
    _perturb(hf)
    ours = VISION_TOWERS[v.family](v).eval()
    ours.load_state_dict(vision_state_from_hf(hf, v.num_layers_used))  # strict
    assert len(ours.encoder.layers) == v.num_layers_used

    px = torch.randn(2, 3, v.image_size, v.image_size)
    with torch.no_grad():
        ref = hf(pixel_values=px, output_hidden_states=True).hidden_states[v.feature_layer]
        got = select_image_features(ours(px), v)
    if v.select_strategy == "patch" and v.patch_drops_first:
        ref = ref[:, 1:]  # what HF Llava's "default" strategy does
    assert got.shape == (2, v.num_image_tokens, v.hidden_size)
    torch.testing.assert_close(got, ref, atol=VISION_ATOL, rtol=VISION_ATOL)


def test_mlp2x_gelu_matches_hf_projector() -> None:
    torch.manual_seed(0)
    cfg = preset("tiny")
    hf = LlavaMultiModalProjector(hf_llava_config(cfg, image_token_index=cfg.text.vocab_size - 1)).eval()
    _perturb(hf)
    ours = MlpGeluConnector(cfg.vision.hidden_size, cfg.text.hidden_size).eval()
    ours.load_state_dict(hf.state_dict())
    x = torch.randn(2, 5, cfg.vision.hidden_size) * 3  # wide enough that erf vs tanh GELU would differ
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x), atol=1e-6, rtol=1e-6)


# ---- decoders ----------------------------------------------------------------------------------

def _decoder_pair(name: str, rope_theta: float = 10000.0):
    torch.manual_seed(0)
    cfg = preset(name)
    cfg = cfg.replace(text=dataclasses.replace(cfg.text, rope_theta=rope_theta))
    hf_cls = LlamaForCausalLM if cfg.text.family == "llama" else PhiForCausalLM
    hf = hf_cls(hf_text_config(cfg.text)).eval()
    _perturb(hf, 0.05)
    ours = build_model(cfg)
    ours.language_model.load_state_dict(hf.model.state_dict())  # strict
    ours.lm_head.load_state_dict(hf.lm_head.state_dict())  # Phi: weight and bias
    return cfg, hf, ours


def _run(ours, ids, position_ids, past_k, past_v, mask):
    return ours.forward_decoder(ours.embed(ids), position_ids, past_k, past_v, mask)


@pytest.mark.parametrize("name", ["tiny", "tiny-phi"])
def test_decoder_full_sequence_and_kv_match_hf(name: str) -> None:
    cfg, hf, ours = _decoder_pair(name)
    t = cfg.text
    ids = torch.randint(0, t.vocab_size, (2, 11))
    with torch.no_grad():
        ref = hf(input_ids=ids, use_cache=True)
        past = ours.empty_kv(2)
        logits, pk, pv = _run(ours, ids, torch.arange(11)[None].expand(2, -1), past, past,
                              torch.ones(2, 11, dtype=torch.long))
    torch.testing.assert_close(logits, ref.logits, atol=LOGITS_ATOL, rtol=LOGITS_ATOL)
    assert pk.shape == pv.shape == (t.num_layers, 2, t.num_kv_heads, 11, t.head_dim)
    for i, layer in enumerate(ref.cache.layers):  # cache layout: post-RoPE keys, [B, KVH, T, D]
        torch.testing.assert_close(pk[i], layer.keys, atol=LOGITS_ATOL, rtol=LOGITS_ATOL)
        torch.testing.assert_close(pv[i], layer.values, atol=LOGITS_ATOL, rtol=LOGITS_ATOL)


@pytest.mark.parametrize("name", ["tiny", "tiny-phi"])
def test_prefill_then_chunk_then_steps_equal_full_sequence(name: str) -> None:
    cfg, hf, ours = _decoder_pair(name, rope_theta=500.0)  # a non-default theta must reach both models
    n = 12
    ids = torch.randint(0, cfg.text.vocab_size, (1, n))
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
        past = ours.empty_kv(1)
        pieces = []
        pk, pv = past, past
        # prefill 5, then a 3-token chunk on top of the cache (P > 0, S > 1), then single steps
        for start, end in [(0, 5), (5, 8)] + [(i, i + 1) for i in range(8, n)]:
            logits, pk, pv = _run(ours, ids[:, start:end], torch.arange(start, end)[None], pk, pv,
                                  torch.ones(1, end, dtype=torch.long))
            pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), ref, atol=LOGITS_ATOL, rtol=LOGITS_ATOL)
    assert pk.shape[3] == n


@pytest.mark.parametrize("name", ["tiny", "tiny-phi"])
def test_left_padded_batch_matches_hf(name: str) -> None:
    cfg, hf, ours = _decoder_pair(name)
    ids = torch.randint(1, cfg.text.vocab_size, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0  # row 1 is left-padded by 3
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    nxt = torch.randint(1, cfg.text.vocab_size, (2, 1))
    full_mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        ref_next = hf(input_ids=torch.cat([ids, nxt], 1), attention_mask=full_mask,
                      position_ids=torch.cat([pos, pos[:, -1:] + 1], 1)).logits[:, -1:]
        past = ours.empty_kv(2)
        logits, pk, pv = _run(ours, ids, pos, past, past, mask)
        step, _, _ = _run(ours, nxt, pos[:, -1:] + 1, pk, pv, full_mask)
    keep = mask.bool()
    torch.testing.assert_close(logits[keep], ref[keep], atol=LOGITS_ATOL, rtol=LOGITS_ATOL)
    torch.testing.assert_close(step, ref_next, atol=LOGITS_ATOL, rtol=LOGITS_ATOL)


# ---- the whole LLaVA model ----------------------------------------------------------------------

@pytest.mark.parametrize("name,changes", [
    ("tiny", {}), ("tiny", {"patch_drops_first": True}), ("tiny-clip", {}), ("tiny-phi", {}),
])
def test_llava_logits_and_greedy_match_hf(name: str, changes: dict) -> None:
    torch.manual_seed(0)
    cfg = _with_vision(name, **changes)
    image_token = cfg.text.vocab_size - 1
    hf = LlavaForConditionalGeneration(hf_llava_config(cfg, image_token)).eval()
    _perturb(hf, 0.05)
    ours = build_model(cfg)
    copy_hf_llava_weights(hf, ours)

    prompt = [1, 17, 29, IMAGE_TOKEN_INDEX, 40, 41, 42, 7]
    px = torch.randn(1, 3, cfg.vision.image_size, cfg.vision.image_size)
    input_ids = hf_input_ids(prompt, image_token, cfg.num_image_tokens)
    with torch.no_grad():
        ref = hf(input_ids=input_ids, pixel_values=px).logits
        embeds = ours.merge(prompt, ours.encode_image(px))
        n = embeds.shape[1]
        past = ours.empty_kv(1)
        logits, _, _ = ours.forward_decoder(embeds, torch.arange(n)[None], past, past,
                                            torch.ones(1, n, dtype=torch.long))
        assert n == input_ids.shape[1] == len(prompt) - 1 + cfg.num_image_tokens
        torch.testing.assert_close(logits, ref, atol=LOGITS_ATOL, rtol=LOGITS_ATOL)

        eos = cfg.text.eos_token_id
        hf_out = hf.generate(input_ids=input_ids, pixel_values=px, max_new_tokens=8, do_sample=False,
                             eos_token_id=eos, pad_token_id=eos)[0, n:].tolist()
    result = generate(ours, prompt, px, max_new_tokens=8, eos_token_id=eos)
    expected = hf_out[:hf_out.index(eos)] if eos in hf_out else hf_out
    assert result.output_ids == expected
    assert result.prompt_positions == n


def test_merge_places_text_and_image_rows() -> None:
    torch.manual_seed(0)
    cfg = preset("tiny")
    model = build_model(cfg)
    table = model.language_model.embed_tokens.weight
    images = torch.randn(2, 3, cfg.text.hidden_size)
    prompt = [5, IMAGE_TOKEN_INDEX, 6, 7, IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX, 8]
    with torch.no_grad():
        with pytest.raises(ValueError, match="2 image embedding"):
            model.merge(prompt, images)
        out = model.merge(prompt[:-2] + [8], images)[0]
    expected = [table[5], *images[0], table[6], table[7], *images[1], table[8]]
    assert out.shape == (len(expected), cfg.text.hidden_size)
    for row, want in zip(out, expected):
        assert torch.equal(row, want)
    with pytest.raises(ValueError, match="image sentinel"):
        model.embed(torch.tensor([1, IMAGE_TOKEN_INDEX]))


# ---- names, meta build, generation plumbing --------------------------------------------------

def _expected_names(cfg: ModelConfig) -> set:
    """The internal parameter-name contract, written out from the design brief."""
    v, t = cfg.vision, cfg.text
    wb = (".weight", ".bias")
    names = {"vision_tower.embeddings.patch_embedding.weight", "vision_tower.embeddings.position_embedding.weight"}
    if v.family == "siglip":
        names.add("vision_tower.embeddings.patch_embedding.bias")
    else:
        names |= {"vision_tower.embeddings.class_embedding"} | {"vision_tower.pre_layrnorm" + s for s in wb}
    for i in range(v.num_layers_used):
        for m in ("layer_norm1", "layer_norm2", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                  "self_attn.out_proj", "mlp.fc1", "mlp.fc2"):
            names |= {"vision_tower.encoder.layers.%d.%s%s" % (i, m, s) for s in wb}
    names |= {"connector.linear_1" + s for s in wb}
    if cfg.connector == "mlp2x_gelu":
        names |= {"connector.linear_2" + s for s in wb}
    names |= {"language_model.embed_tokens.weight", "lm_head.weight"}
    for i in range(t.num_layers):
        p = "language_model.layers.%d." % i
        if t.family == "llama":
            names |= {p + "self_attn.%s_proj.weight" % x for x in "qkvo"}
            names |= {p + "mlp.%s_proj.weight" % x for x in ("gate", "up", "down")}
            names |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight"}
        else:
            names |= {p + m + s for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                          "self_attn.dense", "mlp.fc1", "mlp.fc2", "input_layernorm") for s in wb}
    if t.family == "llama":
        names.add("language_model.norm.weight")
    else:
        names |= {"language_model.final_layernorm" + s for s in wb} | {"lm_head.bias"}
    return names


@pytest.mark.parametrize("name,connector", [("tiny", "mlp2x_gelu"), ("tiny-phi", "mlp2x_gelu"),
                                            ("tiny-clip", "mlp2x_gelu"), ("tiny", "linear")])
def test_parameter_names_follow_contract(name: str, connector: str) -> None:
    cfg = preset(name).replace(connector=connector)
    model = build_model(cfg, device="meta")
    assert set(model.state_dict()) == _expected_names(cfg)
    assert all(p.is_meta for p in model.parameters())
    assert not list(model.buffers())  # nothing that assign-loading would leave on the meta device


def test_meta_model_loads_with_assign_and_runs() -> None:
    torch.manual_seed(0)
    cfg = preset("tiny")
    real = build_model(cfg)
    meta = build_model(cfg, device="meta")
    meta.load_state_dict(real.state_dict(), assign=True)
    px = torch.randn(1, 3, cfg.vision.image_size, cfg.vision.image_size)
    assert generate(meta, [1, IMAGE_TOKEN_INDEX, 5], px, max_new_tokens=4).output_ids == \
        generate(real, [1, IMAGE_TOKEN_INDEX, 5], px, max_new_tokens=4).output_ids


def test_generate_stops_timings_and_sampling() -> None:
    torch.manual_seed(0)
    cfg = preset("tiny")
    model = build_model(cfg)
    px = torch.randn(1, 3, cfg.vision.image_size, cfg.vision.image_size)
    prompt = [1, IMAGE_TOKEN_INDEX, 9, 10]
    free = generate(model, prompt, px, max_new_tokens=6, eos_token_id=None)
    assert len(free.output_ids) == 6 and free.finish_reason == "length"
    for key in ("image_encode_ms", "prefill_ms", "ttft_ms", "decode_tokens_per_s"):
        assert free.timings[key] >= 0
    assert free.timings["decode_tokens_per_s"] > 0
    # A stop token ends generation and is not returned.
    cut = next((i for i in range(1, 6) if free.output_ids[i] not in free.output_ids[:i]), 0)
    stopped = generate(model, prompt, px, max_new_tokens=6, eos_token_id=[free.output_ids[cut]])
    assert stopped.output_ids == free.output_ids[:cut] and stopped.finish_reason == "stop"
    # Sampling: seeded runs repeat; top_k=1 is greedy.
    a = generate(model, prompt, px, max_new_tokens=6, temperature=1.0, seed=3)
    b = generate(model, prompt, px, max_new_tokens=6, temperature=1.0, seed=3)
    assert a.output_ids == b.output_ids
    assert generate(model, prompt, px, max_new_tokens=6, temperature=0.7, top_k=1, seed=1).output_ids == \
        free.output_ids


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    gen = torch.Generator().manual_seed(0)
    drawn = {select_next_token(logits, temperature=1.0, top_p=0.7, generator=gen) for _ in range(200)}
    assert drawn == {0, 1}  # 0.5 < 0.7 so token 1 joins; 0.8 >= 0.7 so token 2 does not


# ---- export contract ---------------------------------------------------------------------------

class _Decoder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: torch.Tensor):
        return self.model.forward_decoder(*args)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter, which engine_build uses
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # batch and head sizes traced as constants on purpose
@pytest.mark.parametrize("name", ["tiny", "tiny-phi"])
def test_one_exported_decoder_serves_prefill_and_decode(name: str, tmp_path) -> None:
    """The contract's point: traced once (batch 1, as the bundle's graphs), the graph has no control
    flow or sequence ops, every Reshape has a constant target (no per-call shape arithmetic), and it
    runs P = 0 prefill and P > 0 decode, with padding, exactly like the torch model."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    cfg = preset(name)
    t = cfg.text
    model = build_model(cfg)
    kv = (t.num_layers, 1, t.num_kv_heads, 2, t.head_dim)
    example = (torch.randn(1, 3, t.hidden_size), torch.arange(3)[None] + 2, torch.randn(kv), torch.randn(kv),
               torch.ones(1, 5, dtype=torch.long))
    names = ["inputs_embeds", "position_ids", "past_key", "past_value", "attention_mask"]
    dynamic = {"inputs_embeds": {1: "s"}, "position_ids": {1: "s"}, "past_key": {3: "p"},
               "past_value": {3: "p"}, "attention_mask": {1: "t"}, "logits": {1: "s"},
               "present_key": {3: "t"}, "present_value": {3: "t"}}
    path = str(tmp_path / "decoder.onnx")
    torch.onnx.export(_Decoder(model), example, path, dynamo=False, opset_version=16, input_names=names,
                      output_names=["logits", "present_key", "present_value"], dynamic_axes=dynamic)
    graph = onnx.load(path).graph
    ops = {n.op_type for n in graph.node}
    assert not ops & {"If", "Loop", "Scan"} and not any(op.startswith("Sequence") for op in ops)
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    assert [n.name for n in graph.node if n.op_type == "Reshape" and n.input[1] not in constants] == []
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for p, s, pad in [(0, 7, False), (4, 1, False), (3, 3, True), (5, 4, True)]:
        kv = (t.num_layers, 1, t.num_kv_heads, p, t.head_dim)
        args = [torch.randn(1, s, t.hidden_size), (torch.arange(s) + p)[None].contiguous(),
                torch.randn(kv), torch.randn(kv), torch.ones(1, p + s, dtype=torch.long)]
        if pad:
            args[4][0, 1] = 0  # a padded cache slot: masked for every query
        with torch.no_grad():
            ref = model.forward_decoder(*args)
        got = session.run(None, {n: a.numpy() for n, a in zip(names, args)})
        for g, r in zip(got, ref):
            torch.testing.assert_close(torch.from_numpy(g), r, atol=1e-5, rtol=1e-5)
