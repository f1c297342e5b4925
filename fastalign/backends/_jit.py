"""Just-in-time build of fastalign's native extensions (shared by the ``cpu`` and ``cuda`` backends).

``load(name, sources)`` wraps :func:`torch.utils.cpp_extension.load` (ninja) with what a user needs:

* sources are found in :func:`csrc_dir` (``fastalign/_csrc`` inside an installed wheel, else the
  repository's ``csrc/``);
* builds are cached under :func:`cache_dir` (``$FASTALIGN_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/fastalign`` or ``~/.cache/fastalign``), one subfolder per torch + Python version;
* the build folder is named by a hash of every source, every header under ``csrc/`` and the flags, so
  changing any of them builds a fresh extension and an old cache is never reused by mistake;
* a cached build that exists but does not import (truncated or corrupt ``.so``) is removed and
  rebuilt once;
* a missing compiler, missing ninja or unwritable cache becomes a :class:`BuildError` saying why and
  how to fix it.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import sys
import tempfile
import threading
from types import ModuleType
from typing import Iterable, Sequence

__all__ = ["BuildError", "csrc_dir", "cache_dir", "load"]

_LOCK = threading.Lock()
_HEADER_SUFFIXES = (".h", ".hpp", ".cuh", ".inc")


class BuildError(RuntimeError):
    """A native extension could not be built or loaded; the message says why and how to fix it."""


def csrc_dir() -> pathlib.Path:
    """Folder holding the C++/CUDA sources: ``fastalign/_csrc`` in a wheel, else ``<repo>/csrc``."""
    package_dir = pathlib.Path(__file__).resolve().parent.parent  # .../fastalign
    candidates = [package_dir / "_csrc", package_dir.parent / "csrc"]
    for cand in candidates:
        if (cand / "include" / "fastalign").is_dir():
            return cand
    try:  # an editable install may map fastalign._csrc elsewhere
        import importlib.util

        spec = importlib.util.find_spec("fastalign._csrc")
        for loc in (spec.submodule_search_locations or []) if spec is not None else []:
            if (pathlib.Path(loc) / "include" / "fastalign").is_dir():
                return pathlib.Path(loc)
    except (ImportError, ValueError):
        pass
    raise BuildError(
        "fastalign: cannot find the C++ sources (looked for include/fastalign/ in "
        + ", ".join(str(c) for c in candidates)
        + "); reinstall fastalign so that fastalign/_csrc is part of the package"
    )


def _version_tag() -> str:
    import torch

    torch_version = torch.__version__.replace("+", "_").replace("/", "_")
    return f"torch{torch_version}-py{sys.version_info.major}{sys.version_info.minor}"


def cache_dir() -> pathlib.Path:
    """Root of the build cache for this torch + Python version (created lazily by :func:`load`)."""
    from fastalign._cache import user_cache_dir

    return user_cache_dir() / _version_tag()


def _ensure_writable(folder: pathlib.Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise BuildError(
            f"fastalign: the build cache {folder} is not writable ({exc.strerror or exc}); set "
            "FASTALIGN_CACHE_DIR to a writable folder, or install the prebuilt extension with "
            "FASTALIGN_BUILD_EXT=1 pip install --no-build-isolation ."
        ) from exc


def _check_toolchain(sources: Sequence[pathlib.Path]) -> None:
    from torch.utils import cpp_extension

    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise BuildError(
            f"fastalign: no C++ compiler found (looked for {cxx!r} on PATH) to build the native "
            "extension; install one (e.g. `apt-get install g++`) or set CXX, or use backend='torch'"
        )
    try:
        cpp_extension.verify_ninja_availability()
    except RuntimeError as exc:
        raise BuildError(
            "fastalign: ninja is required to build the native extension; `pip install ninja`"
        ) from exc
    if any(s.suffix == ".cu" for s in sources):
        cuda_home = cpp_extension.CUDA_HOME
        nvcc = os.path.join(cuda_home, "bin", "nvcc") if cuda_home else None
        if not nvcc or not os.path.exists(nvcc):
            raise BuildError(
                "fastalign: no CUDA toolkit found (CUDA_HOME unset or without bin/nvcc) to build the "
                "CUDA extension; install the CUDA toolkit and set CUDA_HOME"
            )


def _headers(roots: Iterable[pathlib.Path]) -> list[pathlib.Path]:
    found: set[pathlib.Path] = set()
    for root in roots:
        if root.is_dir():
            found.update(p for p in root.rglob("*") if p.suffix in _HEADER_SUFFIXES and p.is_file())
    return sorted(found)


def _build_hash(sources: Sequence[pathlib.Path], headers: Sequence[pathlib.Path], flags: Sequence) -> str:
    digest = hashlib.sha256()
    for path in [*sources, *headers]:
        digest.update(path.name.encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    digest.update(repr(flags).encode())
    return digest.hexdigest()[:16]


def _forget(name: str) -> None:
    """Drop torch's in-process record of ``name`` so that the next load really rebuilds."""
    from torch.utils import cpp_extension

    versioner = getattr(cpp_extension, "JIT_EXTENSION_VERSIONER", None)
    entries = getattr(versioner, "entries", None)
    if isinstance(entries, dict):
        entries.pop(name, None)


def load(
    name: str,
    sources: Sequence[str | os.PathLike],
    *,
    extra_cflags: Sequence[str] = (),
    extra_cuda_cflags: Sequence[str] = (),
    extra_ldflags: Sequence[str] = (),
    extra_include_paths: Sequence[str | os.PathLike] = (),
    verbose: bool = False,
) -> ModuleType:
    """Build (or reuse from the cache) and import the extension ``name`` made of ``sources``.

    ``sources`` are paths, absolute or relative to :func:`csrc_dir`. ``csrc/include`` is always on
    the include path. Raises :class:`BuildError` when the toolchain or cache is unusable, and the
    compiler's own error (``RuntimeError``) when the sources do not compile.
    """
    from torch.utils import cpp_extension

    root = csrc_dir()
    src_paths = [pathlib.Path(s) if pathlib.Path(s).is_absolute() else root / s for s in sources]
    missing = [str(p) for p in src_paths if not p.is_file()]
    if missing:
        raise BuildError(f"fastalign: extension {name!r} sources not found: {', '.join(missing)}")
    include_paths = [root / "include", *(pathlib.Path(p) for p in extra_include_paths)]
    headers = _headers([*include_paths, *{p.parent for p in src_paths}])
    flags = (list(extra_cflags), list(extra_cuda_cflags), list(extra_ldflags), [str(p) for p in include_paths])
    digest = _build_hash(src_paths, headers, flags)
    build_name = f"{name}_{digest}"  # one module name per content: never clashes in one process

    with _LOCK:
        _check_toolchain(src_paths)
        build_dir = cache_dir() / build_name
        _ensure_writable(build_dir)
        kwargs = dict(
            name=build_name,
            sources=[str(p) for p in src_paths],
            extra_cflags=list(extra_cflags),
            extra_cuda_cflags=list(extra_cuda_cflags) or None,
            extra_ldflags=list(extra_ldflags),
            extra_include_paths=[str(p) for p in include_paths],
            build_directory=str(build_dir),
            verbose=verbose,
        )
        try:
            return cpp_extension.load(**kwargs)
        except (ImportError, OSError) as exc:
            # The build step succeeded (or was skipped as up to date) but the cached library does
            # not import: a truncated/corrupt file from an interrupted build. Rebuild once.
            first_error = exc
        shutil.rmtree(build_dir, ignore_errors=True)
        _ensure_writable(build_dir)
        _forget(build_name)
        try:
            return cpp_extension.load(**kwargs)
        except (ImportError, OSError) as exc:
            raise BuildError(
                f"fastalign: extension {name!r} was rebuilt in {build_dir} but still does not import "
                f"({exc}; first error: {first_error}); delete {cache_dir()} and retry"
            ) from exc
