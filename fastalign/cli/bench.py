"""``fastalign bench``: the microbenchmarks of the fused ops, or ``--e2e`` on the default model
(the scripts in ``bench/``, shipped as ``fastalign._bench``)."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from fastalign.cli import _inputs
from fastalign.errors import InputError
from fastalign.cli._args import UsageError, nonneg_int, positive_int, say, seed_int


def _load_bench_module(name: str):
    """``bench/<name>.py`` of the source checkout (or ``fastalign._bench`` when packaged)."""
    try:
        return importlib.import_module(f"fastalign._bench.{name}")
    except ImportError:
        pass
    root = Path(__file__).resolve().parents[2]  # the checkout: fastalign/cli/bench.py -> .
    path = root / "bench" / f"{name}.py"
    if not path.is_file():
        raise UsageError(f"fastalign bench needs the benchmark scripts (bench/{name}.py of a source checkout); "
                         f"not found at {path}")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    spec = importlib.util.spec_from_file_location(f"fastalign_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _budgets(text: str) -> list[int]:
    """--budgets through the study's own parser (its module is loaded only when the option is given)."""
    return _load_bench_module("bench_study").budgets_argument(text)


def cmd_bench(args) -> int:
    from fastalign.scoring import models

    if args.plot:
        models.require("matplotlib", "--plot")
    if args.budgets is not None and not args.e2e:
        raise UsageError("--budgets: the budget study runs with --e2e (fastalign bench --e2e --budgets 16,32,64,128)")
    if args.prompts_file is not None and args.budgets is None:
        raise UsageError("--prompts-file: only the budget study (--e2e --budgets ...) takes a prompt file")
    _inputs.check_bench_paths(args)
    if args.prompts_file is not None:  # its lines too, before the study loads a model (every bad line at once)
        from fastalign import distributed

        try:
            distributed.read_prompts(args.prompts_file)
        except InputError as exc:
            raise UsageError(f"--prompts-file: {str(exc).removeprefix('prompts_file: ')}") from None
    if args.e2e and args.budgets is not None:
        return _load_bench_module("bench_study").main_from_args(args)
    if args.e2e:
        e2e = _load_bench_module("bench_e2e")
        return e2e.main_from_args(args)
    return _load_bench_module("bench_ops").main_from_args(args, progress=lambda msg: say(f"bench: {msg}"))


def _benchmark_options(parser) -> None:
    _load_bench_module("bench_ops").add_arguments(parser)
    _load_bench_module("bench_e2e").add_arguments(parser)


def add_parser(sub) -> None:
    # the ops benchmark's options and bench_e2e's own come with their modules (which import torch) when
    # `bench` is parsed: each declared once, in its module
    b = sub.add_parser("bench", help="microbenchmarks of the fused ops (or --e2e on the default model)",
                       extend=_benchmark_options)
    b.add_argument("--e2e", action="store_true",
                   help="end to end on the default model: AISP vs Best-of-N at equal reward calls, SEA vs base")
    b.add_argument("--n", type=positive_int, default=None, help="--e2e: AISP rollouts per iteration")
    b.add_argument("--iterations", type=positive_int, default=None, help="--e2e: AISP iterations")
    b.add_argument("--max-new-tokens", type=positive_int, default=None, help="--e2e: response length")
    b.add_argument("--prompts", type=positive_int, default=None, help="--e2e: how many of the fixed prompts")
    b.add_argument("--sea-steps", type=nonneg_int, default=None, help="--e2e: SEA steps (0 skips SEA)")
    b.add_argument("--budgets", type=_budgets, default=None, metavar="16,32,64,128",
                   help="--e2e: the budget study (bench/bench_study.py): AISP vs Best-of-N (temperature 1, top-p "
                        "0.9) at these reward calls per prompt; --plot/--csv/--json take its rows")
    b.add_argument("--prompts-file", metavar="F.jsonl", default=None,
                   help="--e2e --budgets: prompts (JSONL, default bench/prompts.jsonl)")
    b.add_argument("--seed", type=seed_int, default=0)
    b.set_defaults(func=cmd_bench)
