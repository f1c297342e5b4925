"""fastalign: fused kernels for inference-time alignment (AISP and SEA)."""
__version__ = "0.1.0"
