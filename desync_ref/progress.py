"""Progress reporting: one small interface the operations call, shown on stderr by the CLI.

An operation takes a ``Progress`` (``progress(operation, total)`` -> a ``Bar`` with
``update(n)`` and ``close()``); ``no_progress`` shows nothing and is every operation's
default, so the library never writes to a terminal by itself. ``terminal_progress`` is what
the command line passes: it follows desync's ``NewProgressBar`` (``progressbar.go``):

* shown when stderr is a terminal, or when ``DESYNC_PROGRESSBAR_ENABLED`` or
  ``DESYNC_ENABLE_PARSABLE_PROGRESS`` is set to anything non-empty;
* ``DESYNC_ENABLE_PARSABLE_PROGRESS``: no bar, one plain line per update (at most every
  500 ms, only when the count changed, and a last one when done), as desync's pb.v1 bar with
  ``ShowBar``/``ShowCounters`` off prints it: ``<operation> <percent, %6.02f>%`` then the
  time left (Go duration, whole seconds) while running, or the time taken once done;
* otherwise a tqdm bar (tqdm: no dependencies of its own, cheap to import, thread-safe
  updates from worker threads, plain ``\\r`` redraws that work on any terminal).

Spec: spec/cli.md "Progress and logging".
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from typing import Any, Protocol, TextIO

PROGRESSBAR_ENABLED = "DESYNC_PROGRESSBAR_ENABLED"
PARSABLE_PROGRESS = "DESYNC_ENABLE_PARSABLE_PROGRESS"
# desync lowers pb's refresh rate to 500 ms in the parsable mode (it goes to logs).
PARSABLE_INTERVAL = 0.5
DEFAULT_SIZE = (80, 24)  # columns, lines


class Bar(Protocol):
    def update(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


class Progress(Protocol):
    def __call__(self, operation: str, total: int) -> Bar: ...


class NullBar:
    """Counts nothing, shows nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def no_progress(operation: str, total: int) -> Bar:
    return NullBar()


def go_duration(seconds: float) -> str:
    """Whole seconds as Go's ``time.Duration.String`` prints them: ``0s``, ``42s``, ``1m5s``,
    ``2h0m3s``."""
    s = max(0, int(seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class ParsableBar:
    """desync's parsable progress: one plain line per update, for logs and journals."""

    def __init__(self, operation: str, total: int, out: TextIO,
                 clock: Any = time.monotonic) -> None:
        self.operation, self.total, self.out, self.clock = operation, total, out, clock
        self.current = 0
        self.start = clock()
        self._shown = -1
        self._last = float("-inf")
        self._closed = False
        self._lock = threading.Lock()
        self._emit(self.start)

    def line(self, now: float, done: bool = False) -> str:
        # pb.v1 divides by the total, or by 100 when there is none.
        percent = self.current * 100 / self.total if self.total > 0 else self.current / 100
        text = f"{self.operation} {percent:6.2f}%"
        elapsed = now - self.start
        if done:
            text += f" {go_duration(elapsed)}"
        elif self.current > 0 and self.total > 0:
            text += f" {go_duration(elapsed / self.current * (self.total - self.current))}"
        return text

    def _emit(self, now: float, done: bool = False) -> None:
        self.out.write(self.line(now, done) + "\n")
        self.out.flush()
        self._shown = self.current
        self._last = now

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.current += n
            now = self.clock()
            if self.current != self._shown and now - self._last >= PARSABLE_INTERVAL:
                self._emit(now)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._emit(self.clock(), done=True)


class TqdmBar:
    def __init__(self, operation: str, total: int, out: TextIO) -> None:
        # Imported here: only a run that shows a bar pays for it (and tqdm has no stubs).
        tqdm = importlib.import_module("tqdm").tqdm
        # A terminal that reports no size (a new pseudo-terminal says 0x0) gets nothing
        # from tqdm, which fits the bar to it: then a fixed size.
        try:
            size = os.get_terminal_size(out.fileno())
            known = size.columns > 0 and size.lines > 0
        except (AttributeError, ValueError, OSError):
            known = False
        self._bar = tqdm(total=total if total > 0 else None, desc=operation, file=out,
                         leave=True, mininterval=0.2, dynamic_ncols=known,
                         ncols=None if known else DEFAULT_SIZE[0],
                         nrows=None if known else DEFAULT_SIZE[1])

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


def enabled(stream: TextIO | None = None) -> bool:
    """desync's rule: a terminal on stderr, or either variable set."""
    if os.environ.get(PROGRESSBAR_ENABLED) or os.environ.get(PARSABLE_PROGRESS):
        return True
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def terminal_progress(operation: str, total: int) -> Bar:
    """The command line's ``Progress``: a bar on stderr when ``enabled()``, else nothing."""
    if not enabled():
        return NullBar()
    if os.environ.get(PARSABLE_PROGRESS):
        return ParsableBar(operation, total, sys.stderr)
    return TqdmBar(operation, total, sys.stderr)


progress = terminal_progress  # the name the CLI modules use
