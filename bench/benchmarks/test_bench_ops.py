"""pytest-benchmark suite over the ops and providers of ``bench_ops`` (kept out of the default test run,
which collects only ``tests/``; a folder of its own, not a package, so the wheel leaves it out).

    pytest bench/ --benchmark-only                         # issue-4 shapes, current thread count
    FASTALIGN_BENCH_QUICK=1 pytest bench/ --benchmark-only # tiny shapes (smoke test)
    FASTALIGN_BENCH_THREADS=1 pytest bench/ --benchmark-only --benchmark-group-by=param:case

Compare providers with ``--benchmark-group-by=param:case`` (one group per op and shape).
"""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for bench_ops
pytest.importorskip("pytest_benchmark")

import torch  # noqa: E402

import bench_ops  # noqa: E402

QUICK = os.environ.get("FASTALIGN_BENCH_QUICK") == "1"
THREADS = os.environ.get("FASTALIGN_BENCH_THREADS")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CASES = {f"{c.op}[{c.shape}]": c for c in bench_ops.cases(quick=QUICK)}


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    if THREADS:
        torch.set_num_threads(int(THREADS))
    yield
    torch.set_num_threads(old)


def _params():
    """(case, provider) pairs: the standard providers, or a case's own (eager_overhead, compiled_loop)."""
    for name, c in CASES.items():
        names = c.providers(DEVICE, set()) if c.providers is not None else bench_ops.PROVIDERS
        for provider in names:
            yield pytest.param(name, provider, id=f"{name}-{provider}")


@pytest.mark.parametrize("case,provider", list(_params()))
def test_op(benchmark, case, provider):
    c = CASES[case]
    why = bench_ops._case_providers(c, list(bench_ops.PROVIDERS), set(), DEVICE).get(provider)
    if why is not None:
        pytest.skip(why)
    fn = c.make(provider, DEVICE, torch.float32)
    fn()  # warm up (and compile, for naive+torch.compile)
    if DEVICE.type == "cuda":
        def run():
            fn()
            torch.cuda.synchronize()
    else:
        run = fn
    benchmark.extra_info.update(bytes=c.bytes_moved, normals=c.normals, threads=torch.get_num_threads())
    benchmark(run)
    mean_s = benchmark.stats.stats.mean
    benchmark.extra_info.update(gbps=c.bytes_moved / mean_s / 1e9, normals_per_s=c.normals / mean_s)
