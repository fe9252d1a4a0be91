"""The assembler's planning loop: which run of chunks comes from where, and write batches.

Spec: ``spec/extract.md`` (the plan). Follows desync's ``SeedSequencer.Next``
(``sequencer.go``), ``FileSeed.LongestMatchWith``/``maxMatchFrom`` (``fileseed.go``), the
null seed (``nullseed.go``) and the self seed (``selfseed.go``): at each position of the
target index the longest run of chunks found in a seed is taken from there. Pure data in,
runs out; no I/O. Typed for mypyc like the chunker; the bytes themselves are moved by C code
(zstandard, hashlib, ``os.pwrite``, ``copy_file_range``, ``FICLONERANGE``).
"""

from __future__ import annotations

from mypy_extensions import i64

# What a target chunk already is before planning (the ``marks`` list), and the run kinds.
MARK_NONE = 0
MARK_IN_PLACE = 1  # -k: the target file already holds this chunk
MARK_ZERO = 2  # all zeros: a hole in a new file

RUN_IN_PLACE = 0
RUN_ZERO = 1
RUN_SEED = 2
RUN_SELF = 3
RUN_STORE = 4

# A chunk id repeated in a seed is tried at no more than this many of its positions, so a
# seed made of one repeated chunk cannot make planning quadratic.
MAX_CANDIDATES = 32


def batch_ends(sizes: list[int], target: i64) -> list[int]:
    """Exclusive end positions (in ``sizes``) of runs of chunks adding up to ``target`` bytes.

    Handing a worker thread a batch instead of a single chunk keeps the per-task overhead
    and GIL hand-offs small next to the hashing and decompression it waits for.
    """
    ends: list[int] = []
    total: i64 = 0
    n: i64 = 0
    count: i64 = len(sizes)
    while n < count:
        total += sizes[n]
        n += 1
        if total >= target:
            ends.append(n)
            total = 0
    if total > 0:
        ends.append(count)
    return ends


def positions(ids: list[bytes]) -> dict[bytes, list[int]]:
    """Where each chunk id occurs in an index (desync keeps the same map per seed)."""
    where: dict[bytes, list[int]] = {}
    n: i64 = 0
    count: i64 = len(ids)
    while n < count:
        found = where.get(ids[n])
        if found is None:
            where[ids[n]] = [n]
        else:
            found.append(n)
        n += 1
    return where


def _match(ids: list[bytes], sizes: list[int], marks: list[int], at: i64,
           seed_ids: list[bytes], seed_sizes: list[int], start: i64, stop: i64) -> i64:
    """Chunks of the target from ``at`` equal to the seed's from ``start`` (before ``stop``);
    a chunk marked in place or zero ends the run (it needs nothing from a seed)."""
    n: i64 = 0
    count: i64 = len(ids)
    while at + n < count and start + n < stop:
        if marks[at + n] != MARK_NONE:
            break
        if ids[at + n] != seed_ids[start + n] or sizes[at + n] != seed_sizes[start + n]:
            break
        n += 1
    return n


def plan(ids: list[bytes], sizes: list[int], marks: list[int],
         seeds: list[tuple[list[bytes], list[int]]]) -> list[tuple[int, int, int, int, int]]:
    """Runs ``(kind, first, end, seed, seed_first)`` covering the target index in order.

    ``ids``/``sizes`` are the target's chunks, ``marks`` what each already is (MARK_*),
    ``seeds`` each file seed's chunk ids and sizes. A RUN_SEED run copies target chunks
    ``first..end-1`` from seed number ``seed``'s chunks starting at ``seed_first``; a RUN_SELF
    run copies them from the target's own chunks at ``seed_first``, all of which lie before
    ``first`` (written earlier in the same output). In place, zero and store runs carry
    ``seed = seed_first = -1``. The longest match wins; on a tie the earlier seed, and the
    file seeds before the self seed. Adjacent store chunks, in-place chunks and zero chunks
    are merged into one run each.
    """
    count: i64 = len(ids)
    where: list[dict[bytes, list[int]]] = [positions(s[0]) for s in seeds]
    own: dict[bytes, list[int]] = {}  # the self seed: positions already planned
    known: i64 = 0  # chunks of the target entered into ``own``
    runs: list[tuple[int, int, int, int, int]] = []
    at: i64 = 0
    while at < count:
        while known < at:  # everything before ``at`` is written before this run
            mine = own.get(ids[known])
            if mine is None:
                own[ids[known]] = [known]
            elif len(mine) < MAX_CANDIDATES:
                mine.append(known)
            known += 1
        mark = marks[at]
        if mark != MARK_NONE:
            end: i64 = at + 1
            while end < count and marks[end] == mark:
                end += 1
            kind = RUN_IN_PLACE if mark == MARK_IN_PLACE else RUN_ZERO
            _add(runs, kind, at, end, -1, -1)
            at = end
            continue
        best: i64 = 0
        best_seed: i64 = -1
        best_start: i64 = -1
        for number, (seed_ids, seed_sizes) in enumerate(seeds):
            found = where[number].get(ids[at])
            if found is not None:
                for tried, start in enumerate(found):
                    n = _match(ids, sizes, marks, at, seed_ids, seed_sizes, start, len(seed_ids))
                    if n > best:
                        best, best_seed, best_start = n, number, start
                    if tried + 1 >= MAX_CANDIDATES or at + best >= count:
                        break
        kind = RUN_SEED
        mine = own.get(ids[at])
        if mine is not None:
            for start in mine:
                # The source must lie wholly before ``at``: it is written by then, and a
                # range never overlaps itself (FICLONERANGE refuses that).
                n = _match(ids, sizes, marks, at, ids, sizes, start, at)
                if n > best:
                    best, best_seed, best_start, kind = n, -1, start, RUN_SELF
        if best == 0:
            _add(runs, RUN_STORE, at, at + 1, -1, -1)
            at += 1
            continue
        runs.append((kind, at, at + best, best_seed, best_start))
        at += best
    return runs


def _add(runs: list[tuple[int, int, int, int, int]], kind: i64, first: i64, end: i64,
         seed: i64, seed_first: i64) -> None:
    """Append a run, merging it into the previous one of the same seedless kind."""
    if runs:
        last = runs[-1]
        if last[0] == kind and last[2] == first and kind != RUN_SEED and kind != RUN_SELF:
            runs[-1] = (kind, last[1], end, -1, -1)
            return
    runs.append((kind, first, end, seed, seed_first))
