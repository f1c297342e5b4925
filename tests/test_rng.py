"""The random stream (fastalign.backends.rng): known answers, an independent scalar model, and statistics."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from scipy import stats

from fastalign.backends import rng

I64 = torch.int64

# Random123 kat_vectors, "philox4x32 R ctr[4] key[2] -> out[4]".
KAT = [
    (10, (0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (10, (0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (10, (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    (7, (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0x4DFCCABA, 0x190A87F0, 0xC47362BA, 0xB6B5242A)),
]


@pytest.mark.parametrize("rounds,ctr,key,expected", KAT)
def test_philox_known_answers(rounds, ctr, key, expected):
    out = rng.philox4x32_10(torch.tensor(ctr, dtype=I64), torch.tensor(key, dtype=I64), rounds=rounds)
    assert [int(x) for x in out] == list(expected)


def _philox_scalar(ctr, key, rounds=10):
    """Philox4x32 written independently with Python's unbounded ints."""
    c = list(ctr)
    k0, k1 = key
    M = 0xFFFFFFFF
    for _ in range(rounds):
        p0 = 0xD2511F53 * c[0]
        p2 = 0xCD9E8D57 * c[2]
        c = [((p2 >> 32) ^ c[1] ^ k0) & M, p2 & M, ((p0 >> 32) ^ c[3] ^ k1) & M, p0 & M]
        k0, k1 = (k0 + 0x9E3779B9) & M, (k1 + 0xBB67AE85) & M
    return c


def _normal_scalar(seed, k):
    """docs/design.md#random-stream transcribed literally with Python floats (float64 evaluation)."""
    c = k >> 2
    w = _philox_scalar((c & 0xFFFFFFFF, c >> 32, 0, 0), (seed & 0xFFFFFFFF, seed >> 32))
    us = []
    for x in w:
        x = x - 2**32 if x >= 2**31 else x
        x = ~x if x < 0 else x
        us.append(float(np.float32(np.float32(x) * np.float32(4.6566127342e-10))))
    out = []
    for ua, ub in ((us[0], us[1]), (us[2], us[3])):
        r = math.sqrt(-2.0 * math.log(max(float(np.float32(1e-7)), ua)))
        th = float(np.float32(6.283185307179586)) * ub
        out += [r * math.cos(th), r * math.sin(th)]
    return out[k & 3], us[k & 3], w


def test_torch_philox_matches_scalar_model_on_random_inputs():
    rnd = random.Random(0)
    ctrs = [[rnd.getrandbits(32) for _ in range(4)] for _ in range(200)]
    keys = [[rnd.getrandbits(32) for _ in range(2)] for _ in range(200)]
    out = rng.philox4x32_10(torch.tensor(ctrs, dtype=I64), torch.tensor(keys, dtype=I64))
    for row, c, k in zip(out.tolist(), ctrs, keys):
        assert row == _philox_scalar(c, k)


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**32 + 7, 2**63 - 1])
def test_stream_matches_design_definition(seed):
    rnd = random.Random(seed % 1000)
    ks = [0, 1, 2, 3, 4, 5, 2**31 - 1, 2**32, 2**32 + 3, 2**40 + 1, 2**62 + 5] + [rnd.getrandbits(62) for _ in range(40)]
    k_t = torch.tensor(ks, dtype=I64)
    normals64 = rng.normal(seed, k_t, dtype=torch.float64)
    normals32 = rng.normal(seed, k_t)
    uniforms = rng.uniform(seed, k_t)
    words = rng.stream_words(seed, k_t >> 2)
    for idx, k in enumerate(ks):
        n_ref, u_ref, w_ref = _normal_scalar(seed, k)
        assert words[idx].tolist() == w_ref
        assert uniforms[idx].item() == u_ref  # bit-exact
        assert abs(normals64[idx].item() - n_ref) <= 1e-9 * max(1.0, abs(n_ref))
        assert abs(normals32[idx].item() - n_ref) <= 2e-6 * max(1.0, abs(n_ref))


def test_uniform_range_and_edges():
    words = torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 1], dtype=I64)
    u = rng.uniform_from_words(words)
    assert u.dtype == torch.float32
    assert u[0].item() == 0.0 and u[4].item() == 0.0  # ~0xffffffff == 0
    assert 0.0 <= u.min().item() and u.max().item() <= 1.0
    assert u[1].item() == np.float32(4.6566127342e-10)


def test_seed_broadcast_and_validation():
    k = torch.arange(8, dtype=I64)
    a = rng.normal(torch.tensor([3, 4], dtype=I64)[:, None], k[None, :])
    assert torch.equal(a[0], rng.normal(3, k)) and torch.equal(a[1], rng.normal(4, k))
    with pytest.raises(ValueError):
        rng.normal(-1, k)
    with pytest.raises(ValueError):
        rng.normal(0, torch.tensor([-4], dtype=I64))
    with pytest.raises(TypeError):
        rng.normal(0, torch.tensor([1.0]))
    with pytest.raises(ValueError):
        rng.philox4x32_10(torch.zeros(3, dtype=I64), torch.zeros(2, dtype=I64))


# ----------------------------------------------------------------------------- statistics
N_STAT = 2_000_000


@pytest.fixture(scope="module")
def draws():
    return rng.normal(2024, torch.arange(N_STAT, dtype=I64) + 2**33, dtype=torch.float64).numpy()


def test_normal_moments(draws):
    se = 1.0 / math.sqrt(N_STAT)
    assert abs(draws.mean()) < 5 * se
    assert abs(draws.var() - 1.0) < 5 * math.sqrt(2.0) * se
    assert abs(stats.skew(draws)) < 5 * math.sqrt(6.0) * se
    assert abs(stats.kurtosis(draws)) < 5 * math.sqrt(24.0) * se


def test_normal_kolmogorov_smirnov(draws):
    assert stats.kstest(draws, "norm").pvalue > 1e-3


def test_no_correlation_between_neighbouring_offsets(draws):
    se = 1.0 / math.sqrt(N_STAT)
    for lag in (1, 2, 3, 4, 5):
        r = np.corrcoef(draws[:-lag], draws[lag:])[0, 1]
        assert abs(r) < 5 * se, f"lag {lag}: r={r}"


def test_no_correlation_between_neighbouring_seeds():
    n = 500_000
    k = torch.arange(n, dtype=I64)
    a = rng.normal(77, k, dtype=torch.float64).numpy()
    b = rng.normal(78, k, dtype=torch.float64).numpy()
    c = rng.normal(77 + 2**32, k, dtype=torch.float64).numpy()
    se = 1.0 / math.sqrt(n)
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 * se
    assert abs(np.corrcoef(a, c)[0, 1]) < 5 * se
    assert stats.ks_2samp(a, b).pvalue > 1e-3
