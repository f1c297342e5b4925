"""The fastalign stream IS Triton's ``tl.randint4x`` / ``tl.rand4x`` / ``tl.randn4x`` layout.

A tiny Triton kernel evaluates Triton's own generators on counter blocks ``c`` (int64, as the fastalign
kernels pass them) under seeds read from an int64 tensor; ``fastalign.backends.rng`` (pure torch) must give
the same words and uniforms bit for bit, and the same normals within 2e-6, for small values and for
seeds/offsets above 2**32. Runs compiled on a GPU, or in the Triton interpreter on CPU
(tests/conftest.py sets ``TRITON_INTERPRET=1`` before triton is imported when there is no GPU).
"""
from __future__ import annotations

import pytest
import torch

from fastalign.backends import rng

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
I64 = torch.int64

SEEDS = [0, 1, 12345, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 0x243F6A88_85A308D3, 2**40 + 7, 2**63 - 1]
BLOCKS = torch.cat([
    torch.arange(0, 24),                                  # small offsets
    torch.arange(2**31 - 3, 2**31 + 3),                   # lo word crosses its sign bit
    torch.arange(2**32 - 5, 2**32 + 5),                   # counter carries into the hi word
    torch.tensor([2**32 + 5, 2**33 + 7, 2**40 - 1, 2**40, 0x1234_5678_9ABC, 2**59 + 3, 2**61 - 1]),
]).to(I64)                                                # 4 * c < 2**63: every valid logical index


@triton.jit
def _triton_stream_kernel(seed_ptr, c_ptr, words_ptr, unif_ptr, normal_ptr, NC, BLOCK: tl.constexpr):
    """For seed s = seed[pid] and every block c: Triton's 4 words, 4 uniforms and 4 normals."""
    pid = tl.program_id(0).to(tl.int64)
    seed = tl.load(seed_ptr + pid)
    offs = tl.arange(0, BLOCK)
    mask = offs < NC
    c = tl.load(c_ptr + offs, mask=mask, other=0)
    w0, w1, w2, w3 = tl.randint4x(seed, c)
    u0, u1, u2, u3 = tl.rand4x(seed, c)
    n0, n1, n2, n3 = tl.randn4x(seed, c)
    out = (pid * NC + offs) * 4
    tl.store(words_ptr + out + 0, w0.to(tl.int32, bitcast=True), mask=mask)
    tl.store(words_ptr + out + 1, w1.to(tl.int32, bitcast=True), mask=mask)
    tl.store(words_ptr + out + 2, w2.to(tl.int32, bitcast=True), mask=mask)
    tl.store(words_ptr + out + 3, w3.to(tl.int32, bitcast=True), mask=mask)
    tl.store(unif_ptr + out + 0, u0, mask=mask)
    tl.store(unif_ptr + out + 1, u1, mask=mask)
    tl.store(unif_ptr + out + 2, u2, mask=mask)
    tl.store(unif_ptr + out + 3, u3, mask=mask)
    tl.store(normal_ptr + out + 0, n0, mask=mask)
    tl.store(normal_ptr + out + 1, n1, mask=mask)
    tl.store(normal_ptr + out + 2, n2, mask=mask)
    tl.store(normal_ptr + out + 3, n3, mask=mask)


def _triton_stream(seeds: list[int], blocks: torch.Tensor):
    """Triton's (words [S, C, 4] as uint32 in int64, uniforms [S, C, 4], normals [S, C, 4])."""
    S, C = len(seeds), blocks.numel()
    seed_t = torch.tensor(seeds, dtype=I64, device=DEVICE)
    c_t = blocks.to(DEVICE)
    words = torch.empty(S, C, 4, dtype=torch.int32, device=DEVICE)
    unif = torch.empty(S, C, 4, dtype=torch.float32, device=DEVICE)
    normals = torch.empty(S, C, 4, dtype=torch.float32, device=DEVICE)
    _triton_stream_kernel[(S,)](seed_t, c_t, words, unif, normals, C, BLOCK=triton.next_power_of_2(C))
    return words.cpu().to(I64) & 0xFFFFFFFF, unif.cpu(), normals.cpu()


@pytest.fixture(scope="module")
def triton_stream():
    return _triton_stream(SEEDS, BLOCKS)


def _logical_indices(seed_count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(seed [S, C, 4], k [S, C, 4]) with k = 4c + q for every block c and output q."""
    k = (BLOCKS.view(1, -1, 1) * 4 + torch.arange(4, dtype=I64).view(1, 1, 4)).expand(seed_count, -1, -1)
    seed = torch.tensor(SEEDS, dtype=I64).view(-1, 1, 1).expand_as(k)
    return seed, k


def test_words_are_triton_randint4x(triton_stream):
    words, _, _ = triton_stream
    ours = rng.stream_words(torch.tensor(SEEDS, dtype=I64).view(-1, 1), BLOCKS.view(1, -1))
    assert ours.shape == words.shape
    mismatch = (ours != words).nonzero()
    assert mismatch.numel() == 0, f"{len(mismatch)} words differ; first (seed idx, block idx, q) = {mismatch[0].tolist()}"


def test_uniforms_are_triton_rand4x_bit_exact(triton_stream):
    _, unif, _ = triton_stream
    seed, k = _logical_indices(len(SEEDS))
    ours = rng.uniform(seed, k)
    assert ours.dtype == torch.float32
    assert torch.equal(ours.view(torch.int32), unif.view(torch.int32)), \
        f"max |diff| {(ours - unif).abs().max().item()}"
    assert float(unif.min()) >= 0.0 and float(unif.max()) < 1.0


def test_normals_are_triton_randn4x(triton_stream):
    _, _, normals = triton_stream
    seed, k = _logical_indices(len(SEEDS))
    ours = rng.normal(seed, k)
    err = (ours.double() - normals.double()).abs()
    assert float(err.max()) <= 2e-6, f"max |diff| {err.max().item()} at {err.argmax().item()}"
    # and the float64 evaluation of the same formula is as close (the kernels' only error is float32 math)
    ours64 = rng.normal(seed, k, dtype=torch.float64)
    assert float((ours64 - normals.double()).abs().max()) <= 2e-6


def test_the_stream_distinguishes_seed_halves_and_offset_halves(triton_stream):
    """Guards against a layout that drops the high 32 bits of the seed or of the counter block."""
    words, _, _ = triton_stream
    s = SEEDS.index
    c = BLOCKS.tolist().index
    assert not torch.equal(words[s(1)], words[s(2**32 + 1)])              # same lo32(seed)
    assert not torch.equal(words[:, c(5)], words[:, c(2**32 + 5)])        # same lo32(block)
