"""Packaging: kernels/ is importable as fastalign.kernels from a wheel and an editable install,
the C++/CUDA sources ship inside the wheel, and the declared torch range admits torch 2.13.0."""
from __future__ import annotations

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
    assert "fastalign/kernels/__init__.py" in names
    assert not any(n.startswith("kernels/") for n in names), "no top-level 'kernels' import name"
    for header in ("philox.h", "clip.h", "update.h", "common.h"):
        assert f"fastalign/_csrc/include/fastalign/{header}" in names
    kernels = {n for n in names if n.startswith("fastalign/kernels/") and n.endswith(".py")}
    assert kernels >= {f"fastalign/kernels/{op}.py" for op in ("aisp_perturb", "aisp_update", "sea_step",
                                                                "gaussian_perturb")}
    assert any(n.startswith("fastalign/_csrc/cpu/") and n.endswith(".cpp") for n in names)
    assert any(n.startswith("fastalign/_csrc/cuda/") and n.endswith(".cu") for n in names)
    assert {"fastalign/_bench/bench_ops.py", "fastalign/_bench/bench_e2e.py"} <= names  # fastalign bench
    assert "fastalign/__main__.py" in names


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

    assert Path(fastalign.kernels.__file__).resolve().parent == ROOT / "kernels"
