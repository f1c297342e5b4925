"""Property-based search (hypothesis) for disagreements between every backend and the float64 reference.

Random shapes (1 and primes included), storage dtypes, memory layouts (contiguous, transposed,
strided, stride-0 expanded), seeds up to 2**63-1 (ints and per-row tensors), noise offsets beyond 2**32
up to the int64 limit, and the ops' scalar arguments. Tolerances are those of
``_util.assert_matches_reference`` (fp32: 1e-5 abs + 1e-5 rel; fp16/bf16: one ulp of the storage
dtype), with an atol growing like sqrt(number of terms) for accumulated quantities (udot, u_new).

The number of examples comes from the hypothesis profile registered in ``conftest.py`` ("fastalign"
by default, ``--hypothesis-profile=long`` for more); the Triton interpreter gets a fifth of them and
smaller shapes.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastalign as fa
from _util import FP32_TOL, assert_matches_reference, backend_params, storage_dtypes

BACKENDS = backend_params()
F64 = torch.float64
INT64_MAX = 2**63 - 1
PRIMES = [2, 3, 5, 7, 11, 13, 17, 31, 37, 61, 127, 257, 521, 1031]
LAYOUTS = ["contiguous", "transposed", "strided", "expanded"]


def _interpreted(device, backend) -> bool:
    return backend == "triton" and device == "cpu"


def _examples(device, backend) -> int:
    n = settings().max_examples
    return max(2, n // 5) if _interpreted(device, backend) else n


def _size(limit: int):
    """1, primes and anything else up to ``limit``."""
    return st.one_of(st.just(1), st.sampled_from([p for p in PRIMES if p <= limit]), st.integers(1, limit))


def _layout(t: torch.Tensor, layout: str, expand_dim: int) -> torch.Tensor:
    """The values of 3-D ``t`` in a non-contiguous layout (``expanded`` repeats index 0 of a dim)."""
    if layout == "transposed":
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    if layout == "strided":
        wide = torch.zeros(*t.shape[:-1], 3 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., 1::3] = t
        return wide[..., 1::3]
    if layout == "expanded":
        shape = list(t.shape)
        return t.narrow(expand_dim, 0, 1).expand(*shape)
    return t


def _seed(draw, B):
    """An int (prompt b uses seed + b) or a per-row tensor, up to 2**63 - 1."""
    if draw(st.booleans()):
        return draw(st.one_of(st.integers(0, 1000), st.integers(0, INT64_MAX - B + 1)))
    return torch.tensor(draw(st.lists(st.integers(0, INT64_MAX), min_size=B, max_size=B)), dtype=torch.int64)


def _counter(draw, per_count: int):
    """A step/iteration whose offsets end, (counter + 1) * per_count, fits int64; often beyond 2**32."""
    top = INT64_MAX // per_count - 1
    return draw(st.one_of(st.integers(0, 3), st.integers(2**32 // per_count, min(top, 2**34 // per_count + 8)),
                          st.integers(0, top), st.just(top)))


def _data(shape, dtype, device, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=F64) * scale).to(device=device, dtype=dtype)


def _lowp_slack(dtype, inp: torch.Tensor, ref64: torch.Tensor, atol: float | None = None):
    """For fp16/bf16 storage: float32 math error of the terms, added to the one-ulp bound.

    A result that cancels to near zero (``y`` + noise ~ 0) has a tiny ulp while the float32 terms that
    produced it carry ~2**-24 of their own magnitude, so one ulp of the *result* alone is too strict.
    """
    if dtype == torch.float32:
        return atol
    x = inp.detach().to("cpu", F64)
    r = ref64.detach().to("cpu", F64)
    return 2.0**-21 * float(x.abs().max() + (r - x).abs().max())


def _ref(fn, *args, **kwargs):
    return fn(*args, backend="torch", compute_dtype=F64, **kwargs)


def _on(seed, device):
    return seed.to(device) if isinstance(seed, torch.Tensor) else seed


# ----------------------------------------------------------------------------- aisp_perturb
@pytest.mark.parametrize("device,backend", BACKENDS)
def test_aisp_perturb_property(device, backend):
    small = _interpreted(device, backend)
    dtypes = storage_dtypes(device, backend)

    @settings(max_examples=_examples(device, backend))
    @given(st.data())
    def check(data):
        draw = data.draw
        B, n, tau = draw(_size(4)), draw(_size(8 if small else 17)), draw(_size(5))
        d = draw(_size(67 if small else 1031))
        dtype = draw(st.sampled_from(dtypes))
        step = draw(st.one_of(st.integers(0, tau - 1), st.just(tau)))  # tau: past the horizon, z = h
        it = _counter(draw, n * tau * d)
        seed = _seed(draw, B)
        sigma = draw(st.sampled_from([1e-3, 0.5, 1.0, 7.0]))
        h = _layout(_data((B, n, d), dtype, device, draw(st.integers(0, 99)), scale=3.0),
                    draw(st.sampled_from(LAYOUTS)), 1)
        u = _layout(_data((B, tau, d), torch.float32, device, draw(st.integers(0, 99))),
                    draw(st.sampled_from(LAYOUTS)), 0)
        active = _data((B, n), torch.float32, device, 5) > 0 if draw(st.booleans()) else None
        udot = torch.full((B, n), 0.5, device=device) if draw(st.booleans()) else None
        udot64 = None if udot is None else udot.double()
        z = fa.aisp_perturb(h, u, sigma=sigma, seed=_on(seed, device), iteration=it, step=step, udot=udot,
                            active=active, backend=backend)
        z64 = _ref(fa.aisp_perturb, h.double(), u.double(), sigma=sigma, seed=_on(seed, device), iteration=it,
                   step=step, udot=udot64, active=active)
        assert z.dtype == dtype
        assert_matches_reference(z, z64, dtype, name=f"z (it={it}, step={step})", atol=_lowp_slack(dtype, h, z64))
        if udot is not None:
            assert_matches_reference(udot, udot64, torch.float32, name="udot", atol=FP32_TOL * math.sqrt(d))

    check()


# ----------------------------------------------------------------------------- aisp_update
@pytest.mark.parametrize("device,backend", BACKENDS)
def test_aisp_update_property(device, backend):
    small = _interpreted(device, backend)
    dtypes = storage_dtypes(device, backend)

    @settings(max_examples=_examples(device, backend))
    @given(st.data())
    def check(data):
        draw = data.draw
        B, n, tau = draw(_size(3)), draw(_size(6 if small else 13)), draw(_size(4 if small else 7))
        d = draw(_size(37 if small else 521))
        dtype = draw(st.sampled_from(dtypes))
        it = _counter(draw, n * tau * d)
        seed = _seed(draw, B)
        sigma = draw(st.sampled_from([0.1, 0.5, 1.0]))
        lam = draw(st.sampled_from([0.02, 0.3, 1.0]))
        alpha = draw(st.sampled_from([0.9, 0.99, 0.999, 1.0]))
        u = _layout(_data((B, tau, d), dtype, device, draw(st.integers(0, 99))), draw(st.sampled_from(LAYOUTS)), 0)
        rewards = _data((B, n), torch.float32, device, draw(st.integers(0, 99)), scale=0.05)
        if n > 1 and draw(st.booleans()):
            rewards[:, 0] = float("-inf")
        lengths = None
        if draw(st.booleans()):
            lengths = torch.tensor(draw(st.lists(st.integers(0, tau), min_size=B * n, max_size=B * n)),
                                   device=device).reshape(B, n)
        udot = _data((B, n), torch.float32, device, 7, scale=math.sqrt(tau * d)) if draw(st.booleans()) else None
        kw = dict(sigma=sigma, lam=lam, alpha=alpha, seed=_on(seed, device), iteration=it, lengths=lengths)
        u_new, w = fa.aisp_update(u, rewards, udot=udot, backend=backend, **kw)
        u64, w64 = _ref(fa.aisp_update, u.double(), rewards.double(), udot=None if udot is None else udot.double(),
                        **kw)
        # weights: softmax of s_i = r_i/lam - ((1-alpha)/sigma) udot_i; udot (if computed by the backend)
        # sums tau*d float32 products, so its error, and the weights', grows like sqrt(tau*d)
        terms = math.sqrt(tau * d) if udot is None else 1.0
        w_atol = 1e-6 + FP32_TOL * terms * (1 - alpha) / sigma
        assert_matches_reference(w, w64, torch.float32, name="weights", atol=w_atol)
        u_atol = FP32_TOL + sigma * 4.0 * w_atol * math.sqrt(n)
        if dtype != torch.float32:
            u_atol = _lowp_slack(dtype, u, u64) + sigma * 4.0 * w_atol * math.sqrt(n)
        assert u_new.dtype == dtype
        assert_matches_reference(u_new, u64, dtype, name=f"u_new (it={it})", atol=u_atol)

    check()


# ----------------------------------------------------------------------------- sea_step
@pytest.mark.parametrize("device,backend", BACKENDS)
def test_sea_step_property(device, backend):
    small = _interpreted(device, backend)
    dtypes = storage_dtypes(device, backend)

    @settings(max_examples=_examples(device, backend))
    @given(st.data())
    def check(data):
        draw = data.draw
        B, L = draw(_size(3)), draw(_size(4 if small else 9))
        Vv = draw(st.one_of(_size(70 if small else 1031), st.just(50257) if not small else st.just(127)))
        dtype = draw(st.sampled_from(dtypes))
        clip = draw(st.sampled_from(["chain", "row", "global", None]))
        max_norm = None if clip is None or draw(st.booleans()) is False else draw(st.sampled_from([1e-3, 1.0, 1e3]))
        optimizer = draw(st.sampled_from(["sgld", "adam"]))
        step = _counter(draw, L * Vv)
        seed = _seed(draw, B)
        lr = draw(st.sampled_from([0.0, 0.01, 0.5]))
        noise_std = draw(st.sampled_from([0.0, 1e-3, 0.3]))
        y = _layout(_data((B, L, Vv), dtype, device, draw(st.integers(0, 99)), scale=2.0),
                    draw(st.sampled_from(LAYOUTS)), 1)
        gscale = draw(st.sampled_from([1e-3, 1.0, 50.0]))
        grad = _layout(_data((B, L, Vv), dtype, device, draw(st.integers(0, 99)), scale=gscale),
                       draw(st.sampled_from(LAYOUTS)), 0)
        kw = dict(lr=lr, noise_std=noise_std, max_norm=max_norm, clip=clip, seed=_on(seed, device), step=step,
                  optimizer=optimizer)
        state = state64 = None
        if optimizer == "adam":
            m0 = _data((B, L, Vv), torch.float32, device, 11, scale=0.1 * gscale)
            v0 = _data((B, L, Vv), torch.float32, device, 12, scale=0.1 * gscale).square()
            state, state64 = (m0.clone(), v0.clone()), (m0.double(), v0.double())
            kw["betas"] = draw(st.sampled_from([(0.9, 0.999), (0.9, 0.9999), (0.5, 0.9), (0.0, 0.0)]))
        y_new, norm = fa.sea_step(y, grad, state=state, backend=backend, **kw)
        y64, norm64 = _ref(fa.sea_step, y.double(), grad.double(), state=state64, **kw)
        assert y_new.dtype == dtype
        if clip is None:
            assert norm is None and norm64 is None
        else:
            assert norm.dtype == torch.float32 and norm.shape == norm64.shape
            assert_matches_reference(norm, norm64, torch.float32, name="grad_norm", atol=0.0)
        # adam divides by sqrt(vhat) + eps: an ulp of float32 in m or v moves y by ~lr * 1e-7 relative
        atol = _lowp_slack(dtype, y, y64, FP32_TOL + lr * 1e-5)
        assert_matches_reference(y_new, y64, dtype, name=f"y_new (step={step})", atol=atol)
        if state is not None:
            assert_matches_reference(state[0], state64[0], torch.float32, name="m", atol=FP32_TOL * gscale)
            assert_matches_reference(state[1], state64[1], torch.float32, name="v", atol=FP32_TOL * gscale**2)

    check()


# ----------------------------------------------------------------------------- gaussian_perturb
@pytest.mark.parametrize("device,backend", BACKENDS)
def test_gaussian_perturb_property(device, backend):
    small = _interpreted(device, backend)
    dtypes = storage_dtypes(device, backend)

    @settings(max_examples=_examples(device, backend))
    @given(st.data())
    def check(data):
        draw = data.draw
        B, L = draw(_size(4)), draw(_size(5))
        Vv = draw(_size(70 if small else 2053))
        dtype = draw(st.sampled_from(dtypes))
        step = _counter(draw, L * Vv)
        seed = _seed(draw, B)
        std = draw(st.sampled_from([0.0, 1e-3, 0.3, 10.0]))
        x = _layout(_data((B, L, Vv), dtype, device, draw(st.integers(0, 99)), scale=4.0),
                    draw(st.sampled_from(LAYOUTS)), draw(st.sampled_from([0, 1, 2])))
        out = fa.gaussian_perturb(x, std=std, seed=_on(seed, device), step=step, backend=backend)
        ref = _ref(fa.gaussian_perturb, x.double(), std=std, seed=_on(seed, device), step=step)
        assert out.dtype == dtype
        assert_matches_reference(out, ref, dtype, name=f"x_new (step={step})", atol=_lowp_slack(dtype, x, ref))
        # the same draw as sea_step's Langevin noise at this seed and step
        if dtype == torch.float32 and std > 0:
            y_new, _ = fa.sea_step(x, torch.zeros_like(x), lr=0.0, noise_std=std, clip=None,
                                   seed=_on(seed, device), step=step, backend=backend)
            torch.testing.assert_close(y_new, out, atol=1e-6 * max(1.0, std), rtol=1e-6)

    check()


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("beta2", [0.999, 0.9999])
def test_sea_adam_coefficients_keep_float32_accuracy(device, backend, beta2):
    """Adam's ``1 - beta`` and bias corrections must come from the exact betas, not float32-rounded ones:
    float32(0.9999) is 6e-9 off, which is a 6e-5 relative error in ``1 - beta2`` (a regression example
    the property test above finds only sometimes)."""
    g = torch.full((1, 1, 8), 1e-3, device=device)
    y = torch.zeros(1, 1, 8, device=device)
    v0 = torch.full((1, 1, 8), 1e-6, device=device)
    for step in (0, 1, 99):
        kw = dict(lr=1.0, noise_std=0.0, clip=None, seed=0, step=step, optimizer="adam", betas=(0.9, beta2))
        state = (torch.zeros_like(y), v0.clone())
        y_new, _ = fa.sea_step(y, g, state=state, backend=backend, **kw)
        y64, _ = _ref(fa.sea_step, y.double(), g.double(), state=(torch.zeros_like(y).double(), v0.double()), **kw)
        assert_matches_reference(state[1], _ref_v(v0, g, beta2), torch.float32, name="v", atol=0.0)
        assert_matches_reference(y_new, y64, torch.float32, name=f"y_new (beta2={beta2}, step={step})", atol=0.0)


def _ref_v(v0, g, beta2):
    return beta2 * v0.double() + (1.0 - beta2) * g.double() ** 2
