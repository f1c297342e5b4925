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


def _ext_modules():
    if os.environ.get("FASTALIGN_BUILD_EXT", "0") in ("", "0"):
        return {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    here = os.path.dirname(os.path.abspath(__file__))
    sources = [
        os.path.join("csrc", "cpu", name)
        for name in ("stream_simd.cpp", "aisp_perturb.cpp", "aisp_update.cpp", "sea_step.cpp",
                     "gaussian_perturb.cpp", "bindings.cpp")
    ]
    cpu_ext = CppExtension(
        name="fastalign._C_cpu",
        sources=sources,
        include_dirs=[os.path.join(here, "csrc", "include")],
        # keep in sync with fastalign/backends/cpu.py COMMON_CFLAGS
        extra_compile_args=["-O3", "-fopenmp", "-fno-math-errno", "-ffp-contract=fast"],
        extra_link_args=["-fopenmp"],
    )
    return {"ext_modules": [cpu_ext], "cmdclass": {"build_ext": BuildExtension.with_options(use_ninja=True)}}


setup(**_ext_modules())
