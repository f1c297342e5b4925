"""fastalign: fused kernels for inference-time alignment of language models.

- AISP (adaptive importance sampling on pre-logits): :func:`aisp_perturb`, :func:`aisp_update`.
- SEA (Simple Energy Adaptation): :func:`sea_step`, :func:`gaussian_perturb`.
- The algorithms over Hugging Face causal LMs: :func:`aisp_generate`, :func:`sea_generate`,
  :func:`bon_generate` (Best-of-N), each returning :class:`AlignResult`; rewards in
  :mod:`fastalign.rewards`.

Backends: ``torch`` (reference), ``cpu`` (C++/OpenMP/SIMD), ``cuda`` (CUDA C++), ``triton``;
``backend=None`` uses ``$FASTALIGN_BACKEND`` or ``"auto"``. See DESIGN.md for the contract.
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

from fastalign.backends import BackendUnavailableError
from fastalign.ops import (
    aisp_perturb,
    aisp_update,
    available_backends,
    gaussian_perturb,
    importance_weights,
    sea_step,
)
from fastalign.results import AlignResult
from fastalign.aisp import aisp_generate
from fastalign.bon import bon_generate
from fastalign.sea import sea_generate

__all__ = [
    "__version__",
    "AlignResult",
    "BackendUnavailableError",
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
