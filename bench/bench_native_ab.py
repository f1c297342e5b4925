"""The native-speed check of issue 24 as alternating A/B pairs in one process: the ``cpu`` backend
against eager PyTorch (``naive``) at the issue-4 shapes of bench_ops.py, one thread count.

Each pair times a block of calls of each provider in turn (the order alternates pair by pair, so
a load change hits both alike) and records the ratio naive/cpu of that pair. Prints one JSON line:
per-call medians, the per-pair ratios and their median, and the load average before and after.
``FASTALIGN_CPU_ISA`` picks the cpu backend's SIMD path as usual.

    python -m bench.bench_native_ab --op aisp_perturb --shape 1,32,2048 --threads 1 --pairs 30
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--op", choices=("aisp_perturb", "sea_step"), default="aisp_perturb")
    p.add_argument("--shape", default="1,32,2048", help="B,n,d (aisp_perturb) or B,L,V (sea_step)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pairs", type=int, default=30)
    p.add_argument("--block-s", type=float, default=0.02, help="seconds of calls per provider per pair")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from bench import bench_ops

    dims = tuple(int(x) for x in args.shape.split(","))
    case = (bench_ops._aisp_perturb_case if args.op == "aisp_perturb" else bench_ops._sea_step_case)(*dims)
    fns = {name: case.make(name, torch.device("cpu"), torch.float32) for name in ("naive", "cpu")}
    calls = {}
    for name, fn in fns.items():
        for _ in range(3):
            fn()
        t0 = time.perf_counter()
        fn()
        calls[name] = max(1, int(args.block_s / max(time.perf_counter() - t0, 1e-7)))
    load_before = _loadavg()
    ms = {name: [] for name in fns}
    ratios = []
    for i in range(args.pairs):
        order = ("naive", "cpu") if i % 2 == 0 else ("cpu", "naive")
        for name in order:
            fn = fns[name]
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            ms[name].append((time.perf_counter() - t0) / calls[name] * 1e3)
        ratios.append(ms["naive"][-1] / ms["cpu"][-1])
    from fastalign.backends import cpu as cpu_backend

    isa = os.environ.get("FASTALIGN_CPU_ISA", "auto")
    print(json.dumps({
        "op": args.op, "shape": args.shape, "threads": args.threads, "isa": isa, "pairs": args.pairs,
        "naive_ms": statistics.median(ms["naive"]), "cpu_ms": statistics.median(ms["cpu"]),
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "load_before": load_before, "load_after": _loadavg(),
        "ext": getattr(cpu_backend.extension(), "__file__", "?"),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
