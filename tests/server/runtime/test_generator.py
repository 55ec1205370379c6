"""The generation loop: splicing, prefix reuse, caches, stops, limits, streaming text."""
from __future__ import annotations

import numpy as np
import pytest

from models.config import IMAGE_TOKEN_INDEX as IMG
from server.runtime.errors import ContextLengthError, GeneratorBusyError, RequestError
from server.runtime.generator import Generator
from server.runtime.request import GenerationParams
from tests.server.fake_engines import ScriptedEngine, ToyEngine
from tests.server.tiny_tokenizers import byte_level, llama_style


class _Ids:
    """A tokenizer stand-in for tests that look only at ids."""

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


def _pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(1, 3, 4, 4)).astype(np.float32)


def _gen(engine: ToyEngine, **kw) -> Generator:
    return Generator(engine, engine.embed_table, _Ids(), **kw)


GREEDY = GenerationParams(max_tokens=6, return_logits=True)


def test_image_embeddings_are_spliced_at_the_sentinel() -> None:
    eng = ToyEngine()
    px = _pixels(0)
    _gen(eng).generate([1, 5, IMG, 7, 8], px, GenerationParams(max_tokens=1))
    embeds, positions, mask = eng.decode_calls[0]
    want = np.concatenate([eng.embed_table[[1, 5]], eng.encode_image(px)[0], eng.embed_table[[7, 8]]])[None]
    np.testing.assert_array_equal(embeds, want)
    np.testing.assert_array_equal(positions, np.arange(7)[None])
    assert not mask.any()


def test_two_images_in_order() -> None:
    eng = ToyEngine()
    a, b = _pixels(1), _pixels(2)
    _gen(eng).generate([IMG, 3, IMG], [a, b], GenerationParams(max_tokens=1))
    want = np.concatenate([eng.encode_image(a)[0], eng.embed_table[[3]], eng.encode_image(b)[0]])[None]
    np.testing.assert_array_equal(eng.decode_calls[0][0], want)


def test_prefix_reuse_is_identical_to_a_fresh_run() -> None:
    px = _pixels(3)
    first = [1, 2, IMG, 3, 4, 5]
    eng = ToyEngine()
    gen = _gen(eng)
    a = gen.generate(first, px, GREEDY)
    follow_up = first + a.output_ids + [6, 7]
    b = gen.generate(follow_up, px, GREEDY)
    fresh = _gen(ToyEngine()).generate(follow_up, px, GREEDY)
    assert b.output_ids == fresh.output_ids
    np.testing.assert_array_equal(b.logits, fresh.logits)
    # The cache held the first prompt and every answer token but the last (never fed back).
    assert b.timings.cached_tokens == 5 + 3 + len(a.output_ids) - 1
    assert b.timings.images_encoded == 0 and eng.image_calls == 1


def test_same_request_twice_reuses_all_but_the_last_position() -> None:
    px = _pixels(4)
    eng = ToyEngine()
    gen = _gen(eng)
    a = gen.generate([1, IMG, 2, 3], px, GREEDY)
    b = gen.generate([1, IMG, 2, 3], px, GREEDY)
    assert b.timings.cached_tokens == a.timings.prompt_tokens - 1 == 5
    assert b.output_ids == a.output_ids
    np.testing.assert_array_equal(b.logits, a.logits)


def test_other_image_reuses_only_the_text_before_it() -> None:
    eng = ToyEngine()
    gen = _gen(eng)
    gen.generate([1, 2, IMG, 3], _pixels(5), GREEDY)
    b = gen.generate([1, 2, IMG, 3], _pixels(6), GREEDY)
    assert b.timings.cached_tokens == 2 and b.timings.images_encoded == 1
    fresh = _gen(ToyEngine()).generate([1, 2, IMG, 3], _pixels(6), GREEDY)
    np.testing.assert_array_equal(b.logits, fresh.logits)


def test_image_cache_without_prefix_reuse() -> None:
    eng = ToyEngine()
    gen = _gen(eng, prefix_reuse=False)
    a = gen.generate([1, IMG, 2], _pixels(7), GREEDY)
    b = gen.generate([1, IMG, 2], _pixels(7).copy(), GREEDY)
    assert (a.timings.images_encoded, a.timings.image_cache_hits) == (1, 0)
    assert (b.timings.images_encoded, b.timings.image_cache_hits, b.timings.cached_tokens) == (0, 1, 0)
    assert eng.image_calls == 1
    np.testing.assert_array_equal(a.logits, b.logits)


def test_chunked_prefill_matches_one_shot() -> None:
    prompt = [1, 2, IMG, 3, 4, 5, 6, 7]
    one = _gen(ToyEngine()).generate(prompt, _pixels(8), GREEDY)
    eng = ToyEngine()
    chunked = _gen(eng, prefill_chunk=3).generate(prompt, _pixels(8), GREEDY)
    np.testing.assert_array_equal(one.logits, chunked.logits)
    assert [c[0].shape[1] for c in eng.decode_calls[:4]] == [3, 3, 3, 1]


def test_stop_token_and_ignore_eos() -> None:
    prompt = [1, 2, 3]
    ref = _gen(ToyEngine()).generate(prompt, None, GenerationParams(max_tokens=8))
    k = next(i for i in range(1, 8) if ref.output_ids[i] not in ref.output_ids[:i])
    eos = ref.output_ids[k]
    stopped = _gen(ToyEngine(), eos_token_id=eos).generate(prompt, None, GenerationParams(max_tokens=8))
    assert stopped.output_ids == ref.output_ids[:k] and stopped.finish_reason == "stop" and stopped.stop == eos
    assert stopped.timings.completion_tokens == k + 1
    extra = _gen(ToyEngine()).generate(prompt, None, GenerationParams(max_tokens=8, stop_token_ids=[eos]))
    assert extra.output_ids == ref.output_ids[:k]
    through = _gen(ToyEngine(), eos_token_id=eos).generate(prompt, None, GenerationParams(max_tokens=8, ignore_eos=True))
    assert through.output_ids == ref.output_ids and through.finish_reason == "length"


def test_context_limits() -> None:
    eng = ToyEngine(max_context=12, num_image_tokens=3)
    gen = _gen(eng)
    r = gen.generate([1, IMG, 2, 3], _pixels(9), GenerationParams(max_tokens=100))  # 6 positions
    assert r.finish_reason == "length" and len(r.output_ids) == 12 - 6 + 1
    with pytest.raises(ContextLengthError):
        gen.stream([1] * 10 + [IMG], _pixels(9))  # 13 positions: refused before any work


@pytest.mark.parametrize("prompt, images, match", [
    ([1, IMG], None, "1 image placeholder"),
    ([1, 2], [_pixels(0)], "0 image placeholder"),
    ([1, 40], None, "outside the vocabulary"),
    ([], None, "empty"),
])
def test_bad_requests(prompt, images, match) -> None:
    with pytest.raises(RequestError, match=match):
        _gen(ToyEngine()).stream(prompt, images)


def test_prepared_layout_runs_on_another_generator_like_the_ids() -> None:
    """The service checks a request once (prepare) and runs the layout on whichever worker is free."""
    px = _pixels(10)
    layout = _gen(ToyEngine()).prepare([1, IMG, 2, 3], px)
    assert layout.length == 3 + ToyEngine().dims.num_image_tokens
    eng = ToyEngine()
    from_layout = _gen(eng).generate(layout, params=GREEDY)
    from_ids = _gen(ToyEngine()).generate([1, IMG, 2, 3], px, GREEDY)
    assert from_layout.output_ids == from_ids.output_ids
    np.testing.assert_array_equal(from_layout.logits, from_ids.logits)
    assert eng.image_calls == 1
    with pytest.raises(ValueError, match="prepare"):
        _gen(ToyEngine()).stream(layout, px)
    with pytest.raises(ContextLengthError):
        _gen(ToyEngine(max_context=4)).prepare([1, IMG, 2, 3], px)


def test_sibling_answers_alike_with_its_own_caches() -> None:
    """The service's extra workers: same engine, table and options, a KV cache and image cache of their own."""
    px = _pixels(11)
    eng = ToyEngine()
    gen = _gen(eng, stop_token_ids=[9], image_cache_size=3, prefill_chunk=4)
    a = gen.generate([1, IMG, 2, 3], px, GREEDY)
    twin = gen.sibling()
    assert twin.engine is eng and twin.embed_tokens is gen.embed_tokens and twin.tokenizer is gen.tokenizer
    assert (twin.stop_token_ids, twin.image_cache.capacity, twin.prefill_chunk) == ((9,), 3, 4)
    assert gen.cached_length > 0 and twin.cached_length == 0 and len(twin.image_cache) == 0
    b = twin.generate([1, IMG, 2, 3], px, GREEDY)
    assert b.output_ids == a.output_ids
    np.testing.assert_array_equal(b.logits, a.logits)
    assert (b.timings.cached_tokens, b.timings.images_encoded) == (0, 1) and eng.image_calls == 2
    twin.reset()
    assert twin.cached_length == 0 and gen.cached_length > 0


def test_params_take_a_lone_stop_string_or_id() -> None:
    p = GenerationParams(stop="###", stop_token_ids=7)  # type: ignore[arg-type]
    assert p.stop == ("###",) and p.stop_token_ids == (7,)
    assert GenerationParams(stop=["a", "b"]).stop == ("a", "b")
    with pytest.raises(RequestError):
        GenerationParams(max_tokens=-1)
    with pytest.raises(RequestError):
        GenerationParams(top_p=0)


def test_max_tokens_zero_and_timings() -> None:
    gen = _gen(ToyEngine())
    r = gen.generate([1, 2], None, GenerationParams(max_tokens=0))
    assert r.output_ids == [] and r.finish_reason == "length"
    r = gen.generate([1, IMG, 2], _pixels(1), GenerationParams(max_tokens=5))
    t = r.timings
    assert (t.prompt_tokens, t.completion_tokens, t.images, t.images_encoded) == (5, 5, 1, 1)
    assert t.ttft_ms >= t.prefill_ms >= 0 and t.total_ms >= t.ttft_ms and t.decode_tokens_per_s > 0


def test_seeded_sampling_reproduces() -> None:
    p = GenerationParams(max_tokens=10, temperature=1.5, top_p=0.9, seed=42)
    a = _gen(ToyEngine()).generate([1, 2, 3], None, p)
    b = _gen(ToyEngine()).generate([1, 2, 3], None, p)
    assert a.output_ids == b.output_ids


def test_busy_then_abandoned_stream_leaves_a_consistent_cache() -> None:
    gen = _gen(ToyEngine())
    s1 = gen.stream([1, 2, 3], None, GenerationParams(max_tokens=8))
    next(s1)
    next(s1)
    with pytest.raises(GeneratorBusyError):
        next(gen.stream([1, 2], None))
    s1.close()  # a client that disconnects mid-stream
    r = gen.generate([1, 2, 3, 9], None, GREEDY)
    fresh = _gen(ToyEngine()).generate([1, 2, 3, 9], None, GREEDY)
    assert r.timings.cached_tokens > 0
    np.testing.assert_array_equal(r.logits, fresh.logits)


def test_engine_failure_resets_the_cache() -> None:
    eng = ToyEngine(fail_on_call=3)
    gen = _gen(eng)
    with pytest.raises(RuntimeError, match="injected"):
        gen.generate([1, 2, 3], None, GREEDY)
    assert gen.cached_length == 0 and gen.cache.length == 0
    eng.fail_on_call = None
    np.testing.assert_array_equal(gen.generate([1, 2, 3], None, GREEDY).logits,
                                  _gen(ToyEngine()).generate([1, 2, 3], None, GREEDY).logits)


# ---- text: real tokenizers, scripted tokens --------------------------------------------------

def _scripted(tok, answer: str, prompt=(1, 2, 3), eos: int = 2):
    ids = tok.encode(answer, add_special_tokens=False).ids
    eng = ScriptedEngine(ids + [eos], vocab=tok.get_vocab_size())
    eng.prompt_length = len(prompt)
    gen = Generator(eng, np.zeros((tok.get_vocab_size(), 2), np.float32), tok, eos_token_id=eos)
    return gen, ids


@pytest.mark.parametrize("tokenizer", [llama_style, byte_level])
def test_stream_text_equals_result_and_trims_stop_string(tokenizer) -> None:
    tok = tokenizer()
    gen, ids = _scripted(tok, "The left lung 🩺 is clear.### USER: more")
    stream = gen.stream([1, 2, 3], None, GenerationParams(max_tokens=100, stop=["###"]))
    deltas = list(stream)
    r = stream.result
    assert r.text == "The left lung 🩺 is clear." and r.finish_reason == "stop" and r.stop == "###"
    assert "".join(d.text for d in deltas) == r.text
    assert not any("#" in d.text or "\ufffd" in d.text for d in deltas)
    assert deltas[-1].finish_reason == "stop" and all(d.finish_reason is None for d in deltas[:-1])
    assert r.output_ids == ids[:len(r.output_ids)] and len(r.output_ids) < len(ids)


@pytest.mark.parametrize("tokenizer", [llama_style, byte_level])
def test_stop_token_text_and_near_miss_stop_string(tokenizer) -> None:
    tok = tokenizer()
    answer = "a # b ## c 肺"
    gen, ids = _scripted(tok, answer, eos=tok.get_vocab_size() - 1)
    stream = gen.stream([1, 2, 3], None, GenerationParams(max_tokens=100, stop=["###"]))
    deltas = list(stream)
    r = stream.result
    assert r.output_ids == ids and r.text == tok.decode(ids) == answer
    assert r.finish_reason == "stop" and r.stop == tok.get_vocab_size() - 1
    assert "".join(d.text for d in deltas) == answer


def test_stop_string_completed_by_the_held_back_tail() -> None:
    tok = llama_style()
    gen, ids = _scripted(tok, "abc 🩺")
    r = gen.generate([1, 2, 3], None, GenerationParams(max_tokens=len(ids), stop=["🩺"]))
    assert r.text == "abc " and r.finish_reason == "stop" and r.stop == "🩺"


def test_length_finish_returns_full_decode() -> None:
    tok = llama_style()
    gen, ids = _scripted(tok, "nodule in the left lung")
    stream = gen.stream([1, 2, 3], None, GenerationParams(max_tokens=4))
    text = "".join(d.text for d in stream)
    assert stream.result.finish_reason == "length" and stream.result.output_ids == ids[:4]
    assert text == stream.result.text == tok.decode(ids[:4])
