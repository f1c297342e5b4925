"""The ``cpu`` backend: fused C++ kernels (OpenMP across rows, SIMD inside a row) from ``csrc/cpu/``.

The extension is taken, in order, from an ahead-of-time build (``fastalign._C_cpu``, made by
``FASTALIGN_BUILD_EXT=1 pip install --no-build-isolation .``) or a just-in-time build on first use
(:mod:`fastalign.backends._jit`, cached in the user's cache folder). The stream's SIMD path (avx512,
avx2 or portable) is chosen at run time from the CPU; ``FASTALIGN_CPU_ISA=portable|avx2|avx512``
caps it. See the backend API in :mod:`fastalign.backends` for the functions' contracts.
"""
from __future__ import annotations

import hashlib
import os
import platform
import threading
from types import ModuleType

import torch

from fastalign._clip import clip_code

__all__ = [
    "is_available",
    "extension",
    "aisp_perturb",
    "aisp_udot",
    "aisp_apply",
    "sea_norm",
    "sea_update",
    "gaussian_perturb",
]

#: Sources of the extension, relative to ``csrc/``: one op per file plus the stream and the binding.
SOURCES = (
    "cpu/stream_simd.cpp",
    "cpu/aisp_perturb.cpp",
    "cpu/aisp_update.cpp",
    "cpu/sea_step.cpp",
    "cpu/gaussian_perturb.cpp",
    "cpu/bindings.cpp",
)
#: Flags of every build: -fno-math-errno lets sqrtf vectorise; no -ffast-math (NaN/inf stay IEEE).
COMMON_CFLAGS = ("-O3", "-fopenmp", "-fno-math-errno", "-ffp-contract=fast")

_LOCK = threading.Lock()
_EXT: ModuleType | None = None


def _host_cpu_tag() -> str:
    """A short id of this CPU model, so a -march=native build cached on a shared disk is not reused
    on a different CPU."""
    text = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        text += "".join(dict.fromkeys(lines))
    except OSError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _jit_cflags() -> list[str]:
    flags = list(COMMON_CFLAGS)
    if os.environ.get("FASTALIGN_NO_NATIVE", "") not in ("", "0") or platform.machine() not in ("x86_64", "AMD64"):
        return flags
    return [*flags, "-march=native", f"-DFASTALIGN_HOST_CPU={_host_cpu_tag()}"]


def extension() -> ModuleType:
    """The compiled module (ahead-of-time build if installed, else built just in time and cached)."""
    global _EXT
    with _LOCK:
        if _EXT is None:
            try:
                from fastalign import _C_cpu as ext  # type: ignore[attr-defined]
            except ImportError:
                from fastalign.backends import _jit

                ext = _jit.load(
                    "fastalign_cpu",
                    list(SOURCES),
                    extra_cflags=_jit_cflags(),
                    extra_ldflags=["-fopenmp"],
                    verbose=os.environ.get("FASTALIGN_VERBOSE_BUILD", "") not in ("", "0"),
                )
            _EXT = ext
        return _EXT


def is_available(device_type: str) -> str | None:
    """None when the extension loads (building it on first use), else why not."""
    if device_type != "cpu":
        return f"the cpu backend runs on CPU tensors only, not {device_type!r}"
    try:
        extension()
    except Exception as exc:  # the reason, with how to fix it, is in the message
        return f"the C++ extension could not be built or loaded: {type(exc).__name__}: {exc}"
    return None


# --- backend API (arguments already validated and normalised by fastalign.ops) -------------------


def aisp_perturb(h, u, out, *, sigma, seed, iteration, step, udot, active) -> None:
    """out ``[B, n, d]`` = h + u[:, step] + sigma * eps (step < tau, else h); udot ``[B, n]`` += u . eps."""
    extension().aisp_perturb(h, u, out, float(sigma), seed, iteration, step, udot, active)


def aisp_udot(u, lengths, udot_out, *, seed, iteration) -> None:
    """udot_out ``[B, n]`` = sum over t < lengths of u[b, t] . eps[b, i, t] (noise regenerated)."""
    extension().aisp_udot(u, lengths, udot_out, seed, iteration)


def aisp_apply(u, weights, lengths, out, *, sigma, seed, iteration) -> None:
    """out ``[B, tau, d]`` = u + sigma * sum_i weights[b, i] * eps[b, i, t] * [t < lengths[b, i]]."""
    extension().aisp_apply(u, weights, lengths, out, float(sigma), seed, iteration)


def sea_norm(grad, *, group) -> torch.Tensor:
    """float32 L2 norms of grad ``[B, L, V]`` per chain ``[B]``, row ``[B, L]`` or ``[]`` (global)."""
    return extension().sea_norm(grad, clip_code(group))


def sea_update(y, grad, out, *, norm, group, max_norm, lr, noise_std, seed, step, optimizer, m, v, beta1, beta2,
               eps) -> None:
    """One sgld/adam step on y ``[B, L, V]`` with the clip coefficient from ``norm``; m, v in place."""
    extension().sea_update(
        y, grad, out, norm, clip_code(group or "chain"), None if max_norm is None else float(max_norm), float(lr),
        float(noise_std),
        seed, step, optimizer, m, v, float(beta1), float(beta2), float(eps),
    )


def gaussian_perturb(x, out, *, std, seed, step) -> None:
    """out ``[B, N]`` = x + std * normal(seed[b], step * N + k)."""
    extension().gaussian_perturb(x, out, float(std), seed, step)
