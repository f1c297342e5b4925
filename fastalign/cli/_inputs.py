"""The command line's checks of its files and prompts, made before any model loads (the file checks
themselves are :mod:`fastalign._files`, shared with :mod:`fastalign.distributed`).

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
from pathlib import Path

from fastalign._files import exists, input_file, input_folder, output_file, plot_file
from fastalign.errors import InputError

__all__ = ["input_file", "output_file", "input_folder", "plot_file", "check_bench_paths", "check_align_out",
           "check_align_prompts"]


def check_align_out(out: str | None, prompts_file: str | None) -> None:
    """``align --out``: a file that can be written and renamed into place, whose ``.parts`` folder can
    be made, and that is not the prompt file."""
    if out is None:
        return
    path = output_file(out, "--out", "results.jsonl", replaced=True)
    parts = path.with_name(path.name + ".parts")
    if exists(parts) and not parts.is_dir():
        raise InputError(f"--out: {str(parts)!r} (where --out keeps its partial results) is a file; move it away "
                         "or choose another --out")
    if prompts_file is not None and exists(path) and os.path.samefile(path, prompts_file):
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
