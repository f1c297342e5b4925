"""``fastalign check``: every available backend against the float64 reference (:mod:`fastalign.ops.check`)."""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys

from fastalign._progress import Progress
from fastalign.cli._args import backend_name, say, say_error


def _triton_interpreter_for_check(argv=None) -> bool:
    """Without a GPU, let ``fastalign check`` run the Triton kernels under Triton's CPU interpreter.
    Returns whether it was switched on.

    ``TRITON_INTERPRET=1`` must be set before ``triton.language`` is imported (its ``@triton.jit``
    helpers such as ``tl.randn4x`` are built as interpreted functions only then), and ``import torch``
    already imports it. So when it was imported and ``argv`` (the command line) is known, the process
    re-executes itself once with the variable set; in-process callers (``argv`` None) get the
    variable only if triton is not imported yet.
    """
    kernels_imported = any(name.startswith("fastalign.kernels.") for name in sys.modules)
    if "TRITON_INTERPRET" in os.environ or kernels_imported or importlib.util.find_spec("triton") is None:
        return False
    import torch

    if torch.cuda.is_available():
        return False
    if "triton.language" in sys.modules:
        if argv is None:
            return False
        env = dict(os.environ, TRITON_INTERPRET="1")
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", "fastalign", *argv], env)
    os.environ["TRITON_INTERPRET"] = "1"
    from fastalign import backends as registry

    registry._reset_cache()
    return True


def cmd_check(args) -> int:
    from fastalign import backends as registry
    from fastalign.ops import check

    if args.backend in (None, "auto", "triton") and _triton_interpreter_for_check(args.argv) and not args.json:
        say("fastalign check: no GPU, so the Triton kernels run under Triton's CPU interpreter")

    try:
        rows_progress = Progress("check", enabled=not args.json and sys.stderr.isatty())
        backend = None if args.backend == "auto" else args.backend
        rows = check.run_checks(backend, quick=args.quick, progress=lambda row: rows_progress.update())
        rows_progress.close()
    except registry.BackendUnavailableError as exc:
        say_error(str(exc))
        return 1
    if args.json:
        print(json.dumps([r.as_json() for r in rows], indent=1))
    else:
        print(check.format_table(rows))
        failed = sum(not r.ok for r in rows)
        print(f"fastalign check: {len(rows)} rows, " + ("all passed" if not failed else f"{failed} FAILED"))
    return 0 if rows and all(r.ok for r in rows) else 1


def add_parser(sub) -> None:
    c = sub.add_parser("check", help="check every available backend against the float64 reference")
    c.add_argument("--backend", type=backend_name, help="check only this backend")
    c.add_argument("--quick", action="store_true", help="tiny shapes only (fast; used for the Triton interpreter)")
    c.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    c.set_defaults(func=cmd_check)
