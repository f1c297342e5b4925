"""What starting fastalign costs, and the import paths that must keep working (issue 23).

- ``fastalign --help``/``--version`` (the console script's ``fastalign.cli:main``, and
  ``python -m fastalign``) never import torch: the command line answers at once.
- ``import fastalign`` imports only the standard library; its public names load their modules on first
  access (PEP 562). Neither it nor the ops, the methods, the engine or the front ends import
  ``torch._dynamo`` (and Triton with it), transformers or the benchmarks until they are used.
- Every public import path the README documents resolves, lazily or not.

Each check runs in a fresh interpreter (this process imported torch long ago).
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch._dynamo", "triton", "transformers", "fastalign._bench", "bench_e2e", "bench_study")


def _fresh(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          cwd=ROOT)


def _loaded_after(code: str) -> set[str]:
    """The module names in sys.modules after ``code`` ran in a fresh interpreter."""
    proc = _fresh(f"{code}\nimport sys\nprint('\\n'.join(sys.modules), file=sys.stderr)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(proc.stderr.split())


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") or m.startswith("fastalign_bench_")
                                            for h in HEAVY))


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["align", "--help"], []])
def test_cli_help_and_version_do_not_import_torch(argv):
    code = (f"import fastalign.cli as cli\nrc = cli.main({argv!r})\n"
            f"assert rc == (2 if not {argv!r} else 0), rc")
    loaded = _loaded_after(code)
    assert "torch" not in loaded and not _heavy(loaded), _heavy(loaded)


@pytest.mark.parametrize("argv", [["--help"], ["--version"]])
def test_python_dash_m_fastalign_does_not_import_torch(argv):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "fastalign", *argv], capture_output=True,
                          text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "fastalign.cli" in imported and "torch" not in imported
    assert ("fastalign" in proc.stdout) if argv == ["--version"] else ("usage: fastalign" in proc.stdout)


def test_import_fastalign_is_standard_library_only():
    loaded = _loaded_after("import fastalign\nassert fastalign.__version__")
    assert "torch" not in loaded and not _heavy(loaded)


@pytest.mark.parametrize("module", ["fastalign", "fastalign.ops", "fastalign.ops.library", "fastalign.methods.aisp",
                                    "fastalign.methods.sea", "fastalign.methods.bon", "fastalign.engine", "fastalign.hf",
                                    "fastalign.scoring.rewards", "fastalign.scoring.models", "fastalign.distributed",
                                    "fastalign.ops.check", "fastalign.backends.cpu"])
def test_no_dynamo_triton_transformers_or_benchmarks_until_used(module):
    # touching a public name loads the ops (and torch), as the first real use would
    loaded = _loaded_after(f"import {module}\nimport fastalign\nfastalign.aisp_perturb, fastalign.aisp_generate")
    assert "torch" in loaded and "fastalign.ops" in loaded
    assert not _heavy(loaded), _heavy(loaded)


def test_the_operators_are_registered_with_the_ops():
    code = ("import torch, fastalign\nassert fastalign.sea_step\n"
            "assert all(hasattr(torch.ops.fastalign, n) for n in "
            "('aisp_perturb', 'aisp_update', 'sea_step', 'gaussian_perturb'))")
    proc = _fresh(code)
    assert proc.returncode == 0, proc.stderr[-3000:]


# --------------------------------------------------------------------- the documented import paths
#: (module, attribute): every public path the README (and docs/) names
PUBLIC_PATHS = [
    ("fastalign", "__version__"), ("fastalign", "AlignResult"), ("fastalign", "BackendUnavailableError"),
    ("fastalign", "InputError"), ("fastalign", "InputTypeError"),
    ("fastalign", "aisp_generate"), ("fastalign", "bon_generate"), ("fastalign", "sea_generate"),
    ("fastalign", "aisp_perturb"), ("fastalign", "aisp_update"), ("fastalign", "available_backends"),
    ("fastalign", "gaussian_perturb"), ("fastalign", "importance_weights"), ("fastalign", "sea_step"),
    ("fastalign.ops", "aisp_perturb"), ("fastalign.ops", "aisp_update"), ("fastalign.ops", "sea_step"),
    ("fastalign.ops", "gaussian_perturb"), ("fastalign.ops.library", "OPS"), ("fastalign.backends.rng", "normal"),
    ("fastalign.errors", "InputError"), ("fastalign.errors", "InputTypeError"),
    ("fastalign.scoring.models", "load_default"), ("fastalign.scoring.rewards", "EmbeddingSimilarityReward"),
    ("fastalign.scoring.rewards", "SequenceClassifierReward"), ("fastalign.scoring.rewards", "default_encoder_dir"),
    ("fastalign.scoring.metrics", None), ("fastalign.hf", "aisp"), ("fastalign.hf", "bon"), ("fastalign.hf", "sea"),
    ("fastalign.hf", "hub_dir"), ("fastalign.distributed", "align_file"), ("fastalign.distributed", "init"),
    ("fastalign.engine.sampling", "stream_seeds"), ("fastalign.engine", "decode"), ("fastalign.methods.results", "AlignResult"),
    ("fastalign.backends", "BackendUnavailableError"), ("fastalign.kernels.aisp_perturb", None),
    ("fastalign.cli", "main"), ("fastalign.methods.aisp", "aisp_generate"), ("fastalign.methods.sea", "sea_generate"),
    ("fastalign.methods.bon", "bon_generate"),
]


@pytest.mark.parametrize("module, attribute", PUBLIC_PATHS)
def test_documented_import_paths(module, attribute):
    mod = importlib.import_module(module)
    if attribute is not None:
        assert getattr(mod, attribute) is not None


def test_lazy_names_are_the_defining_modules_objects():
    import fastalign
    from fastalign.methods import aisp, results
    from fastalign import ops

    assert fastalign.aisp_perturb is ops.aisp_perturb and fastalign.aisp_generate is aisp.aisp_generate
    assert fastalign.AlignResult is results.AlignResult
    assert set(fastalign.__all__) <= set(dir(fastalign))
    assert fastalign.scoring.rewards is importlib.import_module("fastalign.scoring.rewards")  # a submodule by attribute
    with pytest.raises(AttributeError, match="no_such_name"):
        fastalign.no_such_name
