"""Backend registry: which implementations of the fused ops exist, where they run, and why not.

A backend is a module that implements the *backend API* below. It registers with one line at the
bottom of this file (name, devices, module path). Adding a backend touches its own module/folder and
that one line.

Selection (same contract as Liger-Kernel's registry): ``backend=`` on a call wins, then the
``FASTALIGN_BACKEND`` environment variable, then ``"auto"``. An explicitly requested backend that
cannot run raises :class:`BackendUnavailableError` with the reason; ``auto`` walks
:data:`AUTO_ORDER` for the tensor's device and falls back to the next candidate with one warning
naming what failed.

Backend API
-----------
Every backend module defines ``is_available(device_type: str) -> str | None`` (``None`` when it can
run on that device type, else the reason) and the functions below. ``fastalign.ops`` validates and
normalises every argument before calling them, so a backend may assume:

* all tensors are contiguous and on one device; storage dtypes are float32/bfloat16/float16 (the
  ``torch`` backend also accepts float64); math is float32;
* ``seed`` is an int64 tensor ``[B]`` on the device; ``iteration`` and ``step`` are int64 tensors
  ``[1]`` on the device (so a decode step can be captured in a CUDA graph);
* output tensors are preallocated, contiguous, and do not overlap inputs.

``aisp_perturb(h, u, out, *, sigma, seed, iteration, step, udot, active) -> None``
    h, out: ``[B, n, d]`` (same dtype); u: ``[B, tau, d]`` float32.  For ``step < tau``:
    ``out = h + u[:, step] + sigma * eps`` with ``eps[b,i,j] = normal(seed[b], ((it*n+i)*tau+step)*d+j)``
    and, if ``udot`` (``[B, n]`` float32) is given, ``udot[b,i] += sum_j u[b,step,j]*eps[b,i,j]`` for
    rollouts with ``active[b,i]`` (``[B, n]`` bool, or None = all active).  For ``step >= tau``:
    ``out = h`` and udot is untouched.
``aisp_udot(u, lengths, udot_out, *, seed, iteration) -> None``
    u: ``[B, tau, d]`` float32; lengths: ``[B, n]`` int64 in [0, tau]; udot_out ``[B, n]`` float32,
    overwritten with ``sum_{t < lengths[b,i]} sum_j u[b,t,j] * eps[b,i,t,j]`` (same eps as perturb).
``aisp_apply(u, weights, lengths, out, *, sigma, seed, iteration) -> None``
    weights ``[B, n]`` float32; out ``[B, tau, d]`` float32 =
    ``u + sigma * sum_i weights[b,i] * eps[b,i,t,j] * [t < lengths[b,i]]``.  Noise is regenerated,
    never stored.  (The softmax between the two passes is computed by ``fastalign.ops``.)
``sea_norm(grad, *, group) -> Tensor``
    grad ``[B, L, V]``; group in {"chain", "row", "global"}; returns float32 L2 norms shaped
    ``[B]``, ``[B, L]`` or ``[]``, reduced in a fixed order (deterministic, no float atomics).
``sea_update(y, grad, out, *, norm, group, max_norm, lr, noise_std, seed, step, optimizer, m, v, beta1, beta2, eps) -> None``
    y, grad, out: ``[B, L, V]``.  ``g = grad * clip_coef(norm[group], max_norm)`` when ``max_norm`` is
    not None (norm indexed by b, (b, l) or the single global value), else ``g = grad``.
    sgld: ``out = y - lr*g + noise_std*xi``; adam: m, v (float32 ``[B, L, V]``) updated in place,
    bias correction with ``t = step + 1``.  ``xi[b,l,v] = normal(seed[b], step*L*V + l*V + v)``;
    when ``noise_std == 0`` the noise need not be generated.
``gaussian_perturb(x, out, *, std, seed, step) -> None``
    x, out: ``[B, N]`` (N = L*V); ``out = x + std * normal(seed[b], step*N + k)``.
"""
from __future__ import annotations

import importlib
import os
import threading
import warnings
from dataclasses import dataclass
from types import ModuleType

from fastalign.errors import InputError

__all__ = [
    "BackendUnavailableError",
    "register",
    "names",
    "availability",
    "get",
    "resolve",
    "AUTO_ORDER",
]


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run here; the message says why."""


@dataclass(frozen=True)
class BackendSpec:
    name: str
    devices: tuple[str, ...]
    module: str


_REGISTRY: dict[str, BackendSpec] = {}
_MODULES: dict[str, ModuleType] = {}
_AVAILABILITY: dict[tuple[str, str], str | None] = {}
_RESOLVED: dict[tuple[str, str], tuple[str, ModuleType]] = {}
_WARNED: set[tuple[str, str]] = set()
_LOCK = threading.RLock()

#: Candidates tried by ``backend="auto"`` for a tensor on each device type, in order.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("cuda", "triton", "torch"),
    "cpu": ("cpu", "torch"),
}


def register(name: str, devices: tuple[str, ...], module: str) -> None:
    """Register backend ``name`` implemented by ``module`` for the given device types."""
    _REGISTRY[name] = BackendSpec(name, tuple(devices), module)


def names() -> list[str]:
    """Names of every registered backend (available here or not)."""
    return list(_REGISTRY)


def _import(name: str) -> ModuleType:
    with _LOCK:
        mod = _MODULES.get(name)
        if mod is None:
            mod = importlib.import_module(_REGISTRY[name].module)
            _MODULES[name] = mod
        return mod


def _check(name: str, device_type: str) -> str | None:
    """None if ``name`` can run on ``device_type``, else the reason (cached per process)."""
    key = (name, device_type)
    with _LOCK:
        if key in _AVAILABILITY:
            return _AVAILABILITY[key]
        spec = _REGISTRY[name]
        if device_type not in spec.devices:
            reason = f"backend {name!r} does not run on {device_type!r} tensors (runs on {', '.join(spec.devices)})"
        else:
            try:
                reason = _import(name).is_available(device_type)
            except Exception as exc:  # an import or build failure is a reason, not a crash
                reason = f"{type(exc).__name__}: {exc}"
        _AVAILABILITY[key] = reason
        return reason


def availability(device_type: str | None = None) -> dict[str, str | None]:
    """``{backend: None | reason}`` for every registered backend on ``device_type``.

    With ``device_type=None`` a backend counts as available if it runs on any of its devices that
    exist here (CUDA only when ``torch.cuda.is_available()``).
    """
    import torch

    out: dict[str, str | None] = {}
    for name, spec in _REGISTRY.items():
        if device_type is not None:
            out[name] = _check(name, device_type)
            continue
        reasons = []
        for dev in spec.devices:
            if dev == "cuda" and not torch.cuda.is_available():
                reasons.append("no CUDA device (torch.cuda.is_available() is False)")
                continue
            r = _check(name, dev)
            if r is None:
                reasons = []
                break
            reasons.append(r)
        out[name] = "; ".join(dict.fromkeys(reasons)) if reasons else None
    return out


def get(name: str, device_type: str) -> ModuleType:
    """The module of backend ``name`` for ``device_type``, or BackendUnavailableError with the reason."""
    if name not in _REGISTRY:
        raise InputError(f"backend: expected one of {['auto', *_REGISTRY]}, got {name!r}")
    reason = _check(name, device_type)
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} cannot run on {device_type}: {reason}")
    return _import(name)


def resolve(backend: str | None, device_type: str) -> tuple[str, ModuleType]:
    """Pick the backend for a call: explicit argument, then $FASTALIGN_BACKEND, then auto.

    A successful pick is remembered per (choice, device type) until :func:`_reset_cache`, so the
    per-call cost is one dictionary lookup.
    """
    choice = backend if backend is not None else os.environ.get("FASTALIGN_BACKEND", "auto")
    hit = _RESOLVED.get((choice, device_type))
    if hit is not None:
        return hit
    picked = _resolve(choice.strip().lower() or "auto", device_type)
    _RESOLVED[(choice, device_type)] = picked
    return picked


def _resolve(choice: str, device_type: str) -> tuple[str, ModuleType]:
    if choice != "auto":
        return choice, get(choice, device_type)
    failed = []
    for name in AUTO_ORDER.get(device_type, ("torch",)):
        if name not in _REGISTRY:
            continue
        reason = _check(name, device_type)
        if reason is None:
            if failed:
                key = (name, device_type)
                with _LOCK:
                    if key not in _WARNED:
                        _WARNED.add(key)
                        why = "; ".join(f"{n}: {r}" for n, r in failed)
                        warnings.warn(
                            f"fastalign: backend 'auto' on {device_type} falls back to {name!r} ({why})",
                            RuntimeWarning,
                            stacklevel=6,  # _resolve, resolve, _pick, the op, _no_grad, the caller
                        )
            return name, _import(name)
        failed.append((name, reason))
    raise BackendUnavailableError(
        f"no fastalign backend can run on {device_type}: " + "; ".join(f"{n}: {r}" for n, r in failed)
    )


def _reset_cache() -> None:
    """Forget cached availability (tests use this after changing the environment)."""
    with _LOCK:
        _AVAILABILITY.clear()
        _WARNED.clear()
        _RESOLVED.clear()


# --- the registry: one line per backend -------------------------------------------------------
register("torch", ("cpu", "cuda"), "fastalign.backends.torch_ref")
register("triton", ("cuda", "cpu"), "fastalign.backends.triton")
register("cpu", ("cpu",), "fastalign.backends.cpu")
register("cuda", ("cuda",), "fastalign.backends.cuda")
