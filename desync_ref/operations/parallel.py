"""A bounded, ordered thread pool map shared by the chunk-by-chunk operations, and what
forked workers (make, extract, chunk-server) call in glibc: to die with their parent, to
keep their heap, to start the write-back of what they wrote.

desync runs ``-n`` goroutines per command (``cmd/desync/options.go``); here the same ``-n``
sizes a thread pool. hashlib, zstandard and file I/O release the GIL, so threads help.

Spec: spec/store.md.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from collections.abc import Callable, Generator, Iterable
from itertools import chain
from typing import TYPE_CHECKING, TypeVar, cast

from desync_ref.fs.libc import libc

if TYPE_CHECKING:
    from concurrent.futures import Future

# prctl option that sends the caller a signal when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1
# mallopt parameters (glibc malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# sync_file_range flag: start writing the dirty pages of the range (linux/fs.h).
SYNC_FILE_RANGE_WRITE = 2

T = TypeVar("T")
R = TypeVar("R")
_NONE = object()


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Generator[R, None, None]:
    """``fn`` over ``items`` in up to ``workers`` threads, results in input order.

    At most ``2 * workers`` calls are in flight. The first exception (in input order) is
    raised to the consumer and the work not yet started is cancelled.
    """
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    pending = iter(items)
    first: T | object = next(pending, _NONE)
    if first is _NONE:
        return
    # Here, not at the top: concurrent.futures imports logging (and traceback, tokenize...),
    # which a run on worker processes or one thread never needs (issue 14).
    from concurrent.futures import ThreadPoolExecutor

    window: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            for item in chain([cast(T, first)], pending):
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
    libc().prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(status)


def keep_heap(trim_threshold: int, mmap_threshold: int) -> None:
    """In a worker: fix glibc's trim and mmap thresholds (``mallopt``). By default glibc
    returns freed memory at the top of the heap to the kernel and serves large blocks from
    fresh mmaps, so a loop that frees one block and makes the next of the same size faults
    every page of it in again (page faults are dear on these VMs). With the thresholds
    fixed above the blocks' size, the freed blocks are reused; peak memory is unchanged.
    Nothing happens where ``mallopt`` is missing (not glibc)."""
    mallopt = getattr(libc(), "mallopt", None)
    if mallopt is not None:
        mallopt(M_TRIM_THRESHOLD, trim_threshold)
        mallopt(M_MMAP_THRESHOLD, mmap_threshold)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing ``length`` bytes of ``fd`` from ``offset`` to disk
    (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, Linux): a hint, so the disk works while the
    worker computes and a final fsync finds little left; nothing is promised durable by it,
    and errors are left to that fsync."""
    call = getattr(libc(), "sync_file_range", None)
    if call is None:
        return
    import ctypes

    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call(fd, offset, length, SYNC_FILE_RANGE_WRITE)
