"""The random stream every fastalign backend reproduces (docs/design.md#random-stream), in plain torch.

``normal(seed, k)`` for a non-negative int64 seed and logical index ``k``::

    c = k >> 2 ; j = k & 3
    w = Philox4x32-10(counter=(lo32(c), hi32(c), 0, 0), key=(lo32(seed), hi32(seed)))
    u_i = uniform(w_i)         # bitcast to int32, fold negatives with ~x, times 2**-31 (float32)
    (n0, n1) = box_muller(u0, u1); (n2, n3) = box_muller(u2, u3)
    normal(seed, k) = n_j

This is exactly Triton's ``tl.randint4x`` / ``tl.rand4x`` / ``tl.randn4x`` layout. Words and uniforms
are bit-exact across backends; normals agree to ~1e-6 (libm ``log``/``sin``/``cos`` differ by ulps).

Everything here is pure torch integer arithmetic on int64 tensors holding uint32 values: the 32x32->64
bit products of Philox are split into 16-bit halves so that no intermediate exceeds 2**63.
"""
from __future__ import annotations

import torch

from fastalign.errors import InputError, InputTypeError

__all__ = [
    "PHILOX_ROUND_A",
    "PHILOX_ROUND_B",
    "PHILOX_KEY_A",
    "PHILOX_KEY_B",
    "philox4x32_10",
    "stream_words",
    "uniform_from_words",
    "box_muller",
    "uniform",
    "normal",
]

PHILOX_ROUND_A = 0xD2511F53
PHILOX_ROUND_B = 0xCD9E8D57
PHILOX_KEY_A = 0x9E3779B9
PHILOX_KEY_B = 0xBB67AE85
_MASK32 = 0xFFFFFFFF
_UINT_TO_UNIFORM = 4.6566127342e-10  # rounded to float32 where it is used, as in Triton
_BOX_MULLER_FLOOR = 1.0e-7
_TWO_PI = 6.283185307179586


def _mulhilo(a: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi32, lo32) of the 64-bit product of the constant ``a`` and uint32 values ``x`` (int64)."""
    x_lo = x & 0xFFFF
    x_hi = x >> 16
    t_lo = x_lo * a  # < 2**48
    t_hi = x_hi * a  # < 2**48
    hi = (t_hi + (t_lo >> 16)) >> 16
    lo = (((t_hi & 0xFFFF) << 16) + t_lo) & _MASK32
    return hi & _MASK32, lo


def philox4x32_10(counter: torch.Tensor, key: torch.Tensor, rounds: int = 10) -> torch.Tensor:
    """Philox4x32 block function.

    Args:
        counter: int64 tensor ``[..., 4]`` of uint32 values.
        key: int64 tensor ``[..., 2]`` of uint32 values, broadcastable against ``counter[..., :2]``.
        rounds: number of rounds (10 for the fastalign stream).

    Returns:
        int64 tensor ``[..., 4]`` of uint32 output words.
    """
    if counter.shape[-1:] != (4,) or key.shape[-1:] != (2,):
        raise InputError(
            f"philox4x32_10: expected counter [..., 4] and key [..., 2], got {tuple(counter.shape)} "
            f"and {tuple(key.shape)}"
        )
    if counter.dtype != torch.int64 or key.dtype != torch.int64:
        raise InputTypeError(f"philox4x32_10: expected int64 tensors, got {counter.dtype} and {key.dtype}")
    c0, c1, c2, c3 = (counter[..., i] & _MASK32 for i in range(4))
    k0, k1 = (key[..., i] & _MASK32 for i in range(2))
    for _ in range(rounds):
        hi0, lo0 = _mulhilo(PHILOX_ROUND_A, c0)
        hi2, lo2 = _mulhilo(PHILOX_ROUND_B, c2)
        c0, c1, c2, c3 = hi2 ^ c1 ^ k0, lo2, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + PHILOX_KEY_A) & _MASK32
        k1 = (k1 + PHILOX_KEY_B) & _MASK32
    return torch.stack(torch.broadcast_tensors(c0, c1, c2, c3), dim=-1)


def _as_int64(x, name: str, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.dtype.is_floating_point or x.dtype == torch.bool or x.is_complex():
            raise InputTypeError(f"{name}: expected an integer tensor, got {x.dtype}")
        return x.to(dtype=torch.int64, device=device if device is not None else x.device)
    return torch.as_tensor(x, dtype=torch.int64, device=device)


def stream_words(seed, block, *, check: bool = True) -> torch.Tensor:
    """The four Philox words of counter block ``block`` (= k >> 2) under ``seed``: int64 ``[..., 4]``.

    ``check=False`` skips the test for negative values (a host sync on a GPU), for callers that
    validated them already."""
    block = _as_int64(block, "block")
    seed = _as_int64(seed, "seed", device=block.device)
    if check and (bool((seed < 0).any()) or bool((block < 0).any())):
        raise InputError("stream_words: seed and block must be >= 0")
    seed, block = torch.broadcast_tensors(seed, block)
    zero = torch.zeros_like(block)
    counter = torch.stack([block & _MASK32, block >> 32, zero, zero], dim=-1)
    key = torch.stack([seed & _MASK32, seed >> 32], dim=-1)
    return philox4x32_10(counter, key)


def uniform_from_words(words: torch.Tensor) -> torch.Tensor:
    """uint32 words (int64 tensor) -> float32 uniforms in [0, 1), bit-exact with ``tl.rand4x``."""
    x = torch.where(words >= 2**31, words - 2**32, words)  # bitcast to int32
    x = torch.where(x < 0, -x - 1, x)  # ~x
    return x.to(torch.float32) * torch.tensor(_UINT_TO_UNIFORM, dtype=torch.float32)


def box_muller(ua: torch.Tensor, ub: torch.Tensor, dtype: torch.dtype = torch.float32):
    """(r cos th, r sin th) with r = sqrt(-2 log max(1e-7, ua)), th = 2 pi ub, evaluated in ``dtype``.

    The constants are the float32 values the kernels use, so float64 evaluation differs from the
    kernels only by their float32 rounding.
    """
    floor = torch.tensor(_BOX_MULLER_FLOOR, dtype=torch.float32).to(dtype)
    two_pi = torch.tensor(_TWO_PI, dtype=torch.float32).to(dtype)
    ua = torch.maximum(ua.to(dtype), floor)
    r = torch.sqrt(-2.0 * torch.log(ua))
    th = two_pi * ub.to(dtype)
    return r * torch.cos(th), r * torch.sin(th)


def uniform(seed, offset, *, check: bool = True) -> torch.Tensor:
    """float32 uniforms of logical indices ``offset`` (int64 tensor) under ``seed`` (int or tensor).

    ``uniform(seed, k)`` is word ``k & 3`` of block ``k >> 2`` mapped to [0, 1), i.e. the value
    ``tl.rand4x(seed, k >> 2)[k & 3]``. ``check=False``: see :func:`stream_words`.
    """
    offset = _as_int64(offset, "offset")
    seed, offset = torch.broadcast_tensors(_as_int64(seed, "seed", device=offset.device), offset)
    words = stream_words(seed, offset >> 2, check=check)
    return uniform_from_words(torch.gather(words, -1, (offset & 3).unsqueeze(-1)).squeeze(-1))


def normal(seed, offset, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normals ``normal(seed, k)`` for logical indices ``offset`` (int64 tensor).

    Args:
        seed: int or int64 tensor broadcastable against ``offset`` (values in [0, 2**63)).
        offset: int64 tensor of logical indices k >= 0.
        dtype: float32 (what the kernels compute) or float64 (a closer evaluation of the same formula).
    """
    offset = _as_int64(offset, "offset")
    seed, offset = torch.broadcast_tensors(_as_int64(seed, "seed", device=offset.device), offset)
    words = stream_words(seed, offset >> 2)
    u = uniform_from_words(words)
    n0, n1 = box_muller(u[..., 0], u[..., 1], dtype)
    n2, n3 = box_muller(u[..., 2], u[..., 3], dtype)
    normals = torch.stack([n0, n1, n2, n3], dim=-1)
    return torch.gather(normals, -1, (offset & 3).unsqueeze(-1)).squeeze(-1)
