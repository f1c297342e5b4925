"""Alternating runs of several csrc/tests/bench_stream.cpp binaries (A B C A B C ...), medians per column.

    python bench/ab_bench_stream.py --rounds 9 --isa avx2 old=/tmp/bs_old new=/tmp/bs_new

Each binary prints, per SIMD path, the best of 200 repetitions of each form (stream, stream+perturb,
and in newer binaries op-loops+udot, fused, fused+udot) in normals/s; this prints, per binary and form,
the median over rounds (min-max), the ratio of each binary's median to the first one's, and the load
average and the idle fraction of all CPUs (/proc/stat) around the runs. It measures; it asserts nothing.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import time


def _cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[3], sum(v)


def _ncpu() -> int:
    import os

    return os.cpu_count() or 1


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("binaries", nargs="+", help="name=path")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--isa", default="avx2")
    p.add_argument("--args", default="", help="arguments of every binary (rows d)")
    a = p.parse_args(argv)
    bins = [b.split("=", 1) for b in a.binaries]
    rates: dict[str, dict[str, list[float]]] = {name: {} for name, _ in bins}
    load0, (idle0, tot0) = _loadavg(), _cpu_times()
    t0 = time.time()
    for _ in range(a.rounds):
        for name, path in bins:
            out = subprocess.run([path, *a.args.split()], capture_output=True, text=True).stdout
            line = next(ln for ln in out.splitlines() if ln.startswith(a.isa + " "))
            for form, rate in re.findall(r"([a-z+\-]+) [\d.]+ us \(([\d.]+)e9", line):
                rates[name].setdefault(form, []).append(float(rate))
    idle1, tot1 = _cpu_times()
    print(f"isa={a.isa} rounds={a.rounds} seconds={time.time() - t0:.0f} load before {load0} after {_loadavg()} "
          f"idle fraction of all CPUs during {(idle1 - idle0) / max(1, tot1 - tot0):.2f} (these runs keep one "
          f"CPU busy: at most {1 - 1 / _ncpu():.2f} when nothing else runs)")
    first = bins[0][0]
    for name, _ in bins:
        cols = []
        for form, vals in rates[name].items():
            med = statistics.median(vals)
            ref = rates[first].get(form)
            ratio = f" {med / statistics.median(ref):.3f}x" if ref else ""
            cols.append(f"{form} {med:.3f}e9 ({min(vals):.3f}-{max(vals):.3f}){ratio}")
        print(f"{name:>10}: " + " | ".join(cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
