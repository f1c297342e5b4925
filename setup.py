"""Build script. Metadata lives in pyproject.toml; this file only adds the optional ahead-of-time
build of the native extensions (see fastalign/backends/_jit.py for the just-in-time build).

    pip install --no-build-isolation -e .                         # pure Python; kernels built on first use
    FASTALIGN_BUILD_EXT=1 pip install --no-build-isolation .      # also builds fastalign._C_cpu now

The ahead-of-time CPU extension uses portable flags only (no -march=native): its AVX2 and AVX-512
stream paths are functions compiled with `#pragma GCC target` and chosen at run time from the CPU, so
the wheel runs on any x86-64 CPU. --no-build-isolation keeps pip from installing a second torch.
"""
import os

from setuptools import setup


def _cpu_build_constants(here):
    """SOURCES and COMMON_CFLAGS of fastalign/backends/cpu.py (the just-in-time build), read without
    importing the package, so both builds compile the same files with the same base flags."""
    import ast

    with open(os.path.join(here, "fastalign", "backends", "cpu.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    values = {}
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id in ("SOURCES", "COMMON_CFLAGS"):
            values[target.id] = ast.literal_eval(node.value)
    return list(values["SOURCES"]), list(values["COMMON_CFLAGS"])


def _ext_modules():
    if os.environ.get("FASTALIGN_BUILD_EXT", "0") in ("", "0"):
        return {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    here = os.path.dirname(os.path.abspath(__file__))
    sources, cflags = _cpu_build_constants(here)
    cpu_ext = CppExtension(
        name="fastalign._C_cpu",
        sources=[os.path.join("csrc", *src.split("/")) for src in sources],
        include_dirs=[os.path.join(here, "csrc", "include")],
        extra_compile_args=cflags,  # portable: no -march=native (the SIMD paths are chosen at run time)
        extra_link_args=["-fopenmp"],
    )
    return {"ext_modules": [cpu_ext], "cmdclass": {"build_ext": BuildExtension.with_options(use_ninja=True)}}


setup(**_ext_modules())
