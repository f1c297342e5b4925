"""``fastalign check``: every available backend against the float64 reference, on fixed cases.

For each (op, backend, dtype, shape) the backend runs on inputs of the storage dtype, and the
reference (``backend="torch", compute_dtype=torch.float64``) runs on float64 copies of the same
inputs. A row passes when every output element is within tolerance:

* float32 results: ``|out - ref| <= 1e-5 + 1e-5 * |ref|``;
* float16 / bfloat16 results: ``|out - ref| <= ulp(max(|out|, |ref|)) + 1e-6`` (one unit in the last
  place of the storage dtype, plus a small absolute floor);

outputs that are float32 whatever the storage dtype (``udot``, weights, Adam state, norms) use the
float32 rule. ``max_rel_err`` is ``max |out - ref| / (|ref| + 1e-5)``.

Use :func:`run_checks` from Python; :func:`main` is the ``fastalign check`` command.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch

from fastalign.errors import InputError

__all__ = ["CheckRow", "Case", "cases", "run_checks", "format_table", "tolerance_ok", "main"]

_FP32_ATOL = 1e-5
_FP32_RTOL = 1e-5
_LOWP_FLOOR = 1e-6
_REL_FLOOR = 1e-5
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class CheckRow:
    op: str
    backend: str
    dtype: str
    shape: str
    max_abs_err: float
    max_rel_err: float
    ok: bool
    error: str | None = None

    def as_json(self) -> dict:
        d = asdict(self)
        if d["error"] is None:
            del d["error"]
        for key in ("max_abs_err", "max_rel_err"):  # strict JSON has no Infinity/NaN
            if not math.isfinite(d[key]):
                d[key] = None
        return d


@dataclass
class Case:
    """One op call: ``run(backend, dtype, device, compute_dtype)`` returns ``{name: (tensor, rule)}``
    where rule is the storage dtype whose tolerance applies to that output."""

    op: str
    shape: str
    run: Callable[..., dict]
    seeds: int = 0


def _ulp(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One unit in the last place of ``dtype`` at magnitude ``|x|`` (float64 tensor)."""
    fi = torch.finfo(dtype)
    mant_bits = {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23}[dtype]
    ax = x.abs().clamp_min(fi.tiny)
    exp = torch.floor(torch.log2(ax))
    return torch.pow(2.0, exp - mant_bits).clamp_min(fi.tiny * fi.eps)


def tolerance_ok(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> tuple[float, float, bool]:
    """``(max_abs_err, max_rel_err, ok)`` of ``out`` against the float64 ``ref`` under ``dtype``'s rule."""
    out64 = out.detach().to("cpu", torch.float64)
    ref64 = ref.detach().to("cpu", torch.float64)
    if out64.shape != ref64.shape:
        return math.inf, math.inf, False
    if out64.numel() == 0:
        return 0.0, 0.0, True
    same_nonfinite = (~torch.isfinite(ref64)) & (out64 == ref64)
    diff = torch.where(same_nonfinite, torch.zeros_like(ref64), (out64 - ref64).abs())
    diff = torch.nan_to_num(diff, nan=math.inf)
    if dtype in (torch.float16, torch.bfloat16):
        mag = torch.maximum(out64.abs(), ref64.abs())
        bound = _ulp(torch.nan_to_num(mag, posinf=0.0), dtype) + _LOWP_FLOOR
    else:
        bound = _FP32_ATOL + _FP32_RTOL * ref64.abs()
    ok = bool((diff <= bound).all())
    rel = diff / (torch.nan_to_num(ref64.abs(), posinf=0.0) + _REL_FLOOR)
    return float(diff.max()), float(rel.max()), ok


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _aisp_perturb_case(B, n, tau, d, *, step, iteration=3, seed=1234, with_udot=True, with_active=False):
    op = "aisp_perturb+udot" if with_udot else "aisp_perturb"
    if with_active:
        op += "+active"
    shape = f"B={B} n={n} tau={tau} d={d} step={step}" + (f" it={iteration}" if iteration > 1000 else "")

    # udot is updated in place: the row compares the tensor that was passed in.
    def run(backend, dtype, device, compute_dtype):
        from fastalign import ops

        g = _gen(B * 1000 + n * 100 + d)
        h = _randn(g, B, n, d)
        u = _randn(g, B, tau, d, scale=0.3)
        udot0 = _randn(g, B, n, scale=0.1)
        active = torch.rand(B, n, generator=g) < 0.7
        store = torch.float64 if compute_dtype is not None else None
        h = h.to(dtype)
        u = u.to(torch.float32)
        udot = udot0.to(torch.float32)
        if store is not None:
            h, u, udot = h.to(store), u.to(store), udot.to(store)
        h, u, udot, active = h.to(device), u.to(device), udot.to(device), active.to(device)
        z = ops.aisp_perturb(h, u, sigma=0.5, seed=seed, iteration=iteration, step=step,
                             udot=udot if with_udot else None, active=active if with_active else None,
                             backend=backend, compute_dtype=compute_dtype)
        res = {"z": (z, dtype)}
        if with_udot:
            res["udot"] = (udot, torch.float32)
        return res

    return Case(op, shape, run)


def _aisp_update_case(B, n, tau, d, *, with_udot, with_lengths=True, iteration=2, seed=77):
    op = "aisp_update+udot" if with_udot else "aisp_update"
    shape = f"B={B} n={n} tau={tau} d={d}" + (" lengths" if with_lengths else "")

    def run(backend, dtype, device, compute_dtype):
        from fastalign import ops

        g = _gen(B * 7 + n * 13 + tau * 17 + d)
        u = _randn(g, B, tau, d, scale=0.3).to(dtype)
        rewards = _randn(g, B, n, scale=0.2).to(torch.float32)
        udot = _randn(g, B, n, scale=2.0).to(torch.float32) if with_udot else None
        lengths = torch.randint(0, tau + 1, (B, n), generator=g) if with_lengths else None
        if compute_dtype is not None:
            u, rewards = u.to(torch.float64), rewards.to(torch.float64)
            udot = udot.to(torch.float64) if udot is not None else None
        mv = (lambda t: None if t is None else t.to(device))
        u_new, w = ops.aisp_update(mv(u), mv(rewards), sigma=0.5, lam=0.3, alpha=0.9, seed=seed,
                                   iteration=iteration, lengths=mv(lengths), udot=mv(udot),
                                   backend=backend, compute_dtype=compute_dtype)
        return {"u_new": (u_new, dtype), "weights": (w, torch.float32)}

    return Case(op, shape, run)


def _sea_step_case(B, L, V, *, optimizer="sgld", clip="chain", step=3, seed=5, max_norm=1.0):
    op = f"sea_step:{optimizer}/{clip}"
    shape = f"B={B} L={L} V={V} step={step}"

    def run(backend, dtype, device, compute_dtype):
        from fastalign import ops

        g = _gen(B * 31 + L * 7 + V)
        y = _randn(g, B, L, V).to(dtype)
        grad = _randn(g, B, L, V, scale=0.05).to(dtype)
        kw = {}
        state = None
        if optimizer == "adam":
            m = _randn(g, B, L, V, scale=0.01).to(torch.float32)
            v = (_randn(g, B, L, V, scale=0.01) ** 2).to(torch.float32)
            if compute_dtype is not None:
                m, v = m.to(torch.float64), v.to(torch.float64)
            state = (m.to(device), v.to(device))
            kw = dict(state=state, betas=(0.9, 0.999), eps=1e-8)
        if compute_dtype is not None:
            y, grad = y.to(torch.float64), grad.to(torch.float64)
        y_new, norm = ops.sea_step(y.to(device), grad.to(device), lr=0.1, noise_std=0.05,
                                   max_norm=max_norm if clip is not None else None, clip=clip, seed=seed,
                                   step=step, optimizer=optimizer, backend=backend,
                                   compute_dtype=compute_dtype, **kw)
        res = {"y_new": (y_new, dtype)}
        if norm is not None:
            res["grad_norm"] = (norm, torch.float32)
        if state is not None:
            res["m"] = (state[0], torch.float32)
            res["v"] = (state[1], torch.float32)
        return res

    return Case(op, shape, run)


def _gaussian_case(B, L, V, *, step=2, seed=9):
    shape = f"B={B} L={L} V={V} step={step}"

    def run(backend, dtype, device, compute_dtype):
        from fastalign import ops

        g = _gen(B + L + V)
        x = _randn(g, B, L, V).to(dtype)
        if compute_dtype is not None:
            x = x.to(torch.float64)
        out = ops.gaussian_perturb(x.to(device), std=0.1, seed=seed, step=step, backend=backend,
                                   compute_dtype=compute_dtype)
        return {"x_new": (out, dtype)}

    return Case("gaussian_perturb", shape, run)


def cases(quick: bool = False) -> list[Case]:
    """The fixed check cases; ``quick`` keeps them tiny (fast under the Triton interpreter)."""
    big_it = 2 ** 26 + 5  # offsets past 2^32
    if quick:
        return [
            _aisp_perturb_case(2, 3, 4, 37, step=1),
            _aisp_perturb_case(1, 1, 1, 1, step=0, with_udot=False),
            _aisp_update_case(2, 3, 4, 37, with_udot=False),
            _aisp_update_case(2, 3, 4, 37, with_udot=True),
            _sea_step_case(2, 3, 129, optimizer="sgld", clip="chain"),
            _sea_step_case(2, 3, 129, optimizer="adam", clip="row"),
            _gaussian_case(2, 3, 129),
        ]
    return [
        _aisp_perturb_case(1, 32, 8, 2048, step=5),
        _aisp_perturb_case(3, 5, 7, 37, step=6, with_active=True),
        _aisp_perturb_case(2, 3, 4, 37, step=1, iteration=big_it),
        _aisp_perturb_case(2, 1, 1, 1, step=0, with_udot=False),
        _aisp_update_case(1, 16, 16, 256, with_udot=False, with_lengths=False),
        _aisp_update_case(3, 5, 7, 37, with_udot=False),
        _aisp_update_case(3, 5, 7, 37, with_udot=True),
        _aisp_update_case(2, 1, 1, 1, with_udot=False),
        _sea_step_case(2, 3, 50257, optimizer="sgld", clip="chain"),
        _sea_step_case(3, 5, 129, optimizer="sgld", clip="row"),
        _sea_step_case(3, 5, 129, optimizer="sgld", clip="global"),
        _sea_step_case(3, 5, 129, optimizer="sgld", clip=None),
        _sea_step_case(3, 5, 129, optimizer="adam", clip="chain"),
        _sea_step_case(2, 3, 129, optimizer="adam", clip="row", step=(2 ** 32) // (3 * 129) + 7),
        _sea_step_case(1, 1, 1, optimizer="sgld", clip="chain"),
        _gaussian_case(2, 3, 50257),
        _gaussian_case(1, 1, 1),
    ]


def _targets(backend: str | None) -> list[tuple[str, str]]:
    """(backend, device type) pairs to check: every available backend on CPU and, if present, CUDA."""
    from fastalign import backends as registry

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    names = registry.names() if backend is None else [backend]
    out = []
    for name in names:
        for dev in devices:
            try:
                registry.get(name, dev)  # checks only this backend (may build its extension)
            except registry.BackendUnavailableError:
                continue
            out.append((name, dev))
    return out


def run_checks(backend: str | None = None, *, quick: bool = False,
               dtypes: Iterable[str] = ("float32", "float16", "bfloat16"),
               progress: Callable[[CheckRow], None] | None = None) -> list[CheckRow]:
    """Run the check cases for every available backend (or only ``backend``) and return the rows.

    Raises ValueError for an unknown backend name and fastalign.BackendUnavailableError when the
    named backend cannot run on any device here.
    """
    from fastalign import backends as registry

    if backend is not None and backend not in registry.names():
        raise InputError(f"--backend: expected one of {registry.names()}, got {backend!r}")
    targets = _targets(backend)
    if backend is not None and not targets:
        reason = registry.availability().get(backend)
        raise registry.BackendUnavailableError(f"backend {backend!r} cannot run here: {reason}")
    rows: list[CheckRow] = []
    for name, dev in targets:
        interpreted = name == "triton" and dev == "cpu"
        dev_name = "cpu" if dev == "cpu" else "cuda"
        label = name if dev == "cpu" or name == "cuda" else f"{name}@{dev}"
        # bfloat16 is not reliable in the Triton interpreter (CPU); it is checked on GPUs.
        case_dtypes = [d for d in dtypes if not (interpreted and d == "bfloat16")]
        for case in cases(quick=quick or interpreted):
            refs = None
            for dt_name in case_dtypes:
                dtype = _DTYPES[dt_name]
                try:
                    if refs is None or refs[0] != dt_name:
                        refs = (dt_name, case.run("torch", dtype, "cpu", torch.float64))
                    got = case.run(name, dtype, dev_name, None)
                    max_abs = max_rel = 0.0
                    ok = True
                    for key, (ref_t, rule) in refs[1].items():
                        out_t = got[key][0]
                        a, r, good = tolerance_ok(out_t, ref_t, rule)
                        max_abs, max_rel, ok = max(max_abs, a), max(max_rel, r), ok and good
                    row = CheckRow(case.op, label, dt_name, case.shape, max_abs, max_rel, ok)
                except Exception as exc:  # a crash is a failing row, not an aborted check
                    msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
                    row = CheckRow(case.op, label, dt_name, case.shape, math.inf, math.inf, False, msg)
                rows.append(row)
                if progress is not None:
                    progress(row)
    return rows


def format_table(rows: list[CheckRow]) -> str:
    """A fixed-width table, one line per row."""
    head = ("op", "backend", "dtype", "shape", "max_abs_err", "max_rel_err", "result")
    body = [(r.op, r.backend, r.dtype, r.shape, f"{r.max_abs_err:.3e}", f"{r.max_rel_err:.3e}",
             ("PASS" if r.ok else "FAIL") + (f" ({r.error})" if r.error else "")) for r in rows]
    widths = [max(len(head[i]), *(len(b[i]) for b in body)) if body else len(head[i]) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)).rstrip() for b in body]
    return "\n".join(lines)


def main(backend: str | None = None, *, quick: bool = False, as_json: bool = False, stream=None) -> int:
    """``fastalign check``: print the rows (a table, or a JSON list with ``as_json``); 0 if all pass."""
    stream = stream or sys.stdout
    rows = run_checks(backend, quick=quick)
    if as_json:
        stream.write(json.dumps([r.as_json() for r in rows], indent=1) + "\n")
    else:
        stream.write(format_table(rows) + "\n")
        failed = sum(not r.ok for r in rows)
        verdict = "all passed" if not failed else f"{failed} FAILED"
        stream.write(f"fastalign check: {len(rows)} rows, {verdict}\n")
    return 0 if rows and all(r.ok for r in rows) else 1
