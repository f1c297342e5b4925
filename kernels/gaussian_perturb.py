"""Gaussian perturbation with SEA's noise indexing (Triton).

``out[b, f] = x[b, f] + std * normal(seed[b], step*N + f)`` for ``x, out: [B, N]`` (``N = L*V`` for
logits ``[B, L, V]``): the same numbers :mod:`.sea_step` draws at the same seed and step. Chain b
draws the contiguous logical range ``step*N + [0, N)``, covered by counter-block windows; grid
``(tiles, B)``; ``seed`` and ``step`` are read from int64 device tensors.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import WINDOW_NUM_WARPS, cdiv, chain_tile, default_block_c, launcher, normal_window

__all__ = ["gaussian_perturb_kernel", "gaussian_perturb"]


@triton.jit
def gaussian_perturb_kernel(x_ptr, out_ptr, seed_ptr, step_ptr, N, std, ALIGNED: tl.constexpr, BLOCK_C: tl.constexpr):
    tile = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    seed = tl.load(seed_ptr + b)
    base = tl.load(step_ptr) * N                          # first logical index of every chain
    f, mask = chain_tile(tile, base, N, ALIGNED, BLOCK_C)
    x = tl.load(x_ptr + b * N + f, mask=mask, other=0.0).to(tl.float32)
    xi = normal_window(seed, (base >> 2) + tile * BLOCK_C, BLOCK_C)
    tl.store(out_ptr + b * N + f, (x + std * xi).to(out_ptr.dtype.element_ty), mask=mask)


def gaussian_perturb(x: torch.Tensor, out: torch.Tensor, *, std: float, seed: torch.Tensor, step: torch.Tensor,
                     block_c: int | None = None, traceable: bool = False) -> None:
    """Launch :func:`gaussian_perturb_kernel`.

    Args:
        x, out: contiguous ``[B, N]`` (float32/float16/bfloat16, same dtype).
        std: noise scale; seed: int64 ``[B]``; step: int64 ``[1]``.
        block_c: counter blocks per tile (power of two); the result does not depend on it.
        traceable: launch through ``torch.library.wrap_triton`` (see ``_common.launcher``).
    """
    B, N = x.shape
    block_c = default_block_c(x.device, block_c)
    launcher(gaussian_perturb_kernel, traceable)[(cdiv(N + 3, 4 * block_c), B)](
        x, out, seed, step, N, float(std), ALIGNED=N % 4 == 0, BLOCK_C=block_c, num_warps=WINDOW_NUM_WARPS,
        enable_fp_fusion=False,  # no FMA contraction: the same rounding for every tile size (see _common)
    )
