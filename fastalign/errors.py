"""The exception types that tell bad input from a bug (stdlib only: the command line imports this
without torch).

* :class:`InputError` (a ``ValueError``): an argument, option, file or model that fastalign refuses
  before (or instead of) doing the work; the message names what was wrong and, where there is one,
  the fix. ``fastalign`` prints it as one line and exits with status 2.
* :class:`InputTypeError` (an ``InputError`` *and* a ``TypeError``): the same for an argument of the
  wrong type, so callers' ``except TypeError`` (the Python convention for a wrong type) and ``except
  ValueError`` both keep working.

Every other exception out of fastalign is a bug or an environment failure (out of memory, a compiler
that crashed, a reward function that raised): the command line shows its traceback and exits with
status 1. Code that validates raises these two types; internal consistency checks keep plain
``ValueError``/``RuntimeError``/``AssertionError``. The rules are in docs/design.md#errors.
"""
from __future__ import annotations

__all__ = ["InputError", "InputTypeError"]


class InputError(ValueError):
    """Bad input, refused with a message naming the argument, what it expects and what it got."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type (also a ``TypeError``)."""
