"""fastalign's user cache folder, shared by the extension builds, the converted default model and the
SEA vocabulary bridges: ``$FASTALIGN_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastalign``, else
``~/.cache/fastalign``. Not created here."""
from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    env = os.environ.get("FASTALIGN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "fastalign"
