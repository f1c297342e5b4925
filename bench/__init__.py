"""fastalign's benchmark scripts, shipped as ``fastalign._bench`` so ``fastalign bench`` works from a wheel.

- :mod:`bench_ops`: microbenchmarks of the fused ops per provider (``fastalign bench``).
- :mod:`bench_e2e`: AISP vs Best-of-N and SEA vs the base response on the default model
  (``fastalign bench --e2e``).
- :mod:`naive`: the ops as a user writes them in eager PyTorch, the baseline of ``bench_ops`` (not an
  op backend: it draws its noise with ``torch.randn``).
- ``benchmarks/test_bench_ops.py`` (checkout only, not in the wheel): the same ops as a
  pytest-benchmark suite (``pytest bench/ --benchmark-only``).
"""
