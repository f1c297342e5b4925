"""Pieces shared by the fastalign Triton kernels: the noise window and the fixed-order partial sum.

The random stream (docs/design.md#random-stream) is Triton's own ``tl.randn4x`` layout: one Philox call on
counter block ``c`` gives the normals of the four logical indices ``k = 4c .. 4c+3``. A kernel that
needs the normals of a contiguous range of ``k`` therefore works on a *window* of counter blocks
``c_start .. c_start + BLOCK_C - 1``: :func:`normal_window` returns its ``4 * BLOCK_C`` normals in
``k`` order (``k = 4 * c_start + arange(4 * BLOCK_C)``), using all four outputs of every Philox
call. A row of ``N`` elements whose first logical index ``base`` is not a multiple of 4 is covered by
``cdiv((base & 3) + N, 4)`` blocks; elements of the window outside the row are masked by the caller.

Block sizes: ``BLOCK_C`` counter blocks (``4 * BLOCK_C`` elements) per tile. On a GPU a tile of 1024
elements with ``WINDOW_NUM_WARPS`` = 8 warps (one Philox call per thread) keeps the Philox/Box-Muller
arithmetic in registers without spills; the Triton interpreter
(``TRITON_INTERPRET=1``, CPU tensors) runs one program at a time in numpy, so there larger tiles,
i.e. fewer programs, are faster. :func:`default_block_c` picks between the two.

Element-wise kernels are launched with ``enable_fp_fusion=False``: which mul+add pairs LLVM contracts
into FMAs depends on the surrounding code (tile size, optional terms), so with contraction the same
element could round differently under another tile size. Without it every element is computed with
the same float32 operations as under the interpreter, and results do not depend on the tile size.
These kernels are memory- and Philox-bound; the few extra instructions do not show.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["normal_window", "chain_tile", "sum_partials_kernel", "sum_partials", "default_block_c", "cdiv",
           "on_interpreter", "launcher", "GPU_BLOCK_C", "WINDOW_NUM_WARPS"]

#: counter blocks per tile on a GPU (1024 elements) and under the interpreter (8192 elements)
GPU_BLOCK_C = 256
#: Warps of the element-wise kernels that draw GPU_BLOCK_C counter blocks per tile: one Philox call
#: (4 elements) per thread, as in the CUDA backend. With 4 warps (two calls per thread) ptxas spills
#: a few bytes on sm_80/sm_90a (tests/test_triton_compile.py).
WINDOW_NUM_WARPS = GPU_BLOCK_C // 32
INTERPRETER_BLOCK_C = 2048


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def on_interpreter(device: torch.device) -> bool:
    return device.type != "cuda"


def launcher(kernel, traceable: bool):
    """``kernel`` to launch as ``launcher(kernel, traceable)[grid](...)``.

    With ``traceable`` the launch goes through ``torch.library.wrap_triton``, so that make_fx and
    Inductor record it in the graph (inside a ``torch.library.triton_op``; under Triton's interpreter
    ``wrap_triton`` returns the kernel unchanged). Without it the kernel launches directly: called
    outside a triton_op, ``wrap_triton`` would dispatch a higher-order op per launch.
    """
    if not traceable:
        return kernel
    from torch.library import wrap_triton

    return wrap_triton(kernel)


def default_block_c(device: torch.device, block_c: int | None = None) -> int:
    """Counter blocks per tile: ``block_c`` when given (a power of two), else the device default."""
    if block_c is None:
        return INTERPRETER_BLOCK_C if on_interpreter(device) else GPU_BLOCK_C
    if block_c < 1 or block_c & (block_c - 1):
        raise ValueError(f"block_c: expected a power of two >= 1, got {block_c}")
    return block_c


@triton.jit
def normal_window(seed, c_start, BLOCK_C: tl.constexpr):
    """Normals of the logical indices ``4*c_start + arange(4*BLOCK_C)`` under ``seed`` (both int64).

    One ``tl.randn4x`` call per counter block; its outputs (n0, n1, n2, n3) belong to k = 4c+0..3 and
    are interleaved into ``k`` order, so the result maps onto contiguous memory.
    """
    c = c_start + tl.arange(0, BLOCK_C).to(tl.int64)
    n0, n1, n2, n3 = tl.randn4x(seed, c)
    return tl.interleave(tl.interleave(n0, n2), tl.interleave(n1, n3))


@triton.jit
def chain_tile(tile, base, N, ALIGNED: tl.constexpr, BLOCK_C: tl.constexpr):
    """Element indices ``f`` (within one chain of ``N`` elements) and their mask for tile ``tile`` of
    the SEA noise layout, whose chain starts at logical index ``base = step * N``.

    Tile t covers the counter blocks ``(base >> 2) + t*BLOCK_C ...`` (what :func:`normal_window` draws
    for it), i.e. logical indices ``4*((base >> 2) + t*BLOCK_C) + arange(4*BLOCK_C)``; ``f`` is that
    minus ``base``, so a chain that does not start on a counter block (``N % 4 != 0``) gets a first
    tile that begins up to 3 elements before it, masked off.
    """
    f = tile * (4 * BLOCK_C) + tl.arange(0, 4 * BLOCK_C).to(tl.int64)
    if ALIGNED:                                           # N % 4 == 0: chains start on a counter block
        mask = f < N
    else:
        f -= base & 3
        mask = (f >= 0) & (f < N)
    return f, mask


@triton.jit
def normal_at(seed, k):
    """Normals of arbitrary logical indices ``k`` (int64 block): one Philox call per element, the
    output ``k & 3`` kept. Four times the work of :func:`normal_window`; used only where a tile mixes
    rows whose first index is not a multiple of 4."""
    n0, n1, n2, n3 = tl.randn4x(seed, k >> 2)
    j = k & 3
    return tl.where(j == 0, n0, tl.where(j == 1, n1, tl.where(j == 2, n2, n3)))


@triton.jit
def sum_partials_kernel(partial_ptr, out_ptr, P, SQRT: tl.constexpr, BLOCK: tl.constexpr):
    """``out[g] = sum_p partial[g, p]`` (then ``sqrt`` when SQRT), summed in a fixed order.

    partial: float32 ``[G, P]``; out: float32 ``[G]``; one program per group g. The order depends on
    P and BLOCK only, never on scheduling, so repeated runs are bit-identical.
    """
    g = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for p0 in range(0, P, BLOCK):
        idx = p0 + offs
        acc += tl.load(partial_ptr + g * P + idx, mask=idx < P, other=0.0)
    total = tl.sum(acc, axis=0)
    if SQRT:
        total = tl.sqrt(total)
    tl.store(out_ptr + g, total)


def sum_partials(partial: torch.Tensor, out: torch.Tensor, *, sqrt: bool = False, traceable: bool = False) -> None:
    """Launch :func:`sum_partials_kernel`: partial float32 ``[G, P]`` -> out float32 ``[G]``."""
    G, P = partial.shape
    block = min(1024, triton.next_power_of_2(P))
    launcher(sum_partials_kernel, traceable)[(G,)](partial, out, P, SQRT=sqrt, BLOCK=block, num_warps=4)
