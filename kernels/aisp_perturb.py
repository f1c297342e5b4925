"""AISP perturbation of one decode step, fused with the ``udot`` by-product (Triton).

For prompt b, rollout i and feature j, at decode step ``step`` of iteration ``it``::

    step < tau:  z[b,i,j] = h[b,i,j] + u[b,step,j] + sigma * eps[b,i,j]
                 udot[b,i] += sum_j u[b,step,j] * eps[b,i,j]      (if udot given and active[b,i])
    step >= tau: z = h                                             (udot untouched)
    eps[b,i,j] = normal(seed[b], ((it*n + i)*tau + step)*d + j)

Row ``(b, i)`` draws the contiguous logical range ``base + [0, d)`` with
``base = ((it*n + i)*tau + step)*d``, covered by counter-block windows (see ``_common``). ``seed``,
``it`` and ``step`` are read from int64 device tensors so that a decode loop can be captured in a
CUDA graph; ``step >= tau`` is decided inside the kernel for the same reason.

Grid: ``(B*n, P)``. Without ``udot`` each of the P programs of a row takes one tile; with ``udot``
P = 1 and the program walks the whole row, so the dot product is reduced in a fixed order
(deterministic, no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import WINDOW_NUM_WARPS, cdiv, default_block_c, launcher, normal_window

__all__ = ["aisp_perturb_kernel", "aisp_perturb"]


@triton.jit
def aisp_perturb_kernel(
    h_ptr, u_ptr, out_ptr, udot_ptr, active_ptr,      # [B,n,d] any float, [B,tau,d] f32, [B,n,d], [B,n] f32, [B,n] bool
    seed_ptr, it_ptr, step_ptr,                       # int64 [B], [1], [1]
    n, tau, d, sigma,
    HAS_UDOT: tl.constexpr, HAS_ACTIVE: tl.constexpr, ALIGNED: tl.constexpr, BLOCK_C: tl.constexpr,
):
    row32 = tl.program_id(0)                          # b * n + i (< 2**31: a grid dimension)
    row = row32.to(tl.int64)
    pid_tile = tl.program_id(1).to(tl.int64)
    n_prog = tl.num_programs(1)
    b = (row32 // n.to(tl.int32)).to(tl.int64)       # int32 division: int64 division is a slow call that spills
    i = row - b * n
    step = tl.load(step_ptr)
    h_row = h_ptr + row * d
    out_row = out_ptr + row * d
    TILE: tl.constexpr = 4 * BLOCK_C
    if step < tau:
        seed = tl.load(seed_ptr + b)
        it = tl.load(it_ptr)
        base = ((it * n + i) * tau + step) * d            # first logical index of the row (int64)
        u_row = u_ptr + (b * tau + step) * d
        k_local = tl.arange(0, TILE).to(tl.int64)
        if ALIGNED:                                       # d % 4 == 0: rows start on a counter block
            n_tiles = tl.cdiv(d, TILE)
        else:
            shift = base & 3                              # row start inside its first counter block
            n_tiles = tl.cdiv(shift + d, TILE)
            k_local -= shift
        acc = tl.zeros([TILE], dtype=tl.float32)
        for tile in range(pid_tile, n_tiles, n_prog):
            j = tile * TILE + k_local                     # feature index of each window element
            if ALIGNED:
                mask = j < d
            else:
                mask = (j >= 0) & (j < d)
            eps = normal_window(seed, (base >> 2) + tile * BLOCK_C, BLOCK_C)
            h = tl.load(h_row + j, mask=mask, other=0.0).to(tl.float32)
            u = tl.load(u_row + j, mask=mask, other=0.0)
            tl.store(out_row + j, (h + u + sigma * eps).to(out_ptr.dtype.element_ty), mask=mask)
            if HAS_UDOT:
                acc += tl.where(mask, u * eps, 0.0)
        if HAS_UDOT:
            add = tl.sum(acc, axis=0)
            if HAS_ACTIVE:
                add = tl.where(tl.load(active_ptr + row) != 0, add, 0.0)
            tl.store(udot_ptr + row, tl.load(udot_ptr + row) + add)
    else:
        offs = tl.arange(0, TILE)
        for tile in range(pid_tile, tl.cdiv(d, TILE), n_prog):
            j = tile * TILE + offs
            mask = j < d
            h = tl.load(h_row + j, mask=mask, other=0.0)
            tl.store(out_row + j, h.to(out_ptr.dtype.element_ty), mask=mask)


def aisp_perturb(h: torch.Tensor, u: torch.Tensor, out: torch.Tensor, *, sigma: float, seed: torch.Tensor,
                 iteration: torch.Tensor, step: torch.Tensor, udot: torch.Tensor | None = None,
                 active: torch.Tensor | None = None, block_c: int | None = None, traceable: bool = False) -> None:
    """Launch :func:`aisp_perturb_kernel`.

    Args:
        h, out: contiguous ``[B, n, d]`` (float32/float16/bfloat16, same dtype).
        u: contiguous float32 ``[B, tau, d]``.
        sigma: noise scale.
        seed: int64 ``[B]``; iteration, step: int64 ``[1]`` (all on h's device).
        udot: optional contiguous float32 ``[B, n]``, accumulated in place.
        active: optional contiguous bool ``[B, n]`` (None: every rollout active).
        block_c: counter blocks per tile (power of two); default by device.
        traceable: launch through ``torch.library.wrap_triton`` (see ``_common.launcher``).
    """
    B, n, d = h.shape
    tau = u.shape[1]
    block_c = default_block_c(h.device, block_c)
    tiles = cdiv(d + 3, 4 * block_c)                  # enough for any start shift of the row
    grid = (B * n, 1 if udot is not None else tiles)
    launcher(aisp_perturb_kernel, traceable)[grid](
        h, u, out, udot if udot is not None else out, active if active is not None else out,
        seed, iteration, step, n, tau, d, float(sigma),
        HAS_UDOT=udot is not None, HAS_ACTIVE=active is not None, ALIGNED=d % 4 == 0, BLOCK_C=block_c,
        num_warps=WINDOW_NUM_WARPS,
        enable_fp_fusion=False,  # no FMA contraction: the same rounding for every tile size (see _common)
    )
