"""Worker processes of a server: fork, forward signals, report and replace a dead worker.

Spec: ``spec/http.md`` ("Worker processes"). desync has no such thing (one Go process uses
every core); one Python process is held to one core by the interpreter lock, so
chunk-server forks ``--workers`` processes. Each serves its own listening sockets, bound
by the parent with SO_REUSEPORT to the same addresses (``base.bind_listeners``), and the
kernel spreads new connections over them.

The parent only supervises. SIGINT and SIGTERM become a SIGTERM to every worker, which
finishes its running requests (up to 5 s) and exits; the parent then exits with
128 + the signal's number. SIGHUP is passed on when the server can reload. A worker
that dies otherwise is reported on stderr and replaced; the parent keeps every worker's
sockets open, so connections the kernel queued for the dead one are served by its
replacement. One that dies within a second of its start (it could not open its store,
say) stops the server instead, with exit status 1. Workers get SIGTERM when the parent
dies (PR_SET_PDEATHSIG), so none outlives a parent that was SIGKILLed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Final

from desync_ref.operations.parallel import die_with_parent

# A worker that dies sooner than this after its start is not replaced: the next one would
# most likely die the same way, and a loop of forks helps nobody.
MIN_LIFETIME: Final = 1.0
# Workers get this long to finish after the SIGTERM (their own shutdown allows 5 s).
STOP_GRACE: Final = 10.0

_SIGNALS: Final = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD}

# (slot number, a function that unblocks the signals the parent held) -> exit status
Worker = Callable[[int, Callable[[], None]], int]


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class Supervisor:
    def __init__(self, count: int, worker: Worker, prog: str, *, reloads: bool,
                 mask: set[int | signal.Signals]) -> None:
        self.count = count
        self.worker = worker
        self.prog = prog
        self.reloads = reloads
        self.running: dict[int, tuple[int, float]] = {}  # pid -> (slot, start time)
        self.mask = mask  # the signal mask workers serve with

    def _say(self, message: str) -> None:
        print(f"{self.prog}: {message}", file=sys.stderr, flush=True)

    def _start(self, slot: int) -> None:
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()  # nothing buffered may be written twice
        pid = os.fork()
        if pid:
            self.running[pid] = (slot, time.monotonic())
            return
        code = 1
        try:
            die_with_parent(parent, signal.SIGTERM, 0)
            saved = self.mask

            def unblock() -> None:
                signal.pthread_sigmask(signal.SIG_SETMASK, saved)

            code = self.worker(slot, unblock)
        except BaseException as exc:  # a worker ends with one line, never a traceback
            with contextlib.suppress(BaseException):
                self._say(f"worker {slot}: {' '.join(str(exc).split()) or type(exc).__name__}")
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _reap(self) -> list[tuple[int, int, float]]:
        """(slot, wait status, seconds it lived) of every worker that has ended."""
        ended = []
        for pid in list(self.running):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                slot, started = self.running.pop(pid)
                ended.append((slot, status, time.monotonic() - started))
        return ended

    def _signal_all(self, sig: int) -> None:
        for pid in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _stop(self) -> None:
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.running:
            left = deadline - time.monotonic()
            if left <= 0:
                self._signal_all(signal.SIGKILL)
                for pid in list(self.running):
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, 0)
                self.running.clear()
                return
            signal.sigtimedwait({signal.SIGCHLD}, min(left, 0.5))
            self._reap()

    def run(self) -> int:
        """Start the workers and supervise them until a stop signal: 128 + its number, or 1
        when a worker died at its start."""
        saved = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        status = 1
        try:
            for slot in range(self.count):
                self._start(slot)
            while True:
                info = signal.sigwaitinfo(_SIGNALS)
                sig = info.si_signo
                if sig in (signal.SIGINT, signal.SIGTERM):
                    status = 128 + sig
                    break
                if sig == signal.SIGHUP:
                    if self.reloads:
                        self._signal_all(signal.SIGHUP)
                    continue
                if self._replace_dead():
                    break
        finally:
            self._stop()
            signal.pthread_sigmask(signal.SIG_SETMASK, saved)
        return status

    def _replace_dead(self) -> bool:
        """Report and replace ended workers; True when one died too soon to be replaced."""
        for slot, status, lived in self._reap():
            if lived < MIN_LIFETIME:
                self._say(f"worker {slot} ended at its start ({_describe(status)}), stopping")
                return True
            self._say(f"worker {slot} ended ({_describe(status)}), starting another")
            self._start(slot)
        return False


def supervise(count: int, worker: Worker, prog: str, *, reloads: bool,
              mask: set[int | signal.Signals]) -> int:
    """``mask``: the signal mask the workers serve with (the caller's own, before it held
    signals back while starting)."""
    return Supervisor(count, worker, prog, reloads=reloads, mask=mask).run()
