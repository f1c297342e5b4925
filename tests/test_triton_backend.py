"""Triton-specific properties not covered by the cross-backend tests/test_equivalence.py.

- the sea_step norm and the AISP udot pass are bit-identical across repeated runs (fixed-order
  two-pass reductions, no float atomics), and close to a float64 norm whatever the chunking;
- element-wise results do not depend on the tile size (every tile draws exactly the stream's
  numbers, including rows that start inside a counter block);
- seeds / counters given as ints or as device tensors, and a chain alone or in a batch, give
  bit-identical results;
- the udot accumulated by the perturb kernel over a whole iteration equals the udot pass;
- Adam's in-kernel bias correction is accurate at step 0, large steps and beta = 0;
- ``is_available`` on CPU follows TRITON_INTERPRET; on a GPU a CUDA graph replays a step loop.

On CPU this runs in the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so shapes are
small; on a GPU the same tests run compiled.
"""
from __future__ import annotations

import math

import pytest
import torch

import fastalign as fa
from fastalign.backends import rng

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if fa.available_backends(DEVICE).get("triton") is not None:
    pytest.skip(f"triton backend unavailable: {fa.available_backends(DEVICE)['triton']}", allow_module_level=True)

from fastalign.backends import triton as triton_backend  # noqa: E402

from fastalign.kernels import aisp_perturb as K_perturb  # noqa: E402
from fastalign.kernels import aisp_update as K_update  # noqa: E402
from fastalign.kernels import gaussian_perturb as K_gauss  # noqa: E402
from fastalign.kernels import sea_step as K_sea  # noqa: E402

I64 = torch.int64
F32 = torch.float32


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, dtype=F32):
    return torch.randn(*shape, generator=_gen(seed)).to(device=DEVICE, dtype=dtype)


def counters(*vals):
    return [torch.tensor([v], dtype=I64, device=DEVICE) for v in vals]


def seeds(*vals):
    return torch.tensor(vals, dtype=I64, device=DEVICE)


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.shape == b.shape and a.dtype == b.dtype
            and torch.equal(a.cpu().reshape(-1).view(torch.uint8), b.cpu().reshape(-1).view(torch.uint8)))


# --------------------------------------------------------------------------------------------------
# deterministic reductions


@pytest.mark.parametrize("group", ["chain", "row", "global"])
def test_sea_norm_is_bit_identical_across_runs_and_close_for_any_chunking(group):
    grad = randn(3, 4, 517, seed=1) * 3.0
    ref = {"chain": grad.double().flatten(1).norm(dim=1), "row": grad.double().norm(dim=2),
           "global": grad.double().norm()}[group]
    for block, tiles in ((None, None), (64, 1), (128, 3)):       # one partial per group, or many
        first = K_sea.sea_norm(grad, group=group, block=block, tiles=tiles)
        for _ in range(2):
            assert bits_equal(K_sea.sea_norm(grad, group=group, block=block, tiles=tiles), first)
        assert first.dtype == F32 and first.shape == ref.shape
        torch.testing.assert_close(first.double(), ref, rtol=2e-6, atol=0)


def test_sea_norm_nonfinite_gradients_propagate():
    grad = randn(2, 3, 50, seed=2)
    grad[0, 1, 7] = float("inf")
    grad[1, 2, 3] = float("nan")
    chain = K_sea.sea_norm(grad, group="chain")
    assert math.isinf(chain[0].item()) and math.isnan(chain[1].item())
    row = K_sea.sea_norm(grad, group="row")
    assert math.isinf(row[0, 1].item()) and math.isnan(row[1, 2].item()) and bool(torch.isfinite(row[0, 0]))


def test_aisp_udot_pass_is_bit_identical_across_runs():
    B, n, tau, d = 2, 3, 5, 37
    u = randn(B, tau, d, seed=3)
    lengths = torch.tensor([[5, 2, 0], [3, 5, 1]], dtype=I64, device=DEVICE)
    (it,) = counters(2**33 + 1)
    outs = []
    for _ in range(3):
        udot = torch.empty(B, n, device=DEVICE)
        K_update.aisp_udot(u, lengths, udot, seed=seeds(9, 2**40), iteration=it, block_c=4, tiles_per_prog=2)
        outs.append(udot)
    assert bits_equal(outs[0], outs[1]) and bits_equal(outs[0], outs[2])
    assert outs[0][0, 2].item() == 0.0 and outs[0][1, 2].item() != 0.0   # length 0 contributes nothing


# --------------------------------------------------------------------------------------------------
# tile-size independence of element-wise results (rows starting inside a counter block included)


@pytest.mark.parametrize("V,step", [(37, 0), (37, 1), (37, 2**31 + 3), (36, 5)])
def test_gaussian_perturb_and_sea_update_do_not_depend_on_tile_size(V, step):
    """N = 111: chains start at step*N % 4 == 0, 3 or 1 (masked window path); N = 108: aligned path."""
    B, L = 2, 3
    y, g = randn(B, L, V, seed=4), randn(B, L, V, seed=5)
    seed_t, (step_t,) = seeds(3, 2**33), counters(step)
    m0, v0 = randn(B, L, V, seed=6).abs(), randn(B, L, V, seed=7).abs()
    gp, upd, moments = [], [], []
    for block_c, row32 in ((1, None), (16, None), (None, None), (16, False)):  # row32=False: int64 row index
        out = torch.empty_like(y)
        K_gauss.gaussian_perturb(y.view(B, -1), out.view(B, -1), std=0.7, seed=seed_t, step=step_t, block_c=block_c)
        gp.append(out)
        out2 = torch.empty_like(y)
        m, v = m0.clone(), v0.clone()
        norm = K_sea.sea_norm(g, group="row")
        K_sea.sea_update(y, g, out2, norm=norm, group="row", max_norm=1.5, lr=0.1, noise_std=0.3, seed=seed_t,
                         step=step_t, optimizer="adam", m=m, v=v, beta1=0.9, beta2=0.999, eps=1e-8, block_c=block_c,
                         row32=row32)
        upd.append(out2)
        moments.append((m, v))
    for other in gp[1:]:
        assert bits_equal(other, gp[0])
    for other, (m, v) in zip(upd[1:], moments[1:]):
        assert bits_equal(other, upd[0])
        assert bits_equal(m, moments[0][0]) and bits_equal(v, moments[0][1])
    # and the numbers are the stream's (spot check against fastalign.backends.rng)
    k = step * L * V + torch.arange(L * V, dtype=I64)
    xi = torch.stack([rng.normal(s, k) for s in (3, 2**33)]).view(B, L, V)
    torch.testing.assert_close(gp[0].cpu(), y.cpu() + 0.7 * xi, rtol=0, atol=3e-6)


@pytest.mark.parametrize("d", [36, 37])                  # tau*d multiple of 4 (window path) or not (per element)
def test_aisp_perturb_and_apply_do_not_depend_on_tile_size(d):
    B, n, tau = 2, 3, 3
    h, u = randn(B, n, d, seed=8), randn(B, tau, d, seed=9)
    w = torch.softmax(randn(B, n, seed=10), dim=1)
    lengths = torch.tensor([[3, 1, 2], [0, 3, 3]], dtype=I64, device=DEVICE)
    seed_t = seeds(5, 2**35 + 1)
    it, step = counters(2**30 + 7, 1)
    zs, us = [], []
    for block_c in (1, None):
        z = torch.empty_like(h)
        K_perturb.aisp_perturb(h, u, z, sigma=0.5, seed=seed_t, iteration=it, step=step, block_c=block_c)
        zs.append(z)
        un = torch.empty_like(u)
        K_update.aisp_apply(u, w, lengths, un, sigma=0.5, seed=seed_t, iteration=it, block_c=block_c)
        us.append(un)
    for other in zs[1:]:
        assert bits_equal(other, zs[0])
    for other in us[1:]:
        assert bits_equal(other, us[0])
    # with udot the perturb kernel walks a whole row per program: same z, bit for bit
    z = torch.empty_like(h)
    udot = torch.zeros(B, n, device=DEVICE)
    K_perturb.aisp_perturb(h, u, z, sigma=0.5, seed=seed_t, iteration=it, step=step, udot=udot, block_c=2)
    assert bits_equal(z, zs[0])


# --------------------------------------------------------------------------------------------------
# seeds and counters: ints vs tensors, batch composition


def test_int_and_tensor_seeds_and_counters_give_identical_results():
    B, L, V = 3, 2, 29
    y, g = randn(B, L, V, seed=11), randn(B, L, V, seed=12)
    kw = dict(lr=0.05, noise_std=0.2, max_norm=2.0, clip="chain", backend="triton")
    a, na = fa.sea_step(y, g, seed=100, step=2**32 + 3, **kw)
    b, nb = fa.sea_step(y, g, seed=seeds(100, 101, 102), step=torch.tensor(2**32 + 3, device=DEVICE), **kw)
    assert bits_equal(a, b) and bits_equal(na, nb)

    h, u = randn(2, 4, 21, seed=13), randn(2, 5, 21, seed=14)
    pk = dict(sigma=0.5, backend="triton")
    ua, ub = torch.zeros(2, 4, device=DEVICE), torch.zeros(2, 4, device=DEVICE)
    za = fa.aisp_perturb(h, u, seed=7, iteration=3, step=4, udot=ua, **pk)
    zb = fa.aisp_perturb(h, u, seed=seeds(7, 8), iteration=torch.tensor([3], device=DEVICE),
                         step=torch.tensor([4], device=DEVICE), udot=ub, **pk)
    assert bits_equal(za, zb) and bits_equal(ua, ub)


def test_a_chain_alone_equals_the_same_chain_in_a_batch():
    B, L, V = 4, 2, 33
    y, g = randn(B, L, V, seed=15), randn(B, L, V, seed=16)
    kw = dict(lr=0.1, noise_std=0.3, max_norm=1.0, clip="row", step=5, backend="triton")
    batch, _ = fa.sea_step(y, g, seed=seeds(10, 20, 30, 40), **kw)
    alone, _ = fa.sea_step(y[2:3], g[2:3], seed=30, **kw)
    assert bits_equal(batch[2:3], alone)
    x = randn(B, 7, 5, seed=17)
    assert bits_equal(fa.gaussian_perturb(x, std=1.0, seed=50, step=9, backend="triton")[1:2],
                      fa.gaussian_perturb(x[1:2], std=1.0, seed=51, step=9, backend="triton"))


# --------------------------------------------------------------------------------------------------
# AISP: the fused udot equals the udot pass


def test_udot_accumulated_by_perturb_equals_the_udot_pass():
    B, n, tau, d = 2, 3, 4, 19
    u = randn(B, tau, d, seed=18)
    lengths = torch.tensor([[4, 2, 1], [3, 4, 0]], dtype=I64, device=DEVICE)
    seed_t, (it,) = seeds(77, 2**34 + 5), counters(2**29 + 1)
    udot = torch.zeros(B, n, device=DEVICE)
    for t in range(tau + 1):                             # the step past the horizon must leave udot alone
        h = randn(B, n, d, seed=100 + t)
        z = torch.empty_like(h)
        active = lengths > t
        (step_t,) = counters(t)
        K_perturb.aisp_perturb(h, u, z, sigma=0.5, seed=seed_t, iteration=it, step=step_t, udot=udot, active=active)
        if t == tau:
            assert bits_equal(z, h)
    two_pass = torch.empty(B, n, device=DEVICE)
    K_update.aisp_udot(u, lengths, two_pass, seed=seed_t, iteration=it)
    torch.testing.assert_close(udot, two_pass, rtol=1e-5, atol=1e-5)
    assert two_pass[1, 2].item() == 0.0


# --------------------------------------------------------------------------------------------------
# Adam bias correction computed in the kernel


@pytest.mark.parametrize("step,betas", [(0, (0.9, 0.999)), (1, (0.5, 0.99)), (20_000, (0.9, 0.999)),
                                        (3, (0.0, 0.999)), (2**31 + 5, (0.9, 0.9999))])
def test_adam_bias_correction_matches_float64(step, betas):
    B, L, V = 2, 2, 13
    y, g = randn(B, L, V, seed=19), randn(B, L, V, seed=20)
    m, v = randn(B, L, V, seed=21) * 0.1, randn(B, L, V, seed=22).abs() * 0.1
    out = torch.empty_like(y)
    K_sea.sea_update(y, g, out, norm=None, group=None, max_norm=None, lr=0.1, noise_std=0.0, seed=seeds(1, 2),
                     step=counters(step)[0], optimizer="adam", m=m.clone(), v=v.clone(), beta1=betas[0],
                     beta2=betas[1], eps=1e-8)
    b1, b2 = (torch.tensor(b, dtype=torch.float64) for b in betas)
    t = step + 1
    m64 = b1 * m.double() + (1 - b1) * g.double()
    v64 = b2 * v.double() + (1 - b2) * g.double() ** 2
    bias1, bias2 = -torch.expm1(t * torch.log(b1)), -torch.expm1(t * torch.log(b2))   # log(0) = -inf -> 1
    ref = y.double() - 0.1 * (m64 / bias1) / (torch.sqrt(v64 / bias2) + 1e-8)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# availability and CUDA graphs


def test_is_available_on_cpu_follows_triton_interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    reason = triton_backend.is_available("cpu")
    assert reason is not None and "TRITON_INTERPRET=1" in reason
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_backend.is_available("cpu") is None
    assert "mps" in triton_backend.is_available("mps")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_replays_a_step_loop_with_device_counters():
    B, L, V, steps = 2, 4, 1000, 3
    y0, g = randn(B, L, V, seed=23), randn(B, L, V, seed=24)
    seed_t, step_t = seeds(5, 6), torch.zeros(1, dtype=I64, device=DEVICE)
    kw = dict(lr=0.1, noise_std=0.2, max_norm=1.0, clip="chain", backend="triton")
    y = y0.clone()
    fa.sea_step(y, g, seed=seed_t, step=step_t, out=torch.empty_like(y), **kw)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y_new, _ = fa.sea_step(y, g, seed=seed_t, step=step_t, **kw)
        y.copy_(y_new)
        step_t.add_(1)
    y.copy_(y0)
    step_t.zero_()
    for _ in range(steps):
        graph.replay()
    eager = y0.clone()
    for s in range(steps):
        eager, _ = fa.sea_step(eager, g, seed=seeds(5, 6), step=s, **kw)
    torch.cuda.synchronize()
    assert bits_equal(y, eager)
