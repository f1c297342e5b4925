"""The reference backend (``backend="torch"``): docs/design.md#ops written plainly in PyTorch.

It is the ground truth of the test suite. Noise comes from :mod:`fastalign.backends.rng` (Philox in int64
arithmetic), math runs in ``compute_dtype`` (float32 by default, float64 for the exact truth the
other backends are judged against). It favours clarity over speed, but never materialises a
``[B, n, tau, d]`` noise tensor: the AISP passes loop over the horizon.
"""
from __future__ import annotations

import torch

from fastalign.backends import rng


def is_available(device_type: str) -> str | None:
    return None


def _work_dtype(*tensors: torch.Tensor, compute_dtype: torch.dtype | None) -> torch.dtype:
    if compute_dtype is not None:
        return compute_dtype
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _aisp_eps(seed: torch.Tensor, it: int, n: int, tau: int, t: int, d: int, dtype) -> torch.Tensor:
    """eps[b, i, j] = normal(seed[b], ((it*n + i)*tau + t)*d + j) for one step t: ``[B, n, d]``."""
    device = seed.device
    i = torch.arange(n, device=device, dtype=torch.int64)
    j = torch.arange(d, device=device, dtype=torch.int64)
    k = ((it * n + i[:, None]) * tau + t) * d + j[None, :]
    return rng.normal(seed[:, None, None], k[None], dtype=dtype)


def _sea_xi(seed: torch.Tensor, step: int, numel: int, dtype) -> torch.Tensor:
    """xi[b, k] = normal(seed[b], step*numel + k): ``[B, numel]``."""
    k = step * numel + torch.arange(numel, device=seed.device, dtype=torch.int64)
    return rng.normal(seed[:, None], k[None, :], dtype=dtype)


def aisp_perturb(h, u, out, *, sigma, seed, iteration, step, udot, active, compute_dtype=None):
    """``out[B, n, d] = h + u[:, step] + sigma * eps`` (or ``h`` past the horizon); ``udot += u.eps``."""
    B, n, d = h.shape
    tau = u.shape[1]
    t = int(step.reshape(-1)[0])
    it = int(iteration.reshape(-1)[0])
    if t >= tau:
        out.copy_(h)
        return
    cd = _work_dtype(h, u, compute_dtype=compute_dtype)
    eps = _aisp_eps(seed, it, n, tau, t, d, cd)
    u_t = u[:, t].to(cd)
    out.copy_(h.to(cd) + u_t[:, None, :] + sigma * eps)
    if udot is not None:
        contrib = (eps * u_t[:, None, :]).sum(-1)
        if active is not None:
            contrib = torch.where(active, contrib, torch.zeros_like(contrib))
        udot.add_(contrib.to(udot.dtype))


def aisp_udot(u, lengths, udot_out, *, seed, iteration, compute_dtype=None):
    """``udot_out[B, n] = sum_{t < lengths} sum_j u[b,t,j] * eps[b,i,t,j]`` (one step at a time)."""
    B, tau, d = u.shape
    n = lengths.shape[1]
    it = int(iteration.reshape(-1)[0])
    cd = _work_dtype(u, udot_out, compute_dtype=compute_dtype)
    acc = torch.zeros(B, n, dtype=cd, device=u.device)
    for t in range(tau):
        eps = _aisp_eps(seed, it, n, tau, t, d, cd)
        contrib = (eps * u[:, t].to(cd)[:, None, :]).sum(-1)
        acc += torch.where(t < lengths, contrib, torch.zeros_like(contrib))
    udot_out.copy_(acc)


def aisp_apply(u, weights, lengths, out, *, sigma, seed, iteration, compute_dtype=None):
    """``out[B, tau, d] = u + sigma * sum_i weights[b,i] * eps[b,i,t,:] * [t < lengths[b,i]]``."""
    B, tau, d = u.shape
    n = lengths.shape[1]
    it = int(iteration.reshape(-1)[0])
    cd = _work_dtype(u, weights, compute_dtype=compute_dtype)
    w = weights.to(cd)
    for t in range(tau):
        eps = _aisp_eps(seed, it, n, tau, t, d, cd)
        w_t = torch.where(t < lengths, w, torch.zeros_like(w))
        out[:, t] = (u[:, t].to(cd) + sigma * torch.einsum("bn,bnd->bd", w_t, eps)).to(out.dtype)


def sea_norm(grad, *, group, compute_dtype=None):
    """L2 norm of ``grad[B, L, V]`` per chain ``[B]``, per row ``[B, L]`` or globally ``[]``."""
    cd = _work_dtype(grad, compute_dtype=compute_dtype)
    g2 = grad.to(cd).square()
    if group == "chain":
        return g2.sum(dim=(1, 2)).sqrt()
    if group == "row":
        return g2.sum(dim=2).sqrt()
    if group == "global":
        return g2.sum().sqrt()
    raise ValueError(f"clip: expected 'chain', 'row', 'global' or None, got {group!r}")


def clip_coef(norm: torch.Tensor, max_norm: float) -> torch.Tensor:
    """``min(1, max_norm / (norm + 1e-6))`` with torch.clamp semantics (NaN stays NaN)."""
    return torch.clamp(max_norm / (norm + 1e-6), max=1.0)


def _broadcast_group(values: torch.Tensor, group: str) -> torch.Tensor:
    """Per-group values -> broadcastable against ``[B, L, V]``."""
    if group == "chain":
        return values[:, None, None]
    if group == "row":
        return values[:, :, None]
    return values.reshape(1, 1, 1)


def sea_update(y, grad, out, *, norm, group, max_norm, lr, noise_std, seed, step, optimizer, m, v,
               beta1, beta2, eps, compute_dtype=None):
    """One SEA step on ``y[B, L, V]``: clip by group norm, sgld or adam update, Langevin noise."""
    B, L, V = y.shape
    cd = _work_dtype(y, grad, compute_dtype=compute_dtype)
    g = grad.to(cd)
    if max_norm is not None:
        g = g * _broadcast_group(clip_coef(norm.to(cd), max_norm), group)
    s = int(step.reshape(-1)[0])
    if noise_std != 0.0:
        noise = noise_std * _sea_xi(seed, s, L * V, cd).reshape(B, L, V)
    else:
        noise = torch.zeros((), dtype=cd, device=y.device)
    if optimizer == "sgld":
        out.copy_(y.to(cd) - lr * g + noise)
        return
    t = s + 1
    m_new = beta1 * m.to(cd) + (1.0 - beta1) * g
    v_new = beta2 * v.to(cd) + (1.0 - beta2) * g * g
    m.copy_(m_new)
    v.copy_(v_new)
    mhat = m_new / (1.0 - beta1**t)
    vhat = v_new / (1.0 - beta2**t)
    out.copy_(y.to(cd) - lr * mhat / (vhat.sqrt() + eps) + noise)


def gaussian_perturb(x, out, *, std, seed, step, compute_dtype=None):
    """``out[B, N] = x + std * normal(seed[b], step*N + k)``."""
    B, N = x.shape
    cd = _work_dtype(x, compute_dtype=compute_dtype)
    s = int(step.reshape(-1)[0])
    out.copy_(x.to(cd) + std * _sea_xi(seed, s, N, cd))
