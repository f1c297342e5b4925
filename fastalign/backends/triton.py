"""The Triton backend (``backend="triton"``): fused ``@triton.jit`` kernels from ``fastalign.kernels``.

Runs on CUDA GPUs, and on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1``, for
tests). Triton and the kernel modules are imported lazily, on the first call, so ``import fastalign``
works without Triton installed. The functions implement the backend API of
:mod:`fastalign.backends` (arguments already validated and normalised by :mod:`fastalign.ops`).
"""
from __future__ import annotations

import functools
import importlib
import os
import types

import torch

__all__ = ["is_available", "aisp_perturb", "aisp_udot", "aisp_apply", "sea_norm", "sea_update",
           "gaussian_perturb", "TRACEABLE"]


def is_available(device_type: str) -> str | None:
    """None when the Triton kernels can run on ``device_type`` tensors here, else the reason."""
    try:
        import triton  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"triton cannot be imported ({type(exc).__name__}: {exc}); install fastalign[triton]"
    if device_type == "cuda":
        if not torch.cuda.is_available():
            return "no CUDA device (torch.cuda.is_available() is False)"
        if os.environ.get("TRITON_INTERPRET") == "1":
            return "TRITON_INTERPRET=1 is set, so Triton would interpret instead of compiling for the GPU"
        return None
    if device_type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            return "Triton runs on CPU tensors only under its interpreter (set TRITON_INTERPRET=1 before importing triton)"
        return None
    return f"Triton kernels do not run on {device_type!r} tensors"


def _kernels(name: str):
    return importlib.import_module(f"fastalign.kernels.{name}")


# ``traceable=True`` launches every kernel through ``torch.library.wrap_triton`` (for the
# ``torch.library.triton_op`` variants of fastalign.ops.library; see :data:`TRACEABLE`).


def aisp_perturb(h, u, out, *, sigma, seed, iteration, step, udot, active, traceable=False) -> None:
    """``out = h + u[:, step] + sigma * eps`` (``h`` past the horizon); ``udot += u . eps`` if given."""
    _kernels("aisp_perturb").aisp_perturb(h, u, out, sigma=sigma, seed=seed, iteration=iteration, step=step,
                                          udot=udot, active=active, traceable=traceable)


def aisp_udot(u, lengths, udot_out, *, seed, iteration, traceable=False) -> None:
    """``udot_out[b,i] = sum_{t < lengths[b,i]} u[b,t] . eps[b,i,t]`` (noise regenerated)."""
    _kernels("aisp_update").aisp_udot(u, lengths, udot_out, seed=seed, iteration=iteration, traceable=traceable)


def aisp_apply(u, weights, lengths, out, *, sigma, seed, iteration, traceable=False) -> None:
    """``out = u + sigma * sum_i weights[b,i] * eps[b,i] * [t < lengths[b,i]]`` (noise regenerated)."""
    _kernels("aisp_update").aisp_apply(u, weights, lengths, out, sigma=sigma, seed=seed, iteration=iteration,
                                       traceable=traceable)


def sea_norm(grad, *, group, traceable=False) -> torch.Tensor:
    """Float32 L2 norms of ``grad [B, L, V]`` per clip group, reduced in a fixed order."""
    return _kernels("sea_step").sea_norm(grad, group=group, traceable=traceable)


def sea_update(y, grad, out, *, norm, group, max_norm, lr, noise_std, seed, step, optimizer, m, v, beta1, beta2,
               eps, traceable=False) -> None:
    """Fused clip + sgld/adam update + Langevin noise (see ``fastalign.kernels.sea_step``)."""
    _kernels("sea_step").sea_update(y, grad, out, norm=norm, group=group, max_norm=max_norm, lr=lr,
                                    noise_std=noise_std, seed=seed, step=step, optimizer=optimizer, m=m, v=v,
                                    beta1=beta1, beta2=beta2, eps=eps, traceable=traceable)


def gaussian_perturb(x, out, *, std, seed, step, traceable=False) -> None:
    """``out = x + std * normal(seed[b], step*N + k)`` for ``x, out: [B, N]``."""
    _kernels("gaussian_perturb").gaussian_perturb(x, out, std=std, seed=seed, step=step, traceable=traceable)


#: The backend API with every kernel launched through ``torch.library.wrap_triton``: what the
#: ``fastalign::*_triton`` operators (``torch.library.triton_op``) run, so that make_fx and Inductor
#: record the launches. Outside such an operator ``wrap_triton`` dispatches a higher-order op per launch
#: (slow), so the eager backend uses the plain functions above.
TRACEABLE = types.SimpleNamespace(**{
    fn.__name__: functools.partial(fn, traceable=True)
    for fn in (aisp_perturb, aisp_udot, aisp_apply, sea_norm, sea_update, gaussian_perturb)
})
