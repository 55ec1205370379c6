"""The generation loop over an Engine: splice image embeddings, prefill, decode, stream.

One Generator owns one KV cache and serves one request at a time. It remembers what the cache
holds (a key per position, see prompt.py), so a request that shares a prefix with the previous
one (same system prompt and image, a follow-up question) prefills only the rest. The cache slots
it drops are zeroed (KVCache.truncate), so the cache holds exactly what a fresh run's would; the
reused K/V were computed in other batch shapes (earlier prefill or one-token steps), so logits
may differ from a fresh run's in the last bits (ORT CPU, tiny model: <= 2e-6); greedy tokens matched.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Hashable, Iterator, List, Optional, Sequence, Union

import numpy as np

from server.runtime.answer_text import AnswerText
from server.runtime.detokenizer import Decoder, byte_fallback_ids
from server.runtime.engine import Engine
from server.runtime.errors import EngineError, GeneratorBusyError
from server.runtime.image_cache import ImageEmbeddingCache
from server.runtime.kv_cache import KVCache
from server.runtime.prompt import ImagesArg, PromptLayout, common_prefix, layout_prompt
from server.runtime.request import GenerationParams
from server.runtime.results import GenerationResult, StreamDelta, Timings, ms
from server.runtime.sampling import Sampler
from server.runtime.stop import StopStrings

log = logging.getLogger(__name__)


class GenerationStream:
    """Iterator of StreamDelta; after the last one, `result` holds the GenerationResult.

    The request starts on the first next() and holds the generator until it ends; close() (or
    leaving a `with` block) ends it early, e.g. when a streaming client disconnects.
    """

    def __init__(self, run: Callable[["GenerationStream"], Iterator[StreamDelta]]) -> None:
        self._result: Optional[GenerationResult] = None
        self._it = run(self)

    def __iter__(self) -> "GenerationStream":
        return self

    def __next__(self) -> StreamDelta:
        return next(self._it)

    def __enter__(self) -> "GenerationStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._it.close()

    @property
    def result(self) -> GenerationResult:
        if self._result is None:
            raise RuntimeError("the stream has not finished: iterate it to the end first")
        return self._result


class Generator:
    def __init__(self, engine: Engine, embed_tokens: np.ndarray, tokenizer: Decoder,
                 eos_token_id: Optional[int] = None, stop_token_ids: Sequence[int] = (),
                 image_cache_size: int = 8, prefix_reuse: bool = True, prefill_chunk: Optional[int] = None) -> None:
        """embed_tokens [V, H]: the bundle's table, ideally np.load(mmap_mode="r") so only rows in use
        are paged in. stop_token_ids: stops for every request besides eos_token_id. prefill_chunk:
        prefill at most this many positions per decoder call (bounds the attention scratch memory)."""
        dims = engine.dims
        if embed_tokens.ndim != 2 or embed_tokens.shape[1] != dims.hidden_size:
            raise EngineError("embedding table has shape %s, the decoder takes width %d: the bundle is inconsistent, "
                              "re-export it" % (embed_tokens.shape, dims.hidden_size))
        if prefill_chunk is not None and prefill_chunk < 1:
            raise ValueError("prefill_chunk must be >= 1, got %d" % prefill_chunk)
        self.engine = engine
        # A plain ndarray view of a memory-mapped table: same pages, without np.memmap's per-index
        # Python overhead on every decode step.
        self.embed_tokens = np.asarray(embed_tokens)
        self.tokenizer = tokenizer
        self._byte_ids = byte_fallback_ids(tokenizer)
        self.eos_token_id = eos_token_id
        self.stop_token_ids = tuple(int(t) for t in stop_token_ids)
        self.prefix_reuse = prefix_reuse
        self.prefill_chunk = prefill_chunk
        self.image_cache = ImageEmbeddingCache(image_cache_size)
        # A backend may own a device-resident cache (Engine.create_cache); else a host KVCache.
        owned = engine.create_cache()
        self._engine_cache = owned is not None
        self.cache = owned if owned is not None else KVCache.for_dims(dims)
        self._cached_keys: List[Hashable] = []  # what cache position i holds
        self._lock = threading.Lock()

    # ---- public API -------------------------------------------------------------------

    def prepare(self, prompt_ids: Sequence[int], images: ImagesArg = None) -> PromptLayout:
        """Check a request against the engine (RequestError / ContextLengthError) and lay it out.

        The layout (which hashes every image) can be passed to stream() / generate() instead of the
        ids and images, by this generator or any other over the same bundle: the service checks a
        request when it arrives and runs it later on whichever worker is free, without doing this twice.
        """
        dims = self.engine.dims
        return layout_prompt(prompt_ids, images, dims.num_image_tokens, self.embed_tokens.shape[0], dims.max_context)

    def stream(self, prompt: Union[Sequence[int], PromptLayout], images: ImagesArg = None,
               params: Optional[GenerationParams] = None) -> GenerationStream:
        """Check the request now (RequestError / ContextLengthError), run it as it is iterated.

        prompt: prompt ids (with IMAGE_TOKEN_INDEX where `images` go) or a layout from prepare().
        """
        params = params or GenerationParams()
        if isinstance(prompt, PromptLayout):
            if images is not None:
                raise ValueError("pass the images to prepare(), not with a prepared layout")
            layout = prompt
        else:
            layout = self.prepare(prompt, images)
        return GenerationStream(lambda s: self._locked(s, layout, params))

    def generate(self, prompt: Union[Sequence[int], PromptLayout], images: ImagesArg = None,
                 params: Optional[GenerationParams] = None) -> GenerationResult:
        stream = self.stream(prompt, images, params)
        for _ in stream:
            pass
        return stream.result

    def sibling(self) -> "Generator":
        """Another generator over the same engine, embedding table, tokenizer and options, with its
        own KV cache and image cache: one more worker for the same bundle."""
        return Generator(self.engine, self.embed_tokens, self.tokenizer, eos_token_id=self.eos_token_id,
                         stop_token_ids=self.stop_token_ids, image_cache_size=self.image_cache.capacity,
                         prefix_reuse=self.prefix_reuse, prefill_chunk=self.prefill_chunk)

    def reset(self) -> None:
        """Forget the cached prefix (the next request prefills everything)."""
        self.cache.reset()
        del self._cached_keys[:]

    @property
    def cached_length(self) -> int:
        return len(self._cached_keys)

    # ---- request ----------------------------------------------------------------------

    def _locked(self, stream: GenerationStream, layout: PromptLayout,
                params: GenerationParams) -> Iterator[StreamDelta]:
        if not self._lock.acquire(blocking=False):
            raise GeneratorBusyError("the generator is serving another request; queue requests per generator")
        try:
            yield from self._run(stream, layout, params)
        except GeneratorExit:
            raise  # an abandoned stream: the cache bookkeeping is kept in step with every write
        except BaseException:
            self.reset()  # a failed step may leave K/V that the bookkeeping does not describe
            raise
        finally:
            self._lock.release()

    def _run(self, stream: GenerationStream, layout: PromptLayout, params: GenerationParams) -> Iterator[StreamDelta]:
        t_start = time.perf_counter()
        timings = Timings(prompt_tokens=layout.length, images=len(layout.images))
        if params.max_tokens == 0:
            stream._result = GenerationResult([], "", "length", timings)
            return
        sampler = Sampler(params.sampling)
        stop_ids = set() if params.ignore_eos else set(self.stop_token_ids) | set(params.stop_token_ids)
        if self.eos_token_id is not None and not params.ignore_eos:
            stop_ids.add(self.eos_token_id)
        stops = StopStrings(params.stop)

        # Reuse at most length - 1 positions: the last prompt position must run to give logits.
        reuse = common_prefix(layout.keys[:-1], self._cached_keys) if self.prefix_reuse else 0
        self.cache.truncate(reuse)
        del self._cached_keys[reuse:]
        timings.cached_tokens = reuse
        log.debug("prompt of %d positions, %d reused from the cache", layout.length, reuse)
        embeds = self._prompt_embeds(layout, reuse, timings)
        t_prefill = time.perf_counter()
        logits = self._prefill(embeds, reuse, layout.keys)
        forced = params.forced_tokens
        token = forced[0] if forced else sampler(logits)
        t_first = time.perf_counter()
        timings.prefill_ms = ms(t_first - t_prefill)
        timings.ttft_ms = ms(t_first - t_start)

        answer = AnswerText(self.tokenizer, stops, self._byte_ids)
        output: List[int] = []
        rows: List[np.ndarray] = []
        generated = 0
        paused = 0.0  # time the consumer held the stream between deltas: not decode time
        while True:
            generated += 1
            if params.return_logits:
                rows.append(np.array(logits, dtype=np.float32, copy=True))
            finish: Optional[str] = None
            stop_hit: Optional[Union[int, str]] = None
            if token in stop_ids:
                finish, stop_hit = "stop", token
                delta, matched = answer.finish()
            else:
                output.append(token)
                delta, matched = answer.push(token)
                if matched is None and (len(output) >= params.max_tokens or self.cache.remaining == 0):
                    finish = "length"
                    tail, matched = answer.finish()
                    delta += tail
            if matched is not None:
                finish, stop_hit = "stop", matched
            t_yield = time.perf_counter()
            yield StreamDelta(token, delta, finish)
            paused += time.perf_counter() - t_yield
            if finish is not None:
                break
            logits = self._step(self._embed_ids([token]), self.cache.length)
            self._cached_keys.append(token)
            token = forced[generated] if generated < len(forced) else sampler(logits)

        t_end = time.perf_counter()
        steps = generated - 1  # decoder calls after the first token
        decode_s = t_end - t_first - paused
        timings.completion_tokens = generated
        timings.decode_ms = ms(decode_s)
        timings.decode_tokens_per_s = round(steps / decode_s, 3) if steps > 0 and decode_s > 0 else 0.0
        timings.total_ms = ms(t_end - t_start)
        stream._result = GenerationResult(
            output_ids=output, text=answer.text, finish_reason=finish, timings=timings, stop=stop_hit,
            logits=np.stack(rows) if params.return_logits else None)

    # ---- steps ------------------------------------------------------------------------

    def _embed_ids(self, ids: Sequence[int]) -> np.ndarray:
        """Rows of the (memory-mapped) table as [1, S, H] in the decoder dtype."""
        rows = np.asarray(self.embed_tokens[np.asarray(ids, dtype=np.int64)])
        return rows.astype(self.engine.dims.dtype, copy=False)[None]

    def _image_embeds(self, pixel_values: np.ndarray, key: str, timings: Timings) -> np.ndarray:
        cached = self.image_cache.get(key)
        if cached is not None:
            timings.image_cache_hits += 1
            return cached
        dims = self.engine.dims
        t0 = time.perf_counter()
        embeds = self.engine.encode_image(pixel_values)
        timings.image_encode_ms = round(timings.image_encode_ms + ms(time.perf_counter() - t0), 3)
        timings.images_encoded += 1
        if embeds.shape != (1, dims.num_image_tokens, dims.hidden_size):
            raise EngineError("the vision graph returned %s, expected (1, %d, %d): the bundle is inconsistent"
                              % (embeds.shape, dims.num_image_tokens, dims.hidden_size))
        embeds = embeds.astype(dims.dtype, copy=False)
        self.image_cache.put(key, embeds)
        return embeds

    def _prompt_embeds(self, layout: PromptLayout, start: int, timings: Timings) -> np.ndarray:
        """inputs_embeds [1, length - start, H] for the prompt positions from `start` on.

        Images whose positions all lie before `start` are reused from the KV cache and not encoded.
        """
        parts = []
        for seg in layout.segments:
            lo = max(seg.start, start)
            if lo >= seg.end:
                continue
            if seg.image is None:
                parts.append(self._embed_ids(seg.token_ids[lo - seg.start:]))
            else:
                embeds = self._image_embeds(layout.images[seg.image], layout.image_hashes[seg.image], timings)
                parts.append(embeds[:, lo - seg.start:])
        return np.concatenate(parts, axis=1)

    def _prefill(self, embeds: np.ndarray, start: int, keys: Sequence[Hashable]) -> np.ndarray:
        chunk = self.prefill_chunk or embeds.shape[1]
        logits = None
        for off in range(0, embeds.shape[1], chunk):
            part = embeds[:, off:off + chunk]
            logits = self._step(part, start + off)
            self._cached_keys.extend(keys[start + off:start + off + part.shape[1]])
        assert logits is not None  # layout_prompt guarantees at least one position to prefill
        return logits

    def _step(self, embeds: np.ndarray, start: int) -> np.ndarray:
        """One decoder call over positions start .. start+S-1; writes their K/V; returns logits [V]."""
        positions = np.arange(start, start + embeds.shape[1], dtype=np.int64)[None]
        c = self.cache
        if self._engine_cache:
            return self.engine.decode_into(embeds, positions, c)[0]
        logits, new_key, new_value = self.engine.decode(embeds, positions, c.key, c.value, c.mask)
        c.write(start, new_key, new_value)
        return logits[0]

