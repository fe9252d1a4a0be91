"""A bounded, ordered thread pool map shared by the chunk-by-chunk operations, and the
start-up every forked worker (make, extract, chunk-server) runs to die with its parent.

desync runs ``-n`` goroutines per command (``cmd/desync/options.go``); here the same ``-n``
sizes a thread pool. hashlib, zstandard and file I/O release the GIL, so threads help.

Spec: spec/store.md.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

# prctl option that sends the caller a signal when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Generator[R, None, None]:
    """``fn`` over ``items`` in up to ``workers`` threads, results in input order.

    At most ``2 * workers`` calls are in flight. The first exception (in input order) is
    raised to the consumer and the work not yet started is cancelled.
    """
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    window: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            for item in items:
                window.append(pool.submit(fn, item))
                if len(window) >= 2 * workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for future in window:
                future.cancel()


def run_all(fn: Callable[[T], object], items: Iterable[T], workers: int) -> None:
    """``fn`` over every item for its effect; the first error aborts the rest."""
    for _ in ordered_map(fn, items, workers):
        pass


def die_with_parent(parent: int, sig: int = signal.SIGKILL, status: int = 1) -> None:
    """In a forked worker: be sent ``sig`` when the parent dies, so that a SIGKILLed
    command leaves no worker behind still writing (chunks into a store, an output); exit
    with ``status`` at once if the parent ``parent`` is gone already."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(status)
