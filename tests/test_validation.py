"""Bad input to every public op: the right exception, naming the argument, before any kernel runs.

The exception is :class:`fastalign.InputError` (a ``ValueError``) or :class:`fastalign.InputTypeError`
(also a ``TypeError``), so that callers and the command line tell bad input from a bug.

Each case starts from a valid call, breaks one argument and asserts the exception type and that the
message names the argument. The table runs against a *spy* backend whose every function fails the
test if called, which proves validation happens before any kernel launches; a shorter list then runs
against every real backend (dtype rules differ: only ``torch`` takes float64). Also: inputs are never
modified except ``out=``, ``udot=`` and ``state=``, and stride-0 (expanded) or otherwise
non-contiguous inputs and in-place buffers give bit-identical results to contiguous copies, on every
available backend.
"""
from __future__ import annotations

import functools
import math
import re
from types import SimpleNamespace

import pytest
import torch

import fastalign as fa
from fastalign import ops
from _util import backend_params, randn

BACKENDS = backend_params()
NAN, INF = float("nan"), float("inf")
B, N, TAU, D = 2, 3, 4, 5  # AISP: h [B, N, D], u [B, TAU, D]
L, VOCAB = 3, 7  # SEA: y [B, L, VOCAB]


# ----------------------------------------------------------------------------- valid calls
def _perturb_kwargs(device="cpu"):
    return dict(h=randn((B, N, D), torch.float32, device, 1), u=randn((B, TAU, D), torch.float32, device, 2),
                sigma=0.5, seed=1, iteration=0, step=1)


def _update_kwargs(device="cpu"):
    return dict(u=randn((B, TAU, D), torch.float32, device, 3), rewards=randn((B, N), torch.float32, device, 4),
                sigma=0.5, lam=0.3, alpha=0.5, seed=1, iteration=0)


def _sea_kwargs(device="cpu", optimizer="sgld"):
    kw = dict(y=randn((B, L, VOCAB), torch.float32, device, 5), grad=randn((B, L, VOCAB), torch.float32, device, 6),
              lr=0.1, noise_std=0.1, max_norm=1.0, seed=1, step=0, optimizer=optimizer)
    if optimizer == "adam":
        kw["state"] = (torch.zeros(B, L, VOCAB, device=device), torch.zeros(B, L, VOCAB, device=device))
    return kw


def _gauss_kwargs(device="cpu"):
    return dict(x=randn((B, L, VOCAB), torch.float32, device, 7), std=0.3, seed=1, step=0)


OPS = {
    "aisp_perturb": (fa.aisp_perturb, _perturb_kwargs),
    "aisp_update": (fa.aisp_update, _update_kwargs),
    "sea_step": (fa.sea_step, _sea_kwargs),
    "sea_adam": (fa.sea_step, lambda device="cpu": _sea_kwargs(device, "adam")),
    "gaussian_perturb": (fa.gaussian_perturb, _gauss_kwargs),
}


def _call(op, kw):
    fn = OPS[op][0]
    kw = dict(kw)
    first = {"aisp_perturb": ("h", "u"), "aisp_update": ("u", "rewards"), "sea_step": ("y", "grad"),
             "sea_adam": ("y", "grad"), "gaussian_perturb": ("x",)}[op]
    args = [kw.pop(k) for k in first]
    return fn(*args, **kw)


def _set(**changes):
    """A mutation that overrides keyword arguments (values may be callables of the kwargs)."""
    def mutate(kw):
        for key, value in changes.items():
            kw[key] = value(kw) if callable(value) and not isinstance(value, torch.Tensor) else value
        return kw
    return mutate


def _meta(shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


def _expanded(shape, dtype=torch.float32):
    return torch.zeros((1,) + tuple(shape[1:]), dtype=dtype).expand(*shape)


def _overlapping(name, shape=None):
    """A tensor sharing memory with argument ``name`` (a view of its first elements)."""
    def make(kw):
        src = kw[name] if not isinstance(kw[name], tuple) else kw[name][0]
        sh = shape or tuple(src.shape)
        return src.reshape(-1)[: math.prod(sh)].view(sh)
    return make


def _big_seed_tensor(value):
    return torch.tensor([value, 1], dtype=torch.uint64)


# Every row: (op, what is broken, mutation, exception type, argument the message must name).
CASES = [
    # ---- aisp_perturb
    ("aisp_perturb", "h not a tensor", _set(h=lambda kw: kw["h"].tolist()), TypeError, "h"),
    ("aisp_perturb", "h rank 2", _set(h=lambda kw: kw["h"][0]), ValueError, "h"),
    ("aisp_perturb", "h rank 4", _set(h=lambda kw: kw["h"][None]), ValueError, "h"),
    ("aisp_perturb", "u rank 2", _set(u=lambda kw: kw["u"][0]), ValueError, "u"),
    ("aisp_perturb", "u B mismatch", _set(u=torch.zeros(B + 1, TAU, D)), ValueError, "u"),
    ("aisp_perturb", "u d mismatch", _set(u=torch.zeros(B, TAU, D + 1)), ValueError, "u"),
    ("aisp_perturb", "h int32", _set(h=torch.zeros(B, N, D, dtype=torch.int32)), TypeError, "h"),
    ("aisp_perturb", "h bool", _set(h=torch.zeros(B, N, D, dtype=torch.bool)), TypeError, "h"),
    ("aisp_perturb", "h complex", _set(h=torch.zeros(B, N, D, dtype=torch.complex64)), TypeError, "h"),
    ("aisp_perturb", "u int64", _set(u=torch.zeros(B, TAU, D, dtype=torch.int64)), TypeError, "u"),
    ("aisp_perturb", "u other device", _set(u=_meta((B, TAU, D))), ValueError, "u"),
    ("aisp_perturb", "n=0", _set(h=torch.zeros(B, 0, D)), ValueError, "h"),
    ("aisp_perturb", "d=0", _set(h=torch.zeros(B, N, 0), u=torch.zeros(B, TAU, 0)), ValueError, "h"),
    ("aisp_perturb", "B=0", _set(h=torch.zeros(0, N, D), u=torch.zeros(0, TAU, D)), ValueError, "h"),
    ("aisp_perturb", "tau=0", _set(u=torch.zeros(B, 0, D)), ValueError, "u"),
    ("aisp_perturb", "sigma 0", _set(sigma=0.0), ValueError, "sigma"),
    ("aisp_perturb", "sigma negative", _set(sigma=-0.5), ValueError, "sigma"),
    ("aisp_perturb", "sigma NaN", _set(sigma=NAN), ValueError, "sigma"),
    ("aisp_perturb", "sigma inf", _set(sigma=INF), ValueError, "sigma"),
    ("aisp_perturb", "sigma NaN tensor", _set(sigma=torch.tensor(NAN)), ValueError, "sigma"),
    ("aisp_perturb", "sigma str", _set(sigma="0.5"), TypeError, "sigma"),
    ("aisp_perturb", "sigma bool", _set(sigma=True), TypeError, "sigma"),
    ("aisp_perturb", "seed negative", _set(seed=-1), ValueError, "seed"),
    ("aisp_perturb", "seed 2**63", _set(seed=2**63), ValueError, "seed"),
    ("aisp_perturb", "seed + b overflows", _set(seed=2**63 - 1), ValueError, "seed"),
    ("aisp_perturb", "seed float", _set(seed=1.0), TypeError, "seed"),
    ("aisp_perturb", "seed list", _set(seed=[1, 2]), TypeError, "seed"),
    ("aisp_perturb", "seed tensor negative", _set(seed=torch.tensor([3, -1])), ValueError, "seed"),
    ("aisp_perturb", "seed tensor 2**63", _set(seed=_big_seed_tensor(2**63)), ValueError, "seed"),
    ("aisp_perturb", "seed tensor 2**64-1", _set(seed=_big_seed_tensor(2**64 - 1)), ValueError, "seed"),
    ("aisp_perturb", "seed 0-d tensor negative", _set(seed=torch.tensor(-3)), ValueError, "seed"),
    ("aisp_perturb", "seed 0-d uint64 2**63", _set(seed=torch.tensor(2**63, dtype=torch.uint64)), ValueError,
     "seed"),
    ("aisp_perturb", "seed tensor wrong B", _set(seed=torch.tensor([1, 2, 3])), ValueError, "seed"),
    ("aisp_perturb", "seed tensor 2-D", _set(seed=torch.tensor([[1, 2]])), ValueError, "seed"),
    ("aisp_perturb", "seed tensor float", _set(seed=torch.tensor([1.0, 2.0])), TypeError, "seed"),
    ("aisp_perturb", "seed tensor bool", _set(seed=torch.tensor([True, False])), TypeError, "seed"),
    ("aisp_perturb", "seed tensor other device", _set(seed=torch.empty(B, dtype=torch.int64, device="meta")),
     ValueError, "seed"),
    ("aisp_perturb", "iteration negative", _set(iteration=-1), ValueError, "iteration"),
    ("aisp_perturb", "iteration 2**63", _set(iteration=2**63), ValueError, "iteration"),
    ("aisp_perturb", "iteration uint64 2**63", _set(iteration=torch.tensor(2**63, dtype=torch.uint64)),
     ValueError, "iteration"),
    ("aisp_perturb", "iteration offsets overflow int64", _set(iteration=2**63 // (N * TAU * D)), ValueError,
     "iteration"),
    ("aisp_perturb", "iteration float", _set(iteration=1.0), TypeError, "iteration"),
    ("aisp_perturb", "iteration float tensor", _set(iteration=torch.tensor(1.0)), TypeError, "iteration"),
    ("aisp_perturb", "iteration 2 values", _set(iteration=torch.tensor([0, 1])), ValueError, "iteration"),
    ("aisp_perturb", "iteration other device", _set(iteration=torch.empty(1, dtype=torch.int64, device="meta")),
     ValueError, "iteration"),
    ("aisp_perturb", "step negative", _set(step=-1), ValueError, "step"),
    ("aisp_perturb", "step negative tensor", _set(step=torch.tensor([-2])), ValueError, "step"),
    ("aisp_perturb", "step bool", _set(step=True), TypeError, "step"),
    ("aisp_perturb", "udot wrong shape", _set(udot=torch.zeros(B, N + 1)), ValueError, "udot"),
    ("aisp_perturb", "udot float16", _set(udot=torch.zeros(B, N, dtype=torch.float16)), TypeError, "udot"),
    ("aisp_perturb", "udot int", _set(udot=torch.zeros(B, N, dtype=torch.int32)), TypeError, "udot"),
    ("aisp_perturb", "udot other device", _set(udot=_meta((B, N))), ValueError, "udot"),
    ("aisp_perturb", "udot expanded", _set(udot=_expanded((B, N))), ValueError, "udot"),
    ("aisp_perturb", "udot overlaps h", _set(udot=_overlapping("h", (B, N))), ValueError, "udot"),
    ("aisp_perturb", "active not bool", _set(active=torch.ones(B, N, dtype=torch.int32)), TypeError, "active"),
    ("aisp_perturb", "active wrong shape", _set(active=torch.ones(B, N + 1, dtype=torch.bool)), ValueError,
     "active"),
    ("aisp_perturb", "active other device", _set(active=_meta((B, N), torch.bool)), ValueError, "active"),
    ("aisp_perturb", "out wrong shape", _set(out=torch.zeros(B, N, D + 1)), ValueError, "out"),
    ("aisp_perturb", "out wrong dtype", _set(out=torch.zeros(B, N, D, dtype=torch.float16)), TypeError, "out"),
    ("aisp_perturb", "out other device", _set(out=_meta((B, N, D))), ValueError, "out"),
    ("aisp_perturb", "out is h", _set(out=lambda kw: kw["h"]), ValueError, "out"),
    ("aisp_perturb", "out overlaps u", _set(out=_overlapping("u", (B, N, D))), ValueError, "out"),
    ("aisp_perturb", "out overlaps udot",
     _set(udot=torch.zeros(B * N * D)[: B * N].view(B, N), out=lambda kw: kw["udot"]._base.view(B, N, D)),
     ValueError, "out"),
    ("aisp_perturb", "out expanded", _set(out=_expanded((B, N, D))), ValueError, "out"),
    ("aisp_perturb", "unknown backend", _set(backend="nope"), ValueError, "backend"),
    ("aisp_perturb", "backend not a str", _set(backend=3), TypeError, "backend"),
    ("aisp_perturb", "compute_dtype without torch", _set(backend="cpu", compute_dtype=torch.float64), ValueError,
     "compute_dtype"),
    ("aisp_perturb", "compute_dtype float16", _set(backend="torch", compute_dtype=torch.float16), TypeError,
     "compute_dtype"),
    # ---- aisp_update
    ("aisp_update", "u rank 2", _set(u=lambda kw: kw["u"][0]), ValueError, "u"),
    ("aisp_update", "u int", _set(u=torch.zeros(B, TAU, D, dtype=torch.int32)), TypeError, "u"),
    ("aisp_update", "u d=0", _set(u=torch.zeros(B, TAU, 0)), ValueError, "u"),
    ("aisp_update", "u tau=0", _set(u=torch.zeros(B, 0, D)), ValueError, "u"),
    ("aisp_update", "rewards list", _set(rewards=lambda kw: kw["rewards"].tolist()), TypeError, "rewards"),
    ("aisp_update", "rewards int", _set(rewards=torch.zeros(B, N, dtype=torch.int64)), TypeError, "rewards"),
    ("aisp_update", "rewards bool", _set(rewards=torch.zeros(B, N, dtype=torch.bool)), TypeError, "rewards"),
    ("aisp_update", "rewards rank 1", _set(rewards=torch.zeros(N)), ValueError, "rewards"),
    ("aisp_update", "rewards B mismatch", _set(rewards=torch.zeros(B + 1, N)), ValueError, "rewards"),
    ("aisp_update", "rewards n=0", _set(rewards=torch.zeros(B, 0)), ValueError, "rewards"),
    ("aisp_update", "rewards other device", _set(rewards=_meta((B, N))), ValueError, "rewards"),
    ("aisp_update", "rewards NaN", _set(rewards=torch.tensor([[0.0, NAN, 1.0], [0.0, 0.0, 0.0]])), ValueError,
     "rewards"),
    ("aisp_update", "rewards +inf", _set(rewards=torch.tensor([[0.0, INF, 1.0], [0.0, 0.0, 0.0]])), ValueError,
     "rewards"),
    ("aisp_update", "rewards all -inf", _set(rewards=torch.tensor([[0.0, 1.0, 2.0], [-INF, -INF, -INF]])),
     ValueError, "rewards"),
    ("aisp_update", "sigma 0", _set(sigma=0.0), ValueError, "sigma"),
    ("aisp_update", "sigma inf", _set(sigma=INF), ValueError, "sigma"),
    ("aisp_update", "lam 0", _set(lam=0.0), ValueError, "lam"),
    ("aisp_update", "lam negative", _set(lam=-0.3), ValueError, "lam"),
    ("aisp_update", "lam NaN", _set(lam=NAN), ValueError, "lam"),
    ("aisp_update", "lam inf", _set(lam=INF), ValueError, "lam"),
    ("aisp_update", "alpha below 0", _set(alpha=-0.01), ValueError, "alpha"),
    ("aisp_update", "alpha above 1", _set(alpha=1.01), ValueError, "alpha"),
    ("aisp_update", "alpha NaN", _set(alpha=NAN), ValueError, "alpha"),
    ("aisp_update", "alpha inf", _set(alpha=INF), ValueError, "alpha"),
    ("aisp_update", "seed negative", _set(seed=-5), ValueError, "seed"),
    ("aisp_update", "seed tensor 2**63", _set(seed=_big_seed_tensor(2**63)), ValueError, "seed"),
    ("aisp_update", "iteration negative", _set(iteration=-1), ValueError, "iteration"),
    ("aisp_update", "iteration offsets overflow int64", _set(iteration=torch.tensor(2**63 // (N * TAU * D))),
     ValueError, "iteration"),
    ("aisp_update", "lengths float", _set(lengths=torch.ones(B, N)), TypeError, "lengths"),
    ("aisp_update", "lengths bool", _set(lengths=torch.ones(B, N, dtype=torch.bool)), TypeError, "lengths"),
    ("aisp_update", "lengths list", _set(lengths=[[1] * N] * B), TypeError, "lengths"),
    ("aisp_update", "lengths wrong shape", _set(lengths=torch.ones(B, N + 1, dtype=torch.int64)), ValueError,
     "lengths"),
    ("aisp_update", "lengths negative", _set(lengths=torch.tensor([[1, -1, 2], [0, 0, 0]])), ValueError,
     "lengths"),
    ("aisp_update", "lengths above tau", _set(lengths=torch.tensor([[1, TAU + 1, 2], [0, 0, 0]])), ValueError,
     "lengths"),
    ("aisp_update", "lengths other device", _set(lengths=_meta((B, N), torch.int64)), ValueError, "lengths"),
    ("aisp_update", "udot wrong shape", _set(udot=torch.zeros(B, N - 1)), ValueError, "udot"),
    ("aisp_update", "udot bfloat16", _set(udot=torch.zeros(B, N, dtype=torch.bfloat16)), TypeError, "udot"),
    ("aisp_update", "udot other device", _set(udot=_meta((B, N))), ValueError, "udot"),
    ("aisp_update", "out wrong shape", _set(out=torch.zeros(B, TAU + 1, D)), ValueError, "out"),
    ("aisp_update", "out wrong dtype", _set(out=torch.zeros(B, TAU, D, dtype=torch.bfloat16)), TypeError, "out"),
    ("aisp_update", "out is u", _set(out=lambda kw: kw["u"]), ValueError, "out"),
    ("aisp_update", "out overlaps rewards",
     _set(rewards=torch.zeros(B * TAU * D)[: B * N].view(B, N),
          out=lambda kw: kw["rewards"]._base.view(B, TAU, D)), ValueError, "out"),
    ("aisp_update", "out expanded", _set(out=_expanded((B, TAU, D))), ValueError, "out"),
    # ---- sea_step (sgld)
    ("sea_step", "y rank 2", _set(y=lambda kw: kw["y"][0], grad=lambda kw: kw["grad"][0]), ValueError, "y"),
    ("sea_step", "grad rank 2", _set(grad=lambda kw: kw["grad"][0]), ValueError, "grad"),
    ("sea_step", "grad B mismatch", _set(grad=torch.zeros(B + 1, L, VOCAB)), ValueError, "grad"),
    ("sea_step", "grad L mismatch", _set(grad=torch.zeros(B, L + 1, VOCAB)), ValueError, "grad"),
    ("sea_step", "grad V mismatch", _set(grad=torch.zeros(B, L, VOCAB - 1)), ValueError, "grad"),
    ("sea_step", "y int", _set(y=torch.zeros(B, L, VOCAB, dtype=torch.int64)), TypeError, "y"),
    ("sea_step", "grad bool", _set(grad=torch.zeros(B, L, VOCAB, dtype=torch.bool)), TypeError, "grad"),
    ("sea_step", "grad other device", _set(grad=_meta((B, L, VOCAB))), ValueError, "grad"),
    ("sea_step", "L=0", _set(y=torch.zeros(B, 0, VOCAB), grad=torch.zeros(B, 0, VOCAB)), ValueError, "y"),
    ("sea_step", "V=0", _set(y=torch.zeros(B, L, 0), grad=torch.zeros(B, L, 0)), ValueError, "y"),
    ("sea_step", "lr negative", _set(lr=-0.1), ValueError, "lr"),
    ("sea_step", "lr NaN", _set(lr=NAN), ValueError, "lr"),
    ("sea_step", "lr inf", _set(lr=INF), ValueError, "lr"),
    ("sea_step", "lr None", _set(lr=None), TypeError, "lr"),
    ("sea_step", "noise_std negative", _set(noise_std=-1.0), ValueError, "noise_std"),
    ("sea_step", "noise_std NaN", _set(noise_std=NAN), ValueError, "noise_std"),
    ("sea_step", "max_norm 0", _set(max_norm=0.0), ValueError, "max_norm"),
    ("sea_step", "max_norm negative", _set(max_norm=-1.0), ValueError, "max_norm"),
    ("sea_step", "max_norm NaN", _set(max_norm=NAN), ValueError, "max_norm"),
    ("sea_step", "max_norm inf", _set(max_norm=INF), ValueError, "max_norm"),
    ("sea_step", "max_norm without clip group", _set(clip=None), ValueError, "max_norm"),
    ("sea_step", "unknown clip", _set(clip="l2"), ValueError, "clip"),
    ("sea_step", "unknown optimizer", _set(optimizer="sgd"), ValueError, "optimizer"),
    ("sea_step", "state with sgld", _set(state=(torch.zeros(B, L, VOCAB),) * 2), ValueError, "state"),
    ("sea_step", "error_if_nonfinite not bool", _set(error_if_nonfinite="yes"), TypeError, "error_if_nonfinite"),
    ("sea_step", "seed 2**63", _set(seed=2**63), ValueError, "seed"),
    ("sea_step", "seed tensor uint64 2**63", _set(seed=_big_seed_tensor(2**63)), ValueError, "seed"),
    ("sea_step", "step negative", _set(step=-1), ValueError, "step"),
    ("sea_step", "step offsets overflow int64", _set(step=2**63 // (L * VOCAB)), ValueError, "step"),
    ("sea_step", "step tensor offsets overflow int64", _set(step=torch.tensor([2**62])), ValueError, "step"),
    ("sea_step", "out wrong shape", _set(out=torch.zeros(B, L, VOCAB + 1)), ValueError, "out"),
    ("sea_step", "out wrong dtype", _set(out=torch.zeros(B, L, VOCAB, dtype=torch.float64)), TypeError, "out"),
    ("sea_step", "out is grad", _set(out=lambda kw: kw["grad"]), ValueError, "out"),
    ("sea_step", "out overlaps y", _set(out=lambda kw: kw["y"][:, :, :]), ValueError, "out"),
    # ---- sea_step (adam)
    ("sea_adam", "state missing", _set(state=None), TypeError, "state"),
    ("sea_adam", "state one tensor", _set(state=lambda kw: kw["state"][0]), TypeError, "state"),
    ("sea_adam", "state three tensors", _set(state=(torch.zeros(B, L, VOCAB),) * 3), TypeError, "state"),
    ("sea_adam", "m wrong shape", _set(state=(torch.zeros(B, L, VOCAB + 1), torch.zeros(B, L, VOCAB))),
     ValueError, "state"),
    ("sea_adam", "v wrong shape", _set(state=(torch.zeros(B, L, VOCAB), torch.zeros(B, L - 1, VOCAB))),
     ValueError, "state"),
    ("sea_adam", "m float16", _set(state=(torch.zeros(B, L, VOCAB, dtype=torch.float16),
                                          torch.zeros(B, L, VOCAB))), TypeError, "state"),
    ("sea_adam", "v int", _set(state=(torch.zeros(B, L, VOCAB), torch.zeros(B, L, VOCAB, dtype=torch.int32))),
     TypeError, "state"),
    ("sea_adam", "m other device", _set(state=(_meta((B, L, VOCAB)), torch.zeros(B, L, VOCAB))), ValueError,
     "state"),
    ("sea_adam", "m is v", _set(state=lambda kw: (kw["state"][0], kw["state"][0])), ValueError, "state"),
    ("sea_adam", "m is y", _set(state=lambda kw: (kw["y"], kw["state"][1])), ValueError, "state"),
    ("sea_adam", "v overlaps grad", _set(state=lambda kw: (kw["state"][0], kw["grad"][:])), ValueError, "state"),
    ("sea_adam", "m expanded", _set(state=(_expanded((B, L, VOCAB)), torch.zeros(B, L, VOCAB))), ValueError,
     "state"),
    ("sea_adam", "beta1 = 1", _set(betas=(1.0, 0.999)), ValueError, "betas"),
    ("sea_adam", "beta2 negative", _set(betas=(0.9, -0.1)), ValueError, "betas"),
    ("sea_adam", "beta1 NaN", _set(betas=(NAN, 0.999)), ValueError, "betas"),
    ("sea_adam", "betas scalar", _set(betas=0.9), TypeError, "betas"),
    ("sea_adam", "eps 0", _set(eps=0.0), ValueError, "eps"),
    ("sea_adam", "eps negative", _set(eps=-1e-8), ValueError, "eps"),
    ("sea_adam", "eps NaN", _set(eps=NAN), ValueError, "eps"),
    ("sea_adam", "out overlaps m", _set(out=lambda kw: kw["state"][0]), ValueError, "out"),
    # ---- gaussian_perturb
    ("gaussian_perturb", "x rank 1", _set(x=torch.zeros(5)), ValueError, "x"),
    ("gaussian_perturb", "x int", _set(x=torch.zeros(B, 5, dtype=torch.int32)), TypeError, "x"),
    ("gaussian_perturb", "x B=0", _set(x=torch.zeros(0, 5)), ValueError, "x"),
    ("gaussian_perturb", "x N=0", _set(x=torch.zeros(B, 3, 0)), ValueError, "x"),
    ("gaussian_perturb", "std negative", _set(std=-0.1), ValueError, "std"),
    ("gaussian_perturb", "std NaN", _set(std=NAN), ValueError, "std"),
    ("gaussian_perturb", "std inf", _set(std=INF), ValueError, "std"),
    ("gaussian_perturb", "seed negative", _set(seed=-1), ValueError, "seed"),
    ("gaussian_perturb", "step 2**63", _set(step=2**63), ValueError, "step"),
    ("gaussian_perturb", "step offsets overflow int64", _set(step=2**63 // (L * VOCAB)), ValueError, "step"),
    ("gaussian_perturb", "out wrong shape", _set(out=torch.zeros(B, L * VOCAB)), ValueError, "out"),
    ("gaussian_perturb", "out wrong dtype", _set(out=torch.zeros(B, L, VOCAB, dtype=torch.float16)), TypeError,
     "out"),
    ("gaussian_perturb", "out is x", _set(out=lambda kw: kw["x"]), ValueError, "out"),
]


def _fail(*args, **kwargs):
    raise AssertionError("a backend function ran although the arguments are invalid")


SPY = SimpleNamespace(**{fn: _fail for fn in ("aisp_perturb", "aisp_udot", "aisp_apply", "sea_norm", "sea_update",
                                                "gaussian_perturb")})


@pytest.fixture
def spy_backend(monkeypatch):
    """Every op dispatches to a backend that fails the test if any of its functions is called."""
    real_resolve = ops._backends.resolve

    def resolve(backend, device_type):
        if backend is not None and backend not in ("torch", "cpu", "triton", "cuda", "auto"):
            return real_resolve(backend, device_type)  # unknown names must still be rejected
        return "torch" if backend == "torch" else "spy", SPY

    monkeypatch.setattr(ops._backends, "resolve", resolve)


def _raises(exc, argname, fn):
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    assert re.search(rf"(^|\W){re.escape(argname)}(\W|$)", msg), f"message does not name {argname!r}: {msg}"
    if exc in (ValueError, TypeError):  # bad input is fastalign's own type, so callers can tell it from a bug
        kind = fa.InputTypeError if exc is TypeError else fa.InputError
        assert isinstance(info.value, kind), f"{type(info.value).__name__} is not a {kind.__name__}: {msg}"
    return msg


@pytest.mark.parametrize("op,what,mutate,exc,argname", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_bad_argument_raises_before_any_kernel(spy_backend, op, what, mutate, exc, argname):
    kw = mutate(OPS[op][1]())
    _raises(exc, argname, lambda: _call(op, kw))


def test_every_case_starts_from_a_valid_call():
    """The unmodified calls of the table succeed (so each case fails because of its one change)."""
    for op in OPS:
        _call(op, dict(OPS[op][1](), backend="torch"))


def test_messages_say_what_was_expected_and_received(spy_backend):
    msg = _raises(ValueError, "u", lambda: fa.aisp_perturb(torch.zeros(2, 3, 5), torch.zeros(2, 4, 6), sigma=0.5,
                                                          seed=0, iteration=0, step=0))
    assert "d=5" in msg and "(2, 4, 6)" in msg
    msg = _raises(ValueError, "sigma", lambda: fa.aisp_perturb(torch.zeros(2, 3, 5), torch.zeros(2, 4, 5),
                                                              sigma=-2.0, seed=0, iteration=0, step=0))
    assert "> 0" in msg and "-2.0" in msg
    msg = _raises(ValueError, "lengths", lambda: fa.aisp_update(torch.zeros(1, 4, 2), torch.zeros(1, 2), sigma=1.0,
                                                               lam=1.0, alpha=0.5, seed=0, iteration=0,
                                                               lengths=torch.tensor([[0, 5]])))
    assert "tau=4" in msg and "max 5" in msg
    msg = _raises(TypeError, "h", lambda: fa.aisp_perturb(torch.zeros(2, 3, 5, dtype=torch.int8),
                                                         torch.zeros(2, 4, 5), sigma=0.5, seed=0, iteration=0, step=0))
    assert "float32" in msg and "int8" in msg
    msg = _raises(ValueError, "step", lambda: fa.sea_step(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), lr=0.1,
                                                         noise_std=0.0, seed=0, step=2**62))
    assert "int64" in msg


def test_lr_zero_is_allowed():
    """docs/design.md#errors says lr >= 0: a noise-only step (lr=0) is a valid SEA call."""
    y = torch.randn(1, 2, 3)
    y_new, _ = fa.sea_step(y, torch.randn(1, 2, 3), lr=0.0, noise_std=0.0, seed=0, step=0, backend="torch")
    assert torch.equal(y_new, y)


def test_largest_valid_seed_and_offset_are_accepted():
    """The boundaries themselves are valid: seed 2**63-1 and the last offset below 2**63."""
    x = torch.zeros(1, 4)  # N = 4: step s draws offsets 4s .. 4s + 3, end 4s + 4 (must be <= 2**63 - 1)
    top = fa.gaussian_perturb(x, std=1.0, seed=2**63 - 1, step=2**61 - 2, backend="torch")
    assert torch.isfinite(top).all() and bool((top != 0).all())
    seeds = torch.tensor([2**63 - 1, 0], dtype=torch.uint64)
    fa.gaussian_perturb(torch.zeros(2, 4), std=1.0, seed=seeds, step=0, backend="torch")
    with pytest.raises(ValueError, match="step"):
        fa.gaussian_perturb(x, std=1.0, seed=0, step=2**61 - 1, backend="torch")
    y = torch.zeros(1, 1, 1)  # L*V = 1: the largest step is 2**63 - 2 (so that Adam's t = step + 1 fits)
    fa.sea_step(y, y, lr=0.1, noise_std=1.0, seed=0, step=2**63 - 2, optimizer="adam",
                state=(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1)), backend="torch")
    with pytest.raises(ValueError, match="step"):
        fa.sea_step(y, y, lr=0.1, noise_std=1.0, seed=0, step=2**63 - 1, backend="torch")


def test_rejected_call_leaves_out_udot_and_state_untouched():
    h, u = torch.randn(2, 3, 5), torch.randn(2, 4, 5)
    out, udot = torch.full((2, 3, 5), 7.0), torch.full((2, 3), 3.0)
    with pytest.raises(ValueError):
        fa.aisp_perturb(h, u, sigma=0.5, seed=-1, iteration=0, step=0, udot=udot, out=out, backend="torch")
    assert torch.all(out == 7.0) and torch.all(udot == 3.0)
    m, v = torch.full((1, 2, 3), 1.0), torch.full((1, 2, 3), 2.0)
    y_out = torch.full((1, 2, 3), 5.0)
    with pytest.raises(ValueError):
        fa.sea_step(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), lr=0.1, noise_std=0.0, seed=0, step=2**62,
                    optimizer="adam", state=(m, v), out=y_out, backend="torch")
    assert torch.all(m == 1.0) and torch.all(v == 2.0) and torch.all(y_out == 5.0)


# ----------------------------------------------------------------------------- every real backend
@pytest.mark.parametrize("device,backend", BACKENDS)
def test_real_backends_reject_bad_arguments(device, backend):
    """A few cases against each real backend, plus its dtype rules (float64 only on torch)."""
    kw = _perturb_kwargs(device)
    _raises(ValueError, "sigma", lambda: fa.aisp_perturb(kw["h"], kw["u"], sigma=NAN, seed=0, iteration=0, step=0,
                                                        backend=backend))
    _raises(ValueError, "seed", lambda: fa.aisp_perturb(kw["h"], kw["u"], sigma=1.0, seed=2**63, iteration=0,
                                                       step=0, backend=backend))
    kw = _update_kwargs(device)
    _raises(ValueError, "rewards", lambda: fa.aisp_update(kw["u"], torch.full((B, N), -INF, device=device),
                                                         sigma=1.0, lam=1.0, alpha=0.5, seed=0, iteration=0,
                                                         backend=backend))
    kw = _sea_kwargs(device, "adam")
    _raises(TypeError, "state", lambda: fa.sea_step(kw["y"], kw["grad"], lr=0.1, noise_std=0.0, seed=0, step=0,
                                                   optimizer="adam", state=(kw["state"][0].half(), kw["state"][1]),
                                                   backend=backend))
    x64 = torch.zeros(B, 4, dtype=torch.float64, device=device)
    if backend == "torch":
        fa.gaussian_perturb(x64, std=1.0, seed=0, step=0, backend=backend)
    else:
        _raises(TypeError, "x", lambda: fa.gaussian_perturb(x64, std=1.0, seed=0, step=0, backend=backend))
        _raises(TypeError, "udot", lambda: fa.aisp_perturb(
            torch.zeros(B, N, D, device=device), torch.zeros(B, TAU, D, device=device), sigma=1.0, seed=0,
            iteration=0, step=0, udot=torch.zeros(B, N, dtype=torch.float64, device=device), backend=backend))
        _raises(TypeError, "state", lambda: fa.sea_step(
            kw["y"], kw["grad"], lr=0.1, noise_std=0.0, seed=0, step=0, optimizer="adam",
            state=(kw["state"][0].double(), kw["state"][1].double()), backend=backend))


# ----------------------------------------------------------------------------- inputs never modified
def _snapshot(kw):
    return {k: (v.clone() if isinstance(v, torch.Tensor) else tuple(t.clone() for t in v) if isinstance(v, tuple)
                else v) for k, v in kw.items()}


def _assert_same(before, after, keys):
    for k in keys:
        a, b = before[k], after[k]
        pairs = zip(a, b) if isinstance(a, tuple) else [(a, b)]
        for x, y in pairs:
            assert torch.equal(x, y), f"input {k!r} was modified"


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_inputs_never_modified(device, backend):
    udot = torch.full((B, N), 0.5, device=device)
    active = torch.tensor([[True, False, True], [False, True, True]], device=device)
    kw = dict(_perturb_kwargs(device), udot=udot, active=active, out=torch.zeros(B, N, D, device=device))
    before = _snapshot(kw)
    z = _call("aisp_perturb", dict(kw, backend=backend))
    _assert_same(before, kw, ["h", "u", "active"])
    assert z is kw["out"] and not torch.equal(z, before["out"])
    assert not torch.equal(udot, before["udot"]) and torch.equal(udot[~active], before["udot"][~active])

    lengths = torch.tensor([[TAU, 1, 0], [2, TAU, 3]], device=device)
    kw = dict(_update_kwargs(device), lengths=lengths, udot=randn((B, N), torch.float32, device, 9))
    before = _snapshot(kw)
    _call("aisp_update", dict(kw, backend=backend))
    _assert_same(before, kw, ["u", "rewards", "lengths", "udot"])

    for opt in ("sgld", "adam"):
        kw = _sea_kwargs(device, opt)
        before = _snapshot(kw)
        _call("sea_adam" if opt == "adam" else "sea_step", dict(kw, backend=backend))
        _assert_same(before, kw, ["y", "grad"])
        if opt == "adam":
            assert not torch.equal(kw["state"][0], before["state"][0]), "adam state must be updated in place"

    kw = _gauss_kwargs(device)
    before = _snapshot(kw)
    _call("gaussian_perturb", dict(kw, backend=backend))
    _assert_same(before, kw, ["x"])


# ----------------------------------------------------------------------------- strides
def _layouts(t: torch.Tensor):
    """Non-contiguous views holding the same values as 3-D ``t``: transposed, strided slice, permuted."""
    yield "transposed", t.transpose(-1, -2).contiguous().transpose(-1, -2)
    wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    yield "strided", wide[..., ::2]
    yield "permuted", t.permute(2, 1, 0).contiguous().permute(2, 1, 0)


def _stride0(shape, dtype, device, seed, dim):
    """A stride-0 (expanded) tensor along ``dim`` and its contiguous copy."""
    base_shape = list(shape)
    base_shape[dim] = 1
    e = randn(tuple(base_shape), dtype, device, seed).expand(*shape)
    assert e.stride()[dim] == 0
    return e, e.contiguous()


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_stride0_and_noncontiguous_inputs_equal_contiguous(device, backend):
    f32 = torch.float32
    # aisp_perturb: h shared across rollouts (stride 0 on n), u shared across prompts (stride 0 on B)
    h_e, h_c = _stride0((B, N, D), f32, device, 11, 1)
    u_e, u_c = _stride0((B, TAU, D), f32, device, 12, 0)
    active_e = torch.tensor([True, False, True], device=device).expand(B, N)
    common = dict(sigma=0.5, seed=torch.tensor([3, 2**40], device=device), iteration=7, step=2, backend=backend)
    udot_a, udot_b = torch.zeros(B, N, device=device), torch.zeros(B, N, device=device)
    z_e = fa.aisp_perturb(h_e, u_e, udot=udot_a, active=active_e, **common)
    z_c = fa.aisp_perturb(h_c, u_c, udot=udot_b, active=active_e.contiguous(), **common)
    assert torch.equal(z_e, z_c) and torch.equal(udot_a, udot_b)
    for (name, h_v), (_, u_v) in zip(_layouts(h_c), _layouts(u_c)):
        assert not h_v.is_contiguous()
        assert torch.equal(fa.aisp_perturb(h_v, u_v, **common), z_c), name
    # non-contiguous udot accumulator and out=
    udot_nc = torch.zeros(N, B, device=device).t()
    out_nc = torch.empty(B, D, N, device=device).transpose(1, 2)
    res = fa.aisp_perturb(h_c, u_c, udot=udot_nc, active=active_e, out=out_nc, **common)
    assert res is out_nc and torch.equal(out_nc, z_c) and torch.equal(udot_nc, udot_b)

    # aisp_update: stride-0 control, rewards and lengths
    rewards_e = torch.tensor([0.3, -0.2, 0.1], device=device).expand(B, N)
    lengths_e = torch.tensor([TAU, 1, 3], device=device).expand(B, N)
    kw = dict(sigma=0.5, lam=0.3, alpha=0.7, seed=5, iteration=3, backend=backend)
    ue, we = fa.aisp_update(u_e, rewards_e, lengths=lengths_e, **kw)
    uc, wc = fa.aisp_update(u_c, rewards_e.contiguous(), lengths=lengths_e.contiguous(), **kw)
    assert torch.equal(ue, uc) and torch.equal(we, wc)
    for name, u_v in _layouts(u_c):
        uv, wv = fa.aisp_update(u_v, rewards_e.t().contiguous().t(), lengths=lengths_e.t().contiguous().t(), **kw)
        assert torch.equal(uv, uc) and torch.equal(wv, wc), name
    out_nc = torch.empty(B, D, TAU, device=device).transpose(1, 2)
    res, _ = fa.aisp_update(u_c, rewards_e, lengths=lengths_e, out=out_nc, **kw)
    assert res is out_nc and torch.equal(out_nc, uc)

    # sea_step: stride-0 y (same logits for every chain) and gradient broadcast over rows
    y_e, y_c = _stride0((B, L, VOCAB), f32, device, 13, 0)
    g_e, g_c = _stride0((B, L, VOCAB), f32, device, 14, 1)
    for clip in ("chain", "row", "global"):
        skw = dict(lr=0.2, noise_std=0.1, max_norm=0.5, clip=clip, seed=9, step=4, backend=backend)
        ye, ne = fa.sea_step(y_e, g_e, **skw)
        yc, nc = fa.sea_step(y_c, g_c, **skw)
        assert torch.equal(ye, yc) and torch.equal(ne, nc), clip
        for (name, y_v), (_, g_v) in zip(_layouts(y_c), _layouts(g_c)):
            yv, nv = fa.sea_step(y_v, g_v, **skw)
            assert torch.equal(yv, yc) and torch.equal(nv, nc), (clip, name)
    # adam with non-contiguous state: updated in place like contiguous state
    m_nc = torch.zeros(B, VOCAB, L, device=device).transpose(1, 2)
    v_nc = torch.zeros(B, VOCAB, L, device=device).transpose(1, 2)
    m_c, v_c = torch.zeros(B, L, VOCAB, device=device), torch.zeros(B, L, VOCAB, device=device)
    akw = dict(lr=0.1, noise_std=0.01, max_norm=1.0, seed=1, step=0, optimizer="adam", backend=backend)
    ya, _ = fa.sea_step(y_e, g_e, state=(m_nc, v_nc), **akw)
    yb, _ = fa.sea_step(y_c, g_c, state=(m_c, v_c), **akw)
    assert torch.equal(ya, yb) and torch.equal(m_nc, m_c) and torch.equal(v_nc, v_c)
    assert bool((m_c != 0).any())

    # gaussian_perturb
    x_e, x_c = _stride0((B, L, VOCAB), f32, device, 15, 0)
    gkw = dict(std=0.3, seed=4, step=2**31, backend=backend)
    xc = fa.gaussian_perturb(x_c, **gkw)
    assert torch.equal(fa.gaussian_perturb(x_e, **gkw), xc)
    for name, x_v in _layouts(x_c):
        assert torch.equal(fa.gaussian_perturb(x_v, **gkw), xc), name


def test_outputs_never_require_grad():
    """The ops are not differentiable: results carry no autograd history, whatever the inputs."""
    h = torch.randn(1, 2, 3, requires_grad=True)
    u = torch.randn(1, 2, 3, requires_grad=True)
    z = fa.aisp_perturb(h, u, sigma=1.0, seed=0, iteration=0, step=0, backend="torch")
    u_new, w = fa.aisp_update(u, torch.randn(1, 2), sigma=1.0, lam=1.0, alpha=0.5, seed=0, iteration=0,
                              backend="torch")
    y_new, norm = fa.sea_step(h, u, lr=0.1, noise_std=0.1, max_norm=1.0, seed=0, step=0, backend="torch")
    x_new = fa.gaussian_perturb(h, std=1.0, seed=0, step=0, backend="torch")
    for t in (z, u_new, w, y_new, norm, x_new):
        assert not t.requires_grad and t.grad_fn is None


# ----------------------------------------------------------------------------- algorithm entry points
# Bad arguments to aisp_generate / sea_generate / bon_generate raise before the model runs once. The
# model's forward is wrapped with a counter to prove it. (Their validation lives in fastalign/methods/aisp.py,
# sea.py, bon.py and fastalign/methods/_common.py.)

ALGO_CASES = [
    ("aisp", dict(n=0), ValueError, "n"),
    ("aisp", dict(n=2.0), ValueError, "n"),
    ("aisp", dict(iterations=0), ValueError, "iterations"),
    ("aisp", dict(sigma=0.0), ValueError, "sigma"),
    ("aisp", dict(sigma=NAN), ValueError, "sigma"),
    ("aisp", dict(lam=-0.3), ValueError, "lam"),
    ("aisp", dict(lam=INF), ValueError, "lam"),
    ("aisp", dict(alpha=1.5), ValueError, "alpha"),
    ("aisp", dict(alpha=-0.1), ValueError, "alpha"),
    ("aisp", dict(horizon=9), ValueError, "horizon"),
    ("aisp", dict(max_new_tokens=0), ValueError, "max_new_tokens"),
    ("aisp", dict(seed=-1), ValueError, "seed"),
    ("aisp", dict(seed=[1, 2]), ValueError, "seed"),
    ("aisp", dict(seed=1.5), TypeError, "seed"),
    ("aisp", dict(prompts=[]), ValueError, "prompts"),
    ("aisp", dict(prompts=["a", 3]), TypeError, "prompts"),
    ("aisp", dict(reward=3), TypeError, "reward"),
    ("aisp", dict(backend="nope"), ValueError, "backend"),
    ("aisp", dict(seed=2**64), ValueError, "seed"),
    ("sea", dict(chains=0), ValueError, "chains"),
    ("sea", dict(steps=-1), ValueError, "steps"),
    ("sea", dict(lr=-0.1), ValueError, "lr"),
    ("sea", dict(lr=NAN), ValueError, "lr"),
    ("sea", dict(optimizer="sgd"), ValueError, "optimizer"),
    ("sea", dict(noise_std=-0.1), ValueError, "noise_std"),
    ("sea", dict(noise_std=(0.1, -1.0)), ValueError, "noise_std"),
    ("sea", dict(init_temp=0.0), ValueError, "init_temp"),
    ("sea", dict(seed=-1), ValueError, "seed"),
    ("sea", dict(max_new_tokens=0), ValueError, "max_new_tokens"),
    ("sea", dict(max_norm=0.0), ValueError, "max_norm"),
    ("sea", dict(max_norm=NAN), ValueError, "max_norm"),
    ("sea", dict(clip="l2"), ValueError, "clip"),
    ("sea", dict(backend="nope"), ValueError, "backend"),
    ("bon", dict(n=0), ValueError, "n"),
    ("bon", dict(temperature=-1.0), ValueError, "temperature"),
    ("bon", dict(top_p=0.0), ValueError, "top_p"),
    ("bon", dict(top_p=1.5), ValueError, "top_p"),
    ("bon", dict(batch_size=0), ValueError, "batch_size"),
    ("bon", dict(seed=-1), ValueError, "seed"),
]


@pytest.fixture(scope="module")
def tiny_lm():
    pytest.importorskip("transformers")
    import _tiny

    model = _tiny.model("llama")
    calls = []
    forward = model.forward

    @functools.wraps(forward)  # the same signature: the engine reads it to call the model
    def counting_forward(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    model.forward = counting_forward
    yield model, _tiny.tokenizer(), _tiny.SoftCountReward(), calls
    model.forward = forward


def _algo_call(algo, model, tok, reward, overrides):
    kw = dict(overrides)
    prompts = kw.pop("prompts", ["w1 w2"])
    reward = kw.pop("reward", reward)
    if algo == "aisp":
        from fastalign.methods.aisp import aisp_generate as fn
        base = dict(n=2, iterations=1, max_new_tokens=3)
    elif algo == "sea":
        from fastalign.methods.sea import sea_generate as fn
        base = dict(steps=1, max_new_tokens=3)
    else:
        from fastalign.methods.bon import bon_generate as fn
        base = dict(n=2, max_new_tokens=3)
    return fn(model, tok, prompts, reward, **{**base, "progress": False, **kw})


@pytest.mark.parametrize("algo,overrides,exc,argname", ALGO_CASES,
                         ids=lambda v: ",".join(f"{k}={v[k]!r}" for k in v) if isinstance(v, dict)
                         else v.__name__ if isinstance(v, type) else str(v))
def test_algorithm_bad_argument_raises_before_the_model_runs(tiny_lm, algo, overrides, exc, argname):
    model, tok, reward, calls = tiny_lm
    calls.clear()
    _raises(exc, argname, lambda: _algo_call(algo, model, tok, reward, overrides))
    assert not calls, f"the model ran {len(calls)} forward pass(es) before the bad argument was reported"


def test_algorithm_valid_calls_run(tiny_lm):
    model, tok, reward, calls = tiny_lm
    for algo in ("aisp", "sea", "bon"):
        calls.clear()
        _algo_call(algo, model, tok, reward, {})
        assert calls, algo


# ------------------------------------------------------------------ prompts past the model's context
# The tiny llama's context is 256 positions (max_position_embeddings). A prompt whose own tokens +
# max_new_tokens exceed it is refused before any forward, naming the prompt, its count and the limit;
# truncate_prompt=True keeps its last tokens instead (fastalign/engine/_context.py).
LONG = " ".join(f"w{i % 61}" for i in range(300))  # 300 tokens with the tiny word tokenizer


@pytest.mark.parametrize("algo", ["aisp", "bon", "sea"])
@pytest.mark.parametrize("prompts, max_new_tokens, needles", [
    (["w1", LONG], 3, ["prompts[1]", "300 prompt tokens", "256", "max_position_embeddings", "truncate_prompt=True"]),
    # 250 tokens fit alone; with 8 new tokens they do not (the padded width of the batch is not counted)
    (["w1 w2", " ".join(["w3"] * 250)], 8, ["prompts[1]", "250 prompt tokens + 8 new tokens", "at most 248"]),
    (["w1"], 256, ["max_new_tokens", "no room", "at most 255"]),
])
def test_prompt_past_the_context_raises_before_the_model_runs(tiny_lm, algo, prompts, max_new_tokens, needles):
    model, tok, reward, calls = tiny_lm
    calls.clear()
    with pytest.raises(ValueError) as info:
        _algo_call(algo, model, tok, reward, dict(prompts=prompts, max_new_tokens=max_new_tokens))
    msg = str(info.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    assert not calls, f"the model ran {len(calls)} forward pass(es) before the long prompt was reported"


@pytest.mark.parametrize("algo", ["aisp", "bon", "sea"])
def test_prompt_that_just_fits_runs(tiny_lm, algo):
    model, tok, reward, calls = tiny_lm
    calls.clear()
    _algo_call(algo, model, tok, reward, dict(prompts=[" ".join(["w3"] * 253)], max_new_tokens=3))
    assert calls


def test_truncate_prompt_must_be_a_bool(tiny_lm):
    model, tok, reward, calls = tiny_lm
    with pytest.raises(TypeError, match="truncate_prompt"):
        _algo_call("aisp", model, tok, reward, dict(prompts=[LONG], truncate_prompt="yes"))


@pytest.mark.parametrize("algo", ["aisp", "bon", "sea"])
def test_truncate_prompt_keeps_the_last_tokens_and_equals_the_cut_prompt_run_directly(tiny_lm, algo):
    """truncate_prompt=True: a warning names the prompt and the counts; the prompt aligned is the original's
    last 256 - max_new_tokens tokens (in the result's extra; its prompt stays the one given); the answer
    equals aligning that cut text directly."""
    from fastalign.engine._context import PromptTruncatedWarning

    model, tok, reward, _ = tiny_lm
    with pytest.warns(PromptTruncatedWarning, match=r"prompts\[1\]: truncated from the left to its last 252 of 300"):
        cut = _algo_call(algo, model, tok, reward, dict(prompts=["w1 w2", LONG], max_new_tokens=4, truncate_prompt=True))
    kept = " ".join(LONG.split()[-252:])
    assert cut[1].prompt == LONG and cut[0].prompt == "w1 w2"  # the prompts as given
    assert {k: cut[1].extra[k] for k in ("truncated_prompt", "prompt_tokens", "prompt_tokens_kept")} == \
        {"truncated_prompt": kept, "prompt_tokens": 300, "prompt_tokens_kept": 252}
    assert "truncated_prompt" not in cut[0].extra
    direct = _algo_call(algo, model, tok, reward, dict(prompts=["w1 w2", kept], max_new_tokens=4))
    for a, b in zip(cut, direct):
        assert (a.response, a.response_ids, a.reward, a.trace_mean) == (b.response, b.response_ids, b.reward,
                                                                         b.trace_mean)


def test_truncate_prompt_leaves_the_chat_template_whole():
    """With a chat template only the prompt's own tokens are cut: the template's header and generation
    prompt stay, and the cut text re-encodes to the ids the model reads."""
    import copy

    import _tiny
    from fastalign.engine import encoding

    tok = copy.deepcopy(_tiny.tokenizer())
    tok.chat_template = "w60 {% for m in messages %}{{ m['content'] }}{% endfor %} w59 w58"
    text, ids = encoding.truncate_prompt(tok, LONG, 100)
    assert len(ids) == 100 and text.split() == LONG.split()[-97:]
    assert encoding.prompt_token_ids(tok, [text]) == [ids]
    assert tok.convert_ids_to_tokens(ids[:1] + ids[-2:]) == ["w60", "w59", "w58"]
    with pytest.raises(ValueError, match="chat template alone"):
        encoding.truncate_prompt(tok, LONG, 3)


def _config(**kw):
    import transformers

    return transformers.LlamaConfig(**kw)


@pytest.mark.parametrize("make, tokens, source", [
    (lambda: _config(max_position_embeddings=4096), 4096, "max_position_embeddings"),
    (lambda: __import__("transformers").GPT2Config(n_positions=1024), 1024, "max_position_embeddings"),
    (lambda: type("C", (), {"n_ctx": 2048})(), 2048, "n_ctx"),
    # a sliding window is no limit
    (lambda: __import__("transformers").MistralConfig(max_position_embeddings=32768, sliding_window=4096),
     32768, "max_position_embeddings"),
    # YaRN switched on over the pre-trained length (Qwen2.5's documented way): factor x original
    (lambda: _config(max_position_embeddings=32768, rope_scaling={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}), 131072, "yarn"),
    # the config already holds the extended length (Llama 3.1)
    (lambda: _config(max_position_embeddings=131072, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0}), 131072, "max_position_embeddings"),
    # dynamic NTK grows past max_position_embeddings: factor x it
    (lambda: _config(max_position_embeddings=2048, rope_scaling={"rope_type": "dynamic", "factor": 2.0}), 4096,
     "dynamic"),
    # linear without the pre-trained length: the config's number
    (lambda: _config(max_position_embeddings=2048, rope_scaling={"rope_type": "linear", "factor": 4.0}), 2048,
     "max_position_embeddings"),
])
def test_context_limit_rules(make, tokens, source):
    pytest.importorskip("transformers")
    from fastalign.engine._context import context_limit

    limit = context_limit(make())
    assert limit.tokens == tokens and source in limit.source, limit


def test_models_without_a_limit_take_any_prompt():
    import transformers

    from fastalign.engine._context import check_prompt_lengths, context_limit

    assert context_limit(transformers.MambaConfig()) is None and context_limit(None) is None
    assert check_prompt_lengths([10**6], None, 10**6) == [None]


def test_input_error_types_are_value_and_type_errors():
    assert issubclass(fa.InputError, ValueError) and not issubclass(fa.InputError, TypeError)
    assert issubclass(fa.InputTypeError, fa.InputError) and issubclass(fa.InputTypeError, TypeError)
    from fastalign import errors

    assert (errors.InputError, errors.InputTypeError) == (fa.InputError, fa.InputTypeError)


@pytest.mark.parametrize("module", ["ops._validate", "_files", "cli._inputs", "engine._context",
                                    "methods._common", "engine.encoding", "engine.sampling"])
def test_validation_modules_raise_only_fastalign_input_errors(module):
    """Every raise of a module whose job is validation is bad input (a plain ValueError there would read
    as a bug to the command line: exit 1 with a traceback)."""
    import inspect

    source = inspect.getsource(__import__(f"fastalign.{module}", fromlist=["_"]))
    assert not re.findall(r"raise (ValueError|TypeError)\(", source)

