"""Every backend that can run here against the float64 reference, on the same inputs.

Tolerances: fp32 storage |err| <= 1e-5 + 1e-5*|ref| (accumulated quantities get an atol scaled by the
number of terms); fp16/bf16 storage within one ulp of the storage dtype at the result's magnitude.
Cases: odd shapes (B=3, n=1, tau=1, d=1, d not a multiple of any block, V=50257), offsets beyond 2**32,
seeds as ints and as tensors (large values), non-contiguous inputs, udot given and not, lengths shorter
than tau, active masks, each clip mode, sgld and adam. The backend list comes from
``fastalign.available_backends`` so new backends are covered automatically; on a GPU runner the cuda
and triton backends run on CUDA tensors (marked ``gpu``).
"""
from __future__ import annotations

import math

import pytest
import torch

import fastalign as fa
from _util import FP32_TOL, assert_matches_reference, backend_params, big_iteration, big_step, randn, storage_dtypes

BACKENDS = backend_params()
F64 = torch.float64


def _dtypes(device, backend):
    return storage_dtypes(device, backend)


def _ref(fn, *args, **kwargs):
    return fn(*args, backend="torch", compute_dtype=F64, **kwargs)


# ----------------------------------------------------------------------------- aisp_perturb
PERTURB_SHAPES = [  # B, n, tau, d, step
    (1, 1, 1, 1, 0),
    (3, 5, 4, 37, 2),
    (2, 3, 2, 130, 1),
    (1, 4, 3, 1024, 0),
]


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("shape", PERTURB_SHAPES, ids=lambda s: "B{}n{}tau{}d{}t{}".format(*s))
def test_aisp_perturb_matches_reference(device, backend, shape):
    B, n, tau, d, step = shape
    for dtype in _dtypes(device, backend):
        h = randn((B, n, d), dtype, device, 1, scale=3.0)
        u = randn((B, tau, d), torch.float32, device, 2)
        active = (torch.arange(B * n, device=device).reshape(B, n) % 3) != 1
        for it, seed, use_udot, use_active in [
            (0, 7, True, False),
            (big_iteration(n, tau, d), torch.tensor([2**40 + 3 * b for b in range(B)], dtype=torch.int64,
                                                    device=device), True, True),
            (5, 2**62, False, False),
        ]:
            udot = torch.full((B, n), 0.25, dtype=torch.float32, device=device) if use_udot else None
            udot64 = udot.double() if use_udot else None
            act = active if use_active else None
            z = fa.aisp_perturb(h, u, sigma=0.5, seed=seed, iteration=it, step=step, udot=udot, active=act,
                                backend=backend)
            z64 = _ref(fa.aisp_perturb, h.double(), u.double(), sigma=0.5, seed=seed, iteration=it, step=step,
                       udot=udot64, active=act)
            assert z.dtype == dtype
            assert_matches_reference(z, z64, dtype, name=f"z it={it}")
            if use_udot:
                assert_matches_reference(udot, udot64, torch.float32, name="udot", atol=FP32_TOL * math.sqrt(d))
                if use_active:
                    assert torch.all(udot[~active] == 0.25), "inactive rollouts must not accumulate udot"


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_aisp_perturb_past_horizon_and_noncontiguous(device, backend):
    B, n, tau, d = 2, 3, 2, 33
    h_t = randn((B, d, n), torch.float32, device, 3).transpose(1, 2)  # non-contiguous [B, n, d]
    u_big = randn((B, tau, 2 * d), torch.float32, device, 4)
    u = u_big[:, :, ::2]  # non-contiguous [B, tau, d]
    udot = torch.zeros(B, n, device=device)
    z = fa.aisp_perturb(h_t, u, sigma=1.0, seed=3, iteration=1, step=1, udot=udot, backend=backend)
    z_c = fa.aisp_perturb(h_t.contiguous(), u.contiguous(), sigma=1.0, seed=3, iteration=1, step=1, backend=backend)
    assert torch.equal(z, z_c)
    z64 = _ref(fa.aisp_perturb, h_t.double(), u.double(), sigma=1.0, seed=3, iteration=1, step=1)
    assert_matches_reference(z, z64, torch.float32)
    before = udot.clone()
    z_past = fa.aisp_perturb(h_t, u, sigma=1.0, seed=3, iteration=1, step=tau, udot=udot, backend=backend)
    assert torch.equal(z_past, h_t) and torch.equal(udot, before)


# ----------------------------------------------------------------------------- aisp_update
UPDATE_SHAPES = [  # B, n, tau, d
    (1, 1, 1, 1),
    (3, 4, 3, 37),
    (2, 5, 4, 130),
]


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("shape", UPDATE_SHAPES, ids=lambda s: "B{}n{}tau{}d{}".format(*s))
def test_aisp_update_matches_reference(device, backend, shape):
    B, n, tau, d = shape
    u = randn((B, tau, d), torch.float32, device, 5)
    rewards = randn((B, n), torch.float32, device, 6, scale=0.1)
    lengths = (torch.arange(B * n, device=device).reshape(B, n) * 7) % (tau + 1)
    udot_given = randn((B, n), torch.float32, device, 8, scale=3.0)
    for it, seed, lens, udot, alpha in [
        (0, 11, None, None, 0.5),
        (2, 11, lengths, None, 0.9),
        (big_iteration(n, tau, d), torch.tensor([2**50 + b for b in range(B)], device=device), lengths,
         udot_given, 0.5),
        (1, 0, None, udot_given, 1.0),
    ]:
        kw = dict(sigma=0.5, lam=0.3, alpha=alpha, seed=seed, iteration=it, lengths=lens)
        u_new, w = fa.aisp_update(u, rewards, udot=udot, backend=backend, **kw)
        u64, w64 = _ref(fa.aisp_update, u.double(), rewards.double(), udot=None if udot is None else udot.double(),
                        **kw)
        assert u_new.dtype == torch.float32 and w.dtype == torch.float32
        assert_matches_reference(w, w64, torch.float32, name="weights", atol=1e-6)
        assert_matches_reference(u_new, u64, torch.float32, name=f"u_new it={it}")
        assert torch.allclose(w.sum(1).double(), torch.ones(B, dtype=F64, device=device), atol=1e-5)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_aisp_update_low_precision_control(device, backend):
    B, n, tau, d = 2, 3, 2, 40
    for dtype in _dtypes(device, backend):
        u = randn((B, tau, d), dtype, device, 9)
        rewards = randn((B, n), torch.float32, device, 10)
        u_new, _ = fa.aisp_update(u, rewards, sigma=0.5, lam=0.5, alpha=0.9, seed=1, iteration=3, backend=backend)
        u64, _ = _ref(fa.aisp_update, u.double(), rewards.double(), sigma=0.5, lam=0.5, alpha=0.9, seed=1,
                      iteration=3)
        assert u_new.dtype == dtype
        assert_matches_reference(u_new, u64, dtype, name="u_new")


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_aisp_perturb_udot_feeds_update(device, backend):
    """udot accumulated by perturb over a horizon equals what the update's own first pass computes."""
    B, n, tau, d = 2, 3, 4, 29
    u = randn((B, tau, d), torch.float32, device, 12)
    h = torch.zeros(B, n, d, device=device)
    lengths = torch.tensor([[4, 2, 0], [1, 4, 3]], device=device)
    udot = torch.zeros(B, n, device=device)
    for t in range(tau):
        fa.aisp_perturb(h, u, sigma=0.5, seed=4, iteration=2, step=t, udot=udot, active=t < lengths, backend=backend)
    rewards = randn((B, n), torch.float32, device, 13)
    kw = dict(sigma=0.5, lam=0.3, alpha=0.5, seed=4, iteration=2, lengths=lengths, backend=backend)
    u_a, w_a = fa.aisp_update(u, rewards, udot=udot, **kw)
    u_b, w_b = fa.aisp_update(u, rewards, **kw)
    torch.testing.assert_close(w_a, w_b, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(u_a, u_b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("with_udot", [True, False], ids=["udot", "no-udot"])
@pytest.mark.parametrize("device,backend", backend_params(include_torch=False))
def test_aisp_update_never_allocates_the_noise_tensor(device, backend, with_udot):
    """The fused update regenerates the noise: its peak allocation stays O(B*tau*d), far below the
    B*n*tau*d floats of a stored noise tensor (which the naive pipeline, measured the same way, holds)."""
    from fastalign._bench.bench_ops import peak_memory_bytes

    B, n, tau, d = 1, 32, 8, 512
    noise_bytes = B * n * tau * d * 4
    u = randn((B, tau, d), torch.float32, device, 21)
    rewards = randn((B, n), torch.float32, device, 22)
    udot = randn((B, n), torch.float32, device, 23) if with_udot else None
    kw = dict(sigma=0.5, lam=0.3, alpha=0.5, seed=4, iteration=1, udot=udot)
    fa.aisp_update(u, rewards, backend=backend, **kw)  # warm-up: builds, caches, compiles
    fused = peak_memory_bytes(lambda: fa.aisp_update(u, rewards, backend=backend, **kw), torch.device(device))
    assert fused < noise_bytes / 8, f"{backend} allocated {fused} bytes; the noise tensor is {noise_bytes}"

    from fastalign._bench import naive

    stored = peak_memory_bytes(
        lambda: naive.aisp_update(u, rewards, noise=naive.aisp_noise_buffer(B, n, tau, d, device), **kw),
        torch.device(device))
    assert stored >= noise_bytes


# ----------------------------------------------------------------------------- sea_step
SEA_SHAPES = [(1, 1, 1), (3, 2, 37), (2, 3, 1000), (1, 2, 50257)]


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("shape", SEA_SHAPES, ids=lambda s: "B{}L{}V{}".format(*s))
@pytest.mark.parametrize("clip", ["chain", "row", "global", None])
def test_sea_step_sgld_matches_reference(device, backend, shape, clip):
    B, L, Vv = shape
    small = B * L * Vv <= 10_000
    for dtype in _dtypes(device, backend) if small else [torch.float32]:
        y = randn(shape, dtype, device, 14, scale=2.0)
        grad = randn(shape, dtype, device, 15, scale=0.5)
        max_norm = None if clip is None else 1.0
        for step, seed in [(0, 3), (big_step(L * Vv), torch.tensor([2**45 + b for b in range(B)], device=device))]:
            kw = dict(lr=0.1, noise_std=0.05, max_norm=max_norm, clip=clip, seed=seed, step=step)
            y_new, norm = fa.sea_step(y, grad, backend=backend, **kw)
            y64, norm64 = _ref(fa.sea_step, y.double(), grad.double(), **kw)
            assert y_new.dtype == dtype
            assert_matches_reference(y_new, y64, dtype, name=f"y_new step={step}")
            if clip is None:
                assert norm is None and norm64 is None
            else:
                assert norm.dtype == torch.float32
                assert_matches_reference(norm, norm64, torch.float32, name="grad_norm", atol=0.0)


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("clip", ["chain", "row", "global", None])
def test_sea_step_adam_matches_reference(device, backend, clip):
    shape = (3, 2, 37)
    for dtype in _dtypes(device, backend):
        y = randn(shape, dtype, device, 16)
        state = (torch.zeros(shape, device=device), torch.zeros(shape, device=device))
        state64 = (torch.zeros(shape, dtype=F64, device=device), torch.zeros(shape, dtype=F64, device=device))
        y64 = y.double()
        for step in range(2):
            grad = randn(shape, dtype, device, 17 + step, scale=3.0)
            kw = dict(lr=0.1, noise_std=0.01 * step, max_norm=None if clip is None else 2.0, clip=clip, seed=5,
                      step=step, optimizer="adam", betas=(0.9, 0.99), eps=1e-8)
            y, _ = fa.sea_step(y, grad, state=state, backend=backend, **kw)
            y64, _ = _ref(fa.sea_step, y64, grad.double(), state=state64, **kw)
            assert_matches_reference(y, y64, dtype, name=f"y step={step}", atol=2e-5 if dtype == torch.float32 else None)
            y64 = y.double()  # continue from the backend's rounded iterate
            assert_matches_reference(state[0], state64[0], torch.float32, name="m")
            assert_matches_reference(state[1], state64[1], torch.float32, name="v")


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_sea_step_noncontiguous_and_out(device, backend):
    y_t = randn((2, 41, 3), torch.float32, device, 20).transpose(1, 2)  # [2, 3, 41], non-contiguous
    g_t = randn((2, 41, 3), torch.float32, device, 21).transpose(1, 2)
    kw = dict(lr=0.2, noise_std=0.1, max_norm=0.5, clip="row", seed=9, step=4, backend=backend)
    y_new, norm = fa.sea_step(y_t, g_t, **kw)
    y_c, norm_c = fa.sea_step(y_t.contiguous(), g_t.contiguous(), **kw)
    assert torch.equal(y_new, y_c) and torch.equal(norm, norm_c)
    out = torch.empty(2, 41, 3, device=device).transpose(1, 2)
    res, _ = fa.sea_step(y_t, g_t, out=out, **kw)
    assert res is out and torch.equal(out, y_c)


# ----------------------------------------------------------------------------- gaussian_perturb
@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 2, 37), (2, 1, 1029)], ids=str)
def test_gaussian_perturb_matches_reference(device, backend, shape):
    for dtype in _dtypes(device, backend):
        x = randn(shape, dtype, device, 22)
        numel = math.prod(shape[1:])
        for step, seed in [(0, 1), (big_step(numel), 2**63 - 1 - shape[0])]:
            out = fa.gaussian_perturb(x, std=0.3, seed=seed, step=step, backend=backend)
            ref = _ref(fa.gaussian_perturb, x.double(), std=0.3, seed=seed, step=step)
            assert out.dtype == dtype
            assert_matches_reference(out, ref, dtype, name=f"x_new step={step}")


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_gaussian_perturb_draws_sea_step_noise(device, backend):
    """gaussian_perturb and sea_step draw the same numbers at the same seed and step."""
    shape = (2, 3, 17)
    y = randn(shape, torch.float32, device, 23)
    zero = torch.zeros(shape, device=device)
    a = fa.gaussian_perturb(y, std=0.7, seed=5, step=3, backend=backend)
    b, _ = fa.sea_step(y, zero, lr=0.0, noise_std=0.7, clip=None, seed=5, step=3, backend=backend)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
