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
