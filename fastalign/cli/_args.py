"""The command line's value types (each a one-line error on bad text) and its parser whose
errors are one line (:class:`UsageError`, exit status 2)."""
from __future__ import annotations

import argparse
import math
import sys

from fastalign.errors import InputError


class UsageError(InputError):
    """Bad command-line input: reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """One-line errors; ``extend(parser)``, if given, adds arguments the first time this parser parses
    (so ``fastalign --help`` never imports what only one subcommand's options need)."""

    def __init__(self, *args, extend=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._extend = extend

    def parse_known_args(self, args=None, namespace=None):
        if self._extend is not None:
            extend, self._extend = self._extend, None
            extend(self)
        return super().parse_known_args(args, namespace)

    def error(self, message):  # argparse prints usage + message and exits; we want one line
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


# ------------------------------------------------------------------------------------ value types
def int_in(lo: int, hi: int | None, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = int_in(1, None, "a positive integer")
nonneg_int = int_in(0, None, "an integer >= 0")
seed_int = int_in(0, 2**63 - 1, "an integer in [0, 2**63)")


def float_in(ok, what: str, out_of_range: str | None = None):
    """A float option's parser: ``ok(value)`` says whether it is allowed; the error says it expected
    ``what`` (``out_of_range`` for a number that is not allowed, when it says more)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {out_of_range or what}, got {text!r}")
        return value

    return parse


nonneg_float = float_in(lambda v: math.isfinite(v) and v >= 0, "a number >= 0", "a finite number >= 0")
positive_float = float_in(lambda v: math.isfinite(v) and v > 0, "a positive number")
unit_float = float_in(lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")


def top_p(text: str) -> float:
    value = unit_float(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def backend_name(text: str) -> str:
    from fastalign import backends as registry

    name = text.strip().lower()
    allowed = ["auto", *registry.names()]
    if name not in allowed:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(allowed)}, got {text!r}")
    return name


# --------------------------------------------------------------------------------------- helpers
def say_error(msg: str) -> None:
    print(f"fastalign: error: {msg}", file=sys.stderr, flush=True)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
