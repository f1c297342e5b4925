"""fastalign: fused kernels for inference-time alignment of language models.

- AISP (adaptive importance sampling on pre-logits): :func:`aisp_perturb`, :func:`aisp_update`.
- SEA (Simple Energy Adaptation): :func:`sea_step`, :func:`gaussian_perturb`.

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

__all__ = [
    "__version__",
    "BackendUnavailableError",
    "aisp_perturb",
    "aisp_update",
    "available_backends",
    "gaussian_perturb",
    "importance_weights",
    "sea_step",
]
