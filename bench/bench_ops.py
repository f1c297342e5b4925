"""Microbenchmarks of the fused ops against what a user writes by hand (``fastalign bench``).

Providers: ``naive`` (bench/naive.py, :mod:`fastalign._bench.naive`: ``torch.randn`` noise tensors and separate
eager kernels), ``naive+torch.compile`` (the same functions through ``torch.compile``), ``torch``
(the reference backend), and the fused backends ``cpu``, ``triton``, ``cuda`` where they run on the
benchmark device (CUDA when present, else CPU; Triton's CPU interpreter is a test mode and is not
benchmarked).

Cases (issue 4):

* ``aisp_perturb``: one decode step, B=1 n=32, d=2048 and d=4096 (tau=64, step 5);
* ``aisp_iteration``: the op work of one whole AISP iteration, d=2048 n=32, tau=64 and 256: tau
  perturb steps (fused: accumulating ``udot``; naive: storing the ``[B, n, tau, d]`` noise tensor),
  then the update;
* ``sea_step``: sgld with chain clipping, B=4 L=64, V=49152 (SmolLM2) and V=128256 (Llama-3);
* ``eager_overhead`` (issue 12): what one eager call of ``aisp_perturb`` costs above its kernel, at
  B=1 n=32 d=2048 and at a tiny shape (B=1 n=1 d=8), with the device's default backend. Providers,
  measured interleaved in one process: ``kernel only`` (the backend function on normalised tensors),
  ``torch.ops (no checks)`` (the registered operator through the dispatcher, normalised arguments),
  ``fastalign op`` (the public op: validation, then the kernel directly; what users call) and
  ``fastalign op via torch.ops`` (validation, then the operator: what routing eager calls through the
  dispatcher would cost). The note gives each provider's time above ``kernel only`` in microseconds;
* ``compiled_loop`` (issue 12): one step of a small user loop around each op (RMS norm -> aisp_perturb
  with udot -> linear head -> argmax; standardised rewards -> aisp_update; softmax-gradient ->
  sea_step with Adam; gaussian_perturb -> softmax), eager against ``torch.compile(fullgraph=True)`` of
  the same step, per fused backend that runs on the device (the op opaque, or traced through
  ``torch.library.triton_op`` for the triton backend on CUDA). Step counters and seeds are device
  tensors, so one graph serves every step; ``speedup`` is eager / compiled; eager and compiled are
  measured interleaved.

Each case runs with one thread and with all threads (``--threads``). Reported per row: median and
minimum time, achieved bandwidth (GB/s of the bytes the op must move, the same byte count for every
provider), normals/s (distinct normals the op needs), peak memory allocated during one call, and the
speedup against ``naive``. Beside them, measured in the same run: the machine's copy bandwidth and
``torch.randn`` throughput, and each case's memory floor (its bytes / copy bandwidth).

Run ``python bench/bench_ops.py --help`` or ``fastalign bench --help``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

PROVIDERS = ("naive", "naive+torch.compile", "torch", "cpu", "triton", "cuda")
OPS = ("aisp_perturb", "aisp_iteration", "aisp_update", "sea_step", "eager_overhead", "compiled_loop")
ROW_KEYS = ("op", "provider", "shape", "dtype", "threads", "ms_median", "ms_min", "gbps", "normals_per_s",
            "peak_mem_mb", "speedup", "floor_ms", "pct_copy_bw", "note")
#: shape sets: ``cpu`` (issue 4's shapes, sized for a CPU) and ``gpu-roofline`` (issue 17's: large enough
#: that an H100/H200-class GPU is bound by memory bandwidth or the stream, compared to its copy bandwidth)
PRESETS = ("cpu", "gpu-roofline")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# torch's reference backend does Philox in int64 tensor arithmetic: at SEA sizes one call takes many
# seconds and gigabytes. It is benchmarked only up to this many elements unless named explicitly.
_REFERENCE_MAX_ELEMENTS = 4 * 1024 * 1024


@dataclass
class Case:
    op: str
    shape: str
    dims: dict
    bytes_moved: int
    normals: int
    make: Callable[[str, torch.device, torch.dtype], Callable[[], object]]  # provider -> timed fn
    elements: int = 0
    notes: dict = field(default_factory=dict)
    #: providers of this case when it does not compare the standard PROVIDERS (provider -> why not, or None)
    providers: Callable[[torch.device, set], dict[str, str | None]] | None = None
    #: provider -> the provider whose time its speedup divides (None: no speedup column)
    baseline: Callable[[str], str | None] = lambda provider: "naive"
    #: measure the providers in alternating rounds (per-call overheads) instead of one after another
    interleave: bool = False
    #: extra note per row: (provider, median ms, every provider's measurement) -> text
    note_fn: Callable[[str, float, dict], str] | None = None


# --------------------------------------------------------------------------------------------- cases
def _aisp_perturb_case(B, n, d, tau=64, step=5, es=4) -> Case:
    def make(provider, device, dtype):
        from fastalign import ops
        from fastalign._bench import naive

        g = torch.Generator().manual_seed(0)
        h = torch.randn(B, n, d, generator=g).to(device, dtype)
        u = (0.1 * torch.randn(B, tau, d, generator=g)).to(device)
        out = torch.empty_like(h)
        if provider == "naive":
            return lambda: naive.aisp_perturb(h, u, sigma=0.5, step=step)
        if provider == "naive+torch.compile":
            fn = torch.compile(naive.aisp_perturb, dynamic=False)
            return lambda: fn(h, u, sigma=0.5, step=step)
        return lambda: ops.aisp_perturb(h, u, sigma=0.5, seed=1, iteration=0, step=step, out=out, backend=provider)

    return Case("aisp_perturb", f"B={B} n={n} d={d}", dict(B=B, n=n, d=d, tau=tau),
                bytes_moved=2 * B * n * d * es + B * d * 4, normals=B * n * d, make=make, elements=B * n * d)


def _aisp_iteration_case(B, n, tau, d, es=4) -> Case:
    def make(provider, device, dtype):
        from fastalign import ops
        from fastalign._bench import naive

        g = torch.Generator().manual_seed(0)
        h = torch.randn(B, n, d, generator=g).to(device, dtype)
        u = (0.1 * torch.randn(B, tau, d, generator=g)).to(device)
        rewards = torch.rand(B, n, generator=g).to(device)
        z = torch.empty_like(h)
        if provider in ("naive", "naive+torch.compile"):
            perturb, update = naive.aisp_perturb, naive.aisp_update
            if provider == "naive+torch.compile":
                perturb = torch.compile(perturb, dynamic=False)
                update = torch.compile(update, dynamic=False)

            def naive_iteration():
                noise = naive.aisp_noise_buffer(B, n, tau, d, device=device)
                for t in range(tau):
                    perturb(h, u, sigma=0.5, step=t, noise=noise)
                return update(u, rewards, sigma=0.5, lam=0.3, alpha=0.999, noise=noise)

            return naive_iteration

        def fused_iteration():
            udot = torch.zeros(B, n, device=device)
            for t in range(tau):
                ops.aisp_perturb(h, u, sigma=0.5, seed=1, iteration=0, step=t, udot=udot, out=z, backend=provider)
            return ops.aisp_update(u, rewards, sigma=0.5, lam=0.3, alpha=0.999, seed=1, iteration=0, udot=udot,
                                   backend=provider)

        return fused_iteration

    per_step = 2 * B * n * d * es + B * d * 4
    return Case("aisp_iteration", f"B={B} n={n} tau={tau} d={d}", dict(B=B, n=n, tau=tau, d=d),
                bytes_moved=tau * per_step + 2 * B * tau * d * 4, normals=B * n * tau * d, make=make,
                elements=B * n * tau * d)


def _aisp_update_case(B, n, tau, d, es=4) -> Case:
    """The update after an iteration whose ``udot`` was accumulated while decoding: fused, one pass that
    regenerates the ``n*tau*d`` normals of each prompt; naive, the einsum over the stored noise tensor."""
    def make(provider, device, dtype):
        from fastalign import ops
        from fastalign._bench import naive

        g = torch.Generator().manual_seed(0)
        u = (0.1 * torch.randn(B, tau, d, generator=g)).to(device, dtype)
        rewards = torch.rand(B, n, generator=g).to(device)
        udot = torch.randn(B, n, generator=g).to(device)
        kw = dict(sigma=0.5, lam=0.3, alpha=0.999)
        if provider in ("naive", "naive+torch.compile"):
            noise = naive.aisp_noise_buffer(B, n, tau, d, device=device).normal_()
            update = naive.aisp_update if provider == "naive" else torch.compile(naive.aisp_update, dynamic=False)
            return lambda: update(u, rewards, udot=udot, noise=noise, **kw)
        return lambda: ops.aisp_update(u, rewards, seed=1, iteration=0, udot=udot, backend=provider, **kw)

    noise_mb = B * n * tau * d * 4 / 2**20
    return Case("aisp_update", f"B={B} n={n} tau={tau} d={d}", dict(B=B, n=n, tau=tau, d=d),
                bytes_moved=2 * B * tau * d * es, normals=B * n * tau * d, make=make, elements=B * n * tau * d,
                note_fn=lambda provider, ms, measured: "" if provider.startswith("naive") else
                f"no {noise_mb:.0f} MB noise tensor stored (the naive pipeline's)")


def _sea_step_case(B, L, V, es=4) -> Case:
    def make(provider, device, dtype):
        from fastalign import ops
        from fastalign._bench import naive

        g = torch.Generator().manual_seed(0)
        y = torch.randn(B, L, V, generator=g).to(device, dtype)
        grad = (0.01 * torch.randn(B, L, V, generator=g)).to(device, dtype)
        out = torch.empty_like(y)
        kw = dict(lr=0.1, noise_std=0.01, max_norm=1.0, clip="chain")
        if provider == "naive":
            return lambda: naive.sea_step(y, grad, **kw)
        if provider == "naive+torch.compile":
            fn = torch.compile(naive.sea_step, dynamic=False)
            return lambda: fn(y, grad, **kw)
        return lambda: ops.sea_step(y, grad, seed=1, step=0, out=out, backend=provider, **kw)

    N = B * L * V
    return Case("sea_step", f"B={B} L={L} V={V}", dict(B=B, L=L, V=V),
                bytes_moved=4 * N * es, normals=N, make=make, elements=N)


#: eager_overhead providers, from the bare kernel call up to the public op routed through the dispatcher
OVERHEAD_PROVIDERS = ("kernel only", "torch.ops (no checks)", "fastalign op", "fastalign op via torch.ops")


def _default_backend(device: torch.device) -> tuple[str | None, str | None]:
    """(name of the backend "auto" picks on ``device``, None) or (None, why none runs)."""
    from fastalign import backends as registry

    try:
        return registry.resolve("auto", device.type)[0], None
    except registry.BackendUnavailableError as exc:
        return None, str(exc)


def _overhead_note(provider: str, med_ms: float, measured: dict) -> str:
    kernel = measured.get("kernel only")
    if kernel is None or provider == "kernel only":
        return ""
    return f"+{(med_ms - statistics.median(kernel[0])) * 1e3:.1f} us over kernel only"


def _eager_overhead_case(B, n, d, tau=64, step=5, es=4) -> Case:
    def providers(device, explicit):
        name, why = _default_backend(device)
        if name == "triton" and device.type == "cpu":
            why = "the Triton interpreter on CPU is a test mode, not benchmarked"
        return {p: why for p in OVERHEAD_PROVIDERS}

    def make(provider, device, dtype):
        from fastalign import backends as registry
        from fastalign import ops

        g = torch.Generator().manual_seed(0)
        h = torch.randn(B, n, d, generator=g).to(device, dtype)
        u = (0.1 * torch.randn(B, tau, d, generator=g)).to(device)
        out = torch.empty_like(h)
        kw = dict(sigma=0.5, seed=1, iteration=0, step=step, out=out)
        if provider == "fastalign op":
            return lambda: ops.aisp_perturb(h, u, **kw)
        if provider == "fastalign op via torch.ops":
            def via_operator():
                with ops._through_operators():
                    return ops.aisp_perturb(h, u, **kw)
            return via_operator
        name, module = registry.resolve("auto", device.type)
        seed = torch.arange(B, dtype=torch.int64, device=device) + 1
        iteration = torch.zeros(1, dtype=torch.int64, device=device)
        step_t = torch.full((1,), step, dtype=torch.int64, device=device)
        if provider == "torch.ops (no checks)":
            op = torch.ops.fastalign.aisp_perturb.default
            return lambda: op(h, u, seed, iteration, step_t, None, None, 0.5, name)
        return lambda: module.aisp_perturb(h, u, out, sigma=0.5, seed=seed, iteration=iteration, step=step_t,
                                           udot=None, active=None)

    return Case("eager_overhead", f"aisp_perturb B={B} n={n} d={d}", dict(B=B, n=n, d=d, tau=tau),
                bytes_moved=2 * B * n * d * es + B * d * 4, normals=B * n * d, make=make, elements=B * n * d,
                providers=providers, baseline=lambda provider: None, interleave=True, note_fn=_overhead_note)


def _loop_backends(device: torch.device, explicit: set) -> dict[str, str | None]:
    """Fused backends a compiled_loop row runs: cpu on CPU; cuda and triton on CUDA (as named by --provider)."""
    from fastalign import backends as registry

    names = ("cuda", "triton") if device.type == "cuda" else ("cpu",)
    if explicit & set(registry.names()):
        names = tuple(b for b in names if b in explicit)
    return {b: registry.availability(device.type).get(b) for b in names}


def _user_step(op: str, backend: str):
    """One step of a small user loop around ``op`` (a plain function, eager or for torch.compile)."""
    import torch.nn.functional as F

    import fastalign as fa

    if op == "aisp_perturb":
        def step_fn(h, norm_weight, u, udot, head, seed, step):
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * norm_weight     # final RMS norm
            z = fa.aisp_perturb(h, u, sigma=0.5, seed=seed, iteration=0, step=step, udot=udot, backend=backend)
            return F.linear(z, head).argmax(dim=-1)                                       # greedy tokens
    elif op == "aisp_update":
        def step_fn(u, rewards, udot, lengths, seed, iteration):
            r = (rewards - rewards.mean(-1, keepdim=True)) / (rewards.std(-1, keepdim=True) + 1e-6)
            return fa.aisp_update(u, r, sigma=0.5, lam=0.5, alpha=0.999, seed=seed, iteration=iteration,
                                  lengths=lengths, udot=udot, backend=backend)
    elif op == "sea_step":
        def step_fn(y, target, m, v, seed, step):
            grad = torch.softmax(y, dim=-1) - target          # gradient of cross-entropy to a target distribution
            return fa.sea_step(y, grad, lr=0.1, noise_std=0.01, max_norm=1.0, clip="chain", seed=seed, step=step,
                               optimizer="adam", state=(m, v), backend=backend)
    else:
        def step_fn(y, seed, step):
            return torch.softmax(fa.gaussian_perturb(y, std=0.1, seed=seed, step=step, backend=backend), dim=-1)
    return step_fn


def _user_step_inputs(op: str, dims: dict, device, dtype) -> tuple:
    g = torch.Generator().manual_seed(0)

    def rand(*shape, scale=1.0, dt=torch.float32):
        return (scale * torch.randn(*shape, generator=g)).to(device, dt)

    B = dims["B"]
    seed = torch.arange(B, dtype=torch.int64, device=device) + 1
    counter = torch.full((1,), 3, dtype=torch.int64, device=device)
    if op == "aisp_perturb":
        n, d, tau, vocab = dims["n"], dims["d"], dims["tau"], dims["vocab"]
        return (rand(B, n, d, scale=50.0, dt=dtype), rand(d, dt=dtype), rand(B, tau, d, scale=0.1),
                torch.zeros(B, n, device=device), rand(vocab, d, scale=0.05, dt=dtype), seed, counter)
    if op == "aisp_update":
        n, d, tau = dims["n"], dims["d"], dims["tau"]
        lengths = torch.randint(1, tau + 1, (B, n), generator=g).to(device)
        return rand(B, tau, d, scale=0.1), rand(B, n), rand(B, n), lengths, seed, counter
    L, V = dims["L"], dims["V"]
    y = rand(B, L, V, dt=dtype)
    if op == "sea_step":
        target = torch.softmax(rand(B, L, V), dim=-1).to(dtype)
        return y, target, torch.zeros(B, L, V, device=device), torch.zeros(B, L, V, device=device), seed, counter
    return y, seed, counter


def _compiled_loop_case(op: str, dims: dict, bytes_moved: int, normals: int) -> Case:
    modes = ("eager", "torch.compile")

    def providers(device, explicit):
        return {f"{b} {mode}": why for b, why in _loop_backends(device, explicit).items() for mode in modes}

    def make(provider, device, dtype):
        backend, mode = provider.split(" ", 1)
        fn = _user_step(op, backend)
        if mode == "torch.compile":
            fn = torch.compile(fn, fullgraph=True)
        inputs = _user_step_inputs(op, dims, device, dtype)
        return lambda: fn(*inputs)

    shape = " ".join(f"{k}={v}" for k, v in dims.items())
    return Case(f"compiled_loop:{op}", shape, dims, bytes_moved=bytes_moved, normals=normals, make=make,
                providers=providers, baseline=lambda provider: provider.split(" ")[0] + " eager", interleave=True)


def _compiled_loop_cases(quick: bool, es: int) -> list[Case]:
    if quick:
        p, u, s = dict(B=1, n=4, tau=4, d=64, vocab=32), dict(B=1, n=4, tau=4, d=64), dict(B=2, L=4, V=256)
    else:
        p, u, s = dict(B=1, n=32, tau=64, d=2048, vocab=512), dict(B=1, n=32, tau=64, d=2048), dict(B=4, L=64, V=8192)
    pn, un, sn = p["B"] * p["n"] * p["d"], u["B"] * u["n"] * u["tau"] * u["d"], s["B"] * s["L"] * s["V"]
    return [
        _compiled_loop_case("aisp_perturb", p, 2 * pn * es + p["B"] * p["d"] * 4, pn),
        _compiled_loop_case("aisp_update", u, 2 * u["B"] * u["tau"] * u["d"] * 4, un),
        _compiled_loop_case("sea_step", s, 4 * sn * es + 4 * sn * 4, sn),
        _compiled_loop_case("gaussian_perturb", s, 2 * sn * es, sn),
    ]


def cases(ops=None, quick=False, dtype=torch.float32, preset="cpu") -> list[Case]:
    """The benchmark cases (issue 4's shapes, issue 17's GPU roofline shapes with
    ``preset="gpu-roofline"``, or tiny ones with ``quick``); byte counts use the element size of the
    storage ``dtype``."""
    es = torch.finfo(dtype).bits // 8
    if preset not in PRESETS:
        from fastalign.errors import InputError  # bad input: exit 2 under the CLI
        raise InputError(f"--preset: expected one of {list(PRESETS)}, got {preset!r}")
    if preset == "gpu-roofline" and not quick:
        all_cases = [_sea_step_case(4, 64, 128256, es=es), _aisp_perturb_case(64, 32, 4096, es=es),
                     _aisp_update_case(8, 32, 128, 4096, es=es)]
        return [c for c in all_cases if ops is None or c.op in ops]
    if quick:
        all_cases = [_aisp_perturb_case(1, 4, 64, tau=8, es=es), _aisp_iteration_case(1, 4, 8, 64, es=es),
                     _aisp_update_case(1, 4, 8, 64, es=es), _sea_step_case(2, 4, 256, es=es),
                     _eager_overhead_case(1, 4, 64, tau=8, es=es)]
    else:
        all_cases = [
            _aisp_perturb_case(1, 32, 2048, es=es), _aisp_perturb_case(1, 32, 4096, es=es),
            _aisp_iteration_case(1, 32, 64, 2048, es=es), _aisp_iteration_case(1, 32, 256, 2048, es=es),
            _aisp_update_case(1, 32, 64, 2048, es=es),
            _sea_step_case(4, 64, 49152, es=es), _sea_step_case(4, 64, 128256, es=es),
            _eager_overhead_case(1, 32, 2048, es=es), _eager_overhead_case(1, 1, 8, es=es),
        ]
    all_cases += _compiled_loop_cases(quick, es)
    return [c for c in all_cases if ops is None or c.op.split(":")[0] in ops]


# ------------------------------------------------------------------------------------- measurement
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn, device, *, warmup=1, min_repeats=5, max_repeats=200, budget_s=1.0) -> list[float]:
    """Wall times in ms of ``fn()`` (after ``warmup`` calls): at least ``min_repeats`` calls, more
    while the total stays within ``budget_s``."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def peak_memory_bytes(fn, device) -> int | None:
    """Peak bytes allocated by one call of ``fn`` beyond what was allocated before it.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the allocation and free events of the torch
    profiler (``profile_memory=True``) in time order, summed; this counts every allocation made
    through torch's CPU allocator, including those of C++ extensions and compiled code.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del result
        return int(peak)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False) as prof:
        result = fn()
        del result
    events = sorted(((e.time_range.start, getattr(e, "self_cpu_memory_usage", 0) or 0) for e in prof.events()),
                    key=lambda x: x[0])
    live = peak = 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    return int(peak)


def copy_bandwidth_gbps(device, quick=False) -> float:
    """Measured ``dst.copy_(src)`` bandwidth in GB/s (bytes read + written)."""
    n = (1 << 20) if quick else (32 << 20)
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    ms = statistics.median(time_fn(lambda: dst.copy_(src), device, min_repeats=5, budget_s=0.1 if quick else 0.5))
    return 2 * n * 4 / (ms * 1e-3) / 1e9


def randn_normals_per_s(device, quick=False) -> float:
    """Measured ``torch.randn(out=)`` throughput in normals/s (float32)."""
    n = (1 << 18) if quick else (16 << 20)
    buf = torch.empty(n, device=device)
    ms = statistics.median(time_fn(lambda: torch.randn(n, out=buf), device, min_repeats=5,
                                   budget_s=0.1 if quick else 0.5))
    return n / (ms * 1e-3)


def _threads_list(spec) -> list[int]:
    out = []
    for part in (spec if isinstance(spec, (list, tuple)) else str(spec).split(",")):
        part = str(part).strip().lower()
        if not part:
            continue
        if part in ("all", "max"):
            out.append(os.cpu_count() or 1)
        else:
            value = int(part)
            if value < 1:
                from fastalign.errors import InputError  # bad input: exit 2 under the CLI
                raise InputError(f"--threads: expected positive integers or 'all', got {part!r}")
            out.append(value)
    return list(dict.fromkeys(out))


def _provider_status(provider: str, device: torch.device) -> str | None:
    """None when ``provider`` can run on ``device`` here, else why not."""
    if provider in ("naive", "naive+torch.compile"):
        return None
    from fastalign import backends as registry

    if provider not in registry.names():
        return f"unknown provider {provider!r}"
    if provider == "triton" and device.type == "cpu":
        return "the Triton interpreter on CPU is a test mode, not benchmarked"
    try:
        registry.get(provider, device.type)  # checks only this backend
    except registry.BackendUnavailableError as exc:
        return str(exc)
    return None


def machine_info(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def time_interleaved(fns: dict[str, Callable[[], object]], device, *, rounds=15, budget_s=3.0,
                     warmup=2) -> dict[str, list[float]]:
    """Per-call wall times in ms of each function, measured in alternating rounds (A B C A B C ...), so
    that load changes on a shared machine hit every function alike. Each round times as many calls of
    a function as fit in its share of ``budget_s`` (at least one); stops after ``rounds`` rounds, or
    once twice the budget has passed (at least 3 rounds)."""
    calls = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        calls[name] = max(1, int(budget_s / rounds / len(fns) / max(time.perf_counter() - t0, 1e-7)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for r in range(rounds):
        if r >= 3 and time.perf_counter() - start > 2 * budget_s:
            break
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            _sync(device)
            times[name].append((time.perf_counter() - t0) / calls[name] * 1e3)
    return times


def _case_providers(case: Case, providers: list[str], explicit: set[str], device) -> dict[str, str | None]:
    """provider -> None if it runs for ``case`` on ``device``, else why not."""
    if case.providers is not None:
        return case.providers(device, explicit)
    status = {}
    for provider in providers:
        why = _provider_status(provider, device)
        if why is None and provider == "torch" and case.elements > _REFERENCE_MAX_ELEMENTS and "torch" not in explicit:
            why = (f"reference backend skipped above {_REFERENCE_MAX_ELEMENTS} elements "
                   "(slow int64 Philox); name --provider torch to force")
        status[provider] = why
    return status


def _measure(case: Case, runnable: list[str], device, torch_dtype, *, quick, budget, measure_memory, say,
             skipped) -> dict[str, tuple[list[float], int | None, str]]:
    """provider -> (times in ms, peak bytes or None, note) for the providers of ``case`` that ran."""
    fns, out = {}, {}
    for provider in runnable:
        compiled = "torch.compile" in provider
        try:
            fns[provider] = case.make(provider, device, torch_dtype)
            if not case.interleave:
                say(f"{case.op} {case.shape} {provider}")
                times = time_fn(fns[provider], device, warmup=2 if compiled else 1, min_repeats=3 if quick else 5,
                                budget_s=budget)
                peak = peak_memory_bytes(fns[provider], device) if measure_memory and not compiled else None
                note = "peak memory not measured under torch.compile" if compiled and measure_memory else ""
                out[provider] = (times, peak, note)
        except Exception as exc:
            fns.pop(provider, None)
            skipped.append({"op": case.op, "shape": case.shape, "provider": provider,
                            "reason": f"{type(exc).__name__}: {exc}".splitlines()[0]})
    if case.interleave and fns:
        say(f"{case.op} {case.shape}: {', '.join(fns)} (interleaved)")
        times = time_interleaved(fns, device, rounds=3 if quick else 15, budget_s=0.2 if quick else 3.0)
        out = {p: (t, None, "") for p, t in times.items()}
    return out


def run(ops=None, providers=None, threads="1,all", *, dtype="float32", quick=False, device=None,
        measure_memory=True, progress: Callable[[str], None] | None = None, preset: str = "cpu") -> dict:
    """Run the benchmark; returns ``{"machine": {...}, "baselines": [...], "results": [row, ...]}``.

    Each result row has the keys of :data:`ROW_KEYS`; a provider that cannot run gets no row but a
    line in ``"skipped"``.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ops = list(ops) if ops else list(OPS)
    for op in ops:
        if op not in OPS:
            from fastalign.errors import InputError  # bad input: exit 2 under the CLI
            raise InputError(f"--op: expected some of {list(OPS)}, got {op!r}")
    providers = list(providers) if providers else list(PROVIDERS)
    for p in providers:
        if p not in PROVIDERS:
            from fastalign.errors import InputError  # bad input: exit 2 under the CLI
            raise InputError(f"--provider: expected some of {list(PROVIDERS)}, got {p!r}")
    if dtype not in _DTYPES:
        from fastalign.errors import InputError  # bad input: exit 2 under the CLI
        raise InputError(f"--dtype: expected one of {list(_DTYPES)}, got {dtype!r}")
    torch_dtype = _DTYPES[dtype]
    thread_counts = _threads_list(threads) if device.type == "cpu" else [torch.get_num_threads()]
    say = progress or (lambda msg: None)
    report = {"machine": machine_info(device), "baselines": [], "results": [], "skipped": []}
    explicit = set(providers) if providers != list(PROVIDERS) else set()
    budget = 0.05 if quick else 1.0
    old_threads = torch.get_num_threads()
    try:
        for nt in thread_counts:
            torch.set_num_threads(nt)
            bw = copy_bandwidth_gbps(device, quick)
            rn = randn_normals_per_s(device, quick)
            report["baselines"].append({"threads": nt, "copy_gbps": bw, "randn_normals_per_s": rn})
            say(f"threads={nt}: copy {bw:.1f} GB/s, torch.randn {rn / 1e9:.3f}e9 normals/s")
            for case in cases(ops, quick, torch_dtype, preset):
                status = _case_providers(case, providers, explicit, device)
                skipped: list[dict] = []
                for provider, why in status.items():
                    if why is not None:
                        skipped.append({"op": case.op, "shape": case.shape, "provider": provider, "reason": why})
                measured = _measure(case, [p for p, why in status.items() if why is None], device, torch_dtype,
                                    quick=quick, budget=budget, measure_memory=measure_memory,
                                    say=lambda m: say(f"{m} threads={nt}"), skipped=skipped)
                report["skipped"] += [dict(s, threads=nt) for s in skipped]
                report["results"] += _rows(case, measured, dtype=dtype, threads=nt, bw=bw)
    finally:
        torch.set_num_threads(old_threads)
    return report


def _rows(case: Case, measured: dict, *, dtype: str, threads: int, bw: float) -> list[dict]:
    floor_ms = case.bytes_moved / (bw * 1e9) * 1e3
    rows = []
    for provider, (times, peak, note) in measured.items():
        med, best = statistics.median(times), min(times)
        base = measured.get(case.baseline(provider))
        base_ms = statistics.median(base[0]) if base else None
        if case.note_fn is not None:
            note = "; ".join(x for x in (note, case.note_fn(provider, med, measured)) if x)
        rows.append({
            "op": case.op, "provider": provider, "shape": case.shape, "dtype": dtype,
            "threads": threads, "ms_median": med, "ms_min": best,
            "gbps": case.bytes_moved / (med * 1e-3) / 1e9,
            "normals_per_s": case.normals / (med * 1e-3),
            "peak_mem_mb": None if peak is None else peak / 2**20,
            "speedup": (base_ms / med) if base_ms else None,
            "floor_ms": floor_ms, "pct_copy_bw": 100.0 * floor_ms / med, "note": note,
        })
    return rows


# ------------------------------------------------------------------------------------------ output
def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def format_tables(report: dict) -> str:
    """One table per (op, threads), plus the machine's baselines. Speedup: against naive; for the
    compiled_loop tables, torch.compile against eager with the same backend."""
    lines = []
    m = report["machine"]
    lines.append(f"machine: {m.get('cpu_model', m['processor'])}, {m['cpu_count']} CPUs, device {m['device']}"
                 + (f" ({m['gpu']})" if "gpu" in m else "") + f", torch {m['torch']}")
    for b in report["baselines"]:
        lines.append(f"threads={b['threads']}: copy bandwidth {b['copy_gbps']:.1f} GB/s, "
                     f"torch.randn {b['randn_normals_per_s'] / 1e9:.3f}e9 normals/s")
    groups: dict = {}
    for r in report["results"]:
        groups.setdefault((r["op"], r["threads"]), []).append(r)
    for (op, nt), rows in groups.items():
        head = ("provider", "shape", "ms_median", "ms_min", "GB/s", "normals/s", "peak MB",
                "vs eager" if op.startswith("compiled_loop") else "vs naive", "floor ms", "% copy bw", "note")
        body = [(r["provider"], r["shape"], _fmt(r["ms_median"], ".3f"), _fmt(r["ms_min"], ".3f"),
                 _fmt(r["gbps"], ".1f"), _fmt(r["normals_per_s"], ".3e"), _fmt(r["peak_mem_mb"], ".2f"),
                 ("-" if r["speedup"] is None else f"{r['speedup']:.2f}x"), _fmt(r["floor_ms"], ".3f"),
                 _fmt(r.get("pct_copy_bw"), ".1f"), r.get("note") or "")
                for r in rows]
        widths = [max(len(head[i]), *(len(b[i]) for b in body)) for i in range(len(head))]
        lines.append("")
        lines.append(f"== {op} ({rows[0]['dtype']}, threads={nt})")
        lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
        lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)).rstrip() for b in body]
    if report["skipped"]:
        lines.append("")
        seen = set()
        for s in report["skipped"]:
            key = (s["provider"], s["reason"])
            if key not in seen:
                seen.add(key)
                lines.append(f"skipped {s['provider']}: {s['reason']}")
    return "\n".join(lines)


def json_rows(report: dict) -> list[dict]:
    """The result rows as plain JSON objects (keys of :data:`ROW_KEYS`)."""
    return [{k: r.get(k) for k in ROW_KEYS} for r in report["results"]]


def write_csv(report: dict, path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ROW_KEYS) + ["copy_gbps", "randn_normals_per_s"])
        w.writeheader()
        base = {b["threads"]: b for b in report["baselines"]}
        for r in json_rows(report):
            b = base.get(r["threads"], {})
            w.writerow({**r, "copy_gbps": b.get("copy_gbps"), "randn_normals_per_s": b.get("randn_normals_per_s")})


def plot(report: dict, path) -> None:
    """Time per provider per shape (log scale), one panel per (op, threads), with the memory floor
    (bytes / measured copy bandwidth) as a line. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict = {}
    for r in report["results"]:
        groups.setdefault((r["op"], r["threads"]), []).append(r)
    if not groups:
        from fastalign.errors import InputError  # bad input: exit 2 under the CLI
        raise InputError("--plot: no results to plot")
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 4 * nrows), squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax, ((op, nt), rows) in zip(axes.flat, groups.items()):
        shapes = list(dict.fromkeys(r["shape"] for r in rows))
        provs = list(dict.fromkeys(r["provider"] for r in rows))
        width = 0.8 / max(1, len(provs))
        for j, p in enumerate(provs):
            xs, ys = [], []
            for i, s in enumerate(shapes):
                for r in rows:
                    if r["shape"] == s and r["provider"] == p:
                        xs.append(i + j * width)
                        ys.append(r["ms_median"])
            ax.bar(xs, ys, width=width, label=p)
        floors = [next(r["floor_ms"] for r in rows if r["shape"] == s) for s in shapes]
        ax.plot([i + 0.4 - width / 2 for i in range(len(shapes))], floors, "k--", marker="_", label="memory floor")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(shapes))])
        ax.set_xticklabels(shapes, rotation=15, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("ms (median)")
        ax.set_title(f"{op}, threads={nt}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def thread_counts_argument(text: str) -> str:
    """``--threads``: comma-separated positive integers or 'all' (checked when parsed: a one-line error)."""
    try:
        _threads_list(text)
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers or 'all', got {text!r}") from None
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ops benchmark's options, declared once: ``python bench/bench_ops.py`` and ``fastalign bench``."""
    p.add_argument("--op", action="append", choices=OPS, help="op to benchmark (repeatable; default all)")
    p.add_argument("--provider", action="append", choices=PROVIDERS,
                   help="provider (repeatable; default all that run here)")
    p.add_argument("--threads", type=thread_counts_argument, default="1,all",
                   help="thread counts, e.g. 1,all (default)")
    p.add_argument("--dtype", default="float32", choices=list(_DTYPES))
    p.add_argument("--preset", default="cpu", choices=PRESETS,
                   help="shapes: cpu (default) or gpu-roofline (large, against the measured copy bandwidth)")
    p.add_argument("--quick", action="store_true", help="tiny shapes and short timing (smoke test)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--csv", metavar="FILE", help="also write the rows as CSV")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    p.add_argument("--plot", metavar="FILE.png", help="plot time per provider and shape (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def main_from_args(args, progress: Callable[[str], None] | None = None) -> int:
    """Run the benchmark ``args`` (from :func:`add_arguments`) asks for and print its tables or JSON rows."""
    report = run(args.op, args.provider, args.threads, dtype=args.dtype, quick=args.quick,
                 measure_memory=not args.no_memory, progress=None if args.quiet else progress, preset=args.preset)
    if args.csv:
        write_csv(report, args.csv)
    if args.plot:
        plot(report, args.plot)
    print(json.dumps(json_rows(report), indent=1) if args.json else format_tables(report))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_ops", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return main_from_args(p.parse_args(argv), progress=lambda m: print(m, file=sys.stderr, flush=True))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
