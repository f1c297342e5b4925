"""The naive (eager, torch.randn) baseline against the reference: exactly where it is deterministic,
in distribution where it draws its own noise."""
import math

import pytest
import torch

import fastalign as fa
from fastalign._bench import naive


def _moments(x):
    x = x.double().flatten()
    return float(x.mean()), float(x.var())


def test_naive_is_not_a_registered_op_backend():
    assert "naive" not in fa.available_backends()
    with pytest.raises(ValueError, match="backend"):
        fa.sea_step(torch.zeros(1, 1, 4), torch.zeros(1, 1, 4), lr=0.1, noise_std=0.0, seed=0, step=0,
                    backend="naive")


def test_aisp_perturb_noise_matches_reference_in_distribution_and_fills_the_noise_buffer():
    B, n, tau, d, step, sigma = 2, 16, 8, 1024, 3, 0.5
    g = torch.Generator().manual_seed(0)
    h = torch.randn(B, n, d, generator=g)
    u = 0.3 * torch.randn(B, tau, d, generator=g)
    noise = naive.aisp_noise_buffer(B, n, tau, d)
    noise.zero_()
    udot = torch.zeros(B, n)
    z_naive = naive.aisp_perturb(h, u, sigma=sigma, seed=7, iteration=0, step=step, udot=udot, noise=noise)
    z_ref = fa.aisp_perturb(h, u, sigma=sigma, seed=7, iteration=0, step=step, backend="torch")
    eps_naive = (z_naive - h - u[:, step, None]) / sigma
    eps_ref = (z_ref - h - u[:, step, None]) / sigma
    N = eps_naive.numel()
    for eps in (eps_naive, eps_ref):
        mean, var = _moments(eps)
        assert abs(mean) < 5 / math.sqrt(N)
        assert abs(var - 1.0) < 5 * math.sqrt(2 / N)
    # the stored noise is exactly the noise that was added, and udot is its projection on u[step]
    torch.testing.assert_close(noise[:, :, step], eps_naive, atol=1e-5, rtol=0)
    assert float(noise[:, :, :step].abs().sum()) == 0.0
    torch.testing.assert_close(udot, (u[:, step, None] * noise[:, :, step]).sum(-1), atol=1e-4, rtol=1e-5)


def test_aisp_perturb_past_horizon_active_mask_and_reproducible_seed():
    h = torch.randn(1, 3, 8)
    u = torch.randn(1, 2, 8)
    assert torch.equal(naive.aisp_perturb(h, u, sigma=0.5, seed=1, step=2), h)
    a = naive.aisp_perturb(h, u, sigma=0.5, seed=1, iteration=4, step=1)
    b = naive.aisp_perturb(h, u, sigma=0.5, seed=1, iteration=4, step=1)
    c = naive.aisp_perturb(h, u, sigma=0.5, seed=1, iteration=5, step=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    udot = torch.zeros(1, 3)
    active = torch.tensor([[True, False, True]])
    naive.aisp_perturb(h, u, sigma=0.5, seed=1, step=0, udot=udot, active=active)
    assert udot[0, 1] == 0 and udot[0, 0] != 0 and udot[0, 2] != 0


def test_aisp_update_with_stored_noise_is_the_exact_formula():
    B, n, tau, d, sigma, lam, alpha = 2, 5, 4, 16, 0.5, 0.3, 0.9
    g = torch.Generator().manual_seed(1)
    u = torch.randn(B, tau, d, generator=g)
    noise = torch.randn(B, n, tau, d, generator=g)
    rewards = torch.randn(B, n, generator=g)
    lengths = torch.tensor([[4, 0, 2, 3, 1], [1, 4, 4, 2, 0]])
    u_new, w = naive.aisp_update(u, rewards, sigma=sigma, lam=lam, alpha=alpha, lengths=lengths, noise=noise)
    mask = (torch.arange(tau)[None, None] < lengths[..., None]).double()[..., None]
    eps = noise.double() * mask
    udot = (u.double()[:, None] * eps).sum((2, 3))
    w_ref = torch.softmax(rewards.double() / lam - (1 - alpha) / sigma * udot, -1)
    u_ref = u.double() + sigma * (w_ref[..., None, None] * eps).sum(1)
    torch.testing.assert_close(w.double(), w_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(u_new.double(), u_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["naive", "torch"])
def test_aisp_update_step_has_the_variance_sum_of_squared_weights(impl):
    # alpha=1: the weights are softmax(r / lam) for both, so (u_new - u) / sigma at step t is normal
    # with variance sum_i w_i^2 [t < len_i]; lengths make the variance differ per step.
    B, n, tau, d, sigma, lam = 1, 8, 4, 4096, 0.5, 0.3
    g = torch.Generator().manual_seed(2)
    u = torch.randn(B, tau, d, generator=g)
    rewards = torch.randn(B, n, generator=g)
    lengths = torch.tensor([[4, 4, 3, 3, 2, 2, 1, 0]])
    if impl == "naive":
        u_new, w = naive.aisp_update(u, rewards, sigma=sigma, lam=lam, alpha=1.0, seed=3, lengths=lengths)
    else:
        u_new, w = fa.aisp_update(u, rewards, sigma=sigma, lam=lam, alpha=1.0, seed=3, iteration=0, lengths=lengths,
                                  backend="torch")
    w_expected = torch.softmax(rewards.double() / lam, -1)
    torch.testing.assert_close(w.double(), w_expected, atol=1e-6, rtol=1e-5)
    step = (u_new.double() - u.double()) / sigma
    for t in range(tau):
        var_expected = float((w_expected[0] ** 2 * (t < lengths[0]).double()).sum())
        mean, var = _moments(step[0, t])
        assert abs(mean) < 5 * math.sqrt(var_expected / d)
        assert abs(var - var_expected) < 5 * var_expected * math.sqrt(2 / d)


@pytest.mark.parametrize("clip", ["chain", "row", "global", None])
@pytest.mark.parametrize("optimizer", ["sgld", "adam"])
def test_sea_step_without_noise_equals_the_reference(clip, optimizer):
    B, L, V = 3, 4, 257
    g = torch.Generator().manual_seed(3)
    y = torch.randn(B, L, V, generator=g)
    grad = torch.randn(B, L, V, generator=g) * torch.tensor([0.01, 1.0, 5.0])[:, None, None]
    kw = dict(lr=0.1, noise_std=0.0, max_norm=1.0 if clip else None, clip=clip, seed=0, step=2, optimizer=optimizer)
    states = [None, None]
    if optimizer == "adam":
        m0, v0 = 0.01 * torch.randn(B, L, V, generator=g), 0.001 * torch.rand(B, L, V, generator=g)
        states = [(m0.clone(), v0.clone()), (m0.clone(), v0.clone())]
    y_naive, norm_naive = naive.sea_step(y, grad, state=states[0], **kw)
    y_ref, norm_ref = fa.sea_step(y, grad, state=states[1], backend="torch", **kw)
    torch.testing.assert_close(y_naive, y_ref, atol=1e-5, rtol=1e-5)
    if clip is None:
        assert norm_naive is None and norm_ref is None
    else:
        assert norm_naive.shape == norm_ref.shape
        torch.testing.assert_close(norm_naive, norm_ref, atol=1e-5, rtol=1e-5)
    if optimizer == "adam":
        for a, b in zip(states[0], states[1]):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_sea_step_global_clip_equals_clip_grad_norm_then_sgd():
    g = torch.Generator().manual_seed(4)
    y = torch.randn(2, 3, 50, generator=g)
    grad = torch.randn(2, 3, 50, generator=g)
    p = torch.nn.Parameter(y.clone())
    p.grad = grad.clone()
    total = torch.nn.utils.clip_grad_norm_([p], max_norm=0.5)
    torch.optim.SGD([p], lr=0.2).step()
    y_new, norm = naive.sea_step(y, grad, lr=0.2, noise_std=0.0, max_norm=0.5, clip="global")
    torch.testing.assert_close(y_new, p.detach(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(norm, total)


@pytest.mark.parametrize("op", ["sea_step", "gaussian_perturb"])
def test_sea_noise_matches_reference_in_distribution(op):
    B, L, V, std = 2, 8, 4096, 0.3
    g = torch.Generator().manual_seed(5)
    y = torch.randn(B, L, V, generator=g)
    zeros = torch.zeros_like(y)
    if op == "sea_step":
        out_naive, _ = naive.sea_step(y, zeros, lr=0.1, noise_std=std, seed=11, step=1)
        out_ref, _ = fa.sea_step(y, zeros, lr=0.1, noise_std=std, seed=11, step=1, backend="torch")
    else:
        out_naive = naive.gaussian_perturb(y, std=std, seed=11, step=1)
        out_ref = fa.gaussian_perturb(y, std=std, seed=11, step=1, backend="torch")
    N = y.numel()
    for out in (out_naive, out_ref):
        mean, var = _moments((out - y) / std)
        assert abs(mean) < 5 / math.sqrt(N)
        assert abs(var - 1.0) < 5 * math.sqrt(2 / N)
    # different noise, same law: the two must not be the same numbers
    assert not torch.allclose(out_naive, out_ref)


def test_seed_none_draws_from_the_global_generator_and_keeps_dtype_and_out():
    x = torch.randn(2, 3, 16, dtype=torch.float16)
    torch.manual_seed(123)
    a = naive.gaussian_perturb(x, std=0.5)
    torch.manual_seed(123)
    out = torch.empty_like(x)
    b = naive.gaussian_perturb(x, std=0.5, out=out)
    assert b is out and a.dtype == torch.float16 and torch.equal(a, b)
