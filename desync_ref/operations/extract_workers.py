"""extract's process path: a checked plan written by worker processes (issue 14).

Threads share one GIL and, in operations/assemble.py, one writer; on a local store nothing
is waited for but CPU, so extract forks worker processes instead. Each inherits the plan,
the open output and the store, and for its pieces of the plan reads, decompresses,
verifies and ``pwrite``s the chunks itself (zero blocks as holes, as the thread path does);
only piece numbers go to the workers and counts (or an error) come back. What the parent
does meanwhile: zero runs (holes over old data) and in-place runs, then the self-seed
runs in plan order, each once the tasks holding its source are done (``_self_runs``).
Tasks are handed out so that ``2 * processes`` of them (of about TASK_BYTES each, smaller
at the end) run at any time, whatever the size of the output; their results (counts) are
taken in plan order, so the first error in plan order is the one reported (the thread
path's rule).

The workers are forked by operations/forkpool.py (``os.fork``, one shared task pipe and a
result pipe per worker, no ``multiprocessing``: its imports and threads cost tens of
milliseconds before the first task ran). They inherit the plan through the module globals
below, run ``_start`` once, then take tasks ``(first, end)`` (ranges of ``_units``) and
send back counts as five integers; an error is raised in the parent in its turn (the pool
carries it, see forkpool.py ``_raised``).

Store runs take a lean way in the workers (``_write_store``): each chunk file is read into
one kept buffer, decoded, checked and written at once (stores/local.py ``ChunkFileReader``);
a chunk it does not take goes through the chunk source, whose verdict and message are the
thread path's. Into a new file the checked chunks are written direct, past the page cache
(``_write_store_direct``, fs/direct.py). Fresh memory is what costs here (page faults),
hence that, the kept heap, the frozen collector across the fork and the early write-back
below.

Remote stores keep the thread path (desync's ``AssembleFile`` model, ``assemble.go``):
there waiting dominates, and one process with many threads waits best.

Spec: spec/extract.md § "Worker processes", § "Lean store reads", § "Direct writes".
"""

from __future__ import annotations

import gc
import os
import signal
from bisect import bisect_left
from collections import deque
from itertools import accumulate

from desync_ref.fs import direct
from desync_ref.fs.libc import libc
from desync_ref.operations.assemble import (
    BATCH_BYTES,
    Assembler,
    Done,
    ExtractStats,
    Run,
    Unit,
    assembler,
)
from desync_ref.operations.parallel import die_with_parent, keep_heap, start_writeback
from desync_ref.progress import Bar
from desync_ref.stores import Store
from desync_ref.stores.local import ChunkFileReader, LocalStore

# A task for a worker: consecutive units adding up to about this many bytes (fewer hand-offs
# than one unit each; small enough that the workers finish close together).
TASK_BYTES = 8 << 20
# The smallest task, the last ones (``_tasks``): about one unit.
TASK_BYTES_MIN = 1 << 20
# Below this many bytes to read from the store and seeds, forking costs more than it saves.
PROCESS_MIN_BYTES = 4 << 20

# What the workers inherit through fork: set by the parent just before it forks them.
_work: Assembler | None = None
_units: list[Unit] = []
# A worker's reader of store chunk files (made in the worker: its buffer is the worker's).
_reader: ChunkFileReader | None = None
# The output open for direct writes (fs/direct.py), opened by the parent before the fork; -1:
# buffered writes only. Each worker makes its own writer (buffers and thread) from it.
_direct_fd = -1
_writer: direct.DirectWriter | None = None
# Units (indexes into _units) written through the page cache although the writer could
# write them direct: the sources of self-seed runs, which the parent reads back after the
# workers (from memory then, not from the device).
_buffered: frozenset[int] = frozenset()
# Direct writes are used where each of a worker's buffers (fs/direct.DEPTH of them) stays
# below this: indexes with chunks of several MiB (or a hostile one declaring gigabytes) are
# written buffered rather than have each worker hold 4 such buffers.
DIRECT_CAPACITY_MAX = 8 << 20

# A worker keeps its heap (operations/parallel.keep_heap): at most this much freed memory is
# kept, and blocks up to this size come from the heap, so the memory freed after one chunk
# serves the next one instead of being faulted in again (tens of thousands of page faults
# per 512 MiB). make's workers fix their own values.
_HEAP_KEPT = 16 << 20
_HEAP_BLOCK_MAX = 4 << 20

Counts = tuple[int, int, int, int, int]  # chunks, from seed, from store, copied, cloned


def can_use(store: Store, work: Assembler, runs: list[Run], processes: int) -> bool:
    """Whether the plan goes to worker processes: more than one asked for, a store that is
    a local directory (reads are file reads, nothing to wait for) and enough to do."""
    if processes <= 1 or not isinstance(store, LocalStore):
        return False
    chunks = work.chunks
    busy = sum(chunks[end - 1].end - chunks[first].start
               for kind, first, end, _, _ in runs
               if kind in (assembler.RUN_STORE, assembler.RUN_SEED))
    return busy >= PROCESS_MIN_BYTES


def run_plan(work: Assembler, runs: list[Run], processes: int) -> ExtractStats:
    """Write the runs of a checked plan with ``processes`` worker processes."""
    from desync_ref.operations.forkpool import ForkPool  # here: small extracts never need it

    global _work, _units, _direct_fd, _buffered
    units = work.units(runs)
    parallel = [u for u in units if u[0][0] in (assembler.RUN_STORE, assembler.RUN_SEED)]
    tasks = _tasks(work, parallel, processes)
    _work, _units = work, parallel
    bar = None
    # What exists now (the plan, the index, every module) leaves the collector's view: after
    # the fork, a collection in the parent or a worker would write to every object's header
    # and so copy every page they share (thousands of page faults on each side).
    gc.freeze()
    # The C library (ctypes) for _start's prctl and mallopt: opened once here, inherited,
    # rather than in every worker before its first task.
    libc()
    _direct_fd = direct.open_direct(work.fd) if _direct_plan(work, runs) else -1
    if _direct_fd >= 0:
        _buffered = _self_sources(work, runs, parallel)
    try:
        # The workers are forked here, each running _start once.
        with ForkPool(_run_task, processes, start=_start, finish=_finish,
                      died=f"a worker process writing {work.target} died") as pool:
            # The first 2 * processes tasks go out now; later ones as results come back, so
            # a worker stalled on one task (descheduled on a busy machine) does not hold the
            # others' next tasks back. Results come in plan order.
            results = pool.ordered(tasks)
            bar = work.bar()
            for run, first, end in units:  # the parent's share, while the workers work
                if run[0] in (assembler.RUN_ZERO, assembler.RUN_IN_PLACE):
                    work.write(run, first, end, Done([]))
                    bar.update(end - first)
            # Self-seed runs, in plan order, each as soon as the tasks holding its source
            # are done (the rest of the source the parent wrote already).
            selfs = _self_runs(work, units, parallel, tasks)
            done = 0
            while selfs and selfs[0][0] <= done:
                _write_self(work, selfs.popleft()[1], bar)
            for counts in results:
                work.count(Done([], from_seed=counts[1], from_store=counts[2],
                                copied=counts[3], cloned=counts[4]))
                bar.update(counts[0])
                done += 1
                while selfs and selfs[0][0] <= done:
                    _write_self(work, selfs.popleft()[1], bar)
        while selfs:  # (none left: every task is done; kept for safety's sake)
            _write_self(work, selfs.popleft()[1], bar)
    finally:
        if _direct_fd >= 0:
            os.close(_direct_fd)
        _work, _units, _direct_fd, _buffered = None, [], -1, frozenset()
        gc.unfreeze()
        if bar is not None:
            bar.close()
    return work.stats


def _self_runs(work: Assembler, units: list[Unit], parallel: list[Unit],
               tasks: list[tuple[int, int]]) -> deque[tuple[int, Unit]]:
    """The self-seed units in plan order, each with how many task results (taken in plan
    order) must be in before all of its source is written. A source lies earlier in the
    output: in store or seed units (written, through the page cache, before their task's
    result comes back: a unit some self-seed run copies from is never written direct), in
    zero or in-place runs (the parent's, written first) or in earlier self-seed runs."""
    chunks = work.chunks
    task_of = [0] * len(parallel)
    for number, (lo, hi) in enumerate(tasks):
        task_of[lo:hi] = [number] * (hi - lo)
    starts = [chunks[first].start for _, first, _ in parallel]
    found: deque[tuple[int, Unit]] = deque()
    for unit in units:
        run = unit[0]  # a self-seed run is one unit, whole
        if run[0] != assembler.RUN_SELF:
            continue
        last = bisect_left(starts, _source(work, run)[1]) - 1  # the last unit starting before
        found.append((0 if last < 0 else task_of[last] + 1, unit))
    return found


def _write_self(work: Assembler, unit: Unit, bar: Bar) -> None:
    run, first, end = unit
    work.write(run, first, end, Done([]))
    start = work.chunks[first].start
    start_writeback(work.fd, start, work.chunks[end - 1].end - start)
    bar.update(end - first)


def _tasks(work: Assembler, units: list[Unit], processes: int) -> list[tuple[int, int]]:
    """``units`` cut into (lo, hi) ranges of about TASK_BYTES, smaller towards the end.

    A task is at most a ``2 * processes``-th of what is left after it begins, and at least
    TASK_BYTES_MIN (guided self-scheduling): the last tasks are small, so the workers run
    out of work within about TASK_BYTES_MIN of each other rather than one worker writing
    its last 8 MiB (30-40 ms here) while the others wait."""
    chunks = work.chunks
    sizes = [chunks[end - 1].end - chunks[first].start for _, first, end in units]
    left = sum(sizes)
    tasks: list[tuple[int, int]] = []
    lo = 0
    total = 0
    goal = _task_goal(left, processes)
    for n, size in enumerate(sizes):
        total += size
        if total >= goal:
            tasks.append((lo, n + 1))
            left -= total
            lo, total = n + 1, 0
            goal = _task_goal(left, processes)
    if lo < len(units):
        tasks.append((lo, len(units)))
    return tasks


def _task_goal(left: int, processes: int) -> int:
    return min(TASK_BYTES, max(TASK_BYTES_MIN, left // (2 * processes)))


def _start(parent: int) -> None:
    """Worker start-up: die with the parent (a SIGKILLed extract must not leave workers
    writing), leave Ctrl-C to the parent, and keep no chunks for later use: a repeated chunk
    is read again from the local store rather than held in every worker."""
    global _reader, _writer
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_heap(_HEAP_KEPT, _HEAP_BLOCK_MAX)
    if _work is not None:
        _work.source.keep_budget = 0
        store = _work.source.store
        if isinstance(store, LocalStore):
            _reader = store.file_reader(_work.source.digest, _work.index.chunk_size_max)
            if _direct_fd >= 0:
                _writer = direct.DirectWriter(_work.fd, _direct_fd,
                                              capacity=_direct_capacity(_work),
                                              block=_work.block, holes=_work.holes)


def _finish() -> None:
    """Worker end: the direct writes still going are completed, and a write error among
    them is raised (the pool raises it in the parent as it leaves)."""
    if _writer is not None:
        _writer.close()


def _run_task(task: tuple[int, int]) -> Counts:
    """Worker side: load, verify and write the units of one task; the counts come back (an
    error goes back through the pool, forkpool.py ``_raised``). Direct writes of the task may
    still be going: an error among them is raised at the next ``take`` or in ``_finish``."""
    work = _work
    assert work is not None
    chunks = seeds = store = copied = cloned = 0
    reader, writer, buffered = _reader, _writer, _buffered
    for number in range(task[0], task[1]):
        unit = _units[number]
        if reader is not None and unit[0][0] == assembler.RUN_STORE:
            if writer is not None and number not in buffered:
                _write_store_direct(work, reader, writer, unit[1], unit[2])
            else:
                _write_store(work, reader, unit[1], unit[2])
            chunks += unit[2] - unit[1]
            store += unit[2] - unit[1]
            continue
        done = work.load(unit)
        for offset, data in done.writes:
            work.put(data, offset)
        chunks += unit[2] - unit[1]
        seeds += done.from_seed
        store += done.from_store
        copied += done.copied
        cloned += done.cloned
    _start_writeback(work, task)
    return chunks, seeds, store, copied, cloned


def _start_writeback(work: Assembler, task: tuple[int, int]) -> None:
    """Start writing back the span of the file a task wrote, so the fsync that ends extract
    (extract.py) finds little left to write."""
    first, last = _units[task[0]], _units[task[1] - 1]
    start = work.chunks[first[1]].start
    start_writeback(work.fd, start, work.chunks[last[2] - 1].end - start)


def _write_store(work: Assembler, reader: ChunkFileReader, first: int, end: int) -> None:
    """Store chunks ``first..end-1``, the lean way: each read into the reader's buffer,
    checked and written at once (its zero blocks as holes); a chunk the reader does not
    take (missing, the other form, not valid) goes through the chunk source, which reads
    it again and raises the error the thread path raises."""
    read, get, put = reader.read, work.source.get, work.put
    for chunk in work.chunks[first:end]:
        data = read(chunk.id, chunk.size)
        put(get(chunk) if data is None else data, chunk.start)


def _write_store_direct(work: Assembler, reader: ChunkFileReader, writer: direct.DirectWriter,
                        first: int, end: int) -> None:
    """:func:`_write_store` into one of the writer's buffers: each checked chunk is copied to
    its place there, and the writer writes the unit's range (whole pages direct, fs/direct.py)
    while the next unit is read."""
    chunks = work.chunks
    start = chunks[first].start
    base = start - start % direct.PAGE
    number, buffer = writer.take()
    read, get = reader.read, work.source.get
    for chunk in chunks[first:end]:
        data = read(chunk.id, chunk.size)
        at = chunk.start - base
        buffer[at:at + chunk.size] = get(chunk) if data is None else data
    writer.submit(number, base, start, chunks[end - 1].end)


def _direct_plan(work: Assembler, runs: list[Run]) -> bool:
    """Whether the workers write direct: the output allows it (``_direct_capacity``) and no
    seed is copied. A direct write that allocates blocks holds the file's lock until the
    device has the data, and a worker copying seed data through the page cache waited for
    it: a 1 GiB update from a seed (benchmarks/seed_update.py) took 3.0-3.7 s so, 2.4-3.0 s
    buffered."""
    return bool(_direct_capacity(work)) and not any(
        run[0] == assembler.RUN_SEED for run in runs)


def _self_sources(work: Assembler, runs: list[Run], units: list[Unit]) -> frozenset[int]:
    """The units (indexes into ``units``) whose bytes some self-seed run copies."""
    chunks = work.chunks
    sources = sorted(_source(work, run) for run in runs if run[0] == assembler.RUN_SELF)
    if not sources:
        return frozenset()
    starts = [start for start, _ in sources]
    reach = list(accumulate((stop for _, stop in sources), max))  # furthest end so far
    found = set()
    for number, (_, first, end) in enumerate(units):
        start, stop = chunks[first].start, chunks[end - 1].end
        # A source overlaps [start, stop) if it begins before stop and reaches past start.
        before = bisect_left(starts, stop)
        if before and reach[before - 1] > start:
            found.add(number)
    return frozenset(found)


def _source(work: Assembler, run: Run) -> tuple[int, int]:
    """The bytes a self-seed run copies: (start, end) in the output (assemble.write_self)."""
    chunks = work.chunks
    return chunks[run[4]].start, chunks[run[4] + run[2] - run[1] - 1].end


def _direct_capacity(work: Assembler) -> int:
    """The buffer size direct writes need for this plan (a unit: about BATCH_BYTES plus at
    most one chunk, from a page boundary), or 0 where they are not used: an existing file
    or a device (-k, pages cached or data to keep), or blocks that a page does not hold a
    whole number of (a hole must never split a direct page)."""
    if work.existing or work.device or work.block % direct.PAGE:
        return 0
    capacity = BATCH_BYTES + work.index.chunk_size_max + 2 * direct.PAGE
    return capacity if capacity <= DIRECT_CAPACITY_MAX else 0
