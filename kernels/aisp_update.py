"""AISP control update (Triton): the ``udot`` pass and the apply pass, both regenerating the noise.

With ``eps[b,i,t,j] = normal(seed[b], ((it*n + i)*tau + t)*d + j)`` (the numbers the perturb kernel
drew in iteration ``it``) and ``f = t*d + j`` the flat index into ``u[b]``:

udot pass (only when the caller has no ``udot`` from the perturb steps)::

    udot[b,i] = sum_{f < lengths[b,i]*d} u[b,f] * eps[b,i,f]

  Rollout ``(b, i)`` draws the contiguous logical range ``(it*n + i)*tau*d + [0, lengths[b,i]*d)``.
  Grid ``(B*n, P)``: program p of a row sums ``TILES_PER_PROG`` consecutive tiles into
  ``partial[row, p]``; a second small kernel adds the P partials in a fixed order. Deterministic, no
  atomics, and parallel enough for a GPU even when ``B*n`` is small.

apply pass::

    out[b,f] = u[b,f] + sigma * sum_i weights[b,i] * eps[b,i,f] * [f < lengths[b,i]*d]

  Grid ``(cdiv(tau*d, TILE), B)``: each program owns one tile of ``u[b]`` and loops over the n
  rollouts, regenerating each rollout's noise for its tile (no ``[B, n, tau, d]`` buffer exists).
  Rollouts that did not reach the tile (``lengths``) or have weight 0 are skipped. When ``tau*d`` is
  a multiple of 4 (the usual case) every rollout's range starts on a counter block, so a tile is one
  :func:`normal_window`; otherwise each element takes its own Philox call (:func:`normal_at`).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import cdiv, default_block_c, launcher, normal_at, normal_window, on_interpreter, sum_partials

__all__ = ["aisp_udot_kernel", "aisp_apply_kernel", "aisp_udot", "aisp_apply"]

#: tiles summed by one program of the udot pass on a GPU (4096 elements with the default tile)
GPU_TILES_PER_PROG = 4
#: counter blocks per tile of the apply pass on a GPU: 512 elements, so that a single prompt
#: (B = 1, tau*d = 131072) still gives 256 programs (measured on an H100: 26.6 us vs 32.7 us at 1024)
GPU_APPLY_BLOCK_C = 128


@triton.jit
def aisp_udot_kernel(
    u_ptr, lengths_ptr, partial_ptr,                  # f32 [B,tau,d], int64 [B,n], f32 [B*n, P]
    seed_ptr, it_ptr,                                 # int64 [B], [1]
    n, tau, d, P, TILES_PER_PROG,
    ALIGNED: tl.constexpr, BLOCK_C: tl.constexpr,
):
    row32 = tl.program_id(0)                          # b * n + i (< 2**31: a grid dimension)
    row = row32.to(tl.int64)
    p = tl.program_id(1)
    b = (row32 // n.to(tl.int32)).to(tl.int64)       # int32 division: int64 division is a slow call that spills
    i = row - b * n
    TILE: tl.constexpr = 4 * BLOCK_C
    seed = tl.load(seed_ptr + b)
    it = tl.load(it_ptr)
    row_len = tl.load(lengths_ptr + row) * d          # elements of u[b] this rollout saw
    base = (it * n + i) * tau * d                     # first logical index of the rollout
    u_row = u_ptr + b * tau * d
    k_local = tl.arange(0, TILE).to(tl.int64)
    if ALIGNED:                                       # tau*d % 4 == 0: rollouts start on a counter block
        n_tiles = tl.cdiv(row_len, TILE)
    else:
        shift = base & 3
        n_tiles = tl.cdiv(shift + row_len, TILE)
        k_local -= shift
    acc = tl.zeros([TILE], dtype=tl.float32)
    tile_lo = p.to(tl.int64) * TILES_PER_PROG
    tile_hi = tl.minimum(tile_lo + TILES_PER_PROG, n_tiles)
    for tile in range(tile_lo, tile_hi):
        f = tile * TILE + k_local
        if ALIGNED:
            mask = f < row_len
        else:
            mask = (f >= 0) & (f < row_len)
        eps = normal_window(seed, (base >> 2) + tile * BLOCK_C, BLOCK_C)
        u = tl.load(u_row + f, mask=mask, other=0.0)
        acc += tl.where(mask, u * eps, 0.0)
    tl.store(partial_ptr + row * P + p, tl.sum(acc, axis=0))


@triton.jit
def aisp_apply_kernel(
    u_ptr, weights_ptr, lengths_ptr, out_ptr,         # f32 [B,tau,d], f32 [B,n], int64 [B,n], f32 [B,tau,d]
    seed_ptr, it_ptr,                                 # int64 [B], [1]
    n, tau, d, numel, sigma,                          # numel = tau * d (int64 when large)
    ALIGNED: tl.constexpr, BLOCK_C: tl.constexpr,
):
    tile = tl.program_id(0).to(tl.int64)              # tiles on axis 0 (up to 2^31-1), prompts on axis 1
    b = tl.program_id(1).to(tl.int64)
    TILE: tl.constexpr = 4 * BLOCK_C
    seed = tl.load(seed_ptr + b)
    it = tl.load(it_ptr)
    f0 = tile * TILE
    f = f0 + tl.arange(0, TILE).to(tl.int64)
    mask = f < numel
    acc = tl.zeros([TILE], dtype=tl.float32)
    for i in range(n):
        w = tl.load(weights_ptr + b * n + i)
        row_len = tl.load(lengths_ptr + b * n + i) * d
        if (f0 < row_len) & (w != 0.0):
            base = (it * n + i) * numel
            if ALIGNED:
                eps = normal_window(seed, (base + f0) >> 2, BLOCK_C)
            else:
                eps = normal_at(seed, base + f)
            acc += tl.where(f < row_len, w * eps, 0.0)
    u = tl.load(u_ptr + b * numel + f, mask=mask, other=0.0)
    tl.store(out_ptr + b * numel + f, u + sigma * acc, mask=mask)


def aisp_udot(u: torch.Tensor, lengths: torch.Tensor, udot_out: torch.Tensor, *, seed: torch.Tensor,
              iteration: torch.Tensor, n: int | None = None, block_c: int | None = None,
              tiles_per_prog: int | None = None, traceable: bool = False) -> None:
    """Launch the udot pass: ``udot_out[b,i] = sum_{t<lengths[b,i]} sum_j u[b,t,j] * eps[b,i,t,j]``.

    Args:
        u: contiguous float32 ``[B, tau, d]``; lengths: contiguous int64 ``[B, n]`` in [0, tau].
        udot_out: contiguous float32 ``[B, n]`` (overwritten).
        seed: int64 ``[B]``; iteration: int64 ``[1]``.
        block_c, tiles_per_prog: tile size (power of two, counter blocks) and tiles per program;
            defaults by device. The result depends on them only through float summation order.
        traceable: launch through ``torch.library.wrap_triton`` (see ``_common.launcher``).
    """
    B, tau, d = u.shape
    n = lengths.shape[1]
    block_c = default_block_c(u.device, block_c)
    max_tiles = cdiv(tau * d + 3, 4 * block_c)
    if tiles_per_prog is None:
        tiles_per_prog = max_tiles if on_interpreter(u.device) else GPU_TILES_PER_PROG
    P = cdiv(max_tiles, tiles_per_prog)
    partial = torch.empty(B * n, P, dtype=torch.float32, device=u.device)
    launcher(aisp_udot_kernel, traceable)[(B * n, P)](
        u, lengths, partial, seed, iteration, n, tau, d, P, tiles_per_prog, ALIGNED=(tau * d) % 4 == 0,
        BLOCK_C=block_c, num_warps=4,
    )
    sum_partials(partial, udot_out.view(B * n), traceable=traceable)


def aisp_apply(u: torch.Tensor, weights: torch.Tensor, lengths: torch.Tensor, out: torch.Tensor, *,
               sigma: float, seed: torch.Tensor, iteration: torch.Tensor, block_c: int | None = None,
               traceable: bool = False) -> None:
    """Launch the apply pass: ``out = u + sigma * sum_i weights[b,i] * eps[b,i] * [t < lengths[b,i]]``.

    Args:
        u, out: contiguous float32 ``[B, tau, d]``; weights: contiguous float32 ``[B, n]``;
        lengths: contiguous int64 ``[B, n]``; seed: int64 ``[B]``; iteration: int64 ``[1]``.
        block_c: counter blocks per tile (power of two); the result does not depend on it.
        traceable: launch through ``torch.library.wrap_triton`` (see ``_common.launcher``).
    """
    B, tau, d = u.shape
    n = weights.shape[1]
    if block_c is None and not on_interpreter(u.device):
        block_c = GPU_APPLY_BLOCK_C
    block_c = default_block_c(u.device, block_c)
    grid = (cdiv(tau * d, 4 * block_c), B)
    launcher(aisp_apply_kernel, traceable)[grid](
        u, weights, lengths, out, seed, iteration, n, tau, d, tau * d, float(sigma),
        ALIGNED=(tau * d) % 4 == 0, BLOCK_C=block_c, num_warps=4,
        enable_fp_fusion=False,  # no FMA contraction: the same rounding for every tile size (see _common)
    )
