"""Argument validation shared by the public ops and algorithms.

Every check raises :class:`~fastalign.errors.InputError` (a ``ValueError``: bad value or shape) or
:class:`~fastalign.errors.InputTypeError` (also a ``TypeError``: bad type/dtype) with a message naming
the argument, what was expected and what was received.
"""
from __future__ import annotations

import math
import numbers

import torch

from fastalign.errors import InputError, InputTypeError

INT64_MAX = 2**63 - 1
STORAGE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_tensor(x, name: str, *, ndim: int | None = None, float_storage: bool = True,
                 allow_float64: bool = False, device: torch.device | None = None) -> torch.Tensor:
    """A floating-point storage tensor of the given rank (on ``device`` if given)."""
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise InputError(f"{name}: expected a {ndim}-D tensor, got shape {_shape(x)}")
    if float_storage and x.dtype not in STORAGE_DTYPES and not (allow_float64 and x.dtype == torch.float64):
        allowed = STORAGE_DTYPES + ((torch.float64,) if allow_float64 else ())
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise InputTypeError(f"{name}: expected dtype in ({names}), got {x.dtype}")
    if device is not None and x.device != device:
        raise InputError(f"{name}: expected a tensor on {device}, got one on {x.device}")
    return x


def check_same_shape(x: torch.Tensor, name: str, shape: tuple[int, ...], what: str) -> None:
    if _shape(x) != tuple(shape):
        raise InputError(f"{name}: expected shape {tuple(shape)} ({what}), got {_shape(x)}")


def check_nonempty(name: str, **dims: int) -> None:
    for dim, size in dims.items():
        if size == 0:
            raise InputError(f"{name}: expected {dim} >= 1, got an empty tensor ({dim}=0)")


def check_real(value, name: str, *, positive: bool = False, nonnegative: bool = False,
               lo: float | None = None, hi: float | None = None) -> float:
    """A finite Python/0-d real number with the given bounds; returns it as float."""
    if type(value) is float or type(value) is int:  # the common case, without the ABC checks below
        v = float(value)
        if math.isfinite(v) and (not positive or v > 0) and (not nonnegative or v >= 0) and \
                (lo is None or v >= lo) and (hi is None or v <= hi):
            return v
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise InputTypeError(f"{name}: expected a number, got a tensor of shape {_shape(value)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{name}: expected a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"{name}: expected a finite number, got {v}")
    if positive and not v > 0:
        raise InputError(f"{name}: expected a number > 0, got {v}")
    if nonnegative and not v >= 0:
        raise InputError(f"{name}: expected a number >= 0, got {v}")
    if lo is not None and v < lo or hi is not None and v > hi:
        raise InputError(f"{name}: expected a number in [{lo}, {hi}], got {v}")
    return v


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _check_index_tensor(t: torch.Tensor, name: str, device: torch.device) -> None:
    """An integer tensor (seed/counter) must live on ``device`` or on the CPU (copied over)."""
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise InputTypeError(f"{name}: expected an int or an integer tensor, got a {t.dtype} tensor")
    if t.device != device and t.device.type != "cpu":
        alt = "" if device.type == "cpu" else " (or on the cpu)"
        raise InputError(f"{name}: expected a tensor on {device}{alt}, got one on {t.device}")


def _as_int64_checked(t: torch.Tensor, name: str) -> torch.Tensor:
    """CPU tensor ``t`` as int64; unsigned 64-bit values >= 2**63 (which would wrap negative) are an error."""
    if t.dtype == torch.uint64:
        wrapped = t.to(torch.int64)
        if t.numel() and bool((wrapped < 0).any()):
            raise InputError(f"{name}: expected values < 2**63, got a uint64 value >= 2**63")
        return wrapped
    return t.to(torch.int64)


#: Counters 0 .. _COUNTER_TABLE_SIZE-1 are served as one-element views of a per-device arange table,
#: and ``seed + arange(B)`` tensors are cached, so a decode step pays no host-to-device copy (and no
#: allocation) for its seed and counters. The table and cached seeds are never freed, so a CUDA graph
#: captured with int counters keeps valid pointers. Backends only read these tensors.
_COUNTER_TABLE_SIZE = 1 << 16
_SEED_CACHE_SIZE = 1024
_counter_tables: dict[torch.device, torch.Tensor] = {}
_counter_views: dict[tuple[int, torch.device], torch.Tensor] = {}
_seed_cache: dict[tuple[int, int, torch.device], torch.Tensor] = {}


def _reads_back(t: torch.Tensor) -> bool:
    """Whether the values of an index tensor are read on the host for checks.

    CPU tensors are; tensors on an accelerator are used as given (reading them would synchronise the
    stream on every decode step, and is impossible inside a CUDA-graph capture).
    """
    return t.device.type == "cpu"


def _counter_view(value: int, device: torch.device) -> torch.Tensor | None:
    view = _counter_views.get((value, device))
    if view is not None:
        return view
    if not 0 <= value < _COUNTER_TABLE_SIZE or _capturing(device):
        return None
    table = _counter_tables.get(device)
    if table is None:
        with torch.inference_mode(False):
            table = torch.arange(_COUNTER_TABLE_SIZE, dtype=torch.int64, device=device)
        _counter_tables[device] = table
    view = table[value:value + 1]
    _counter_views[(value, device)] = view
    return view


def seeds_tensor(seed, B: int, device: torch.device) -> torch.Tensor:
    """``seed`` as an int64 ``[B]`` tensor on ``device``: an int ``s`` becomes ``s + arange(B)``.

    A tensor ``[B]`` gives each prompt/chain its own seed (in [0, 2**63)); it may be on ``device``
    or on the CPU. A 0-d tensor counts as an int. Values of a CPU tensor are checked; a tensor on a
    GPU is used as given (no read-back, see :func:`_reads_back`).
    """
    if isinstance(seed, torch.Tensor):
        _check_index_tensor(seed, "seed", device)
    if isinstance(seed, torch.Tensor) and seed.dim() > 0:
        if seed.dim() != 1 or seed.shape[0] != B:
            raise InputError(f"seed: expected an int or a [B] = [{B}] tensor, got shape {_shape(seed)}")
        if _reads_back(seed):
            seed = _as_int64_checked(seed, "seed")
            if B > 0 and bool((seed < 0).any()):
                raise InputError(f"seed: expected seeds >= 0, got min {int(seed.min())}")
        elif seed.dtype != torch.int64:
            seed = seed.to(torch.int64)
        return seed.to(device=device).contiguous()
    if isinstance(seed, torch.Tensor):
        if not _reads_back(seed):
            return seed.reshape(1).to(torch.int64) + torch.arange(B, dtype=torch.int64, device=device)
        seed = int(seed.item())
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InputTypeError(f"seed: expected an int or an int64 tensor, got {type(seed).__name__}")
    seed = int(seed)
    if seed < 0 or seed + max(B - 1, 0) > INT64_MAX:
        raise InputError(f"seed: expected 0 <= seed and seed + B - 1 < 2**63, got seed={seed}, B={B}")
    key = (seed, B, device)
    cached = _seed_cache.get(key)
    if cached is not None:
        return cached
    # seed + arange(B), not arange(seed, seed + B): the end bound 2**63 of seed = 2**63 - 1 overflows int64
    with torch.inference_mode(False):
        t = torch.arange(B, dtype=torch.int64, device=device) + seed
    if len(_seed_cache) < _SEED_CACHE_SIZE and not _capturing(device):
        _seed_cache[key] = t
    return t


def counter_tensor(value, name: str, device: torch.device) -> tuple[torch.Tensor, int | None]:
    """A step/iteration counter as an int64 ``[1]`` tensor on ``device`` plus its value if known.

    The value of an int or a CPU tensor is known and checked; a counter tensor on a GPU is used as
    given and its value is unknown (None), so that a decode loop never synchronises on it and can be
    captured in a CUDA graph.
    """
    if isinstance(value, torch.Tensor):
        _check_index_tensor(value, name, device)
        if value.numel() != 1:
            raise InputError(f"{name}: expected a single value, got a tensor of shape {_shape(value)}")
        known = int(value.reshape(-1)[0].item()) if _reads_back(value) else None
        if known is not None and known > INT64_MAX:
            raise InputError(f"{name}: expected a value < 2**63, got {known}")
        t = value.reshape(1)
        if t.dtype != torch.int64:
            t = t.to(torch.int64)
        t = t.to(device=device)
    else:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise InputTypeError(f"{name}: expected an int, got {type(value).__name__}")
        known = int(value)
        if known > INT64_MAX:
            raise InputError(f"{name}: expected a value < 2**63, got {known}")
        t = None
    if known is not None and known < 0:
        raise InputError(f"{name}: expected a value >= 0, got {known}")
    if t is None:
        t = _counter_view(known, device)
        if t is None:
            t = torch.tensor([known], dtype=torch.int64, device=device)
    return t, known


def traced_seeds(seed, B, device: torch.device) -> torch.Tensor:
    """:func:`seeds_tensor` while torch.compile traces: the same int64 ``[B]`` tensor, made by traced
    ops (no caches) and without reading tensor values (a seed tensor's values are not checked)."""
    if isinstance(seed, torch.Tensor):
        _check_index_tensor(seed, "seed", device)
        if seed.dim() == 0:
            return seed.reshape(1).to(device=device, dtype=torch.int64) + \
                torch.arange(B, dtype=torch.int64, device=device)
        if seed.dim() != 1 or seed.shape[0] != B:
            raise InputError(f"seed: expected an int or a [B] = [{B}] tensor, got shape {_shape(seed)}")
        return seed.to(device=device, dtype=torch.int64).contiguous()
    if isinstance(seed, bool) or not isinstance(seed, (int, torch.SymInt)):
        raise InputTypeError(f"seed: expected an int or an int64 tensor, got {type(seed).__name__}")
    if type(seed) is int and type(B) is int and (seed < 0 or seed + max(B - 1, 0) > INT64_MAX):
        raise InputError(f"seed: expected 0 <= seed and seed + B - 1 < 2**63, got seed={seed}, B={B}")
    return torch.arange(B, dtype=torch.int64, device=device) + seed


def traced_counter(value, name: str, device: torch.device) -> torch.Tensor:
    """:func:`counter_tensor` while torch.compile traces: an int64 ``[1]`` tensor on ``device``; the value
    of a Python int is checked, that of a tensor is not read."""
    if isinstance(value, torch.Tensor):
        _check_index_tensor(value, name, device)
        if value.numel() != 1:
            raise InputError(f"{name}: expected a single value, got a tensor of shape {_shape(value)}")
        return value.reshape(1).to(device=device, dtype=torch.int64)
    if isinstance(value, bool) or not isinstance(value, (int, torch.SymInt)):
        raise InputTypeError(f"{name}: expected an int, got {type(value).__name__}")
    if type(value) is int and not 0 <= value <= INT64_MAX:
        raise InputError(f"{name}: expected a value in [0, 2**63), got {value}")
    return torch.full((1,), value, dtype=torch.int64, device=device)


def check_reward_values(rewards: torch.Tensor) -> None:
    """AISP rewards: no NaN, no +inf, and not every reward of a prompt -inf (reads the values)."""
    if bool(torch.isnan(rewards).any()):
        raise InputError("rewards: expected no NaN values, got NaN")
    if bool(torch.isposinf(rewards).any()):
        raise InputError("rewards: expected finite values or -inf, got +inf")
    all_neginf = torch.isneginf(rewards).all(dim=1)
    if bool(all_neginf.any()):
        bad = all_neginf.nonzero().flatten().tolist()
        raise InputError(f"rewards: every reward of prompt(s) {bad} is -inf, so no rollout can be weighted")


def check_length_values(lengths: torch.Tensor, tau: int) -> None:
    """AISP rollout lengths in [0, tau] (reads the values)."""
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 0 or hi > tau:
        raise InputError(f"lengths: expected values in [0, tau={tau}], got min {lo}, max {hi}")


def check_offsets(name: str, last_offset_plus_one: int | None) -> None:
    """Raise unless the noise offsets of a call, and their exclusive end, fit in int64.

    The end (largest logical index + 1) must stay <= 2**63 - 1 too, so that kernels may form
    ``offset + count`` bounds and Adam's ``t = step + 1`` without wrapping: every backend then accepts
    exactly the same counters.
    """
    if last_offset_plus_one is not None and last_offset_plus_one > INT64_MAX:
        raise InputError(
            f"{name}: the noise offsets of this call reach {last_offset_plus_one - 1}, which overflows "
            f"int64 (offsets and their end must stay <= {INT64_MAX}); use a smaller step/iteration or a new seed"
        )


def _byte_span(t: torch.Tensor) -> tuple[int, int]:
    lo = t.data_ptr()
    if t.is_contiguous():
        return lo, lo + t.numel() * t.element_size()
    extent = sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))
    return lo, lo + (extent + 1) * t.element_size()


def overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors may share a byte of memory: their address ranges intersect.

    (Tensors of different allocations never intersect, so no storage lookup is needed; views of one
    allocation that interleave without touching count as overlapping, conservatively.)
    """
    if a.device != b.device or a.numel() == 0 or b.numel() == 0:
        return False
    (a0, a1), (b0, b1) = _byte_span(a), _byte_span(b)
    return a0 < b1 and b0 < a1


def has_internal_overlap(t: torch.Tensor) -> bool:
    """Whether two elements of ``t`` may share memory (an expanded, stride-0 view, or worse).

    Sufficient test for non-overlap: sorted by stride, each dimension's stride is larger than the
    span of all smaller-strided dimensions. Views that fail it are treated as overlapping.
    """
    if t.is_contiguous():
        return False
    dims = sorted((abs(st), sz) for sz, st in zip(t.shape, t.stride()) if sz > 1)
    span = 0
    for stride, size in dims:
        if stride <= span:
            return True
        span += stride * (size - 1)
    return False


def check_writable(x: torch.Tensor, name: str, inputs: dict[str, torch.Tensor | None]) -> None:
    """A tensor the op writes into: no element may alias another, and it must not overlap an input."""
    if has_internal_overlap(x):
        raise InputError(
            f"{name}: expected a tensor whose elements do not share memory, got shape {_shape(x)} with "
            f"strides {tuple(x.stride())} (an expanded view?); pass a contiguous tensor"
        )
    for in_name, t in inputs.items():
        if t is not None and (t is x or overlaps(x, t)):
            raise InputError(f"{name}: must not overlap input {in_name!r}")


def check_out(out, name: str, shape, dtype: torch.dtype, device: torch.device,
              inputs: dict[str, torch.Tensor] | None) -> None:
    """``out=``: a tensor of the result's shape, dtype and device that no input overlaps (``inputs``
    None skips the overlap check, which reads addresses: while torch.compile traces)."""
    if not isinstance(out, torch.Tensor):
        raise InputTypeError(f"{name}: expected a torch.Tensor, got {type(out).__name__}")
    if _shape(out) != tuple(shape):
        raise InputError(f"{name}: expected shape {tuple(shape)}, got {_shape(out)}")
    if out.dtype != dtype:
        raise InputTypeError(f"{name}: expected dtype {dtype}, got {out.dtype}")
    if out.device != device:
        raise InputError(f"{name}: expected a tensor on {device}, got one on {out.device}")
    if inputs is not None:
        check_writable(out, name, inputs)


def check_state_tensor(x, name: str, shape, device: torch.device, dtypes=(torch.float32,)) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in dtypes:
        raise InputTypeError(f"{name}: expected dtype {' or '.join(map(str, dtypes))}, got {x.dtype}")
    if _shape(x) != tuple(shape):
        raise InputError(f"{name}: expected shape {tuple(shape)}, got {_shape(x)}")
    if x.device != device:
        raise InputError(f"{name}: expected a tensor on {device}, got one on {x.device}")
    return x
