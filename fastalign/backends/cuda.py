"""The CUDA C++ backend (``backend="cuda"``): raw-pointer kernels in ``csrc/cuda/`` behind a thin binding.

The extension (``csrc/cuda/*.cu`` + ``binding.cpp``) is built just in time on first use with
:func:`fastalign.backends._jit.load` (ninja, cached, rebuilt when a source changes), for the GPUs of
``TORCH_CUDA_ARCH_LIST`` or, when that is unset, the visible ones. The functions implement the backend
API of :mod:`fastalign.backends` (arguments already validated and normalised by :mod:`fastalign.ops`:
contiguous tensors on one CUDA device, ``seed [B]`` / ``iteration [1]`` / ``step [1]`` int64 device
tensors, so a decode step can be captured in a CUDA graph).

Kernel layout (see the headers of the ``.cu`` files): a thread owns 4 consecutive elements of a
row = one Philox4x32-10 call of the stream (``fastalign/philox.h``), with 128-bit (fp32) or 64-bit
(fp16/bf16) loads and stores when the row is aligned; reductions (``udot``, gradient norms) are
two-pass with a fixed-order finalize, so results are bit-identical from run to run.
"""
from __future__ import annotations

import threading
from types import ModuleType

import torch

from fastalign._clip import NO_CLIP, clip_code

__all__ = ["is_available", "load_extension", "aisp_perturb", "aisp_udot", "aisp_apply", "sea_norm",
           "sea_update", "gaussian_perturb"]

_SOURCES = (
    "cuda/aisp_perturb.cu",
    "cuda/aisp_update.cu",
    "cuda/sea_step.cu",
    "cuda/gaussian_perturb.cu",
    "cuda/binding.cpp",
)
# Precise logf/sinf/cosf/sqrtf (no --use_fast_math): the stream's normals must match the other
# backends to ~1e-6.
_CUDA_CFLAGS = ("-O3", "-std=c++17")
_CFLAGS = ("-O3", "-std=c++17")

_LOCK = threading.Lock()
_EXT: ModuleType | None = None
_EXT_ERROR: str | None = None


def load_extension() -> ModuleType:
    """Build (first call, or after a source change) and import the CUDA extension; cached per process."""
    global _EXT, _EXT_ERROR
    with _LOCK:
        if _EXT is not None:
            return _EXT
        if _EXT_ERROR is not None:
            raise RuntimeError(_EXT_ERROR)
        from fastalign.backends import _jit

        try:
            _EXT = _jit.load("fastalign_cuda", list(_SOURCES), extra_cflags=list(_CFLAGS),
                             extra_cuda_cflags=list(_CUDA_CFLAGS))
        except Exception as exc:  # BuildError, or the compiler's own RuntimeError
            _EXT_ERROR = f"the CUDA extension failed to build ({type(exc).__name__}: {exc})"
            raise RuntimeError(_EXT_ERROR) from exc
        return _EXT


def is_available(device_type: str) -> str | None:
    """None when the CUDA kernels can run on ``device_type`` tensors here, else the reason."""
    if device_type != "cuda":
        return f"the CUDA backend runs on 'cuda' tensors only, not {device_type!r}"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    if torch.version.cuda is None:
        return "this torch build has no CUDA support (torch.version.cuda is None)"
    from torch.utils import cpp_extension

    if not cpp_extension.CUDA_HOME:
        return "no CUDA toolkit found (CUDA_HOME unset and nvcc not on PATH); install it or set CUDA_HOME"
    try:
        load_extension()
    except Exception as exc:
        return str(exc)
    return None


def aisp_perturb(h, u, out, *, sigma, seed, iteration, step, udot, active) -> None:
    """``out[B, n, d] = h + u[:, step] + sigma * eps`` (``h`` past the horizon); ``udot[B, n] += u . eps``."""
    load_extension().aisp_perturb(h, u, out, float(sigma), seed, iteration, step, udot,
                                  active if udot is not None else None)


def aisp_udot(u, lengths, udot_out, *, seed, iteration) -> None:
    """``udot_out[b, i] = sum_{t < lengths[b, i]} u[b, t] . eps[b, i, t]`` (noise regenerated)."""
    load_extension().aisp_udot(u, lengths, udot_out, seed, iteration)


def aisp_apply(u, weights, lengths, out, *, sigma, seed, iteration) -> None:
    """``out[B, tau, d] = u + sigma * sum_i weights[b, i] * eps[b, i] * [t < lengths[b, i]]``."""
    load_extension().aisp_apply(u, weights, lengths, out, float(sigma), seed, iteration)


def sea_norm(grad, *, group) -> torch.Tensor:
    """Float32 L2 norms of ``grad [B, L, V]``: ``[B]`` (chain), ``[B, L]`` (row) or ``[]`` (global)."""
    if group is None:
        raise ValueError("clip: sea_norm needs a clip group, got None")
    return load_extension().sea_norm(grad, clip_code(group))


def sea_update(y, grad, out, *, norm, group, max_norm, lr, noise_std, seed, step, optimizer, m, v, beta1, beta2,
               eps) -> None:
    """Fused clip + sgld/adam update + Langevin noise on ``y [B, L, V]`` (m, v updated in place for adam)."""
    if optimizer not in ("sgld", "adam"):
        raise ValueError(f"optimizer: expected 'sgld' or 'adam', got {optimizer!r}")
    clipping = max_norm is not None
    if clipping and group is None:
        raise ValueError("clip: a clip group is needed with max_norm, got None")
    adam = optimizer == "adam"
    load_extension().sea_update(
        y, grad, out, norm if clipping else None, clip_code(group) if clipping else NO_CLIP,
        float(max_norm) if clipping else 0.0, float(lr), float(noise_std), seed, step,
        m if adam else None, v if adam else None, float(beta1), float(beta2), float(eps))


def gaussian_perturb(x, out, *, std, seed, step) -> None:
    """``out[B, N] = x + std * normal(seed[b], step*N + k)``."""
    load_extension().gaussian_perturb(x, out, float(std), seed, step)
