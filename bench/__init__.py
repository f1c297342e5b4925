"""fastalign's benchmark scripts, shipped as ``fastalign._bench`` so ``fastalign bench`` works from a wheel.

- :mod:`bench_ops`: microbenchmarks of the fused ops per provider (``fastalign bench``).
- :mod:`bench_e2e`: AISP vs Best-of-N and SEA vs the base response on the default model
  (``fastalign bench --e2e``).
- ``test_bench_ops.py``: the same ops as a pytest-benchmark suite (``pytest bench/ --benchmark-only``).
"""
