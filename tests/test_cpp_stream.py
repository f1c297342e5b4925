"""The CPU stream generator (csrc/cpu/stream_simd.cpp) compiled by g++ without torch, on every path.

csrc/tests/test_stream_simd.cpp checks each SIMD path's words bit for bit against the header, its
normals within 2e-6 of the float64 evaluation, perturb_range's out (the normals from registers into
aisp_perturb's sum) bit for bit the plain loop's, and bounds the error of the Box-Muller polynomials
over every uniform the stream can produce (exit status non-zero on any failure). Built with the
just-in-time build's flags (-march=native on x86) and with the ahead-of-time build's (no -march); and
cross-compiled for aarch64 and run under qemu-user when that toolchain is on PATH (NEON portable path).
"""
from __future__ import annotations

import platform
import re
import shutil
import subprocess

import pytest

from fastalign.backends import cpu
from fastalign.backends._jit import csrc_dir

CXX = "g++"
AARCH64_CXX = "aarch64-linux-gnu-g++"
QEMU = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
X86 = platform.machine() in ("x86_64", "AMD64")
FLAGS = ["-O3", "-std=c++17", "-Wall", "-Wextra", "-Werror", *cpu.COMMON_CFLAGS[1:]]  # no -fopenmp needed


def _build(compiler: str, flags: list[str], out) -> None:
    src = csrc_dir()
    cmd = [compiler, *flags, f"-I{src / 'cpu'}", f"-I{src / 'include'}", str(src / "tests" / "test_stream_simd.cpp"),
           str(src / "cpu" / "stream_simd.cpp"), "-o", str(out)]
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, f"{compiler} failed:\n{build.stderr}"


def _run(cmd: list[str], timeout: int) -> str:
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"{cmd[0]} failed:\n{run.stdout}\n{run.stderr}"
    return run.stdout


def _check(output: str, paths: list[str], stride: int) -> None:
    streams = dict(re.findall(r"^STREAM (\w+) words ok=1 normals max_err=(\S+)$", output, re.M))
    polys = {m[0]: m for m in re.findall(r"^POLY (\w+) stride=(\d+) uniforms=(\d+) radius_err=(\S+) "
                                         r"sincos_err=(\S+) normal_bound=(\S+)$", output, re.M)}
    perturbs = re.findall(r"^PERTURB (\w+) ok=1 fma=[01]$", output, re.M)
    assert sorted(streams) == sorted(paths) == sorted(polys) == sorted(perturbs), output
    for path in paths:
        assert float(streams[path]) <= 2e-6
        _, got_stride, count, radius_err, sincos_err, bound = polys[path]
        assert int(got_stride) == stride and int(count) == -(-75_497_473 // stride)
        assert float(radius_err) < 5e-7 and float(sincos_err) < 2e-7 and float(bound) <= 2e-6, polys[path]


def _host_paths() -> list[str]:
    order = ["portable", "avx2", "avx512"]
    return order[: order.index(cpu.extension().best_isa()) + 1]


NEEDS_CXX = pytest.mark.skipif(shutil.which(CXX) is None, reason=f"no C++ compiler ({CXX}) on PATH")


@NEEDS_CXX
@pytest.mark.parametrize("build", ["jit", "aot"])
def test_every_path_every_7th_uniform(build, tmp_path):
    flags = FLAGS + (["-march=native"] if build == "jit" and X86 else [])
    _build(CXX, flags, tmp_path / "t")
    _check(_run([str(tmp_path / "t"), "--stride", "7"], timeout=600), _host_paths(), 7)


@NEEDS_CXX
@pytest.mark.slow
def test_every_path_every_uniform(tmp_path):
    """All 75.5 million uniforms on every path (10-20 s of one core per path; bench/RESULTS.md)."""
    _build(CXX, FLAGS + (["-march=native"] if X86 else []), tmp_path / "t")
    _check(_run([str(tmp_path / "t"), "--exhaustive"], timeout=1200), _host_paths(), 1)


@pytest.mark.skipif(shutil.which(AARCH64_CXX) is None or QEMU is None,
                    reason="no aarch64 cross toolchain (aarch64-linux-gnu-g++ and qemu-aarch64 on PATH)")
def test_aarch64_under_qemu(tmp_path):
    """The NEON build of the portable path: correctness only (qemu's speed says nothing of a CPU's)."""
    _build(AARCH64_CXX, [*FLAGS, "-static"], tmp_path / "t")
    stride = 97
    _check(_run([QEMU, str(tmp_path / "t"), "--stride", str(stride)], timeout=600), ["portable"], stride)
