"""SEA Langevin step (Triton): deterministic gradient norm, then one fused clip + update + noise pass.

For B chains of response logits ``y, grad: [B, L, V]`` (flat ``f = l*V + v``, ``N = L*V``)::

    norm  = ||grad|| per clip group: "chain" [B], "row" [B, L], "global" []
    coef  = min(1, max_norm / (norm + 1e-6));  g = grad * coef           (g = grad without clipping)
    sgld: out = y - lr * g + noise_std * xi
    adam: m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2                    (in place, float32;
          1-b1 and 1-b2 are rounded to float32 from float64, as torch.optim.Adam does)
          out = y - lr * (m / bias1) / (sqrt(v / bias2) + eps) + noise_std * xi,
          bias1 = 1 - b1^t, bias2 = 1 - b2^t, t = step + 1
    xi[b, f] = normal(seed[b], step*N + f)

Norm: ``grad`` is viewed as ``[G, M]`` (G groups of M contiguous elements). Pass 1, ``G*P`` programs:
program p adds the squares of its ``CHUNK`` elements into ``partial[g, p]`` (tile-vector
accumulator, then a tree sum); pass 2 (``_common.sum_partials_kernel``, one program per group) adds
the P partials in a fixed order and takes the square root. No float atomics, so repeated runs are
bit-identical; the summation order depends only on the shape and the block sizes.

Update: grid ``(tiles, B)``; chain b draws the contiguous logical range ``step*N + [0, N)``, covered
by counter-block windows (``_common.normal_window``). ``seed`` and ``step`` are read from int64 device
tensors, and the Adam bias corrections are computed in the kernel from ``step``, so a sampling loop
can be captured in a CUDA graph.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from fastalign._clip import CLIP_GROUPS, NO_CLIP

from ._common import (WINDOW_NUM_WARPS, cdiv, chain_tile, default_block_c, launcher, normal_window,
                      on_interpreter, sum_partials)

__all__ = ["sea_norm_partial_kernel", "sea_update_kernel", "sea_norm", "sea_update", "GROUPS"]

#: clip group name -> the GROUP constexpr of :func:`sea_update_kernel` (the one table of every backend)
GROUPS = CLIP_GROUPS
#: elements per tile and tiles per program of the norm's first pass
NORM_BLOCK_GPU, NORM_TILES_GPU = 1024, 8
NORM_BLOCK_INTERPRETER, NORM_TILES_INTERPRETER = 16384, 16
#: stands in for log(0) when beta == 0 (beta^t = 0 for every t >= 1) without producing inf * 0
_LOG_ZERO = -1.0e30


@triton.jit
def sea_norm_partial_kernel(grad_ptr, partial_ptr, M, P, BLOCK: tl.constexpr, TILES: tl.constexpr):
    """partial[g, p] = sum of grad[g, p*CHUNK : (p+1)*CHUNK]**2 (CHUNK = BLOCK*TILES), float32."""
    pid32 = tl.program_id(0)                          # 1-D grid of G*P programs (G may exceed 65535)
    g = (pid32 // P.to(tl.int32)).to(tl.int64)        # int32 division: pid < 2**31 (a grid dimension)
    p = pid32.to(tl.int64) - g * P
    offs = tl.arange(0, BLOCK).to(tl.int64)
    start = p * (BLOCK * TILES)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for t in tl.static_range(TILES):
        idx = start + t * BLOCK + offs
        x = tl.load(grad_ptr + g * M + idx, mask=idx < M, other=0.0).to(tl.float32)
        acc += x * x
    tl.store(partial_ptr + g * P + p, tl.sum(acc, axis=0))


@triton.jit
def _one_minus_exp(x):
    """1 - exp(x) for x <= 0 without cancellation near 0 (= -expm1(x); Taylor series for |x| < 0.5)."""
    series = x * (1.0 + x / 2.0 * (1.0 + x / 3.0 * (1.0 + x / 4.0 * (1.0 + x / 5.0 * (
        1.0 + x / 6.0 * (1.0 + x / 7.0 * (1.0 + x / 8.0 * (1.0 + x / 9.0))))))))
    return tl.where(x > -0.5, -series, 1.0 - tl.exp(x))


@triton.jit
def sea_update_kernel(
    y_ptr, grad_ptr, out_ptr, norm_ptr, m_ptr, v_ptr,   # [B,L,V] x3 (any float), f32 norm, f32 [B,L,V] x2
    seed_ptr, step_ptr,                                  # int64 [B], [1]
    L, V, N,                                             # N = L * V
    max_norm, lr, noise_std, beta1, beta2, one_minus_beta1, one_minus_beta2, log_beta1, log_beta2, adam_eps,
    CLIP: tl.constexpr, GROUP: tl.constexpr, ADAM: tl.constexpr, HAS_NOISE: tl.constexpr,
    ALIGNED: tl.constexpr, ROW32: tl.constexpr, BLOCK_C: tl.constexpr,
):
    tile = tl.program_id(0).to(tl.int64)                 # tiles on axis 0 (up to 2^31-1), chains on axis 1
    b = tl.program_id(1).to(tl.int64)
    step = tl.load(step_ptr)
    base = step * N                                      # first logical index of every chain
    f, mask = chain_tile(tile, base, N, ALIGNED, BLOCK_C)
    offs = b * N + f
    g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if CLIP:
        if GROUP == 1:                                   # chain (CLIP_GROUPS' codes)
            norm = tl.load(norm_ptr + b)
        elif GROUP == 2:                                 # row
            if ROW32:                                    # N < 2**31: int32 division (int64 is a slow call)
                row = (f.to(tl.int32) // V.to(tl.int32)).to(tl.int64)
            else:
                row = f // V
            norm = tl.load(norm_ptr + b * L + row, mask=mask, other=0.0)
        else:                                            # global
            norm = tl.load(norm_ptr)
        coef = max_norm / (norm + 1.0e-6)
        coef = tl.where(coef > 1.0, 1.0, coef)           # NaN norm -> NaN coef, inf norm -> 0 (as torch)
        g = g * coef
    if ADAM:
        t = (step + 1).to(tl.float32)
        bias1 = _one_minus_exp(t * log_beta1)
        bias2 = _one_minus_exp(t * log_beta2)
        m = beta1 * tl.load(m_ptr + offs, mask=mask, other=0.0) + one_minus_beta1 * g
        v = beta2 * tl.load(v_ptr + offs, mask=mask, other=0.0) + one_minus_beta2 * g * g
        tl.store(m_ptr + offs, m, mask=mask)
        tl.store(v_ptr + offs, v, mask=mask)
        y_new = y - lr * (m / bias1) / (tl.sqrt_rn(v / bias2) + adam_eps)
    else:
        y_new = y - lr * g
    if HAS_NOISE:
        seed = tl.load(seed_ptr + b)
        y_new += noise_std * normal_window(seed, (base >> 2) + tile * BLOCK_C, BLOCK_C)
    tl.store(out_ptr + offs, y_new.to(out_ptr.dtype.element_ty), mask=mask)


def sea_norm(grad: torch.Tensor, *, group: str, block: int | None = None, tiles: int | None = None,
             traceable: bool = False) -> torch.Tensor:
    """Float32 L2 norm of ``grad [B, L, V]`` per group: ``[B]`` (chain), ``[B, L]`` (row), ``[]`` (global).

    Two deterministic passes (per-chunk partial sums of squares, then a fixed-order sum and sqrt).
    ``block`` (power of two) and ``tiles`` set the chunk of the first pass; defaults by device.
    ``traceable``: launch through ``torch.library.wrap_triton`` (see ``_common.launcher``).
    """
    B, L, V = grad.shape
    if group == "chain":
        G, shape = B, (B,)
    elif group == "row":
        G, shape = B * L, (B, L)
    elif group == "global":
        G, shape = 1, ()
    else:
        raise ValueError(f"group: expected 'chain', 'row' or 'global', got {group!r}")
    M = grad.numel() // G
    interp = on_interpreter(grad.device)
    block = block or (NORM_BLOCK_INTERPRETER if interp else NORM_BLOCK_GPU)
    tiles = tiles or (NORM_TILES_INTERPRETER if interp else NORM_TILES_GPU)
    block = min(block, triton.next_power_of_2(M))
    tiles = max(1, min(tiles, cdiv(M, block)))
    P = cdiv(M, block * tiles)
    partial = torch.empty(G, P, dtype=torch.float32, device=grad.device)
    launcher(sea_norm_partial_kernel, traceable)[(G * P,)](grad, partial, M, P, BLOCK=block, TILES=tiles, num_warps=4)
    norm = torch.empty(G, dtype=torch.float32, device=grad.device)
    sum_partials(partial, norm, sqrt=True, traceable=traceable)
    return norm.view(shape)


def _log_beta(beta: float) -> float:
    return math.log(beta) if beta > 0.0 else _LOG_ZERO


def sea_update(y: torch.Tensor, grad: torch.Tensor, out: torch.Tensor, *, norm: torch.Tensor | None,
               group: str | None, max_norm: float | None, lr: float, noise_std: float, seed: torch.Tensor,
               step: torch.Tensor, optimizer: str = "sgld", m: torch.Tensor | None = None,
               v: torch.Tensor | None = None, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               block_c: int | None = None, row32: bool | None = None, traceable: bool = False) -> None:
    """Launch :func:`sea_update_kernel` (see the module docstring for the math).

    Args:
        y, grad, out: contiguous ``[B, L, V]`` (out may be y's dtype, any float storage).
        norm: float32 norms from :func:`sea_norm` (``[B]``, ``[B, L]`` or ``[]``) when ``max_norm``
            is set; group: the clip group they belong to.
        m, v: contiguous float32 ``[B, L, V]`` Adam moments, updated in place (optimizer="adam").
        seed: int64 ``[B]``; step: int64 ``[1]``.
        block_c: counter blocks per tile (power of two); the result does not depend on it.
        row32: int32 row index for ``clip="row"`` (default: when ``L*V < 2**31``); False forces the
            int64 division of larger chains (tests).
        traceable: launch through ``torch.library.wrap_triton`` (see ``_common.launcher``).
    """
    B, L, V = y.shape
    N = L * V
    if row32 is None:
        row32 = N < 2**31
    elif row32 and N >= 2**31:
        raise ValueError(f"row32: a chain of L*V = {N} elements needs int64 indices")
    clip = max_norm is not None
    if clip and (norm is None or group not in GROUPS):
        raise ValueError(f"sea_update: clipping needs norm and a group in {tuple(GROUPS)}, got {group!r}")
    adam = optimizer == "adam"
    if optimizer not in ("sgld", "adam"):
        raise ValueError(f"optimizer: expected 'sgld' or 'adam', got {optimizer!r}")
    if adam and (m is None or v is None):
        raise ValueError("sea_update: optimizer='adam' needs m and v")
    block_c = default_block_c(y.device, block_c)
    grid = (cdiv(N + 3, 4 * block_c), B)
    launcher(sea_update_kernel, traceable)[grid](
        y, grad, out, norm if clip else y, m if adam else y, v if adam else y,
        seed, step, L, V, N,
        float(max_norm) if clip else 1.0, float(lr), float(noise_std),
        float(beta1), float(beta2), 1.0 - float(beta1), 1.0 - float(beta2),   # 1 - beta in float64, as torch.optim.Adam
        _log_beta(beta1) if adam else 0.0, _log_beta(beta2) if adam else 0.0,
        float(eps),
        CLIP=clip, GROUP=GROUPS[group] if clip else NO_CLIP, ADAM=adam, HAS_NOISE=noise_std != 0.0,
        ALIGNED=N % 4 == 0, ROW32=row32, BLOCK_C=block_c, num_warps=WINDOW_NUM_WARPS,
        enable_fp_fusion=False,  # no FMA contraction: the same rounding for every tile size (see _common)
    )
