"""Helpers shared by the equivalence tests: backend discovery, tolerances, input builders."""
from __future__ import annotations

import pytest
import torch

import fastalign as fa

FP32_TOL = 1e-5


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def backend_params(include_torch: bool = True):
    """pytest params (device, backend) for every backend that can run here, marked gpu on cuda."""
    params = []
    for dev in devices():
        for name, reason in fa.available_backends(dev).items():
            if reason is not None or (name == "torch" and not include_torch):
                continue
            marks = [pytest.mark.gpu] if dev == "cuda" else []
            params.append(pytest.param(dev, name, id=f"{name}-{dev}", marks=marks))
    return params


def storage_dtypes(device: str, backend: str) -> list[torch.dtype]:
    """Storage dtypes to test: bf16 is not reliable in the Triton interpreter, so not there."""
    if backend == "triton" and device == "cpu":
        return [torch.float32, torch.float16]
    return [torch.float32, torch.float16, torch.bfloat16]


def ulp(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One unit in the last place of ``dtype`` at the magnitude of ``x`` (float64 tensor)."""
    info = torch.finfo(dtype)
    mag = x.abs().to(torch.float64).clamp_min(info.tiny)
    exponent = torch.floor(torch.log2(mag))
    mantissa_bits = {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23}[dtype]
    return torch.pow(2.0, exponent - mantissa_bits)


#: absolute slack of the fp16/bf16 bound (see assert_matches_reference)
LOWP_ABS_FLOOR = 2e-6


def assert_matches_reference(out: torch.Tensor, ref64: torch.Tensor, dtype: torch.dtype, *, name: str = "out",
                             atol: float | None = None, rtol: float = FP32_TOL) -> None:
    """fp32: |out - ref| <= atol + rtol*|ref| (atol defaults to 1e-5); fp16/bf16: within one ulp of the
    storage dtype at the reference's magnitude, plus an absolute floor of 2e-6 (backends' normals
    agree to ~1e-6, which only matters where a result cancels to near zero and its ulp is tiny),
    plus ``atol`` if given (accumulated quantities)."""
    assert out.shape == ref64.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref64.shape)}"
    got = out.detach().to("cpu", torch.float64)
    ref = ref64.detach().to("cpu", torch.float64)
    err = (got - ref).abs()
    if dtype == torch.float32 or dtype == torch.float64:
        bound = (FP32_TOL if atol is None else atol) + rtol * ref.abs()
    else:
        bound = ulp(ref, dtype) * (1 + 1e-9) + LOWP_ABS_FLOOR + (0.0 if atol is None else atol)
    bad = ~(err <= bound)
    if bool(bad.any()):
        idx = bad.nonzero()[0].tolist()
        raise AssertionError(
            f"{name} ({dtype}): {int(bad.sum())}/{err.numel()} elements off; first at {idx}: "
            f"got {got[tuple(idx)].item()!r}, ref {ref[tuple(idx)].item()!r}, bound {bound[tuple(idx)].item() if bound.dim() else float(bound)!r}; "
            f"max abs err {err.max().item():.3g}"
        )


def randn(shape, dtype, device, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def big_iteration(n: int, tau: int, d: int) -> int:
    """An iteration index whose AISP noise offsets exceed 2**32."""
    return 2**33 // (n * tau * d) + 1


def big_step(numel: int) -> int:
    """A SEA step whose noise offsets exceed 2**32."""
    return 2**33 // numel + 1

