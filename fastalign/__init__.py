"""fastalign: fused kernels for inference-time alignment of language models.

- AISP (adaptive importance sampling on pre-logits): :func:`aisp_perturb`, :func:`aisp_update`.
- SEA (Simple Energy Adaptation): :func:`sea_step`, :func:`gaussian_perturb`.
- The algorithms over Hugging Face causal LMs: :func:`aisp_generate`, :func:`sea_generate`,
  :func:`bon_generate` (Best-of-N), each returning :class:`AlignResult`; rewards in
  :mod:`fastalign.rewards`.

Backends: ``torch`` (reference), ``cpu`` (C++/OpenMP/SIMD), ``cuda`` (CUDA C++), ``triton``;
``backend=None`` uses ``$FASTALIGN_BACKEND`` or ``"auto"``. The contract: docs/design.md.

Importing this package costs nothing beyond the standard library (the command line's ``--help`` and
``--version`` start at once): the public names below load their modules on first access (PEP 562),
and ``torch`` comes with the first of them. Bad input raises :class:`InputError` (a ``ValueError``)
or :class:`InputTypeError` (also a ``TypeError``), from :mod:`fastalign.errors`.
"""
__version__ = "0.1.0"


def _map_kernels_folder() -> None:
    """Make ``fastalign.kernels`` (the top-level ``kernels/`` folder) importable in every install.

    ``kernels/`` has no ``__init__.py`` on purpose: it is a PEP 420 namespace folder, so a checkout
    root on ``sys.path`` (``python -m pytest``, ``python -m fastalign``) can never shadow an installed
    top-level ``kernels`` package (Hugging Face's kernel hub, which transformers imports); a regular
    package of that name anywhere on the path wins over a namespace folder. A wheel ships the folder
    as ``fastalign/kernels/``, found by the ordinary import system. setuptools' editable finder (and a
    plain checkout) cannot resolve a namespace package nested in a regular one, so there the folder
    beside this package is registered under its name; the modules inside import on first use.
    """
    import importlib.machinery
    import importlib.util
    import os
    import sys

    if "fastalign.kernels" in sys.modules or importlib.util.find_spec("fastalign.kernels") is not None:
        return
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")
    if not os.path.isfile(os.path.join(folder, "_common.py")):
        return  # neither installed nor a checkout: the Triton backend reports it when used
    spec = importlib.machinery.ModuleSpec("fastalign.kernels", None, is_package=True)
    spec.submodule_search_locations = [folder]
    module = importlib.util.module_from_spec(spec)
    module.__doc__ = "Triton kernels of fastalign (the top-level kernels/ folder of the repository)."
    sys.modules["fastalign.kernels"] = module
    globals()["kernels"] = module  # the attribute the import system sets on a parent package


_map_kernels_folder()

#: The short public module paths users import (README, docs/serving.md), and the module of the layer
#: package that holds each (docs/design.md#layers). ``import fastalign.models`` and
#: ``from fastalign import models`` give the very module object of ``fastalign.scoring.models``, so a
#: monkeypatch or an isinstance check through either name sees the same thing.
PUBLIC_MODULES = {
    "fastalign.aisp": "fastalign.methods.aisp",
    "fastalign.sea": "fastalign.methods.sea",
    "fastalign.bon": "fastalign.methods.bon",
    "fastalign.results": "fastalign.methods.results",
    "fastalign.rewards": "fastalign.scoring.rewards",
    "fastalign.metrics": "fastalign.scoring.metrics",
    "fastalign.models": "fastalign.scoring.models",
    "fastalign.encoding": "fastalign.engine.encoding",
    "fastalign.sampling": "fastalign.engine.sampling",
    "fastalign.rng": "fastalign.backends.rng",
    "fastalign.library": "fastalign.ops.library",
    "fastalign.check": "fastalign.ops.check",
}


class _ModuleAlias:
    """The import-system finder and loader behind :data:`PUBLIC_MODULES`: the short name's spec loads
    nothing of its own; it hands over the layer package's module (imported on first use) unchanged."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname not in PUBLIC_MODULES:
            return None
        import importlib.machinery

        return importlib.machinery.ModuleSpec(fullname, cls())

    def create_module(self, spec):
        import importlib

        return importlib.import_module(PUBLIC_MODULES[spec.name])

    def exec_module(self, module):
        pass  # already executed under its own name


def _install_module_aliases() -> None:
    import sys

    if not any(finder is _ModuleAlias for finder in sys.meta_path):
        sys.meta_path.insert(0, _ModuleAlias)


_install_module_aliases()

from fastalign.errors import InputError, InputTypeError  # noqa: E402  (stdlib only)

#: public name -> the module that defines it, imported on first access (``import fastalign`` stays light)
_LAZY = {
    "AlignResult": "fastalign.methods.results",
    "BackendUnavailableError": "fastalign.backends",
    "aisp_generate": "fastalign.methods.aisp",
    "bon_generate": "fastalign.methods.bon",
    "sea_generate": "fastalign.methods.sea",
    "aisp_perturb": "fastalign.ops",
    "aisp_update": "fastalign.ops",
    "available_backends": "fastalign.ops",
    "gaussian_perturb": "fastalign.ops",
    "importance_weights": "fastalign.ops",
    "sea_step": "fastalign.ops",
}


def __getattr__(name: str):
    """PEP 562: a public name imports its module once, then is an ordinary attribute. A submodule's name
    (``fastalign.rewards``, ...) imports that submodule, as an eager ``__init__`` used to make happen."""
    import importlib

    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    if not name.startswith("__"):
        import importlib.util

        try:
            found = importlib.util.find_spec(f"{__name__}.{name}") is not None
        except (ImportError, ValueError):
            found = False
        if found:
            return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__",
    "AlignResult",
    "BackendUnavailableError",
    "InputError",
    "InputTypeError",
    "aisp_generate",
    "bon_generate",
    "sea_generate",
    "aisp_perturb",
    "aisp_update",
    "available_backends",
    "gaussian_perturb",
    "importance_weights",
    "sea_step",
]
