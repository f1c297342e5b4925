"""Bit-identical results, on every available backend, for:

- repeated calls with the same arguments;
- 1 vs 2 threads (``torch.set_num_threads``, which the cpu backend's ``at::parallel_for`` follows; and
  for the cpu backend also two processes started with ``OMP_NUM_THREADS=1`` and ``=2``);
- one prompt/chain alone vs the same prompt/chain (same per-row seed) inside a larger batch;
- calls made concurrently from several Python threads vs the same calls made one after another.

"Bit-identical" is ``torch.equal`` (NaN-free inputs), not a tolerance.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import fastalign as fa
from _util import backend_params, randn

BACKENDS = backend_params()
ROOT = Path(__file__).resolve().parents[1]


def _small(backend: str) -> bool:
    """The Triton interpreter is slow: give it smaller problems."""
    return backend == "triton"


def _problem(device, backend):
    """Inputs for one call of every op; big enough on compiled backends to split across threads."""
    if _small(backend):
        B, n, tau, d, L, V = 3, 4, 3, 40, 2, 70
    else:
        B, n, tau, d, L, V = 5, 8, 6, 1000, 4, 5003
    return dict(
        B=B, n=n, tau=tau, d=d, L=L, V=V,
        h=randn((B, n, d), torch.float32, device, 1, scale=3.0),
        u=randn((B, tau, d), torch.float32, device, 2),
        rewards=randn((B, n), torch.float32, device, 3),
        lengths=(torch.arange(B * n, device=device).reshape(B, n) * 5) % (tau + 1),
        y=randn((B, L, V), torch.float32, device, 4),
        grad=randn((B, L, V), torch.float32, device, 5, scale=0.01),
        seeds=torch.tensor([2**62 + 17 * b for b in range(B)], device=device),
    )


def _run_all(p, backend, rows=None):
    """Every op on the problem (or on the batch rows ``rows``), returning all outputs in a flat list."""
    sel = slice(None) if rows is None else rows
    seeds = p["seeds"][sel]
    h, u, rewards, lengths, y, grad = (p[k][sel] for k in ("h", "u", "rewards", "lengths", "y", "grad"))
    outs = []
    udot = torch.zeros(h.shape[0], h.shape[1], device=h.device)
    for t in range(2):
        outs.append(fa.aisp_perturb(h, u, sigma=0.5, seed=seeds, iteration=2**31, step=t, udot=udot,
                                    active=lengths > t, backend=backend))
    outs.append(udot)
    outs.extend(fa.aisp_update(u, rewards, sigma=0.5, lam=0.3, alpha=0.9, seed=seeds, iteration=2**31,
                               lengths=lengths, backend=backend))
    outs.extend(fa.aisp_update(u, rewards, sigma=0.5, lam=0.3, alpha=0.9, seed=seeds, iteration=2**31,
                               lengths=lengths, udot=udot, backend=backend))
    for clip in ("chain", "row"):
        outs.extend(fa.sea_step(y, grad, lr=0.1, noise_std=0.05, max_norm=0.5, clip=clip, seed=seeds, step=3,
                                backend=backend))
    state = (torch.zeros_like(y), torch.zeros_like(y))
    y_a = y
    for step in range(2):
        y_a, norm = fa.sea_step(y_a, grad, lr=0.1, noise_std=0.05, max_norm=0.5, seed=seeds, step=step,
                                optimizer="adam", state=state, backend=backend)
        outs.extend([y_a, norm])
    outs.extend(state)
    outs.append(fa.gaussian_perturb(y, std=0.3, seed=seeds, step=2**33, backend=backend))
    return outs


def _run_global(p, backend):
    """The ops whose results couple rows (global clipping): deterministic, but not row-separable."""
    y, norm = fa.sea_step(p["y"], p["grad"], lr=0.1, noise_std=0.05, max_norm=0.5, clip="global",
                          seed=p["seeds"], step=1, backend=backend)
    return [y, norm]


def _assert_all_equal(a, b, what):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.shape == y.shape, f"{what}: output {i} shape {tuple(x.shape)} != {tuple(y.shape)}"
        if not torch.equal(x, y):
            diff = (x.double() - y.double()).abs()
            raise AssertionError(f"{what}: output {i} differs in {int((diff != 0).sum())} elements, "
                                 f"max abs diff {diff.max().item():.3g}")


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_repeated_calls_are_bit_identical(device, backend):
    p = _problem(device, backend)
    first = _run_all(p, backend) + _run_global(p, backend)
    for _ in range(2):
        _assert_all_equal(first, _run_all(p, backend) + _run_global(p, backend), "repeat")


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_one_vs_two_threads_bit_identical(device, backend):
    p = _problem(device, backend)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _run_all(p, backend) + _run_global(p, backend)
        torch.set_num_threads(2)
        two = _run_all(p, backend) + _run_global(p, backend)
    finally:
        torch.set_num_threads(before)
    _assert_all_equal(one, two, "1 vs 2 threads")


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_row_alone_equals_row_inside_batch(device, backend):
    """A prompt/chain with its own seed gives the same bits alone (B=1) or at any position of a batch."""
    p = _problem(device, backend)
    batch = _run_all(p, backend)
    for b in (0, p["B"] - 1, p["B"] // 2):
        alone = _run_all(p, backend, rows=slice(b, b + 1))
        _assert_all_equal([x[b:b + 1] for x in batch], alone, f"row {b} alone vs in batch")
    # a sub-batch in a different order: row order must not matter either
    order = torch.tensor([2, 0, 1], device=device)
    shuffled = _run_all(p, backend, rows=order)
    _assert_all_equal([x[order] for x in batch], shuffled, "rows reordered")


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_int_seed_broadcast_is_seed_plus_row(device, backend):
    """seed=s for a batch is the same as seed tensor [s, s+1, ...]: row b alone uses seed s+b."""
    x = randn((4, 3, 50), torch.float32, device, 6)
    batch = fa.gaussian_perturb(x, std=1.0, seed=100, step=7, backend=backend)
    for b in range(4):
        alone = fa.gaussian_perturb(x[b:b + 1], std=1.0, seed=100 + b, step=7, backend=backend)
        assert torch.equal(batch[b:b + 1], alone)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_concurrent_python_threads_equal_serial(device, backend):
    if backend == "triton" and device == "cpu":
        pytest.skip("the Triton interpreter is not thread-safe (it patches triton.language globally while a "
                    "kernel is interpreted); compiled Triton on a GPU is covered by the cuda-device param")
    p = _problem(device, backend)
    variants = []
    for k in range(4 if _small(backend) else 6):
        q = dict(p)
        q["seeds"] = p["seeds"] + 1000 * k  # different work per task
        variants.append(q)
    serial = [_run_all(q, backend) for q in variants]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(lambda q: _run_all(q, backend), variants))
    for k, (a, b) in enumerate(zip(serial, concurrent)):
        _assert_all_equal(a, b, f"task {k} concurrent vs serial")
    assert not torch.equal(serial[0][0], serial[1][0]), "the tasks must differ for this test to mean anything"


_SUBPROCESS_SCRIPT = r"""
import hashlib, json, sys
import torch
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
import fastalign as fa
from test_determinism import _problem, _run_all, _run_global
p = _problem("cpu", "cpu")
outs = _run_all(p, "cpu") + _run_global(p, "cpu")
digest = hashlib.sha256(b"".join(t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() for t in outs))
print(json.dumps({{"threads": torch.get_num_threads(), "sha256": digest.hexdigest()}}))
"""


@pytest.mark.skipif(fa.available_backends("cpu").get("cpu") is not None, reason="cpu backend not available")
def test_cpu_backend_bit_identical_across_omp_num_threads():
    """Two fresh processes, OMP_NUM_THREADS=1 and =2, hash every output of the cpu backend identically."""
    script = _SUBPROCESS_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"))
    results = []
    for threads in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=threads, FASTALIGN_BACKEND="cpu")
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert [r["threads"] for r in results] == [1, 2]
    assert results[0]["sha256"] == results[1]["sha256"]
    # and the in-process result is the same bits
    p = _problem("cpu", "cpu")
    outs = _run_all(p, "cpu") + _run_global(p, "cpu")
    here = hashlib.sha256(b"".join(t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() for t in outs))
    assert here.hexdigest() == results[0]["sha256"]
