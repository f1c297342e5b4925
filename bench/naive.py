"""The ops as a user writes them by hand in eager PyTorch: the baseline of the benchmarks.

Not an op backend (it is not registered, and ``backend="naive"`` is not accepted by
:mod:`fastalign.ops`): it draws its noise with ``torch.randn`` instead of fastalign's counter-based
stream, so its results equal the reference only in distribution. What it does, deliberately:

* every op materialises a full-size noise tensor with ``torch.randn`` and then does the arithmetic in
  separate eager kernels (each one a pass over memory);
* the AISP pipeline keeps the noise of a whole iteration in a ``[B, n, tau, d]`` tensor (``noise=``,
  filled by :func:`aisp_perturb` step by step) and updates the control with ``softmax`` + ``einsum``
  over it (:func:`aisp_update`);
* ``sea_step`` clips the way ``torch.nn.utils.clip_grad_norm_`` does (norm, ``clip_coef = max_norm /
  (norm + 1e-6)`` clamped to 1, multiply), then applies the SGLD or Adam update.

Signatures are those of :mod:`fastalign.ops` without ``backend``/``compute_dtype``, plus:

* ``seed=None`` draws from torch's global generator (what a user writes, and what ``torch.compile``
  can trace); an int or an int64 ``[B]`` tensor seeds a private ``torch.Generator`` from
  ``(seed[0], iteration/step)``, so runs are reproducible (but not batch-composition independent);
* ``generator=`` passes a ``torch.Generator`` to draw from explicitly;
* AISP: ``noise=`` the ``[B, n, tau, d]`` float32 buffer of the iteration's noise.
"""
from __future__ import annotations

import torch

__all__ = ["aisp_perturb", "aisp_update", "sea_step", "gaussian_perturb", "aisp_noise_buffer"]

_MASK64 = (1 << 64) - 1


def _mix(*values: int) -> int:
    """SplitMix64 of the values: a generator seed for (seed, counters) (63 bits, as torch wants)."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & _MASK64)) & _MASK64
        x = (x + 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        x ^= x >> 31
    return x & ((1 << 63) - 1)


def _as_int(v) -> int:
    if isinstance(v, torch.Tensor):
        return int(v.reshape(-1)[0])
    return int(v)


def _generator(device: torch.device, seed, generator, *counters):
    if generator is not None:
        return generator
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(_mix(_as_int(seed), *(_as_int(c) for c in counters)))


def _randn(shape, device, gen) -> torch.Tensor:
    return torch.randn(shape, device=device, dtype=torch.float32, generator=gen)


def _finish(result: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    if out is None:
        return result
    out.copy_(result)
    return out


def aisp_noise_buffer(B: int, n: int, tau: int, d: int, device=None) -> torch.Tensor:
    """The ``[B, n, tau, d]`` float32 noise buffer of one naive AISP iteration (n*tau*d floats a prompt)."""
    return torch.empty(B, n, tau, d, dtype=torch.float32, device=device)


def aisp_perturb(h, u, *, sigma, seed=None, iteration=0, step, udot=None, active=None, out=None,
                 noise=None, generator=None):
    """``z = h + u[:, step] + sigma * eps`` with ``eps = torch.randn(B, n, d)``; ``z = h`` past ``tau``.

    h: ``[B, n, d]``; u: ``[B, tau, d]``; udot: optional float32 ``[B, n]``, ``+= (u[:, step] * eps).sum(-1)``
    where ``active`` (bool ``[B, n]``); noise: optional ``[B, n, tau, d]`` float32 buffer, ``noise[:, :, step] = eps``.
    """
    t = _as_int(step)
    tau = u.shape[1]
    if t >= tau:
        return _finish(h.clone(), out)
    B, n, d = h.shape
    gen = _generator(h.device, seed, generator, iteration, t)
    eps = _randn((B, n, d), h.device, gen)
    u_t = u[:, t].float().unsqueeze(1)                       # [B, 1, d]
    z = h.float() + u_t + sigma * eps
    if udot is not None:
        contrib = (u_t * eps).sum(-1)                        # [B, n]
        if active is not None:
            contrib = contrib * active
        udot += contrib
    if noise is not None:
        noise[:, :, t] = eps
    return _finish(z.to(h.dtype), out)


def aisp_update(u, rewards, *, sigma, lam, alpha, seed=None, iteration=0, lengths=None, udot=None, out=None,
                noise=None, generator=None):
    """Importance-weighted control update from the stored noise of the iteration.

    noise: ``[B, n, tau, d]`` float32 filled by :func:`aisp_perturb` (None draws a fresh one, which is
    only right in distribution). Steps ``t >= lengths[b, i]`` are masked out of the noise.
    ``s = r/lam - (1 - alpha)/sigma * udot`` (udot = ``einsum('btd,bntd->bn', u, eps)`` when not given),
    ``w = softmax(s)``, ``u_new = u + sigma * einsum('bn,bntd->btd', w, eps)``.
    Returns ``(u_new [B, tau, d] of u's dtype, weights [B, n] float32)``.
    """
    B, tau, d = u.shape
    n = rewards.shape[1]
    if noise is None:
        gen = _generator(u.device, seed, generator, iteration, -1)
        noise = _randn((B, n, tau, d), u.device, gen)
    eps = noise
    if lengths is not None:
        steps = torch.arange(tau, device=u.device)
        mask = (steps.view(1, 1, tau) < lengths.unsqueeze(-1)).to(eps.dtype)   # [B, n, tau]
        eps = eps * mask.unsqueeze(-1)
    u32 = u.float()
    if udot is None:
        udot = torch.einsum("btd,bntd->bn", u32, eps)
    s = rewards.float() / lam - ((1.0 - alpha) / sigma) * udot.float()
    weights = torch.softmax(s, dim=-1)
    u_new = u32 + sigma * torch.einsum("bn,bntd->btd", weights, eps)
    return _finish(u_new.to(u.dtype), out), weights


def sea_step(y, grad, *, lr, noise_std, max_norm=None, clip="chain", seed=None, step=0, optimizer="sgld",
             state=None, betas=(0.9, 0.999), eps=1e-8, error_if_nonfinite=False, out=None, generator=None):
    """Clip like ``clip_grad_norm_`` (per chain, per row or globally), then an SGLD or Adam step plus
    ``noise_std * torch.randn_like(y)``. y, grad: ``[B, L, V]``; state ``(m, v)`` float32, updated in
    place; bias correction with ``t = step + 1``. Returns ``(y_new, grad_norm)`` like the op."""
    g = grad.float()
    norm = None
    if clip is not None:
        if clip == "global":
            norm = torch.linalg.vector_norm(g)
        elif clip == "chain":
            norm = torch.linalg.vector_norm(g, dim=(1, 2))
        elif clip == "row":
            norm = torch.linalg.vector_norm(g, dim=2)
        else:
            raise ValueError(f"clip: expected 'chain', 'row', 'global' or None, got {clip!r}")
        if error_if_nonfinite and not bool(torch.isfinite(norm).all()):
            raise RuntimeError(f"The total norm of gradients for clip group {clip!r} is non-finite")
        if max_norm is not None:
            coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
            if clip == "chain":
                coef = coef.view(-1, 1, 1)
            elif clip == "row":
                coef = coef.unsqueeze(-1)
            g = g * coef
    if optimizer == "sgld":
        update = lr * g
    elif optimizer == "adam":
        m, v = state
        beta1, beta2 = betas
        t = _as_int(step) + 1
        m.mul_(beta1).add_(g, alpha=1.0 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        mhat = m / (1.0 - beta1 ** t)
        vhat = v / (1.0 - beta2 ** t)
        update = lr * mhat / (vhat.sqrt() + eps)
    else:
        raise ValueError(f"optimizer: expected 'sgld' or 'adam', got {optimizer!r}")
    y_new = y.float() - update
    if noise_std != 0:
        gen = _generator(y.device, seed, generator, step)
        y_new = y_new + noise_std * _randn(y.shape, y.device, gen)
    return _finish(y_new.to(y.dtype), out), norm


def gaussian_perturb(x, *, std, seed=None, step=0, out=None, generator=None):
    """``x + std * torch.randn_like(x)`` (noise drawn in float32)."""
    gen = _generator(x.device, seed, generator, step)
    return _finish((x.float() + std * _randn(x.shape, x.device, gen)).to(x.dtype), out)
