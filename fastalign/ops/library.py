"""The fused ops as PyTorch operators (``torch.ops.fastalign.*``), so that torch.compile and CUDA graphs
see them; and the compute code that the eager ops and the operators share.

Operators (registered when this module is imported, which :mod:`fastalign.ops` and so the first use of
any op or method does; schemas in :data:`SCHEMAS`)::

    fastalign::aisp_perturb(Tensor h, Tensor u, Tensor seed, Tensor iteration, Tensor step,
                            Tensor(a!)? udot, Tensor? active, float sigma, str backend) -> Tensor
    fastalign::aisp_update(Tensor u, Tensor rewards, Tensor seed, Tensor iteration, Tensor? lengths,
                           Tensor? udot, float sigma, float lam, float alpha, str backend) -> (Tensor, Tensor)
    fastalign::sea_step(Tensor y, Tensor grad, Tensor seed, Tensor step, Tensor(a!)? m, Tensor(b!)? v,
                        float lr, float noise_std, float? max_norm, str? clip, str optimizer, float beta1,
                        float beta2, float eps, bool error_if_nonfinite, str backend) -> (Tensor, Tensor)
    fastalign::gaussian_perturb(Tensor x, Tensor seed, Tensor step, float std, str backend) -> Tensor

``seed`` is int64 ``[B]``, ``iteration``/``step`` int64 ``[1]``, all on the data's device (so a step
can be captured in a CUDA graph); ``backend`` is a backend name ("" = ``$FASTALIGN_BACKEND``, else
"auto"). ``udot`` (aisp_perturb) and the Adam moments ``m``, ``v`` (sea_step, ``optimizer="adam"``)
are updated in place; every other tensor is only read, and results are new tensors. ``sea_step``
returns the gradient norm as its second output, an empty float32 tensor ``[0]`` when ``clip`` is None.
The math is that of :mod:`fastalign.ops` (docs/design.md#ops); the operators do no value checks.

Each operator is opaque to torch.compile (a schema with kernels, no autograd): a fake implementation gives
the output shapes and dtypes without reading data, and the real implementation, for CPU and CUDA
tensors, resolves ``backend`` through :func:`fastalign.backends.resolve` and runs the same ``run_*``
function as the eager op. For the ``triton`` backend on CUDA, :func:`triton_ops` registers a second
set, ``fastalign::<op>_triton`` (``torch.library.triton_op``, same schemas without ``backend``), whose
kernels are launched through ``torch.library.wrap_triton`` so Inductor sees and schedules them.

:mod:`fastalign.ops` calls the ``run_*`` functions directly in eager mode (the dispatcher would add
several microseconds per call) and these operators only while torch.compile traces.
"""
from __future__ import annotations

import math
import threading
from typing import Optional

import torch

from fastalign import backends as _backends
from fastalign.errors import InputError

__all__ = ["SCHEMAS", "OPS", "importance_weights", "inplace_work", "run_aisp_perturb", "run_aisp_update",
           "run_sea_step", "run_gaussian_perturb", "triton_ops", "sea_norm_dtype"]

Tensor = torch.Tensor

SCHEMAS = {
    "aisp_perturb": "(Tensor h, Tensor u, Tensor seed, Tensor iteration, Tensor step, Tensor(a!)? udot, "
                    "Tensor? active, float sigma, str backend) -> Tensor",
    "aisp_update": "(Tensor u, Tensor rewards, Tensor seed, Tensor iteration, Tensor? lengths, Tensor? udot, "
                   "float sigma, float lam, float alpha, str backend) -> (Tensor, Tensor)",
    "sea_step": "(Tensor y, Tensor grad, Tensor seed, Tensor step, Tensor(a!)? m, Tensor(b!)? v, float lr, "
                "float noise_std, float? max_norm, str? clip, str optimizer, float beta1, float beta2, float eps, "
                "bool error_if_nonfinite, str backend) -> (Tensor, Tensor)",
    "gaussian_perturb": "(Tensor x, Tensor seed, Tensor step, float std, str backend) -> Tensor",
}
#: what each operator mutates in place
MUTATES = {"aisp_perturb": ("udot",), "aisp_update": (), "sea_step": ("m", "v"), "gaussian_perturb": ()}
#: the group shapes of sea_step's gradient norm
_NORM_SHAPES = {"chain": lambda B, L: (B,), "row": lambda B, L: (B, L), "global": lambda B, L: ()}


# ------------------------------------------------------------------------------ shared compute code
def inplace_work(t: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """A contiguous tensor to update in place, plus the caller's tensor to copy back into (or None)."""
    if t is None or t.is_contiguous():
        return t, None
    return t.contiguous(), t


def importance_weights(rewards: Tensor, udot: Tensor | None, *, lam: float, alpha: float, sigma: float) -> Tensor:
    """AISP weights ``softmax_i(r_i / lam - ((1 - alpha) / sigma) * udot_i)`` per prompt, in float64.

    ``-inf`` rewards get weight 0. Computed in float64 with the maximum subtracted, so rewards of
    huge magnitude do not overflow.
    """
    s = rewards.to(torch.float64) / lam
    if udot is not None and alpha != 1.0:
        s = s - ((1.0 - alpha) / sigma) * udot.to(torch.float64)
    s = torch.where(torch.isneginf(rewards), torch.full_like(s, -math.inf), s)
    return torch.softmax(s, dim=-1)


def sea_norm_dtype(y: Tensor, grad: Tensor) -> torch.dtype:
    """dtype of sea_step's gradient norm: float64 only when y and grad are (reference backend), else float32."""
    return torch.float64 if (y.dtype == torch.float64 and grad.dtype == torch.float64) else torch.float32


def run_aisp_perturb(module, name: str, h: Tensor, u: Tensor, out: Tensor, *, sigma: float, seed: Tensor,
                     iteration: Tensor, step: Tensor, udot: Tensor | None, active: Tensor | None, **kw) -> None:
    """``out [B, n, d]`` = the perturbed states (see :func:`fastalign.ops.aisp_perturb`); ``udot`` in place.

    ``out`` must be contiguous; every other tensor may have any layout (it is made contiguous here).
    """
    u_work = u if (name == "torch" or u.dtype == torch.float32) else u.float()
    udot_work, udot_user = inplace_work(udot)
    module.aisp_perturb(h.contiguous(), u_work.contiguous(), out, sigma=sigma, seed=seed, iteration=iteration,
                        step=step, udot=udot_work, active=None if active is None else active.contiguous(), **kw)
    if udot_user is not None:
        udot_user.copy_(udot_work)


def run_aisp_update(module, name: str, u: Tensor, rewards: Tensor, out: Tensor, *, sigma: float, lam: float,
                    alpha: float, seed: Tensor, iteration: Tensor, lengths: Tensor | None, udot: Tensor | None,
                    **kw) -> Tensor:
    """Write the updated control into ``out [B, tau, d]`` (contiguous); return the weights ``[B, n]`` float32.

    ``lengths`` None means every rollout ran the whole horizon. ``udot`` None (and ``alpha != 1``)
    runs the backend's udot pass first.
    """
    B, tau, d = u.shape
    n = rewards.shape[1]
    if lengths is None:
        lengths = torch.full((B, n), tau, dtype=torch.int64, device=u.device)
    else:
        lengths = lengths.to(torch.int64).contiguous()
    exact = name == "torch" and (u.dtype == torch.float64 or kw.get("compute_dtype") == torch.float64)
    work_dtype = torch.float64 if exact else torch.float32
    u_work = u.to(work_dtype).contiguous()
    if udot is None and alpha != 1.0:
        udot = torch.empty(B, n, dtype=work_dtype, device=u.device)
        module.aisp_udot(u_work, lengths, udot, seed=seed, iteration=iteration, **kw)
    weights = importance_weights(rewards, udot, lam=lam, alpha=alpha, sigma=sigma)
    apply_out = out if out.dtype == work_dtype else torch.empty(B, tau, d, dtype=work_dtype, device=u.device)
    module.aisp_apply(u_work, weights.to(work_dtype).contiguous(), lengths, apply_out, sigma=sigma, seed=seed,
                      iteration=iteration, **kw)
    if apply_out is not out:
        out.copy_(apply_out)
    return weights.to(torch.float32)


def _nonfinite_norm_error(clip: str | None) -> RuntimeError:
    if clip is None:
        return RuntimeError("grad: holds non-finite values (clip=None, error_if_nonfinite=True)")
    return RuntimeError(
        f"The total norm of gradients for clip group {clip!r} is non-finite, so it cannot be "
        "clipped. To disable this error and scale the gradients by the non-finite norm anyway, "
        "set `error_if_nonfinite=False`"
    )


def run_sea_step(module, name: str, y: Tensor, grad: Tensor, out: Tensor, *, lr: float, noise_std: float,
                 max_norm: float | None, clip: str | None, seed: Tensor, step: Tensor, optimizer: str,
                 m: Tensor | None, v: Tensor | None, beta1: float, beta2: float, eps: float,
                 error_if_nonfinite: bool, **kw) -> Tensor | None:
    """Write one SEA step into ``out [B, L, V]`` (contiguous), update ``m``/``v`` in place (adam); return
    the gradient norm per clip group (None when ``clip`` is None).

    ``error_if_nonfinite`` reads the norm (or ``grad``) on the host before anything is written.
    """
    grad_c = grad.contiguous()
    norm = None
    if clip is not None:
        norm = module.sea_norm(grad_c, group=clip, **kw)
        if error_if_nonfinite and not bool(torch.isfinite(norm).all()):
            raise _nonfinite_norm_error(clip)
    elif error_if_nonfinite and not bool(torch.isfinite(grad_c).all()):
        raise _nonfinite_norm_error(None)
    m_work, m_user = inplace_work(m)
    v_work, v_user = inplace_work(v)
    module.sea_update(y.contiguous(), grad_c, out, norm=norm, group=clip, max_norm=max_norm, lr=lr,
                      noise_std=noise_std, seed=seed, step=step, optimizer=optimizer, m=m_work, v=v_work,
                      beta1=beta1, beta2=beta2, eps=eps, **kw)
    for work, user in ((m_work, m_user), (v_work, v_user)):
        if user is not None:
            user.copy_(work)
    if norm is not None and kw.get("compute_dtype") is None:
        want = sea_norm_dtype(y, grad)
        if norm.dtype != want:
            norm = norm.to(want)
    return norm


def run_gaussian_perturb(module, x: Tensor, out: Tensor, *, std: float, seed: Tensor, step: Tensor, **kw) -> None:
    """``out`` (contiguous, x's shape ``[B, ...]``) = ``x + std * xi`` with SEA's noise indexing."""
    B = x.shape[0]
    module.gaussian_perturb(x.contiguous().view(B, -1), out.view(B, -1), std=std, seed=seed, step=step, **kw)


# --------------------------------------------------------------------------------- the operators
def _check_indices(seed: Tensor, counters: dict[str, Tensor], B, device: torch.device) -> None:
    """Metadata of the index tensors an operator takes: seed int64 ``[B]``, counters int64 ``[1]``, on device."""
    if seed.dtype != torch.int64 or seed.dim() != 1 or seed.shape[0] != B or seed.device != device:
        raise InputError(f"seed: expected an int64 tensor [B={B}] on {device}, got {seed.dtype} "
                         f"{tuple(seed.shape)} on {seed.device}")
    for cname, c in counters.items():
        if c.dtype != torch.int64 or c.numel() != 1 or c.device != device:
            raise InputError(f"{cname}: expected an int64 tensor [1] on {device}, got {c.dtype} "
                             f"{tuple(c.shape)} on {c.device}")


def _backend(backend: str, device_type: str):
    return _backends.resolve(backend or None, device_type)


def _empty(shape, dtype, like: Tensor) -> Tensor:
    return torch.empty(shape, dtype=dtype, device=like.device)


def _empty_norm(y: Tensor) -> Tensor:
    return torch.empty(0, dtype=torch.float32, device=y.device)


def _aisp_perturb_real(h, u, seed, iteration, step, udot, active, sigma, backend):
    _check_indices(seed, {"iteration": iteration, "step": step}, h.shape[0], h.device)
    name, module = _backend(backend, h.device.type)
    z = _empty(h.shape, h.dtype, h)
    run_aisp_perturb(module, name, h, u, z, sigma=sigma, seed=seed.contiguous(), iteration=iteration.reshape(1),
                     step=step.reshape(1), udot=udot, active=active)
    return z


def _aisp_perturb_fake(h, u, seed, iteration, step, udot, active, sigma, backend):
    _check_indices(seed, {"iteration": iteration, "step": step}, h.shape[0], h.device)
    return _empty(h.shape, h.dtype, h)


def _aisp_update_real(u, rewards, seed, iteration, lengths, udot, sigma, lam, alpha, backend):
    _check_indices(seed, {"iteration": iteration}, u.shape[0], u.device)
    name, module = _backend(backend, u.device.type)
    u_new = _empty(u.shape, u.dtype, u)
    weights = run_aisp_update(module, name, u, rewards, u_new, sigma=sigma, lam=lam, alpha=alpha,
                              seed=seed.contiguous(), iteration=iteration.reshape(1), lengths=lengths, udot=udot)
    return u_new, weights


def _aisp_update_fake(u, rewards, seed, iteration, lengths, udot, sigma, lam, alpha, backend):
    _check_indices(seed, {"iteration": iteration}, u.shape[0], u.device)
    return _empty(u.shape, u.dtype, u), _empty(rewards.shape, torch.float32, u)


def _sea_step_real(y, grad, seed, step, m, v, lr, noise_std, max_norm, clip, optimizer, beta1, beta2, eps,
                   error_if_nonfinite, backend):
    _check_indices(seed, {"step": step}, y.shape[0], y.device)
    name, module = _backend(backend, y.device.type)
    y_new = _empty(y.shape, y.dtype, y)
    norm = run_sea_step(module, name, y, grad, y_new, lr=lr, noise_std=noise_std, max_norm=max_norm, clip=clip,
                        seed=seed.contiguous(), step=step.reshape(1), optimizer=optimizer, m=m, v=v, beta1=beta1,
                        beta2=beta2, eps=eps, error_if_nonfinite=error_if_nonfinite)
    return y_new, (_empty_norm(y) if norm is None else norm)


def _sea_step_fake(y, grad, seed, step, m, v, lr, noise_std, max_norm, clip, optimizer, beta1, beta2, eps,
                   error_if_nonfinite, backend):
    _check_indices(seed, {"step": step}, y.shape[0], y.device)
    return _sea_step_outputs_like(y, grad, clip)


def _sea_step_outputs_like(y: Tensor, grad: Tensor, clip: str | None) -> tuple[Tensor, Tensor]:
    if clip is None:
        return _empty(y.shape, y.dtype, y), _empty_norm(y)
    return _empty(y.shape, y.dtype, y), _empty(_NORM_SHAPES[clip](y.shape[0], y.shape[1]), sea_norm_dtype(y, grad), y)


def _gaussian_perturb_real(x, seed, step, std, backend):
    _check_indices(seed, {"step": step}, x.shape[0], x.device)
    _, module = _backend(backend, x.device.type)
    out = _empty(x.shape, x.dtype, x)
    run_gaussian_perturb(module, x, out, std=std, seed=seed.contiguous(), step=step.reshape(1))
    return out


def _gaussian_perturb_fake(x, seed, step, std, backend):
    _check_indices(seed, {"step": step}, x.shape[0], x.device)
    return _empty(x.shape, x.dtype, x)


# Registered with the low-level torch.library.Library API rather than torch.library.custom_op: a call
# through the dispatcher then costs one Python call of the kernel, where custom_op's Python layers
# (autograd, ADInplaceOrView, defaults filling) cost several times more, and a compiled graph pays that
# on every call of the operator.
_LIB = torch.library.Library("fastalign", "DEF")
_IMPLS = {
    "aisp_perturb": (_aisp_perturb_real, _aisp_perturb_fake),
    "aisp_update": (_aisp_update_real, _aisp_update_fake),
    "sea_step": (_sea_step_real, _sea_step_fake),
    "gaussian_perturb": (_gaussian_perturb_real, _gaussian_perturb_fake),
}
for _name, (_real, _fake) in _IMPLS.items():
    _LIB.define(_name + SCHEMAS[_name])
    for _key in ("CPU", "CUDA"):
        _LIB.impl(_name, _real, _key)
    torch.library.register_fake(f"fastalign::{_name}", _fake, lib=_LIB)

#: the opaque operators (``OpOverload``), by public op name
OPS = {name: getattr(torch.ops.fastalign, name).default for name in _IMPLS}


# ----------------------------------------------------------------- the triton_op variants (CUDA)
_TRITON_LOCK = threading.Lock()
_TRITON_OPS: dict | None = None


def triton_ops() -> dict:
    """Register (once) and return ``{op name: fastalign::<op>_triton}``: the ops as ``torch.library.triton_op``.

    Their kernels launch through ``torch.library.wrap_triton``, so torch.compile records each launch
    in the graph (Inductor compiles and schedules the Triton kernel itself) instead of calling an
    opaque operator. For CUDA tensors (Triton's CPU interpreter cannot be traced this way). Needs
    triton; registered on first use so that ``import fastalign`` does not import triton.
    """
    global _TRITON_OPS
    with _TRITON_LOCK:
        if _TRITON_OPS is None:
            _TRITON_OPS = _register_triton_ops()
        return _TRITON_OPS


def _register_triton_ops() -> dict:
    from torch.library import triton_op

    from fastalign.backends import triton as triton_backend

    kernels = triton_backend.TRACEABLE  # the backend API, every launch through wrap_triton

    @triton_op("fastalign::aisp_perturb_triton", mutates_args=MUTATES["aisp_perturb"])
    def aisp_perturb_triton(h: Tensor, u: Tensor, seed: Tensor, iteration: Tensor, step: Tensor,
                            udot: Optional[Tensor], active: Optional[Tensor], sigma: float) -> Tensor:
        z = _empty(h.shape, h.dtype, h)
        run_aisp_perturb(kernels, "triton", h, u, z, sigma=sigma, seed=seed, iteration=iteration, step=step,
                         udot=udot, active=active)
        return z

    @triton_op("fastalign::aisp_update_triton", mutates_args=MUTATES["aisp_update"])
    def aisp_update_triton(u: Tensor, rewards: Tensor, seed: Tensor, iteration: Tensor, lengths: Optional[Tensor],
                           udot: Optional[Tensor], sigma: float, lam: float, alpha: float) -> tuple[Tensor, Tensor]:
        u_new = _empty(u.shape, u.dtype, u)
        weights = run_aisp_update(kernels, "triton", u, rewards, u_new, sigma=sigma, lam=lam, alpha=alpha, seed=seed,
                                  iteration=iteration, lengths=lengths, udot=udot)
        return u_new, weights

    @triton_op("fastalign::sea_step_triton", mutates_args=MUTATES["sea_step"])
    def sea_step_triton(y: Tensor, grad: Tensor, seed: Tensor, step: Tensor, m: Optional[Tensor], v: Optional[Tensor],
                        lr: float, noise_std: float, max_norm: Optional[float], clip: Optional[str], optimizer: str,
                        beta1: float, beta2: float, eps: float) -> tuple[Tensor, Tensor]:
        y_new = _empty(y.shape, y.dtype, y)
        norm = run_sea_step(kernels, "triton", y, grad, y_new, lr=lr, noise_std=noise_std, max_norm=max_norm,
                            clip=clip, seed=seed, step=step, optimizer=optimizer, m=m, v=v, beta1=beta1, beta2=beta2,
                            eps=eps, error_if_nonfinite=False)
        return y_new, (_empty_norm(y) if norm is None else norm)

    @triton_op("fastalign::gaussian_perturb_triton", mutates_args=MUTATES["gaussian_perturb"])
    def gaussian_perturb_triton(x: Tensor, seed: Tensor, step: Tensor, std: float) -> Tensor:
        out = _empty(x.shape, x.dtype, x)
        run_gaussian_perturb(kernels, x, out, std=std, seed=seed, step=step)
        return out

    return {"aisp_perturb": aisp_perturb_triton, "aisp_update": aisp_update_triton, "sea_step": sea_step_triton,
            "gaussian_perturb": gaussian_perturb_triton}
