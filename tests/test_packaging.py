"""Packaging: kernels/ is importable as fastalign.kernels from a wheel and an editable install,
the C++/CUDA sources ship inside the wheel, and the declared torch range admits torch 2.13.0."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_declares_what_the_issue_promises():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["name"] == "fastalign"
    assert project["requires-python"] == ">=3.10"
    from packaging.requirements import Requirement

    reqs = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    assert set(reqs) == {"torch", "numpy"}
    assert reqs["torch"].specifier.contains("2.13.0")
    extras = project["optional-dependencies"]
    assert {"triton", "hf", "dev"} <= set(extras)
    dev = {Requirement(r).name for r in extras["dev"]}
    assert {"pytest", "pytest-benchmark", "hypothesis", "ninja", "pybind11"} <= dev
    assert project["scripts"]["fastalign"] == "fastalign.cli:main"
    assert meta["tool"]["setuptools"]["package-dir"]["fastalign.kernels"] == "kernels"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheels = list(out.glob("fastalign-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    # kernels/ is a namespace folder (no __init__.py), so it can never shadow a top-level `kernels`
    assert not any(n.startswith("fastalign/kernels/__init__") for n in names)
    assert not any(n.startswith("kernels/") for n in names), "no top-level 'kernels' import name"
    for header in ("philox.h", "clip.h", "update.h", "common.h"):
        assert f"fastalign/_csrc/include/fastalign/{header}" in names
    kernels = {n for n in names if n.startswith("fastalign/kernels/") and n.endswith(".py")}
    assert kernels >= {f"fastalign/kernels/{op}.py" for op in ("aisp_perturb", "aisp_update", "sea_step",
                                                                "gaussian_perturb")}
    assert any(n.startswith("fastalign/_csrc/cpu/") and n.endswith(".cpp") for n in names)
    assert any(n.startswith("fastalign/_csrc/cuda/") and n.endswith(".cu") for n in names)
    assert {"fastalign/_bench/bench_ops.py", "fastalign/_bench/bench_e2e.py", "fastalign/_bench/naive.py"} <= names
    assert "fastalign/__main__.py" in names
    # every module of every layer package (a package missing from pyproject's list would be left out)
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "fastalign").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules <= names, sorted(modules - names)
    # only what users run: no pytest files, no C++ test harnesses, the eager baseline only with the benchmarks
    assert not [n for n in names if n.rsplit("/", 1)[-1].startswith("test_")]
    assert not [n for n in names if n.startswith("fastalign/_csrc/tests/")]
    assert "fastalign/backends/naive.py" not in names
    assert {n.split("/")[2] for n in names if n.startswith("fastalign/_csrc/")} == {"include", "cpu", "cuda"}


def test_wheel_imports_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import fastalign, fastalign.kernels, fastalign.kernels.aisp_perturb as k;"
        "from fastalign.backends import _jit; import fastalign._bench.bench_ops;"
        "print(fastalign.__file__); print(k.__file__); print(_jit.csrc_dir())"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fa_file, kernel_file, csrc = proc.stdout.split()
    assert fa_file.startswith(str(site)) and kernel_file.startswith(str(site))
    assert csrc.startswith(str(site)) and (Path(csrc) / "include" / "fastalign" / "philox.h").exists()


def test_editable_or_source_import_maps_kernels():
    import fastalign.kernels
    import fastalign.kernels.sea_step

    assert [Path(p).resolve() for p in fastalign.kernels.__path__] == [ROOT / "kernels"]
    assert Path(fastalign.kernels.sea_step.__file__).resolve() == ROOT / "kernels" / "sea_step.py"


def test_kernels_folder_is_a_namespace_that_cannot_shadow_a_kernels_package(tmp_path):
    """The checkout's kernels/ has no __init__.py: with the checkout root first on sys.path (as under
    `python -m pytest` or `python -m fastalign`), an installed top-level `kernels` package (Hugging
    Face's kernel hub, which transformers imports when it builds a model) still wins, and
    fastalign.kernels still imports. Regression: a regular kernels/__init__.py broke every model build
    with `cannot import name 'CUDAProperties' from 'kernels'`."""
    assert not (ROOT / "kernels" / "__init__.py").exists()
    site = tmp_path / "site"  # a stand-in regular `kernels` package, after the checkout root on sys.path
    (site / "kernels").mkdir(parents=True)
    (site / "kernels" / "__init__.py").write_text("STAND_IN = True\n")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2]);"
        "import kernels; print(kernels.STAND_IN);"
        "import fastalign.kernels.aisp_perturb as k; print(k.__file__)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT), str(site)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stand_in, kernel_file = proc.stdout.split()
    assert stand_in == "True"
    assert Path(kernel_file).resolve() == ROOT / "kernels" / "aisp_perturb.py"


def test_transformers_builds_a_model_from_the_checkout_root():
    """README line 2 runs `python -m pytest` from the checkout root: with transformers' kernel-hub
    dependency (the `kernels` distribution) installed, building a model there imports that package,
    not the checkout's kernels/."""
    pytest.importorskip("transformers")
    code = (
        "import sys, importlib.metadata as md; sys.path.insert(0, sys.argv[1]);"
        "import transformers as T;"
        "m = T.LlamaForCausalLM(T.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,"
        " num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2));"
        "import fastalign.kernels.sea_step, kernels;"
        "installed = any(d.metadata['Name'] == 'kernels' for d in md.distributions());"
        "print(installed, kernels.__spec__.origin)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    installed, origin = proc.stdout.split()
    if installed == "True":  # the distribution's regular package, not the checkout's namespace folder
        assert origin != "None" and not Path(origin).resolve().is_relative_to(ROOT / "kernels"), origin


def test_ahead_of_time_wheel_builds_the_cpu_extension_and_uses_it(tmp_path):
    """FASTALIGN_BUILD_EXT=1 builds fastalign._C_cpu into the wheel (portable flags, the same sources and
    base flags as the just-in-time build, read from fastalign/backends/cpu.py), and the cpu backend
    then uses it instead of building one: a fresh, empty cache folder stays empty."""
    if platform.machine() not in ("x86_64", "AMD64", "aarch64", "arm64"):
        pytest.skip("cpu backend targets x86-64 and aarch64")
    out = tmp_path / "wheel"
    env = dict(os.environ, FASTALIGN_BUILD_EXT="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=900, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("fastalign-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("fastalign/_C_cpu") and n.endswith(".so") for n in names), names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    cache = tmp_path / "cache"
    code = (
        "import sys, json, torch; sys.path.insert(0, sys.argv[1]); import fastalign as fa;"
        "from fastalign.backends import cpu; e = cpu.extension();"
        "x = torch.randn(2, 3, 1001, generator=torch.Generator().manual_seed(0));"
        "a = fa.gaussian_perturb(x, std=0.5, seed=3, step=2, backend='cpu');"
        "b = fa.gaussian_perturb(x.double(), std=0.5, seed=3, step=2, backend='torch', compute_dtype=torch.float64);"
        "print(json.dumps([e.__name__, e.__file__, float((a.double() - b).abs().max())]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "FASTALIGN_BUILD_EXT"}
    env["FASTALIGN_CACHE_DIR"] = str(cache)
    run = subprocess.run([sys.executable, "-I", "-c", code, str(site)], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    name, path, err = json.loads(run.stdout.strip().splitlines()[-1])
    assert name == "fastalign._C_cpu" and path.startswith(str(site))
    assert err < 2e-6
    assert not cache.exists() or not any(cache.rglob("*.so")), "the JIT build ran although the wheel has the extension"


def test_setup_py_builds_what_the_jit_builds():
    """setup.py takes its sources and base flags from fastalign/backends/cpu.py (no copy to keep in sync)
    and adds no -march=native."""
    src = (ROOT / "setup.py").read_text().replace("setup(**_ext_modules())", "")
    ns: dict = {}
    exec(compile(src, "setup.py", "exec"), ns)
    sources, cflags = ns["_cpu_build_constants"](str(ROOT))
    from fastalign.backends import cpu

    assert sources == list(cpu.SOURCES) and cflags == list(cpu.COMMON_CFLAGS)
    assert all((ROOT / "csrc" / s).is_file() for s in sources)
    assert not any("march" in f for f in cflags)
