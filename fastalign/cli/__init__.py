"""The ``fastalign`` command line.

Subcommands::

    fastalign check [--backend NAME] [--quick] [--json]     every backend against the float64 reference
    fastalign info [--json]                                 versions, backends and why not, cache folders
    fastalign bench [--op OP] [--provider P] [--threads 1,all] [--csv F] [--json] [--plot F.png] [--e2e]
    fastalign bench --e2e --budgets 16,32,64,128 [--prompts-file F.jsonl] [--quick] [--plot F.png] [--csv F] [--json]
    fastalign align "PROMPT" [--method aisp|sea|bon] [--target TEXT] [--model M] [--reward R] [-n N]
                    [--iterations K] [--seed S] [--backend B] [--json] [--prompts-file F.jsonl]
                    [--out results.jsonl] [--device-map auto]

``align --out F`` writes the results to a file through :mod:`fastalign.distributed`: resumable, and
shared out over the ranks when started by ``torchrun --nproc-per-node N -m fastalign align ...``
(spell the rollouts option ``-n`` or ``--rollouts`` there: torchrun's own parser rejects ``--n``).

Exit status: 0 success, 1 a check failed (or an internal error), 2 bad input. Bad input (an empty
prompt, an unknown method or backend, a model path that does not exist, a non-numeric option, a
missing optional package, a file that cannot be read or written, a prompt past the model's context:
:mod:`fastalign.cli._inputs`; in code, :class:`fastalign.errors.InputError` and the missing-package,
missing-model and unavailable-backend errors) gets a one-line message on stderr before any model
loads, never a traceback (``FASTALIGN_DEBUG=1`` raises it instead). Any other exception is a bug and
keeps its traceback, exit status 1 (docs/design.md#errors).

One module per command: :mod:`.check`, :mod:`.info`, :mod:`.bench`, :mod:`.align` (each its
``cmd_*`` and its ``add_parser``); :mod:`._args` holds the value types and the one-line-error parser,
:mod:`._inputs` the checks of files and prompts made before any model loads.
"""
from __future__ import annotations

import argparse
import os
import sys

from fastalign.errors import InputError
from fastalign.cli._args import Parser, UsageError, say_error

__all__ = ["main", "build_parser", "UsageError"]


# ------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="fastalign", description="Fused kernels for inference-time alignment (AISP, SEA).")
    from fastalign import __version__

    p.add_argument("--version", action="version", version=f"fastalign {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{check,info,bench,align}", parser_class=Parser)
    from fastalign.cli import align, bench, check, info

    for command in (check, info, bench, align):
        command.add_parser(sub)
    return p


def main(argv=None) -> int:
    """Entry point of the ``fastalign`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        # the command line as given, when this is the console script (a re-exec may need it)
        args.argv = list(sys.argv[1:]) if argv is None else None
    except UsageError as exc:
        say_error(str(exc))
        return 2
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    from fastalign.backends import BackendUnavailableError
    from fastalign.scoring.models import MissingPackageError, ModelNotFoundError

    try:
        return int(args.func(args) or 0)
    except (InputError, MissingPackageError, ModelNotFoundError, BackendUnavailableError) as exc:
        # bad input (fastalign.errors: raised by validation only) or a missing package, model or backend
        if os.environ.get("FASTALIGN_DEBUG"):
            raise
        text = str(exc).strip().splitlines()
        say_error(text[0] if text else type(exc).__name__)
        return 2
    except KeyboardInterrupt:
        say_error("interrupted")
        return 130
    except BrokenPipeError:
        return 1
    except Exception:  # anything else is a bug (or the environment failing): keep its traceback
        import traceback

        traceback.print_exc()
        say_error("internal error (the traceback above); exit status 1")
        return 1
