"""Sampling against hand-computed distributions and, where installed, transformers' own warpers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from server.runtime.errors import RequestError
from server.runtime.sampling import Sampler, SamplingParams, greedy, probabilities, warp_logits


def _logits(probs):
    return np.log(np.asarray(probs, dtype=np.float64))


def test_greedy_takes_lowest_id_among_ties() -> None:
    assert greedy(np.array([1.0, 3.0, 3.0, 2.0], dtype=np.float32)) == 1
    assert greedy(np.array([-1.0, -5.0], dtype=np.float32)) == 0
    assert Sampler(SamplingParams(temperature=0.0, top_k=1, top_p=0.1))(np.array([0.0, 2.0, 2.0])) == 1


def test_temperature_scales_log_probs() -> None:
    # softmax(log p / T) is proportional to p ** (1 / T).
    p = np.array([0.1, 0.2, 0.7])
    got = probabilities(_logits(p), SamplingParams(temperature=2.0))
    want = np.sqrt(p) / np.sqrt(p).sum()
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_top_k_keeps_k_best_and_their_ties() -> None:
    got = probabilities(np.array([1.0, 4.0, 2.0, 3.0]), SamplingParams(temperature=1.0, top_k=2))
    e4, e3 = math.exp(4.0), math.exp(3.0)
    np.testing.assert_allclose(got, [0.0, e4 / (e4 + e3), 0.0, e3 / (e4 + e3)], rtol=1e-12)
    # transformers' TopKLogitsWarper removes only scores below the k-th: a tie at the k-th stays.
    got = probabilities(np.array([2.0, 1.0, 2.0, 2.0]), SamplingParams(temperature=1.0, top_k=2))
    np.testing.assert_allclose(got, [1 / 3, 0.0, 1 / 3, 1 / 3], rtol=1e-12)


@pytest.mark.parametrize("top_p, kept", [
    (0.4, [1]),  # the best token alone already reaches 0.4
    (0.7, [1, 2]),  # 0.5 < 0.7 <= 0.75
    (0.85, [1, 2, 3]),  # 0.75 < 0.85 <= 0.9
    (0.95, [0, 1, 2, 3]),
])
def test_top_p_keeps_smallest_set_reaching_p(top_p, kept) -> None:
    p = np.array([0.1, 0.5, 0.25, 0.15])
    got = probabilities(_logits(p), SamplingParams(temperature=1.0, top_p=top_p))
    want = np.zeros(4)
    want[kept] = p[kept] / p[kept].sum()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15)


def test_top_p_always_keeps_one_token() -> None:
    got = probabilities(_logits([0.98, 0.01, 0.01]), SamplingParams(temperature=1.0, top_p=1e-9))
    np.testing.assert_allclose(got, [1.0, 0.0, 0.0])


def test_warpers_apply_temperature_then_top_k_then_top_p() -> None:
    # T = 0.5 squares then renormalises: [0.1, 0.5, 0.25, 0.15] -> [0.01, 0.25, 0.0625, 0.0225] / 0.345.
    # top_k = 3 drops id 0; top_p = 0.8 over [0.25, 0.0625, 0.0225] / 0.335 keeps ids 1 and 2
    # (0.746 < 0.8 <= 0.933).
    p = np.array([0.1, 0.5, 0.25, 0.15])
    got = probabilities(_logits(p), SamplingParams(temperature=0.5, top_k=3, top_p=0.8))
    np.testing.assert_allclose(got, [0.0, 0.25 / 0.3125, 0.0625 / 0.3125, 0.0], rtol=1e-9, atol=1e-15)


def test_sampler_frequencies_match_the_distribution() -> None:
    p = np.array([0.1, 0.5, 0.25, 0.15])
    params = SamplingParams(temperature=1.0, top_p=0.85, seed=1234)
    sampler = Sampler(params)
    n = 20000
    counts = np.bincount([sampler(_logits(p)) for _ in range(n)], minlength=4)
    want = np.array([0.0, 0.5, 0.25, 0.15]) / 0.9
    assert counts[0] == 0  # outside the nucleus: never drawn
    sigma = np.sqrt(n * want * (1 - want))
    assert np.all(np.abs(counts - n * want) < 5 * sigma + 1e-9), counts


def test_seed_reproduces_and_differs() -> None:
    logits = np.random.default_rng(0).normal(size=50)
    a = Sampler(SamplingParams(temperature=1.0, seed=7))
    b = Sampler(SamplingParams(temperature=1.0, seed=7))
    c = Sampler(SamplingParams(temperature=1.0, seed=8))
    seq_a = [a(logits) for _ in range(40)]
    assert seq_a == [b(logits) for _ in range(40)]
    assert seq_a != [c(logits) for _ in range(40)]


@pytest.mark.parametrize("kwargs", [
    dict(temperature=-0.1), dict(temperature=float("nan")), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5),
    dict(seed=-1),
])
def test_invalid_params_are_request_errors(kwargs) -> None:
    with pytest.raises(RequestError):
        SamplingParams(**kwargs)


def test_matches_transformers_warpers() -> None:
    torch = pytest.importorskip("torch")
    gen_utils = pytest.importorskip("transformers.generation.logits_process")
    rng = np.random.default_rng(5)
    for trial in range(40):
        logits = (rng.normal(size=64) * rng.uniform(0.5, 4.0)).astype(np.float32)
        t = float(rng.choice([0.3, 0.7, 1.0, 1.8]))
        k = int(rng.choice([0, 1, 5, 20]))
        p = float(rng.choice([1.0, 0.3, 0.8, 0.95]))
        scores = torch.from_numpy(logits)[None] / t  # TemperatureLogitsWarper divides the same way
        ids = torch.zeros(1, 1, dtype=torch.long)
        if k:
            scores = gen_utils.TopKLogitsWarper(top_k=k)(ids, scores)
        if p < 1.0:
            scores = gen_utils.TopPLogitsWarper(top_p=p)(ids, scores)
        want = torch.softmax(scores.double(), dim=-1)[0].numpy()
        got = probabilities(logits, SamplingParams(temperature=t, top_k=k, top_p=p))
        np.testing.assert_array_equal(got > 0, want > 0, err_msg="trial %d: T=%s k=%s p=%s" % (trial, t, k, p))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
        assert np.all(np.isneginf(warp_logits(logits, t, k, p)) == (want == 0))
