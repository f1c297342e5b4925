"""Public fused ops of fastalign (docs/design.md#ops), re-exported from ``fastalign``.

Each op validates its arguments, normalises them (contiguous tensors, seeds as an int64 ``[B]``
tensor, counters as int64 ``[1]`` tensors, all on the input's device), picks a backend
(``backend=`` argument, then ``$FASTALIGN_BACKEND``, then ``"auto"``) and calls it. Math is float32
whatever the storage dtype (float32, bfloat16, float16); outputs keep the input dtype. Inputs are
never modified, except ``out=``, ``udot=`` (AISP perturb accumulates into it) and ``state=``.

Eager calls run the backend directly (:mod:`fastalign.ops.library`'s ``run_*`` functions, no dispatcher).
While torch.compile traces (``torch.compiler.is_compiling()``), an op checks what the metadata tells
(types, shapes, dtypes, devices, Python numbers) and records the operator ``torch.ops.fastalign.<op>``
(``<op>_triton`` for the triton backend on CUDA); checks that read tensor values or addresses (NaN
rewards, lengths in range, seeds/counters in CPU tensors, overlapping buffers) run in eager calls only.
The backend is picked when the graph is traced.
"""
from __future__ import annotations

import contextlib
import functools
import math

import torch

from fastalign.ops import _validate as V
from fastalign import backends as _backends
from fastalign.ops import library as _library
from fastalign._clip import CLIP_GROUPS
from fastalign.errors import InputError, InputTypeError
from fastalign.ops.library import importance_weights

__all__ = ["aisp_perturb", "aisp_update", "sea_step", "gaussian_perturb", "available_backends",
           "importance_weights"]

_CLIP_GROUPS = tuple(CLIP_GROUPS)

#: Route eager calls the way traced calls go (through ``torch.ops.fastalign.*``); see :func:`_through_operators`.
_VIA_OPERATORS = False


@contextlib.contextmanager
def _through_operators():
    """Within this block, eager calls take the traced path: metadata checks only, then the operator
    ``torch.ops.fastalign.<op>`` through the dispatcher. For the benchmark (what the dispatcher costs per
    call) and for tests of the traced path without compiling. Not thread-safe."""
    global _VIA_OPERATORS
    before, _VIA_OPERATORS = _VIA_OPERATORS, True
    try:
        yield
    finally:
        _VIA_OPERATORS = before


def _no_grad(fn):
    """Run ``fn`` under ``torch.no_grad`` (the ops are not differentiable), entering the context only
    when grad mode is on: inside an inference loop that already disabled it this costs nothing."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not torch.is_grad_enabled():
            return fn(*args, **kwargs)
        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper


def available_backends(device_type: str | None = None) -> dict[str, str | None]:
    """``{name: None}`` for every backend that can run here, ``{name: reason}`` for the others."""
    return _backends.availability(device_type)


def _traced_backend(backend: str | None, device_type: str) -> str:
    """The backend name a traced call records: resolved once, when torch.compile traces (run eagerly by
    Dynamo, so the registry's caches, imports and warnings work as in eager calls)."""
    name, _ = _backends.resolve(backend, device_type)
    if name == "triton" and device_type == "cuda":
        _library.triton_ops()  # registers fastalign::*_triton before the graph refers to them
    return name


# What ``@torch.compiler.assume_constant_result`` does (it sets this one attribute), without its
# ``import torch._dynamo`` (about a second, and Triton with it) on every ``import fastalign.ops``:
# tests/test_library.py checks that the decorator still does exactly this.
_traced_backend._dynamo_marked_constant = True


def _pick(backend: str | None, x, compute_dtype, tracing: bool):
    """(backend name, module or None while tracing, extra backend kwargs) for an op on tensor ``x``."""
    if backend is not None and not isinstance(backend, str):
        raise InputTypeError(f"backend: expected a backend name (str) or None, got {type(backend).__name__}")
    device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    kwargs = {}
    if compute_dtype is not None:
        if backend != "torch":
            raise InputError(f"compute_dtype: only backend='torch' (the reference) takes it, got backend={backend!r}")
        if compute_dtype not in (torch.float32, torch.float64):
            raise InputTypeError(f"compute_dtype: expected torch.float32 or torch.float64, got {compute_dtype}")
        if tracing:
            raise InputError("compute_dtype: the reference backend's compute_dtype runs in eager calls only, "
                             "not under torch.compile")
        kwargs["compute_dtype"] = compute_dtype
    if tracing:
        return _traced_backend(backend, device.type), None, kwargs
    name, module = _backends.resolve(backend, device.type)
    return name, module, kwargs


def _on_triton_op(name: str, device: torch.device) -> bool:
    """Whether a traced call records the triton_op variant (Inductor sees its kernels) instead of the
    opaque operator: the triton backend on CUDA (the CPU interpreter cannot be traced that way)."""
    return name == "triton" and device.type == "cuda"


def _float_input(x, name, ndim, backend, device=None):
    return V.check_tensor(x, name, ndim=ndim, allow_float64=(backend == "torch"), device=device)


def _result_buffer(out, name, shape, dtype, device, inputs):
    """(buffer the backend writes, tensor returned to the user)."""
    if out is None:
        buf = torch.empty(shape, dtype=dtype, device=device)
        return buf, buf
    V.check_out(out, name, shape, dtype, device, inputs)
    if out.is_contiguous():
        return out, out
    return torch.empty(shape, dtype=dtype, device=device), out


def _finish(buf, out_user):
    if buf is not out_user:
        out_user.copy_(buf)
    return out_user


def _traced_out(result, out, shape, device):
    """A traced op's result, copied into ``out=`` when given (its metadata checked; overlap is not
    checked while tracing: that reads addresses)."""
    if out is None:
        return result
    V.check_out(out, "out", shape, result.dtype, device, inputs=None)
    out.copy_(result)
    return out


def _traced_offsets(name: str, counter, per_count) -> None:
    """Offset overflow check while tracing: only for a Python-int counter and static sizes (their values
    are known at trace time; tensor counters and symbolic sizes are not checked)."""
    if type(counter) is int and type(per_count) is int:
        V.check_offsets(name, (counter + 1) * per_count)


@_no_grad
def aisp_perturb(h, u, *, sigma, seed, iteration, step, udot=None, active=None, out=None, backend=None,
                 compute_dtype=None):
    """Perturb pre-logit states of n rollouts at one decode step.

    ``z[b,i,:] = h[b,i,:] + u[b,step,:] + sigma * eps[b,i,:]`` for ``step < tau`` (``z = h`` past the
    horizon), with ``eps[b,i,j] = normal(seed[b], ((iteration*n + i)*tau + step)*d + j)``.

    Args:
        h: ``[B, n, d]`` hidden states (float32/bfloat16/float16).
        u: ``[B, tau, d]`` control (any of those dtypes; float32 math).
        sigma: noise scale > 0.
        seed: int (prompt b uses ``seed + b``) or int64 tensor ``[B]``.
        iteration, step: ints >= 0 or int64 tensors with one element (device tensors allow CUDA graphs).
        udot: optional float32 ``[B, n]``; accumulates ``sum_j u[b,step,j] * eps[b,i,j]`` in place.
        active: optional bool ``[B, n]``; inactive rollouts add nothing to ``udot``.
        out: optional ``[B, n, d]`` tensor of h's dtype to write into.
        backend: backend name or None ($FASTALIGN_BACKEND, else "auto").
        compute_dtype: torch.float64 for the reference backend's exact mode (eager calls only).

    Returns:
        ``z``: ``[B, n, d]`` of h's dtype.
    """
    tracing = _VIA_OPERATORS or torch.compiler.is_compiling()
    name, module, kw = _pick(backend, h, compute_dtype, tracing)
    _float_input(h, "h", 3, name)
    device = h.device
    _float_input(u, "u", 3, name, device)
    B, n, d = h.shape
    tau = u.shape[1]
    if u.shape[0] != B or u.shape[2] != d:
        raise InputError(f"u: expected shape [B={B}, tau, d={d}] to match h {tuple(h.shape)}, got {tuple(u.shape)}")
    V.check_nonempty("h", B=B, n=n, d=d)
    V.check_nonempty("u", tau=tau)
    sigma = V.check_real(sigma, "sigma", positive=True)
    udot_dtypes = (torch.float32, torch.float64) if name == "torch" else (torch.float32,)
    if udot is not None:
        V.check_state_tensor(udot, "udot", (B, n), device, udot_dtypes)
    if active is not None:
        if not isinstance(active, torch.Tensor) or active.dtype != torch.bool:
            raise InputTypeError(f"active: expected a bool tensor [B, n], got "
                            f"{getattr(active, 'dtype', type(active).__name__)}")
        V.check_same_shape(active, "active", (B, n), "[B, n]")
        if active.device != device:
            raise InputError(f"active: expected a tensor on {device}, got one on {active.device}")
    if tracing:
        seed_t = V.traced_seeds(seed, B, device)
        it_t = V.traced_counter(iteration, "iteration", device)
        step_t = V.traced_counter(step, "step", device)
        _traced_offsets("iteration", iteration, n * tau * d)
        args = (h, u, seed_t, it_t, step_t, udot, active, sigma)
        if _on_triton_op(name, device):
            z = torch.ops.fastalign.aisp_perturb_triton(*args)
        else:
            z = torch.ops.fastalign.aisp_perturb(*args, name)
        return _traced_out(z, out, (B, n, d), device)
    seed_t = V.seeds_tensor(seed, B, device)
    it_t, it = V.counter_tensor(iteration, "iteration", device)
    step_t, st = V.counter_tensor(step, "step", device)
    if it is not None:
        V.check_offsets("iteration", (it + 1) * n * tau * d)
    if udot is not None:
        V.check_writable(udot, "udot", {"h": h, "u": u, "active": active})
    buf, result = _result_buffer(out, "out", (B, n, d), h.dtype, device,
                                 {"h": h, "u": u, "udot": udot, "active": active})
    if st is not None and st >= tau:
        buf.copy_(h)
        return _finish(buf, result)
    _library.run_aisp_perturb(module, name, h, u, buf, sigma=sigma, seed=seed_t, iteration=it_t, step=step_t,
                              udot=udot, active=active, **kw)
    return _finish(buf, result)


@_no_grad
def aisp_update(u, rewards, *, sigma, lam, alpha, seed, iteration, lengths=None, udot=None, out=None,
                backend=None, compute_dtype=None):
    """Importance-weighted update of the AISP control after one iteration of n rollouts.

    With ``eps`` regenerated from the stream (never stored)::

        s_i   = r_i / lam - ((1 - alpha) / sigma) * udot_i
        w     = softmax(s)                         (per prompt; -inf reward -> weight 0)
        u_new = u + sigma * sum_i w_i * eps_i * [t < lengths_i]

    Args:
        u: ``[B, tau, d]`` control used in this iteration.
        rewards: ``[B, n]`` rewards of the rollouts (finite or -inf; not all -inf per prompt).
        sigma, lam: > 0; alpha in [0, 1].
        seed, iteration: as in :func:`aisp_perturb` for this iteration.
        lengths: optional int ``[B, n]`` in [0, tau]: generated steps per rollout (default: tau).
        udot: optional float32 ``[B, n]`` accumulated by :func:`aisp_perturb`; when None it is
            computed in a first pass that regenerates the noise.
        out: optional ``[B, tau, d]`` tensor of u's dtype.

    Returns:
        ``(u_new [B, tau, d] of u's dtype, weights [B, n] float32)``.
    """
    tracing = _VIA_OPERATORS or torch.compiler.is_compiling()
    name, module, kw = _pick(backend, u, compute_dtype, tracing)
    _float_input(u, "u", 3, name)
    device = u.device
    B, tau, d = u.shape
    V.check_nonempty("u", B=B, tau=tau, d=d)
    if not isinstance(rewards, torch.Tensor):
        raise InputTypeError(f"rewards: expected a torch.Tensor [B, n], got {type(rewards).__name__}")
    if not rewards.dtype.is_floating_point:
        raise InputTypeError(f"rewards: expected a floating-point tensor, got {rewards.dtype}")
    if rewards.dim() != 2 or rewards.shape[0] != B:
        raise InputError(f"rewards: expected shape [B={B}, n], got {tuple(rewards.shape)}")
    if rewards.device != device:
        raise InputError(f"rewards: expected a tensor on {device}, got one on {rewards.device}")
    n = rewards.shape[1]
    V.check_nonempty("rewards", n=n)
    sigma = V.check_real(sigma, "sigma", positive=True)
    lam = V.check_real(lam, "lam", positive=True)
    alpha = V.check_real(alpha, "alpha", lo=0.0, hi=1.0)
    if lengths is not None:
        if not isinstance(lengths, torch.Tensor):
            raise InputTypeError(f"lengths: expected an integer tensor [B, n], got {type(lengths).__name__}")
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.is_complex():
            raise InputTypeError(f"lengths: expected an integer tensor, got {lengths.dtype}")
        V.check_same_shape(lengths, "lengths", (B, n), "[B, n]")
        if lengths.device != device:
            raise InputError(f"lengths: expected a tensor on {device}, got one on {lengths.device}")
    if udot is not None:
        udot_dtypes = (torch.float32, torch.float64) if name == "torch" else (torch.float32,)
        V.check_state_tensor(udot, "udot", (B, n), device, udot_dtypes)
    if tracing:
        seed_t = V.traced_seeds(seed, B, device)
        it_t = V.traced_counter(iteration, "iteration", device)
        _traced_offsets("iteration", iteration, n * tau * d)
        args = (u, rewards, seed_t, it_t, lengths, udot, sigma, lam, alpha)
        if _on_triton_op(name, device):
            u_new, weights = torch.ops.fastalign.aisp_update_triton(*args)
        else:
            u_new, weights = torch.ops.fastalign.aisp_update(*args, name)
        return _traced_out(u_new, out, (B, tau, d), device), weights
    seed_t = V.seeds_tensor(seed, B, device)
    it_t, it = V.counter_tensor(iteration, "iteration", device)
    if it is not None:
        V.check_offsets("iteration", (it + 1) * n * tau * d)
    V.check_reward_values(rewards)
    if lengths is not None:
        V.check_length_values(lengths, tau)
    buf, result = _result_buffer(out, "out", (B, tau, d), u.dtype, device,
                                 {"u": u, "rewards": rewards, "lengths": lengths, "udot": udot})
    weights = _library.run_aisp_update(module, name, u, rewards, buf, sigma=sigma, lam=lam, alpha=alpha, seed=seed_t,
                                       iteration=it_t, lengths=lengths, udot=udot, **kw)
    return _finish(buf, result), weights


@_no_grad
def sea_step(y, grad, *, lr, noise_std, max_norm=None, clip="chain", seed, step, optimizer="sgld", state=None,
             betas=(0.9, 0.999), eps=1e-8, error_if_nonfinite=False, out=None, backend=None, compute_dtype=None):
    """One SEA Langevin step on response logits ``y[B, L, V]`` with gradient clipping.

    ``norm`` is the L2 norm of ``grad`` per clip group ("chain": per b, "row": per (b, l), "global":
    whole tensor, None: no norm). With ``max_norm``, ``g = grad * min(1, max_norm / (norm + 1e-6))``.
    sgld: ``y - lr*g + noise_std*xi``; adam (``state=(m, v)`` float32, zeros before the first step,
    updated in place; bias correction with ``t = step + 1``): ``y - lr*mhat/(sqrt(vhat)+eps) + noise_std*xi``,
    ``xi[b,l,v] = normal(seed[b], step*L*V + l*V + v)``.

    Returns:
        ``(y_new [B, L, V] of y's dtype, grad_norm)`` with grad_norm float32 ``[B]``, ``[B, L]``,
        ``[]`` or None (clip=None).
    """
    tracing = _VIA_OPERATORS or torch.compiler.is_compiling()
    name, module, kw = _pick(backend, y, compute_dtype, tracing)
    _float_input(y, "y", 3, name)
    device = y.device
    _float_input(grad, "grad", 3, name, device)
    V.check_same_shape(grad, "grad", tuple(y.shape), "the shape of y [B, L, V]")
    B, L, Vv = y.shape
    V.check_nonempty("y", B=B, L=L, V=Vv)
    lr = V.check_real(lr, "lr", nonnegative=True)
    noise_std = V.check_real(noise_std, "noise_std", nonnegative=True)
    if max_norm is not None:
        max_norm = V.check_real(max_norm, "max_norm", positive=True)
    if clip is not None and clip not in _CLIP_GROUPS:
        raise InputError(f"clip: expected one of {_CLIP_GROUPS} or None, got {clip!r}")
    if clip is None and max_norm is not None:
        raise InputError("max_norm: clipping needs a clip group, got clip=None with max_norm set")
    if optimizer not in ("sgld", "adam"):
        raise InputError(f"optimizer: expected 'sgld' or 'adam', got {optimizer!r}")
    if not isinstance(error_if_nonfinite, bool):
        raise InputTypeError(f"error_if_nonfinite: expected a bool, got {type(error_if_nonfinite).__name__}")
    state_dtypes = (torch.float32, torch.float64) if name == "torch" else (torch.float32,)
    m = v = None
    beta1 = beta2 = 0.0
    eps_f = 0.0
    if optimizer == "adam":
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise InputTypeError("state: optimizer='adam' needs state=(m, v), two float32 tensors shaped like y")
        m = V.check_state_tensor(state[0], "state[0] (m)", tuple(y.shape), device, state_dtypes)
        v = V.check_state_tensor(state[1], "state[1] (v)", tuple(y.shape), device, state_dtypes)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise InputTypeError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        beta1 = V.check_real(betas[0], "betas[0]", lo=0.0, hi=1.0)
        beta2 = V.check_real(betas[1], "betas[1]", lo=0.0, hi=1.0)
        if beta1 >= 1.0 or beta2 >= 1.0:
            raise InputError(f"betas: expected values in [0, 1), got {tuple(betas)}")
        eps_f = V.check_real(eps, "eps", positive=True)
    elif state is not None:
        raise InputError("state: only optimizer='adam' takes state")
    if tracing:
        seed_t = V.traced_seeds(seed, B, device)
        step_t = V.traced_counter(step, "step", device)
        _traced_offsets("step", step, L * Vv)
        args = (y, grad, seed_t, step_t, m, v, lr, noise_std, max_norm, clip, optimizer, beta1, beta2, eps_f)
        if _on_triton_op(name, device) and not error_if_nonfinite:  # that check reads the norm: opaque op only
            y_new, norm = torch.ops.fastalign.sea_step_triton(*args)
        else:
            y_new, norm = torch.ops.fastalign.sea_step(*args, error_if_nonfinite, name)
        return _traced_out(y_new, out, (B, L, Vv), device), (None if clip is None else norm)
    seed_t = V.seeds_tensor(seed, B, device)
    step_t, st = V.counter_tensor(step, "step", device)
    if st is not None:
        V.check_offsets("step", (st + 1) * L * Vv)
    if m is not None:
        V.check_writable(m, "state[0] (m)", {"y": y, "grad": grad, "state[1] (v)": v})
        V.check_writable(v, "state[1] (v)", {"y": y, "grad": grad})
    buf, result = _result_buffer(out, "out", (B, L, Vv), y.dtype, device,
                                 {"y": y, "grad": grad, "state[0] (m)": m, "state[1] (v)": v})
    norm = _library.run_sea_step(module, name, y, grad, buf, lr=lr, noise_std=noise_std, max_norm=max_norm, clip=clip,
                                 seed=seed_t, step=step_t, optimizer=optimizer, m=m, v=v, beta1=beta1, beta2=beta2,
                                 eps=eps_f, error_if_nonfinite=error_if_nonfinite, **kw)
    return _finish(buf, result), norm


@_no_grad
def gaussian_perturb(x, *, std, seed, step, out=None, backend=None, compute_dtype=None):
    """``x + std * xi`` with SEA's noise indexing: ``xi[b, k] = normal(seed[b], step*N + k)``.

    ``x`` is ``[B, ...]`` (``N`` = elements per chain, ``L*V`` for logits ``[B, L, V]``); it draws the
    same numbers as :func:`sea_step` at the same seed and step.
    """
    tracing = _VIA_OPERATORS or torch.compiler.is_compiling()
    name, module, kw = _pick(backend, x, compute_dtype, tracing)
    _float_input(x, "x", None, name)
    if x.dim() < 2:
        raise InputError(f"x: expected a tensor [B, ...] with at least 2 dims, got shape {tuple(x.shape)}")
    device = x.device
    B = x.shape[0]
    N = math.prod(x.shape[1:])
    V.check_nonempty("x", B=B, N=N)
    std = V.check_real(std, "std", nonnegative=True)
    if tracing:
        seed_t = V.traced_seeds(seed, B, device)
        step_t = V.traced_counter(step, "step", device)
        _traced_offsets("step", step, N)
        if _on_triton_op(name, device):
            result = torch.ops.fastalign.gaussian_perturb_triton(x, seed_t, step_t, std)
        else:
            result = torch.ops.fastalign.gaussian_perturb(x, seed_t, step_t, std, name)
        return _traced_out(result, out, tuple(x.shape), device)
    seed_t = V.seeds_tensor(seed, B, device)
    step_t, st = V.counter_tensor(step, "step", device)
    if st is not None:
        V.check_offsets("step", (st + 1) * N)
    buf, result = _result_buffer(out, "out", tuple(x.shape), x.dtype, device, {"x": x})
    _library.run_gaussian_perturb(module, x, buf, std=std, seed=seed_t, step=step_t, **kw)
    return _finish(buf, result)
