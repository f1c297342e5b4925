"""Every third-party module that fastalign, its tests, benchmarks and kernels import is declared in
pyproject.toml (core dependencies or an extra), so README line 2 on a fresh machine installs everything
the suite needs. A green run on a machine with packages installed by hand once hid scipy this way."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("fastalign", "kernels", "bench", "tests")
#: Top-level names that are this repository's own modules (the tests put tests/ and the root on sys.path).
LOCAL = {"fastalign", "kernels", "bench", "conftest"}
#: Import name -> distribution name where importlib.metadata cannot tell (module not installed here).
KNOWN = {"yaml": "pyyaml", "sklearn": "scikit-learn", "PIL": "pillow"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return {_normalise(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in reqs}


def _local_names() -> set[str]:
    """Modules importable by their bare name: the folders tests/ and bench/ are on sys.path when their
    files run, so their own files are (``_tiny``, ``bench_ops``)."""
    names = set(LOCAL)
    for folder in ("tests", "bench"):
        names.update(path.stem for path in (ROOT / folder).glob("*.py"))
    return names


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "importorskip"
              and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(str(node.args[0].value).split(".")[0])
    return found


def _third_party_imports() -> dict[str, list[str]]:
    local = _local_names()
    where: dict[str, list[str]] = {}
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if ".venv" in path.parts or "build" in path.parts:
                continue
            for name in _imports(path):
                if name in sys.stdlib_module_names or name in local or name == "__future__":
                    continue
                where.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return where


def test_the_scan_sees_the_imports_it_must_check():
    """Positive control: the scan finds the third-party imports known to be there."""
    found = _third_party_imports()
    assert {"torch", "numpy", "pytest", "transformers", "scipy", "triton"} <= set(found)


def _undeclared(imports: dict[str, list[str]], declared: set[str]) -> dict[str, tuple[list[str], list[str]]]:
    """``{module: (distributions that could provide it, files importing it)}`` for every imported module
    that no declared requirement provides."""
    dists = metadata.packages_distributions()
    missing = {}
    for name, files in imports.items():
        candidates = {_normalise(d) for d in dists.get(name, [])} | {_normalise(KNOWN.get(name, name))}
        if not candidates & declared:
            missing[name] = (sorted(candidates), files[:3])
    return missing


def test_every_third_party_import_is_declared():
    missing = _undeclared(_third_party_imports(), _declared())
    assert not missing, f"imported but not declared in pyproject.toml (module: (distributions, files)): {missing}"


def test_an_undeclared_import_is_caught():
    """Without scipy in pyproject.toml (the omission of the past) the check names it and its importer."""
    missing = _undeclared(_third_party_imports(), _declared() - {"scipy"})
    assert set(missing) == {"scipy"}
    assert "tests/test_rng.py" in missing["scipy"][1]


@pytest.mark.parametrize("extra", ["dev", "hf", "triton", "plot"])
def test_readme_tests_command_installs_every_extra(extra):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    line = readme.split("# 2. set up and run the tests", 1)[1].splitlines()[1]
    assert re.search(rf"\.\[[^\]]*\b{extra}\b[^\]]*\]", line), line
