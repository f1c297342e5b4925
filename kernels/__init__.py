"""Triton kernels of fastalign (imported as ``fastalign.kernels``)."""
