"""Non-finite values on every available backend.

- ``sea_step`` with inf/NaN in the gradient behaves like ``torch.nn.utils.clip_grad_norm_`` followed by
  an SGD step: the non-finite norm is returned, the clip coefficient (0 for inf, NaN for NaN) multiplies
  the gradient, and only the affected clip group is touched; with ``error_if_nonfinite=True`` it raises
  before ``y``, ``out=`` or the Adam state change.
- ``aisp_update``: -inf rewards get weight exactly 0; rewards of magnitude 1e30 do not overflow.
- inf/NaN in ``h``, ``y`` or ``x`` stay in their own element (no SIMD lane or block spreads them).
"""
from __future__ import annotations

import pytest
import torch

import fastalign as fa
from _util import assert_matches_reference, backend_params, randn, storage_dtypes

BACKENDS = backend_params()
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, in the Triton interpreter
F64 = torch.float64
NAN, INF = float("nan"), float("inf")


def _ref(fn, *args, **kwargs):
    return fn(*args, backend="torch", compute_dtype=F64, **kwargs)


def assert_matches_with_nonfinite(out, ref64, dtype, name="out", atol=None):
    """Same NaN/+inf/-inf positions as the reference; finite entries within the usual tolerance."""
    got, ref = out.detach().cpu(), ref64.detach().cpu()
    for what, pred in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
        mismatch = pred(got) != pred(ref)
        assert not bool(mismatch.any()), (
            f"{name}: {what} at different positions, first {mismatch.nonzero()[0].tolist()}: "
            f"got {got[mismatch][0].item()}, ref {ref[mismatch][0].item()}")
    finite = torch.isfinite(ref)
    assert_matches_reference(got[finite], ref[finite], dtype, name=name, atol=atol)


def _sgd_after_clip_grad_norm(y, grad, lr, max_norm):
    """What torch gives for one chain/group: clip_grad_norm_ then SGD, in float64."""
    p = torch.nn.Parameter(y.detach().double().clone())
    p.grad = grad.detach().double().clone()
    total = torch.nn.utils.clip_grad_norm_([p], max_norm)
    torch.optim.SGD([p], lr=lr).step()
    return p.detach(), total


# ----------------------------------------------------------------------------- sea_step
@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("bad", [INF, -INF, NAN], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("clip", ["chain", "row", "global"])
def test_sea_step_nonfinite_gradient_like_clip_grad_norm(device, backend, bad, clip):
    B, L, V = 3, 2, 37
    for dtype in storage_dtypes(device, backend):
        y = randn((B, L, V), dtype, device, 1)
        grad = randn((B, L, V), dtype, device, 2, scale=2.0)
        grad[1, 1, 20] = bad
        kw = dict(lr=0.1, noise_std=0.0, max_norm=1.0, clip=clip, seed=3, step=0)
        y_new, norm = fa.sea_step(y, grad, backend=backend, **kw)
        y64, norm64 = _ref(fa.sea_step, y.double(), grad.double(), **kw)
        assert_matches_with_nonfinite(y_new, y64, dtype, name="y_new")
        assert_matches_with_nonfinite(norm, norm64, torch.float32, name="grad_norm", atol=0.0)
        # the poisoned group, computed by torch itself
        if clip == "chain":
            sel = (1,)
        elif clip == "row":
            sel = (1, 1)
        else:
            sel = ()
        want, total = _sgd_after_clip_grad_norm(y[sel], grad[sel], 0.1, 1.0)
        group_norm = norm[sel] if norm.dim() else norm
        assert not torch.isfinite(group_norm).item() and (torch.isnan(group_norm) == torch.isnan(total)).item()
        assert_matches_with_nonfinite(y_new[sel], want, dtype, name="poisoned group")
        # every other group is clipped normally and stays finite
        finite_groups = torch.isfinite(norm)
        assert int((~finite_groups).sum()) == 1
        if clip != "global":
            assert torch.isfinite(y_new[finite_groups]).all()


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_sea_step_nonfinite_gradient_without_clipping(device, backend):
    y = randn((2, 3, 9), torch.float32, device, 4)
    grad = randn((2, 3, 9), torch.float32, device, 5)
    grad[0, 2, 3], grad[1, 0, 0] = INF, NAN
    # clip=None: plain SGD, inf/NaN stay in their element
    kw = dict(lr=0.5, noise_std=0.1, clip=None, seed=1, step=2)
    y_new, norm = fa.sea_step(y, grad, backend=backend, **kw)
    assert norm is None
    assert_matches_with_nonfinite(y_new, _ref(fa.sea_step, y.double(), grad.double(), **kw)[0], torch.float32)
    assert torch.isneginf(y_new[0, 2, 3]) and torch.isnan(y_new[1, 0, 0])
    assert int(torch.isfinite(y_new).sum()) == y.numel() - 2
    # a clip group without max_norm: the norm is reported, the gradient is not scaled
    y_new2, norm2 = fa.sea_step(y, grad, lr=0.5, noise_std=0.1, clip="chain", seed=1, step=2, backend=backend)
    assert torch.isposinf(norm2[0]) and torch.isnan(norm2[1])
    assert torch.equal(y_new2.isfinite(), y_new.isfinite())
    torch.testing.assert_close(y_new2, y_new, equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("clip", ["chain", "row", "global", None])
@pytest.mark.parametrize("optimizer", ["sgld", "adam"])
def test_sea_step_error_if_nonfinite_raises_before_touching_anything(device, backend, clip, optimizer):
    shape = (2, 3, 11)
    y = randn(shape, torch.float32, device, 6)
    grad = randn(shape, torch.float32, device, 7)
    grad[1, 2, 10] = NAN if clip == "row" else INF
    state = None
    if optimizer == "adam":
        state = (torch.full(shape, 0.25, device=device), torch.full(shape, 0.5, device=device))
    out = torch.full(shape, 9.0, device=device)
    y0, grad0 = y.clone(), grad.clone()
    with pytest.raises(RuntimeError, match="non-finite"):
        fa.sea_step(y, grad, lr=0.1, noise_std=0.1, max_norm=None if clip is None else 1.0, clip=clip, seed=0,
                    step=0, optimizer=optimizer, state=state, error_if_nonfinite=True, out=out, backend=backend)
    assert torch.equal(y, y0)
    torch.testing.assert_close(grad, grad0, equal_nan=True, rtol=0, atol=0)
    assert torch.all(out == 9.0), "out= was written although the call raised"
    if state is not None:
        assert torch.all(state[0] == 0.25) and torch.all(state[1] == 0.5), "adam state changed although it raised"
    # the same call on finite gradients goes through
    grad[1, 2, 10] = 0.0
    fa.sea_step(y, grad, lr=0.1, noise_std=0.1, max_norm=None if clip is None else 1.0, clip=clip, seed=0, step=0,
                optimizer=optimizer, state=state, error_if_nonfinite=True, out=out, backend=backend)
    assert torch.isfinite(out).all() and not torch.all(out == 9.0)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_sea_step_adam_nonfinite_gradient_matches_reference(device, backend):
    shape = (2, 2, 13)
    y = randn(shape, torch.float32, device, 8)
    grad = randn(shape, torch.float32, device, 9)
    grad[0, 1, 5] = INF
    state = (torch.zeros(shape, device=device), torch.zeros(shape, device=device))
    state64 = (torch.zeros(shape, dtype=F64, device=device), torch.zeros(shape, dtype=F64, device=device))
    kw = dict(lr=0.1, noise_std=0.0, max_norm=1.0, clip="row", seed=0, step=0, optimizer="adam")
    y_new, _ = fa.sea_step(y, grad, state=state, backend=backend, **kw)
    y64, _ = _ref(fa.sea_step, y.double(), grad.double(), state=state64, **kw)
    assert_matches_with_nonfinite(y_new, y64, torch.float32, name="y_new")
    assert_matches_with_nonfinite(state[0], state64[0], torch.float32, name="m")
    assert_matches_with_nonfinite(state[1], state64[1], torch.float32, name="v")
    assert torch.isnan(y_new[0, 1, 5]) and torch.isfinite(y_new[1]).all()


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_nonfinite_values_stay_in_their_element(device, backend):
    """inf/NaN in the data propagate to exactly their own outputs (not to neighbours in a SIMD lane)."""
    B, n, tau, d = 2, 3, 2, 70
    h = randn((B, n, d), torch.float32, device, 10)
    h[0, 1, 17], h[1, 2, 64], h[1, 0, 0] = INF, NAN, -INF
    u = randn((B, tau, d), torch.float32, device, 11)
    udot = torch.zeros(B, n, device=device)
    z = fa.aisp_perturb(h, u, sigma=0.5, seed=1, iteration=0, step=1, udot=udot, backend=backend)
    z64 = _ref(fa.aisp_perturb, h.double(), u.double(), sigma=0.5, seed=1, iteration=0, step=1)
    assert_matches_with_nonfinite(z, z64, torch.float32, name="z")
    assert torch.isfinite(udot).all(), "udot depends on u and the noise only"
    x = randn((2, 1, 70), torch.float16, device, 12)
    x[0, 0, 3], x[1, 0, 69] = NAN, INF
    out = fa.gaussian_perturb(x, std=0.5, seed=2, step=1, backend=backend)
    assert_matches_with_nonfinite(out, _ref(fa.gaussian_perturb, x.double(), std=0.5, seed=2, step=1),
                                  torch.float16)
    y = randn((2, 2, 35), torch.float32, device, 13)
    y[1, 1, 34] = NAN
    grad = randn((2, 2, 35), torch.float32, device, 14)
    y_new, norm = fa.sea_step(y, grad, lr=0.1, noise_std=0.1, max_norm=1.0, seed=0, step=0, backend=backend)
    assert torch.isfinite(norm).all()
    assert_matches_with_nonfinite(y_new, _ref(fa.sea_step, y.double(), grad.double(), lr=0.1, noise_std=0.1,
                                               max_norm=1.0, seed=0, step=0)[0], torch.float32)


# ----------------------------------------------------------------------------- aisp_update
@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_aisp_update_neg_inf_rewards_get_weight_zero(device, backend, alpha):
    B, n, tau, d = 2, 5, 3, 21
    u = randn((B, tau, d), torch.float32, device, 15)
    rewards = randn((B, n), torch.float32, device, 16)
    rewards[0, [1, 3]] = -INF
    rewards[1, 4] = -INF
    kw = dict(sigma=0.5, lam=0.3, alpha=alpha, seed=torch.tensor([7, 2**62], device=device), iteration=4)
    u_new, w = fa.aisp_update(u, rewards, backend=backend, **kw)
    u64, w64 = _ref(fa.aisp_update, u.double(), rewards.double(), **kw)
    dead = torch.isneginf(rewards)
    assert torch.all(w[dead] == 0.0) and torch.all(w[~dead] > 0.0)
    torch.testing.assert_close(w.sum(1), torch.ones(B, device=device), atol=1e-6, rtol=0)
    assert_matches_reference(w, w64, torch.float32, name="weights", atol=1e-6)
    assert_matches_reference(u_new, u64, torch.float32, name="u_new")
    # a -inf rollout contributes nothing: same update as if it had generated no step at all
    lengths = torch.where(dead, 0, tau)
    u_len, w_len = fa.aisp_update(u, rewards, lengths=lengths, backend=backend, **kw)
    assert torch.equal(w_len, w)
    torch.testing.assert_close(u_len, u_new, atol=1e-6, rtol=0)


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("scale", [1e30, 3e38], ids=["1e30", "3e38"])
def test_aisp_update_huge_rewards_do_not_overflow(device, backend, scale):
    B, n, tau, d = 2, 4, 2, 17
    u = randn((B, tau, d), torch.float32, device, 17)
    rewards = torch.tensor([[scale, -scale, scale / 2, scale], [-scale, -scale, -scale / 3, -INF]], device=device)
    for lam, alpha in [(0.3, 1.0), (1e-3, 0.9)]:
        kw = dict(sigma=0.5, lam=lam, alpha=alpha, seed=1, iteration=0)
        u_new, w = fa.aisp_update(u, rewards, backend=backend, **kw)
        u64, w64 = _ref(fa.aisp_update, u.double(), rewards.double(), **kw)
        assert torch.isfinite(w).all() and torch.isfinite(u_new).all()
        torch.testing.assert_close(w.sum(1), torch.ones(B, device=device), atol=1e-6, rtol=0)
        assert_matches_reference(w, w64, torch.float32, name="weights", atol=1e-6)
        assert_matches_reference(u_new, u64, torch.float32, name="u_new")
        # the two tied maxima of prompt 0 share the weight; prompt 1's best is its -scale/3 rollout
        torch.testing.assert_close(w[0].cpu(), torch.tensor([0.5, 0.0, 0.0, 0.5]), atol=1e-6, rtol=0)
        torch.testing.assert_close(w[1].cpu(), torch.tensor([0.0, 0.0, 1.0, 0.0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_aisp_update_float16_rewards_at_the_dtype_limit(device, backend):
    u = randn((1, 2, 8), torch.float32, device, 18)
    rewards = torch.tensor([[65504.0, -65504.0, 65504.0]], dtype=torch.float16, device=device)
    _, w = fa.aisp_update(u, rewards, sigma=1.0, lam=1e-4, alpha=1.0, seed=0, iteration=0, backend=backend)
    torch.testing.assert_close(w.cpu(), torch.tensor([[0.5, 0.0, 0.5]]), atol=1e-7, rtol=0)
