"""The clip groups of ``sea_step`` in one table: the name an op takes -> the code every kernel takes.

``0`` is no clipping. The C++ and CUDA kernels have the same codes as ``fastalign::ClipGroup`` in
``csrc/include/fastalign/clip.h`` (a test keeps the two equal); the Triton kernel's ``GROUP`` constexpr
is the code too. Standard library only, so every layer (the Triton kernels included) can import it.
"""
from __future__ import annotations

__all__ = ["CLIP_GROUPS", "NO_CLIP", "clip_code"]

#: clip group -> kernel code: "chain" one norm per chain b ([B]), "row" per (b, l) ([B, L]), "global" one ([])
CLIP_GROUPS = {"chain": 1, "row": 2, "global": 3}
NO_CLIP = 0


def clip_code(group: str | None) -> int:
    """The kernel code of ``group`` (``NO_CLIP`` for None); ``ValueError`` for an unknown name (the ops
    validate first, so this is an internal check)."""
    if group is None:
        return NO_CLIP
    try:
        return CLIP_GROUPS[group]
    except KeyError:
        raise ValueError(f"clip: expected one of {tuple(CLIP_GROUPS)} or None, got {group!r}") from None
