"""Checks of the files and folders a run reads and writes, made before any work (standard library only:
the command line and :func:`fastalign.distributed.align_file` both use them).

Every check raises :class:`~fastalign.errors.InputError` (a ``ValueError``) with a one-line message
that starts with the option (``--out: ...``) and says what to do. Nothing is left behind: the only file
a check creates is a probe in the output folder, removed at once.

* files read (``--prompts-file``): exists, is a regular file (not a folder, a FIFO or a device),
  can be opened for reading.
* files written (``--out``, ``--csv``, ``--plot``): the name is not a folder (an existing one, or one
  spelled with a trailing ``/``), its folder exists and is a folder, a file can be created there (or the
  existing file opened for writing); ``--plot`` needs an extension matplotlib writes.
* folders read (``bench --compare-with``): exists, is a folder (holding what the caller names).
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from fastalign.errors import InputError

__all__ = ["input_file", "output_file", "input_folder", "plot_file", "exists"]


def exists(path: Path) -> bool:
    """Whether ``path`` names anything (a broken link or an unreadable entry counts as not there)."""
    try:
        path.stat()
        return True
    except OSError:
        return False


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def input_file(text: str, flag: str) -> Path:
    """A file the command reads."""
    path = Path(text).expanduser()
    if not text.strip():
        raise InputError(f"{flag}: expected a file name, got {text!r}")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{flag}: {text!r} does not exist") from None
    except OSError as exc:
        raise InputError(f"{flag}: {text!r} cannot be read ({_why(exc)})") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{flag}: {text!r} is a folder; give a file (one JSON object per line)")
    if not stat.S_ISREG(mode):
        raise InputError(f"{flag}: {text!r} is not a regular file; give a file (one JSON object per line)")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"{flag}: {text!r} cannot be read ({_why(exc)})") from None
    return path


def output_file(text: str, flag: str, example: str, *, replaced: bool = False) -> Path:
    """A file the command writes (``example``: a file name to suggest, e.g. ``results.jsonl``).

    ``replaced``: the file is written beside and renamed into place (``--out``), so an existing
    non-regular file there (``/dev/null``, a FIFO) would be replaced: refused.
    """
    if not text.strip():
        raise InputError(f"{flag}: expected a file name such as {example}, got {text!r}")
    path = Path(text).expanduser()
    seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
    if text.endswith(seps) or path.is_dir():
        raise InputError(f"{flag}: {text!r} names a folder; give a file name, such as {str(path / example)!r}")
    folder = path.parent
    try:
        folder_mode = folder.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{flag}: the folder {str(folder)!r} of {text!r} does not exist; create it first "
                         f"(mkdir -p {folder})") from None
    except NotADirectoryError:
        raise InputError(f"{flag}: {str(folder)!r} in {text!r} is not a folder (a part of it is a file)") from None
    except OSError as exc:
        raise InputError(f"{flag}: the folder {str(folder)!r} of {text!r} cannot be reached ({_why(exc)})") from None
    if not stat.S_ISDIR(folder_mode):
        raise InputError(f"{flag}: {str(folder)!r} in {text!r} is a file, not a folder")
    if exists(path) and not path.is_file():
        if replaced:
            raise InputError(f"{flag}: {text!r} exists and is not a regular file; give a file name such as "
                             f"{example}")
        return path  # e.g. /dev/null: written in place, nothing to probe
    in_place = exists(path) and not replaced
    try:
        if in_place:
            with open(path, "ab"):  # no byte written, the file unchanged
                pass
        else:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.probe-")
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        what = repr(text) if in_place else f"a file in the folder {str(folder)!r}"
        raise InputError(f"{flag}: cannot write {what} ({_why(exc)}); choose a writable location") from None
    return path


def input_folder(text: str, flag: str, *, holds: str | None = None) -> Path:
    """A folder the command reads (``holds``: a path inside it that must exist)."""
    path = Path(text).expanduser()
    if not path.exists():
        raise InputError(f"{flag}: {text!r} does not exist")
    if not path.is_dir():
        raise InputError(f"{flag}: {text!r} is a file; give a folder")
    if holds is not None and not (path / holds).exists():
        raise InputError(f"{flag}: {text!r} has no {holds}; give the root of a fastalign checkout")
    return path


def plot_file(text: str, flag: str = "--plot") -> Path:
    """An image file matplotlib can write (its format from the extension)."""
    from matplotlib.backend_bases import FigureCanvasBase

    if text.strip() and (Path(text).expanduser().is_dir() or text.endswith(os.sep)):
        return output_file(text, flag, "plot.png")  # refuses the folder
    formats = FigureCanvasBase.get_supported_filetypes()
    ext = Path(text).suffix.lower().lstrip(".")
    if ext not in formats:
        got = f"the extension .{ext}" if ext else "no extension"
        raise InputError(f"{flag}: {text!r} has {got}, which matplotlib does not write; give an image file name "
                         "ending in .png (or .pdf, .svg, .jpg)")
    return output_file(text, flag, f"plot.{ext}")
