"""The command line's checks of its files and prompts, made before any model loads.

Every check raises :class:`~fastalign.errors.InputError` (a ``ValueError``) with a one-line message
that starts with the option (``--out: ...``) and says what to do; ``fastalign`` turns it into
``fastalign: error: ...`` and exit status 2. Nothing is left behind: the only file a check creates
is a probe in the output folder, removed at once.

* files read (``--prompts-file``): exists, is a regular file (not a folder, a FIFO or a device),
  can be opened for reading.
* files written (``--out``, ``--csv``, ``--plot``): the name is not a folder (an existing one, or one
  spelled with a trailing ``/``), its folder exists and is a folder, a file can be created there (or the
  existing file opened for writing); ``--out`` (renamed into place at the end, beside its
  ``.parts`` folder) must not be an existing non-regular file such as ``/dev/null``, its ``.parts``
  must not be a file, and it must not be the ``--prompts-file``; ``--plot`` needs an extension
  matplotlib writes.
* folders read (``bench --compare-with``): exists, is a folder holding a fastalign checkout.
* prompts (``align``): each prompt's token count (chat template included) + ``--max-new-tokens``
  within the model's context, read from its config and tokenizer only (:mod:`fastalign.engine._context`).
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from fastalign.errors import InputError

__all__ = ["input_file", "output_file", "input_folder", "plot_file", "check_bench_paths", "check_align_out",
           "check_align_prompts"]


def _exists(path: Path) -> bool:
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
    if _exists(path) and not path.is_file():
        if replaced:
            raise InputError(f"{flag}: {text!r} exists and is not a regular file; give a file name such as "
                             f"{example}")
        return path  # e.g. /dev/null: written in place, nothing to probe
    in_place = _exists(path) and not replaced
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


def check_align_out(out: str | None, prompts_file: str | None) -> None:
    """``align --out``: a file that can be written and renamed into place, whose ``.parts`` folder can
    be made, and that is not the prompt file."""
    if out is None:
        return
    path = output_file(out, "--out", "results.jsonl", replaced=True)
    parts = path.with_name(path.name + ".parts")
    if _exists(parts) and not parts.is_dir():
        raise InputError(f"--out: {str(parts)!r} (where --out keeps its partial results) is a file; move it away "
                         "or choose another --out")
    if prompts_file is not None and _exists(path) and os.path.samefile(path, prompts_file):
        raise InputError(f"--out: {out!r} is the --prompts-file; give another file (the results would replace "
                         "the prompts)")


def check_bench_paths(args) -> None:
    """``fastalign bench``: the files it reads and writes, and --csv/--plot only where they are used."""
    budgets = getattr(args, "budgets", None) is not None
    if args.e2e and not budgets:
        for flag, value in (("--csv", args.csv), ("--plot", args.plot)):
            if value is not None:
                raise InputError(f"{flag}: fastalign bench --e2e writes no {flag[2:]} (its report is printed, "
                                 "--json for JSON); the budget study (--e2e --budgets ...) and the op benchmarks do")
    if args.csv is not None:
        output_file(args.csv, "--csv", "bench.csv")
    if args.plot is not None:
        plot_file(args.plot)
    if args.csv is not None and args.plot is not None and Path(args.csv).expanduser().absolute() == \
            Path(args.plot).expanduser().absolute():
        raise InputError(f"--plot: {args.plot!r} is the --csv file too; give two files")
    if getattr(args, "prompts_file", None) is not None:
        input_file(args.prompts_file, "--prompts-file")
    if getattr(args, "compare_with", None) is not None:
        input_folder(args.compare_with, "--compare-with", holds="fastalign")


def _prompt_names(items: list[dict], prompts_file: str | None) -> list[str]:
    if prompts_file is None:
        return ["the prompt"] if len(items) == 1 else [f"prompt {i + 1}" for i in range(len(items))]
    from fastalign import distributed

    lines = Path(prompts_file).read_bytes().split(b"\n")
    numbers = [n for n, raw in enumerate(lines, 1) if distributed._check_line(raw, n == 1)[0] is not None]
    return [f"--prompts-file line {n}" for n in numbers]


def check_align_prompts(items: list[dict], model: str | None, max_new_tokens: int, *, truncate: bool,
                        prompts_file: str | None = None) -> list[str]:
    """Every prompt's tokens + ``max_new_tokens`` within the context of ``model`` (its tokenizer and
    config only, no weights): ValueError naming the first that is not; with ``truncate``, one note per
    prompt that will be cut (the methods cut it, :func:`fastalign.engine.encoding.truncate_prompt`)."""
    from fastalign.engine import _context, encoding
    from fastalign.scoring import models

    tokenizer, config = models.load_tokenizer_and_config(model)
    limit = _context.context_limit(config)
    if limit is None:
        return []
    counts = [len(r) for r in encoding.prompt_token_ids(tokenizer, [it["prompt"] for it in items])]
    names = _prompt_names(items, prompts_file)
    keep = _context.check_prompt_lengths(counts, limit, max_new_tokens, truncate=truncate, names=names,
                                         flags={"max_new_tokens": "--max-new-tokens",
                                                "truncate_prompt": "--truncate-prompt"})
    return [f"{names[i]}: {counts[i]} tokens, cut from the left to at most its last {k} (--truncate-prompt) to fit "
            f"the model's context of {limit.tokens} tokens ({limit.source}) with --max-new-tokens {max_new_tokens}"
            for i, k in enumerate(keep) if k is not None]
