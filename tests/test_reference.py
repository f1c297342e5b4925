"""The reference backend against independent truths: torch.optim, clip_grad_norm_, brute-force AISP.

Also the op-level semantics every backend inherits from fastalign.ops (weights, errors, dispatch).
"""
from __future__ import annotations

import warnings

import pytest
import torch

import fastalign as fa
from fastalign import backends
from fastalign.backends import rng

F64 = torch.float64


def _eps_full(seed, it, n, tau, d):
    """The [n, tau, d] AISP noise of one prompt, built straight from the index formula."""
    i = torch.arange(n)[:, None, None]
    t = torch.arange(tau)[None, :, None]
    j = torch.arange(d)[None, None, :]
    k = ((it * n + i) * tau + t) * d + j
    return rng.normal(seed, k, dtype=F64)


def test_aisp_perturb_is_h_plus_u_plus_sigma_eps():
    B, n, tau, d = 2, 3, 4, 5
    h = torch.randn(B, n, d, dtype=F64)
    u = torch.randn(B, tau, d, dtype=F64)
    udot = torch.zeros(B, n, dtype=F64)
    for t in range(tau):
        z = fa.aisp_perturb(h, u, sigma=0.7, seed=torch.tensor([10, 20]), iteration=3, step=t,
                            udot=udot, backend="torch")
        for b, seed in enumerate((10, 20)):
            eps = _eps_full(seed, 3, n, tau, d)[:, t]
            torch.testing.assert_close(z[b], h[b] + u[b, t] + 0.7 * eps, rtol=0, atol=1e-12)
    for b, seed in enumerate((10, 20)):
        eps = _eps_full(seed, 3, n, tau, d)
        torch.testing.assert_close(udot[b], torch.einsum("itd,td->i", eps, u[b]), rtol=1e-12, atol=1e-12)


def test_aisp_update_brute_force():
    B, n, tau, d = 2, 4, 3, 6
    u = torch.randn(B, tau, d, dtype=F64)
    rewards = torch.randn(B, n, dtype=F64)
    lengths = torch.tensor([[3, 1, 0, 2], [3, 3, 2, 1]])
    sigma, lam, alpha = 0.5, 0.3, 0.8
    u_new, w = fa.aisp_update(u, rewards, sigma=sigma, lam=lam, alpha=alpha, seed=5, iteration=2, lengths=lengths,
                              backend="torch")
    for b in range(B):
        eps = _eps_full(5 + b, 2, n, tau, d)
        mask = (torch.arange(tau)[None, :] < lengths[b][:, None]).to(F64)  # [n, tau]
        udot = torch.einsum("itd,td,it->i", eps, u[b], mask)
        w_ref = torch.softmax(rewards[b] / lam - (1 - alpha) / sigma * udot, 0)
        torch.testing.assert_close(w[b].double(), w_ref, rtol=1e-6, atol=1e-7)
        u_ref = u[b] + sigma * torch.einsum("i,itd,it->td", w_ref, eps, mask)
        torch.testing.assert_close(u_new[b], u_ref, rtol=1e-6, atol=1e-6)


def test_aisp_weights_neg_inf_and_huge_rewards():
    u = torch.randn(1, 2, 3)
    r = torch.tensor([[float("-inf"), 1e30, -1e30, 1e30]])
    _, w = fa.aisp_update(u, r, sigma=0.5, lam=0.3, alpha=1.0, seed=0, iteration=0, backend="torch")
    assert w[0, 0].item() == 0.0 and w[0, 2].item() == 0.0
    torch.testing.assert_close(w[0, [1, 3]], torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="-inf"):
        fa.aisp_update(u, torch.full((1, 3), float("-inf")), sigma=0.5, lam=0.3, alpha=1.0, seed=0, iteration=0,
                       backend="torch")
    with pytest.raises(ValueError, match="NaN"):
        fa.aisp_update(u, torch.tensor([[0.0, float("nan")]]), sigma=0.5, lam=0.3, alpha=1.0, seed=0, iteration=0,
                       backend="torch")


def test_sea_sgld_equals_sgd_and_clip_grad_norm():
    y0 = torch.randn(2, 3, 11, dtype=F64)
    grad = torch.randn(2, 3, 11, dtype=F64) * 4
    # no clipping, no noise: plain SGD
    p = torch.nn.Parameter(y0.clone())
    p.grad = grad.clone()
    torch.optim.SGD([p], lr=0.3).step()
    y1, norm = fa.sea_step(y0, grad, lr=0.3, noise_std=0.0, seed=0, step=0, backend="torch")
    torch.testing.assert_close(y1, p.detach(), rtol=0, atol=1e-14)
    torch.testing.assert_close(norm, grad.square().sum((1, 2)).sqrt())
    # global clipping is clip_grad_norm_ then SGD
    p = torch.nn.Parameter(y0.clone())
    p.grad = grad.clone()
    total = torch.nn.utils.clip_grad_norm_([p], max_norm=1.5)
    torch.optim.SGD([p], lr=0.3).step()
    y2, norm2 = fa.sea_step(y0, grad, lr=0.3, noise_std=0.0, max_norm=1.5, clip="global", seed=0, step=0,
                            backend="torch")
    torch.testing.assert_close(y2, p.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(norm2, total)
    # chain clipping is clip_grad_norm_ per chain
    y3, _ = fa.sea_step(y0, grad, lr=0.3, noise_std=0.0, max_norm=1.5, clip="chain", seed=0, step=0, backend="torch")
    for b in range(2):
        g = grad[b].clone()
        p = torch.nn.Parameter(y0[b].clone())
        p.grad = g
        torch.nn.utils.clip_grad_norm_([p], max_norm=1.5)
        torch.optim.SGD([p], lr=0.3).step()
        torch.testing.assert_close(y3[b], p.detach(), rtol=1e-12, atol=1e-12)


def test_sea_adam_equals_torch_adam():
    y = torch.randn(2, 2, 9, dtype=F64)
    p = torch.nn.Parameter(y.clone())
    opt = torch.optim.Adam([p], lr=0.05, betas=(0.8, 0.95), eps=1e-6)
    state = (torch.zeros_like(y), torch.zeros_like(y))
    for step in range(4):
        grad = torch.randn_like(y)
        p.grad = grad.clone()
        opt.step()
        y, _ = fa.sea_step(y, grad, lr=0.05, noise_std=0.0, clip=None, seed=1, step=step, optimizer="adam",
                           state=state, betas=(0.8, 0.95), eps=1e-6, backend="torch")
        torch.testing.assert_close(y, p.detach(), rtol=1e-10, atol=1e-12)


def test_sea_noise_indexing():
    B, L, V = 2, 3, 5
    y = torch.zeros(B, L, V, dtype=F64)
    out, _ = fa.sea_step(y, torch.zeros_like(y), lr=0.0, noise_std=2.0, clip=None, seed=torch.tensor([4, 9]), step=7,
                         backend="torch")
    for b, seed in enumerate((4, 9)):
        k = 7 * L * V + torch.arange(L)[:, None] * V + torch.arange(V)[None, :]
        torch.testing.assert_close(out[b], 2.0 * rng.normal(seed, k, dtype=F64))


def test_sea_nonfinite_gradient_like_clip_grad_norm():
    y = torch.zeros(1, 2, 4)
    grad = torch.ones(1, 2, 4)
    grad[0, 1, 2] = float("inf")
    y_new, norm = fa.sea_step(y, grad, lr=0.1, noise_std=0.0, max_norm=1.0, clip="chain", seed=0, step=0,
                              backend="torch")
    assert torch.isinf(norm).all()
    p = torch.nn.Parameter(y[0].clone())
    p.grad = grad[0].clone()
    torch.nn.utils.clip_grad_norm_([p], 1.0)
    torch.optim.SGD([p], lr=0.1).step()
    torch.testing.assert_close(y_new[0], p.detach(), equal_nan=True)
    with pytest.raises(RuntimeError, match="non-finite"):
        fa.sea_step(y, grad, lr=0.1, noise_std=0.0, max_norm=1.0, seed=0, step=0, error_if_nonfinite=True,
                    backend="torch")


def test_inputs_never_modified():
    h = torch.randn(1, 2, 3)
    u = torch.randn(1, 2, 3)
    h0, u0 = h.clone(), u.clone()
    fa.aisp_perturb(h, u, sigma=1.0, seed=0, iteration=0, step=0, backend="torch")
    fa.aisp_update(u, torch.randn(1, 2), sigma=1.0, lam=1.0, alpha=0.5, seed=0, iteration=0, backend="torch")
    assert torch.equal(h, h0) and torch.equal(u, u0)


# ----------------------------------------------------------------------------- dispatch
def test_backend_selection(monkeypatch):
    x = torch.randn(1, 4)
    with pytest.raises(ValueError, match="backend"):
        fa.gaussian_perturb(x, std=1.0, seed=0, step=0, backend="nope")
    with pytest.raises(fa.BackendUnavailableError, match="cuda"):
        fa.gaussian_perturb(x, std=1.0, seed=0, step=0, backend="cuda")
    monkeypatch.setenv("FASTALIGN_BACKEND", "nope")
    with pytest.raises(ValueError, match="nope"):
        fa.gaussian_perturb(x, std=1.0, seed=0, step=0)
    monkeypatch.setenv("FASTALIGN_BACKEND", "torch")
    ref = fa.gaussian_perturb(x, std=1.0, seed=0, step=0)
    assert torch.equal(ref, fa.gaussian_perturb(x, std=1.0, seed=0, step=0, backend="torch"))
    with pytest.raises(ValueError, match="compute_dtype"):
        fa.gaussian_perturb(x, std=1.0, seed=0, step=0, backend="cpu", compute_dtype=F64)


def test_auto_falls_back_with_one_warning(monkeypatch):
    backends._reset_cache()
    monkeypatch.setitem(backends._AVAILABILITY, ("cpu", "cpu"), "simulated: no compiler")
    monkeypatch.delenv("FASTALIGN_BACKEND", raising=False)
    x = torch.randn(1, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fa.gaussian_perturb(x, std=1.0, seed=0, step=0)
        fa.gaussian_perturb(x, std=1.0, seed=0, step=0)
    fallback = [w for w in caught if "falls back" in str(w.message)]
    msgs = [str(w.message) for w in fallback]
    assert len(msgs) == 1 and "simulated: no compiler" in msgs[0] and "'torch'" in msgs[0]
    assert fallback[0].filename == __file__, "the warning points at the caller's line"
    with pytest.raises(fa.BackendUnavailableError, match="simulated"):
        fa.gaussian_perturb(x, std=1.0, seed=0, step=0, backend="cpu")
    backends._reset_cache()


def test_available_backends_reports_reasons():
    avail = fa.available_backends()
    assert avail["torch"] is None
    assert set(avail) >= {"torch", "cpu", "cuda", "triton"}
    if not torch.cuda.is_available():
        assert "CUDA" in avail["cuda"]
