"""Argument validation shared by the public ops and algorithms.

Every check raises ``ValueError`` (bad value or shape) or ``TypeError`` (bad type/dtype) with a
message naming the argument, what was expected and what was received.
"""
from __future__ import annotations

import math
import numbers

import torch

INT64_MAX = 2**63 - 1
STORAGE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_tensor(x, name: str, *, ndim: int | None = None, float_storage: bool = True,
                 allow_float64: bool = False, device: torch.device | None = None) -> torch.Tensor:
    """A floating-point storage tensor of the given rank (on ``device`` if given)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor, got shape {_shape(x)}")
    if float_storage:
        allowed = STORAGE_DTYPES + ((torch.float64,) if allow_float64 else ())
        if x.dtype not in allowed:
            names = ", ".join(str(d).replace("torch.", "") for d in allowed)
            raise TypeError(f"{name}: expected dtype in ({names}), got {x.dtype}")
    if device is not None and x.device != device:
        raise ValueError(f"{name}: expected a tensor on {device}, got one on {x.device}")
    return x


def check_same_shape(x: torch.Tensor, name: str, shape: tuple[int, ...], what: str) -> None:
    if _shape(x) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)} ({what}), got {_shape(x)}")


def check_nonempty(name: str, **dims: int) -> None:
    for dim, size in dims.items():
        if size == 0:
            raise ValueError(f"{name}: expected {dim} >= 1, got an empty tensor ({dim}=0)")


def check_real(value, name: str, *, positive: bool = False, nonnegative: bool = False,
               lo: float | None = None, hi: float | None = None) -> float:
    """A finite Python/0-d real number with the given bounds; returns it as float."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name}: expected a number, got a tensor of shape {_shape(value)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{name}: expected a number > 0, got {v}")
    if nonnegative and not v >= 0:
        raise ValueError(f"{name}: expected a number >= 0, got {v}")
    if lo is not None and v < lo or hi is not None and v > hi:
        raise ValueError(f"{name}: expected a number in [{lo}, {hi}], got {v}")
    return v


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def seeds_tensor(seed, B: int, device: torch.device) -> torch.Tensor:
    """``seed`` as an int64 ``[B]`` tensor on ``device``: an int ``s`` becomes ``s + arange(B)``."""
    if isinstance(seed, torch.Tensor) and seed.dim() > 0:
        if seed.dtype.is_floating_point or seed.dtype in (torch.bool,) or seed.is_complex():
            raise TypeError(f"seed: expected an integer tensor, got {seed.dtype}")
        if seed.dim() != 1 or seed.shape[0] != B:
            raise ValueError(f"seed: expected an int or a [B] = [{B}] tensor, got shape {_shape(seed)}")
        seed = seed.to(device=device, dtype=torch.int64).contiguous()
        if not _capturing(device) and B > 0 and bool((seed < 0).any()):
            raise ValueError(f"seed: expected seeds >= 0, got min {int(seed.min())}")
        return seed
    if isinstance(seed, torch.Tensor):
        if seed.dtype.is_floating_point or seed.dtype == torch.bool:
            raise TypeError(f"seed: expected an integer, got a {seed.dtype} tensor")
        seed = int(seed.item())
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed: expected an int or an int64 tensor, got {type(seed).__name__}")
    seed = int(seed)
    if seed < 0 or seed + max(B - 1, 0) > INT64_MAX:
        raise ValueError(f"seed: expected 0 <= seed and seed + B - 1 < 2**63, got seed={seed}, B={B}")
    return torch.arange(seed, seed + B, dtype=torch.int64, device=device)


def counter_tensor(value, name: str, device: torch.device) -> tuple[torch.Tensor, int | None]:
    """A step/iteration counter as an int64 ``[1]`` tensor on ``device`` plus its value if known.

    The value is read back for checks unless it lives on a GPU inside a CUDA-graph capture.
    """
    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point or value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name}: expected an int or an integer tensor, got {value.dtype}")
        if value.numel() != 1:
            raise ValueError(f"{name}: expected a single value, got a tensor of shape {_shape(value)}")
        t = value.reshape(1).to(device=device, dtype=torch.int64)
        known = None if _capturing(value.device) else int(value.reshape(-1)[0].item())
    else:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
        known = int(value)
        if known > INT64_MAX:
            raise ValueError(f"{name}: expected a value < 2**63, got {known}")
        t = None
    if known is not None and known < 0:
        raise ValueError(f"{name}: expected a value >= 0, got {known}")
    if t is None:
        t = torch.tensor([known], dtype=torch.int64, device=device)
    return t, known


def check_offsets(name: str, last_offset_plus_one: int | None) -> None:
    """Raise if the largest logical noise index (``last_offset_plus_one - 1``) overflows int64."""
    if last_offset_plus_one is not None and last_offset_plus_one - 1 > INT64_MAX:
        raise ValueError(
            f"{name}: the noise offsets of this call reach {last_offset_plus_one - 1}, which overflows "
            f"int64 (max {INT64_MAX}); use a smaller step/iteration or a new seed"
        )


def overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors share any byte of memory."""
    if a.device != b.device or a.numel() == 0 or b.numel() == 0:
        return False
    sa, sb = a.untyped_storage(), b.untyped_storage()
    if sa.data_ptr() != sb.data_ptr():
        return False

    def span(t):
        lo = t.data_ptr()
        extent = sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))
        return lo, lo + (extent + 1) * t.element_size()

    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def check_out(out, name: str, shape, dtype: torch.dtype, device: torch.device,
              inputs: dict[str, torch.Tensor]) -> None:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(out).__name__}")
    if _shape(out) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {_shape(out)}")
    if out.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {out.dtype}")
    if out.device != device:
        raise ValueError(f"{name}: expected a tensor on {device}, got one on {out.device}")
    for in_name, t in inputs.items():
        if t is not None and overlaps(out, t):
            raise ValueError(f"{name}: must not overlap input {in_name!r}")


def check_state_tensor(x, name: str, shape, device: torch.device, dtypes=(torch.float32,)) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in dtypes:
        raise TypeError(f"{name}: expected dtype {' or '.join(map(str, dtypes))}, got {x.dtype}")
    if _shape(x) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {_shape(x)}")
    if x.device != device:
        raise ValueError(f"{name}: expected a tensor on {device}, got one on {x.device}")
    return x
