"""The package's layers (docs/design.md#layers): every module sits in one layer, nothing below imports
anything above, and every import path the user documentation names keeps working.

No model, no torch work: the import-direction test reads the sources (every import statement, those
inside functions too), so a lazy import cannot hide a wrong direction.
"""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import fastalign

ROOT = Path(__file__).resolve().parents[1]

#: bottom to top; a module belongs to the first layer with a prefix of its dotted name
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("fastalign.errors", "fastalign._cache", "fastalign._progress", "fastalign._clip", "fastalign._files")),
    ("kernels", ("fastalign.kernels",)),
    ("backends", ("fastalign.backends",)),
    ("ops", ("fastalign.ops",)),
    ("engine", ("fastalign.engine",)),
    ("scoring", ("fastalign.scoring",)),
    ("methods", ("fastalign.methods",)),
    ("front ends", ("fastalign.cli", "fastalign.hf", "fastalign.distributed", "fastalign.__main__",
                    "fastalign._bench")),
]
#: where each folder's modules live under the package name
FOLDERS = {"fastalign": ROOT / "fastalign", "fastalign.kernels": ROOT / "kernels", "fastalign._bench": ROOT / "bench"}


def _layer(module: str) -> int | None:
    module = fastalign.PUBLIC_MODULES.get(module, module)
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            if "hub" in path.relative_to(folder).parts or path.name.startswith("test_"):
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imported(module: str, path: Path, modules: set[str]) -> list[tuple[int, str]]:
    """(line, dotted module) of every fastalign import in ``path``: ``from P import name`` counts as
    ``P.name`` where that is a module (or a short public path), ``P`` otherwise; ``from fastalign import
    name`` of a lazy public name counts as the module that defines it. ``modules``: every module's name."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names
                    if a.name == "fastalign" or a.name.startswith("fastalign.")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if base != "fastalign" and not base.startswith("fastalign."):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in modules or sub in fastalign.PUBLIC_MODULES:
                    out.append((node.lineno, sub))
                elif base == "fastalign" and a.name in fastalign._LAZY:
                    out.append((node.lineno, fastalign._LAZY[a.name]))
                elif base != "fastalign":  # a name that module P defines
                    out.append((node.lineno, base))
                # else the root's own names (__version__, the error types): base, allowed everywhere
    return out


def test_every_module_has_a_layer():
    lost = [m for m in _modules() if m != "fastalign" and _layer(m) is None]
    assert not lost, f"modules in no layer of LAYERS (add them, and to docs/design.md#layers): {lost}"


def test_no_layer_imports_a_layer_above_it():
    wrong = []
    modules = _modules()
    for module, path in modules.items():
        if module == "fastalign":  # the front door: public names, lazily, from every layer
            continue
        rank = _layer(module)
        for line, target in _imported(module, path, set(modules)):
            to = _layer(target)
            if to is not None and to > rank:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({LAYERS[rank][0]}) imports {target} ({LAYERS[to][0]})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_the_direction_check_sees_lazy_and_relative_imports(tmp_path):
    src = tmp_path / "x.py"
    src.write_text("def f():\n    from fastalign.methods import aisp\n    from . import decoding\n")
    got = _imported("fastalign.engine.x", src, set(_modules()))
    assert (2, "fastalign.methods.aisp") in got and (3, "fastalign.engine.decoding") in got
    assert _layer("fastalign.methods.aisp") > _layer("fastalign.engine.x")


def test_the_design_doc_map_names_every_layer_package():
    text = (ROOT / "docs" / "design.md").read_text()
    layers = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    for _, prefixes in LAYERS:
        for p in prefixes:
            if p.count(".") == 1 and p not in ("fastalign.__main__", "fastalign._bench"):
                name = p.split(".")[1]
                shown = f"fastalign/{name}" in layers or (p in LAYERS[0][1] and f"{name}.py" in layers)
                assert shown, f"docs/design.md#layers does not show fastalign/{name}"


# ---------------------------------------------------------------------------------------------
# the import paths the user documentation names
# ---------------------------------------------------------------------------------------------
DOCUMENTED = ["README.md", "docs/serving.md"]
#: the paths the README and docs/serving.md name today; a new one in those files must be added here
PUBLIC_PATHS = sorted({
    "fastalign.aisp", "fastalign.aisp.aisp_generate", "fastalign.sea", "fastalign.sea.FASTALIGN",
    "fastalign.sea.AUTHORS", "fastalign.bon", "fastalign.hf", "fastalign.hf.aisp", "fastalign.hf.bon",
    "fastalign.hf.sea", "fastalign.hf.hub_dir", "fastalign.hf.generate", "fastalign.distributed.align_file",
    "fastalign.distributed.init", "fastalign.kernels", "fastalign.metrics", "fastalign.models",
    "fastalign.models.load_default", "fastalign.rewards", "fastalign.rewards.EmbeddingSimilarityReward",
    "fastalign.rewards.SequenceClassifierReward", "fastalign.rng", "fastalign.ops",
    "fastalign.ops.aisp_perturb", "fastalign.ops.aisp_update", "fastalign.sampling.stream_seeds",
    "fastalign.aisp_generate", "fastalign.sea_generate", "fastalign.bon_generate", "fastalign.aisp_perturb",
    "fastalign.aisp_update", "fastalign.sea_step", "fastalign.gaussian_perturb", "fastalign.importance_weights",
    "fastalign.available_backends", "fastalign.AlignResult", "fastalign.InputError",
    "fastalign.backends.cpu", "fastalign.cli",
})


def _documented_paths() -> set[str]:
    found = set()
    for name in DOCUMENTED:
        for m in re.finditer(r"\bfastalign(?:\.[A-Za-z_][A-Za-z0-9_]*)+", (ROOT / name).read_text()):
            path = m.group(0)
            if not path.split(".")[1].startswith("_"):  # fastalign._bench and such: not importable API
                found.add(path)
    return found


def test_every_documented_path_is_listed():
    missing = sorted(_documented_paths() - set(PUBLIC_PATHS))
    assert not missing, f"README/docs name import paths PUBLIC_PATHS does not list: {missing}"


def _resolve(path: str):
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(path)


@pytest.mark.parametrize("path", PUBLIC_PATHS)
def test_documented_import_path_works(path):
    assert _resolve(path) is not None


@pytest.mark.parametrize("short,module", sorted(fastalign.PUBLIC_MODULES.items()))
def test_short_public_module_is_the_layer_module(short, module):
    """``import fastalign.models`` and ``from fastalign import models`` are ``fastalign.scoring.models``
    itself: one module object, so patches and isinstance checks agree through either name."""
    short_mod = importlib.import_module(short)
    assert short_mod is importlib.import_module(module)
    assert getattr(fastalign, short.split(".")[1]) is short_mod
    assert short_mod.__name__ == module
