"""fastalign's one progress reporter (standard library only, so the command line can use it before
torch is imported).

:class:`Progress` writes to stderr, and nothing when disabled:

* ``say(msg)`` (or calling it with the message): one line ``LABEL: msg`` (the methods' lines per
  iteration: ``fastalign aisp: ...``);
* ``update(done=None, total=None, note="")``: a counting bar ``LABEL [####    ] done/total 12.3s note``,
  redrawn in place on a terminal and written as one line per 10 % elsewhere (a log); with
  ``rate=True`` it also shows the rate and the time left (``fastalign align``'s prompts);
* ``close()``: ends the bar's line on a terminal.
"""
from __future__ import annotations

import sys
import threading
import time

__all__ = ["Progress"]

_WIDTH = 24


class Progress:
    """Progress lines and a bar on ``stream`` (default stderr); see the module docstring.

    label: what every line starts with; total: the bar's end (None: a plain count); initial: the count
    it starts from (work done before, e.g. by a run being resumed: not counted in the rate); unit: the
    rate's unit; rate: show the rate and the time left; enabled: False writes nothing.
    """

    def __init__(self, label: str, total: int | None = None, *, enabled: bool = True, stream=None,
                 initial: int = 0, unit: str = "it", rate: bool = False):
        self.label, self.total, self.done = label, total, initial
        self._stream = stream
        self.enabled = bool(enabled)
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.unit, self.rate, self.initial = unit, rate, initial
        self.t0 = time.perf_counter()
        self._last_pct = -1
        self._lock = threading.Lock()  # a bar may be fed from a polling thread and the caller's

    @property
    def stream(self):
        """The stream given, else the current ``sys.stderr`` (looked up at each write)."""
        return self._stream or sys.stderr

    # -------------------------------------------------------------------------- message lines
    def say(self, msg: str) -> None:
        if self.enabled:
            print(f"{self.label}: {msg}", file=self.stream, flush=True)

    __call__ = say

    # ---------------------------------------------------------------------------------- the bar
    def update(self, done: int | None = None, total: int | None = None, note: str = "") -> None:
        """Set the count to ``done`` (default: one more) and redraw."""
        if not self.enabled:
            return
        with self._lock:
            self.done = self.done + 1 if done is None else done
            if total is not None:
                self.total = total
            self._draw(note)

    def advance(self, n: int, note: str = "") -> None:
        """``n`` more done (capped at the total)."""
        if n:
            self.update(self.done + n if self.total is None else min(self.total, self.done + n), note=note)

    def _draw(self, note: str) -> None:
        elapsed = time.perf_counter() - self.t0
        if self.rate:
            note = f"{self._rate_text(elapsed)} {note}".strip()
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * _WIDTH)
            text = f"{self.label} [{bar:<{_WIDTH}}] {self.done}/{self.total} {elapsed:6.1f}s {note}".rstrip()
            pct = int(frac * 10)
        else:
            text = f"{self.label} {self.done} {elapsed:6.1f}s {note}".rstrip()
            pct = self.done
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
        elif pct != self._last_pct:  # in a log: one line per 10 %
            self._last_pct = pct
            self.stream.write(text + "\n")
            self.stream.flush()

    def _rate_text(self, elapsed: float) -> str:
        new = self.done - self.initial
        if new <= 0 or elapsed <= 0:
            return f"? {self.unit}/s"
        per_s = new / elapsed
        left = "" if not self.total else f", {max(0.0, (self.total - self.done) / per_s):.0f}s left"
        return f"{per_s:.3g} {self.unit}/s{left}"

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
