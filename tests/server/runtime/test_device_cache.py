"""The device-resident KV cache (DeviceKVCache) on a numpy stand-in for GPU memory, and the
generation loop over an engine that owns its caches: same tokens and logits as the host cache
(ToyEngine's arithmetic is exact), no full-cache host transfers per token."""
from __future__ import annotations

import numpy as np
import pytest

from server.runtime import GenerationParams, Generator, KVCache
from server.runtime.device_cache import DeviceKVCache
from server.runtime.errors import ContextLengthError
from tests.server.fake_device import DeviceToyEngine, FakeDevice
from tests.server.fake_engines import ToyEngine


class _Ids:
    """A tokenizer stand-in: these tests look only at ids."""

    def decode(self, ids, skip_special_tokens=True):  # type: ignore[no-untyped-def]
        return " ".join(str(i) for i in ids)

L, KVH, M, D = 2, 3, 8, 4


def _new(s: int, base: float) -> np.ndarray:
    return (base + np.arange(L * KVH * s * D, dtype=np.float32)).reshape(L, 1, KVH, s, D)


def test_writes_land_in_their_slots_and_truncation_zeroes() -> None:
    dev = FakeDevice()
    c = DeviceKVCache(dev, L, KVH, M, D, np.float32, mask_dtype=np.int32)
    key, value = c.download()
    assert not key.any() and not value.any()  # fresh device memory (0xAB garbage) is zeroed
    buf_k, buf_v = dev.alloc(L * KVH * M * D * 4), dev.alloc(L * KVH * M * D * 4)
    first, second = _new(3, 100.0), _new(2, 1000.0)
    for start, new in ((0, first), (3, second)):
        dev.upload(buf_k, new)
        dev.upload(buf_v, -new)
        c.write_device(start, buf_k, buf_v, new.shape[3])
    want = np.zeros((L, 1, KVH, M, D), np.float32)
    want[:, :, :, 0:3] = first
    want[:, :, :, 3:5] = second
    key, value = c.download()
    np.testing.assert_array_equal(key, want)
    np.testing.assert_array_equal(value, -want)
    assert c.length == 5 and c.remaining == 3
    mask = np.empty((1, M), np.int32)
    dev.download(mask, c.sync_mask())
    assert mask.tolist() == [[1, 1, 1, 1, 1, 0, 0, 0]] and mask.dtype == np.int32  # the engine's binding dtype
    # rewrite from position 2: positions 2.. are replaced, nothing stale is kept beyond the new end
    dev.upload(buf_k, _new(1, 7.0))
    dev.upload(buf_v, _new(1, 7.0))
    c.write_device(2, buf_k, buf_v, 1)
    want[:, :, :, 2:3] = _new(1, 7.0)
    want[:, :, :, 3:] = 0
    key, _ = c.download()
    np.testing.assert_array_equal(key, want)
    dev.download(mask, c.sync_mask())
    assert mask.tolist() == [[1, 1, 1, 0, 0, 0, 0, 0]]
    c.reset()
    key, value = c.download()
    assert c.length == 0 and not key.any() and not value.any()


def test_refuses_gaps_and_overflow() -> None:
    dev = FakeDevice()
    c = DeviceKVCache(dev, L, KVH, M, D, np.float32)
    buf = dev.alloc(L * KVH * M * D * 4)
    with pytest.raises(ValueError, match="leave a gap"):
        c.write_device(1, buf, buf, 1)
    c.write_device(0, buf, buf, M)
    with pytest.raises(ContextLengthError):
        c.write_device(M, buf, buf, 1)
    c.close()
    assert dev.live == {buf: L * KVH * M * D * 4}  # the cache freed its three buffers


def _runs(engine, prefill_chunk=None):  # type: ignore[no-untyped-def]
    gen = Generator(engine, engine.embed_table, _Ids(), prefill_chunk=prefill_chunk)
    image = np.linspace(0, 1, 3 * 4 * 4, dtype=np.float32).reshape(1, 3, 4, 4)
    prompts = [[1, 5, -200, 7, 8], [1, 5, -200, 7, 8, 9, 11], [1, 6, 7]]  # follow-up reuses a prefix; then another
    out = []
    for p in prompts:
        r = gen.generate(p, image if -200 in p else None, GenerationParams(max_tokens=6, ignore_eos=True,
                                                                             return_logits=True))
        out.append((r.output_ids, r.logits, r.timings.cached_tokens))
    return gen, out


@pytest.mark.parametrize("chunk", [None, 2])
def test_generation_on_a_device_cache_matches_the_host_cache(chunk) -> None:  # type: ignore[no-untyped-def]
    dev = FakeDevice()
    host_gen, host = _runs(ToyEngine(), chunk)
    dev_gen, on_device = _runs(DeviceToyEngine(dev), chunk)
    assert isinstance(host_gen.cache, KVCache) and isinstance(dev_gen.cache, DeviceKVCache)
    for (ids_h, lg_h, cached_h), (ids_d, lg_d, cached_d) in zip(host, on_device):
        assert ids_h == ids_d and cached_h == cached_d
        np.testing.assert_array_equal(lg_h, lg_d)
    assert on_device[1][2] > 0  # the follow-up really reused the device-resident prefix
    key, value = dev_gen.cache.download()
    np.testing.assert_array_equal(key, host_gen.cache.key)
    np.testing.assert_array_equal(value, host_gen.cache.value)


def test_decode_steps_move_no_cache_through_the_host() -> None:
    dev = FakeDevice()
    engine = DeviceToyEngine(dev)
    gen = Generator(engine, engine.embed_table, _Ids())
    gen.generate([1, 5, 7], None, GenerationParams(max_tokens=1, ignore_eos=True))
    up, down = dev.uploaded, dev.downloaded
    dev.largest_transfer = 0
    gen.generate([1, 5, 7], None, GenerationParams(max_tokens=21, ignore_eos=True))
    mask_bytes = gen.cache.mask.nbytes
    # per step at most the mask ([1, M]) goes up, never K/V; nothing comes down (the toy's logits stay on host)
    assert dev.uploaded - up <= 21 * mask_bytes
    assert dev.largest_transfer == mask_bytes < int(np.prod(gen.cache.shape)) * 4
    assert dev.downloaded == down


def test_sibling_gets_its_own_device_cache() -> None:
    engine = DeviceToyEngine(FakeDevice())
    gen = Generator(engine, engine.embed_table, _Ids())
    other = gen.sibling()
    assert isinstance(other.cache, DeviceKVCache) and other.cache.key_ptr != gen.cache.key_ptr
