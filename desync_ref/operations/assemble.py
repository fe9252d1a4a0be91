"""Assembling a blob from a plan: chunks from seeds (cloned or copied), from earlier in the
same output (the self seed), zeros (holes), chunks already in place, and the store.

Follows desync's ``AssembleFile`` (``assemble.go``): the plan is made first, the seed runs
it uses are checked against their indexes before anything is written (``Plan.Validate``),
then the runs are written in order. Worker threads fetch and verify store chunks, read and
verify seed data, and clone ranges; one writer (this thread) writes, so a self-seed run
always finds its source written. Every byte that lands in the output is verified: store
chunks by the chunk source, copied seed data as it is read, cloned ranges by reading them
back (a seed may change while it is used, desync checks the same way). Zero blocks of what
is written stay holes (casync's ``--punch-holes``, fs/holes.py). On a local store the same
units of work are run by worker processes instead (operations/extract_workers.py).

Spec: spec/extract.md ("Writing", "Holes", "Worker processes").
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from enum import Enum
from typing import cast

from desync_ref import kernels
from desync_ref.errors import DesyncRefError
from desync_ref.formats.index import Index
from desync_ref.fs.clone import block_size, can_clone, clone_or_copy, copy_range
from desync_ref.fs.holes import HolesUnsupported, punch_hole, write_at, write_with_holes
from desync_ref.log import get_logger
from desync_ref.operations.chunk_source import ChunkSource
from desync_ref.operations.parallel import ordered_map
from desync_ref.operations.seeds import InvalidSeed, Seed
from desync_ref.progress import Bar, Progress, no_progress
from desync_ref.value_class import FieldsEqual

log = get_logger(__name__)

assembler = kernels.load("assembler")

# Work is handed to worker threads in pieces of about this many bytes.
BATCH_BYTES = 1 << 20
_ZEROS = bytes(BATCH_BYTES)


class InvalidSeedAction(Enum):
    """What to do with a seed whose data does not match its index (desync's names)."""

    BAIL_OUT = "bail-out"
    SKIP = "skip"
    REGENERATE = "regenerate"


class ExtractStats(FieldsEqual):
    """desync's ``ExtractStats`` (``extractstats.go``), counted from the plan as executed.

    A plain class, as is :class:`Done`, with a dataclass's constructor, equality and repr:
    a dataclass is made at import by compiling generated source, about half a millisecond
    each at every start of extract."""

    _FIELDS = ("chunks_from_seeds", "chunks_from_store", "chunks_in_place", "bytes_copied",
               "bytes_cloned", "blocksize", "bytes_total", "chunks_total", "seeds")
    __slots__ = _FIELDS

    def __init__(self, chunks_from_seeds: int = 0, chunks_from_store: int = 0,
                 chunks_in_place: int = 0, bytes_copied: int = 0, bytes_cloned: int = 0,
                 blocksize: int = 0, bytes_total: int = 0, chunks_total: int = 0,
                 seeds: int = 0) -> None:
        self.chunks_from_seeds = chunks_from_seeds
        self.chunks_from_store = chunks_from_store
        self.chunks_in_place = chunks_in_place
        self.bytes_copied = bytes_copied
        self.bytes_cloned = bytes_cloned
        self.blocksize = blocksize
        self.bytes_total = bytes_total
        self.chunks_total = chunks_total
        self.seeds = seeds

    def as_json(self) -> dict[str, int]:
        """desync's JSON keys, in its order."""
        return {"chunks-from-seeds": self.chunks_from_seeds,
                "chunks-from-store": self.chunks_from_store,
                "chunks-in-place": self.chunks_in_place,
                "bytes-copied-from-seeds": self.bytes_copied,
                "bytes-cloned-from-seeds": self.bytes_cloned,
                "blocksize": self.blocksize, "bytes-total": self.bytes_total,
                "chunks-total": self.chunks_total, "seeds": self.seeds}


Run = tuple[int, int, int, int, int]  # (kind, first, end, seed, seed_first): see the kernel
Unit = tuple[Run, int, int]  # chunks first..end-1 of a run


class Done:
    """What a worker did for one piece of a run: bytes for the writer, and counts."""

    __slots__ = ("cloned", "copied", "from_seed", "from_store", "writes")

    def __init__(self, writes: list[tuple[int, bytes]], from_seed: int = 0, from_store: int = 0,
                 copied: int = 0, cloned: int = 0) -> None:
        self.writes = writes
        self.from_seed, self.from_store = from_seed, from_store
        self.copied, self.cloned = copied, cloned


class Assembler:
    """Plans and writes one output; ``fd`` is open for reading and writing."""

    def __init__(self, fd: int, target: str, index: Index, source: ChunkSource,
                 seeds: list[Seed], *, blank: bool, in_place: bool, workers: int,
                 action: InvalidSeedAction, device: bool = False, holes: bool = True,
                 progress: Progress = no_progress) -> None:
        self.fd, self.target, self.index, self.source = fd, target, index, source
        self.seeds = list(seeds)
        self.blank, self.in_place, self.workers, self.action = blank, in_place, workers, action
        # A block device: nothing is cloned into it (no reflinks, and no probe file in /dev).
        self.device, self.progress = device, progress
        # Zero blocks become holes (casync's --punch-holes, on by default); never on a
        # device, where a hole would be a discard whose read-back is not promised to be zeros.
        self.holes = holes and not device
        self.attempt = 1
        self.chunks = index.chunks
        self.ids = [c.id for c in self.chunks]
        self.sizes = [c.size for c in self.chunks]
        self.block = block_size(fd)
        # Bytes the target held before: past them, ftruncate has left zeros (a hole) already.
        # (SEEK_END, not st_size: a block device's st_size is 0.)
        self.existing = 0 if blank else os.lseek(fd, 0, os.SEEK_END)
        self.stats = ExtractStats(blocksize=self.block, bytes_total=index.length,
                                  chunks_total=len(self.chunks), seeds=1 + len(seeds))
        self._fds: dict[int, int] = {}  # id(seed) -> open data file
        self._clone: dict[int, bool] = {}
        self._copy_buffer: memoryview | None = None  # write_self's, made on first use
        self.out_dir = os.path.dirname(os.path.abspath(target)) or "."

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    # -- planning ---------------------------------------------------------------------

    def marks(self) -> list[int]:
        """Per chunk: already in place (-k), all zeros, or neither."""
        marks = [assembler.MARK_NONE] * len(self.chunks)
        for n in self.source.zeros_among(self.ids, self.sizes):
            marks[n] = assembler.MARK_ZERO
        if not self.in_place or self.blank:
            return marks
        digest = self.source.digest
        ends = assembler.batch_ends(self.sizes, BATCH_BYTES)

        def check(bounds: tuple[int, int]) -> list[bool]:
            first, end = bounds
            start = self.chunks[first].start
            data = memoryview(os.pread(self.fd, self.chunks[end - 1].end - start, start))
            return [len(piece := data[c.start - start:c.end - start]) == c.size
                    and digest(cast(bytes, piece)) == c.id for c in self.chunks[first:end]]

        position = 0
        for kept in ordered_map(check, zip([0, *ends[:-1]], ends, strict=True), self.workers):
            for here in kept:
                if here:
                    marks[position] = assembler.MARK_IN_PLACE
                position += 1
        return marks

    def plan(self) -> list[Run]:
        """A plan whose seed runs all hold what they should; invalid seeds are dealt with
        as ``action`` says, and the plan made again without (or with the re-chunked) seed."""
        marks = self.marks()
        while True:
            runs: list[Run] = assembler.plan(self.ids, self.sizes, marks,
                                             [(s.ids, s.sizes) for s in self.seeds])
            try:
                self._validate(runs)
            except InvalidSeed as exc:
                if self.action is InvalidSeedAction.BAIL_OUT or exc.seed.regenerated:
                    raise DesyncRefError(str(exc)) from None
                if self.action is InvalidSeedAction.SKIP:
                    log.info("dropping seed %s: %s (--skip-invalid-seeds)", exc.seed.name, exc)
                    self.seeds.remove(exc.seed)
                else:
                    log.info("regenerating seed %s: %s", exc.seed.name, exc)
                    exc.seed.regenerate(self.workers)
                self._forget(exc.seed)
                self.attempt += 1
                continue
            self._log_plan(runs)
            return runs

    def _log_plan(self, runs: list[Run]) -> None:
        """Which seeds the plan uses (and which it does not), for --verbose."""
        used = [0] * len(self.seeds)
        counts = dict.fromkeys((assembler.RUN_IN_PLACE, assembler.RUN_ZERO, assembler.RUN_SELF,
                                assembler.RUN_STORE), 0)
        for kind, first, end, number, _ in runs:
            if kind == assembler.RUN_SEED:
                used[number] += end - first
            else:
                counts[kind] = counts.get(kind, 0) + end - first
        for seed, chunks in zip(self.seeds, used, strict=True):
            if chunks:
                log.info("using seed %s for %d chunks", seed.name, chunks)
            else:
                log.info("seed %s holds none of the chunks still needed, not used", seed.name)
        log.info("plan: %d chunks in place, %d zero, %d from earlier in the output, "
                 "%d from the store", counts[assembler.RUN_IN_PLACE], counts[assembler.RUN_ZERO],
                 counts[assembler.RUN_SELF], counts[assembler.RUN_STORE])

    def _seed_fd(self, seed: Seed) -> int:
        fd = self._fds.get(id(seed))
        if fd is None:
            try:
                fd = os.open(seed.data, os.O_RDONLY)
            except OSError as exc:
                raise InvalidSeed(f"cannot open seed {seed.data}: {exc.strerror or exc}", seed) from None
            self._fds[id(seed)] = fd
        return fd

    def _forget(self, seed: Seed) -> None:
        fd = self._fds.pop(id(seed), None)
        if fd is not None:
            os.close(fd)
        self._clone.pop(id(seed), None)

    def _pieces(self, first: int, end: int) -> Iterator[tuple[int, int]]:
        """A run cut into pieces of about BATCH_BYTES."""
        total = 0
        start = first
        for n in range(first, end):
            total += self.sizes[n]
            if total >= BATCH_BYTES:
                yield start, n + 1
                start, total = n + 1, 0
        if start < end:
            yield start, end

    def _validate(self, runs: list[Run]) -> None:
        """desync's ``Plan.Validate``: every seed chunk the plan uses matches its id."""
        work: list[tuple[Seed, int, int, int]] = []
        for kind, first, end, number, seed_first in runs:
            if kind == assembler.RUN_SEED:
                seed = self.seeds[number]
                fd = self._seed_fd(seed)
                for a, b in self._pieces(first, end):
                    work.append((seed, fd, seed_first + a - first, b - a))

        def check(item: tuple[Seed, int, int, int]) -> None:
            seed, fd, at, count = item
            try:
                seed.check(fd, at, count)
            except OSError as exc:
                raise InvalidSeed(f"cannot read seed {seed.data}: {exc.strerror or exc}", seed) from None

        for _ in ordered_map(check, work, self.workers):
            pass

    # -- writing ----------------------------------------------------------------------

    def units(self, runs: list[Run]) -> list[Unit]:
        """The plan as units of work: store and copied seed runs in pieces of about
        BATCH_BYTES, other runs whole."""
        units: list[Unit] = []
        for run in runs:
            kind, first, end = run[0], run[1], run[2]
            if kind in (assembler.RUN_STORE, assembler.RUN_SEED) and not self._clones(run):
                units.extend((run, a, b) for a, b in self._pieces(first, end))
            else:
                units.append((run, first, end))
        return units

    def bar(self) -> Bar:
        # desync's bar: "Attempt N: Assembling", counted in chunks.
        return self.progress(f"Attempt {self.attempt}: Assembling", len(self.chunks))

    def run_plan(self, runs: list[Run]) -> ExtractStats:
        """Write the runs of a checked plan, in order, with worker threads."""
        units = self.units(runs)
        bar = self.bar()
        try:
            for (run, first, end), done in zip(units, ordered_map(self.load, units,
                                                                  self.workers), strict=True):
                self.write(run, first, end, done)
                bar.update(end - first)
        finally:
            bar.close()
        return self.stats

    def _clones(self, run: Run) -> bool:
        """Whether a seed run is cloned (whole-block aligned, and the file system shares)."""
        if run[0] != assembler.RUN_SEED or self.device:
            return False
        seed = self.seeds[run[3]]
        known = self._clone.get(id(seed))
        if known is None:
            known = can_clone(self.out_dir, self._seed_fd(seed), self.block)
            self._clone[id(seed)] = known
        src = seed.index.chunks[run[4]].start
        return known and src % self.block == self.chunks[run[1]].start % self.block

    def load(self, unit: Unit) -> Done:
        """Worker side: fetch, read, clone and verify; nothing here writes but a clone."""
        (kind, first, _end, number, seed_first), a, b = unit
        if kind == assembler.RUN_STORE:
            return Done([(c.start, self.source.get(c)) for c in self.chunks[a:b]],
                         from_store=b - a)
        if kind != assembler.RUN_SEED:
            return Done([])
        seed = self.seeds[number]
        fd = self._seed_fd(seed)
        src_first = seed_first + a - first
        src = seed.index.chunks[src_first].start
        dst = self.chunks[a].start
        length = self.chunks[b - 1].end - dst
        if self._clones(unit[0]):
            with self._reading(seed):
                copied, cloned = clone_or_copy(self.fd, fd, src, length, dst, self.block)
                data = os.pread(self.fd, length, dst)  # read back what now is there
            done = self._checked(data, a, b, writes=False)
        else:
            with self._reading(seed):
                data = os.pread(fd, length, src)
            done = self._checked(data, a, b, writes=True)
            copied, cloned = 0, 0
        done.copied += copied
        done.cloned += cloned
        return done

    @contextlib.contextmanager
    def _reading(self, seed: Seed) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise DesyncRefError(f"cannot read seed {seed.data}: {exc.strerror or exc}") from None

    def _checked(self, data: bytes, a: int, b: int, *, writes: bool) -> Done:
        """Seed bytes for chunks ``a..b-1`` checked against their ids; a chunk that changed
        since the plan was checked comes from the store under --regenerate-invalid-seeds
        (desync's retry in ``AssembleFile``), else the extract stops."""
        digest = self.source.digest
        view = memoryview(data)
        base = self.chunks[a].start
        done = Done([])
        good = 0
        for n in range(a, b):
            c = self.chunks[n]
            piece = view[c.start - base:c.end - base]
            if len(piece) == c.size and digest(cast(bytes, piece)) == c.id:
                good += c.size
                done.from_seed += 1
                continue
            if self.action is not InvalidSeedAction.REGENERATE:
                raise DesyncRefError(
                    f"written data in {self.target} doesn't match its expected hash value, "
                    "seed may have changed during processing")
            done.writes.append((c.start, self.source.get(c)))
            done.from_store += 1
        if writes:
            if done.from_store == 0:
                done.writes.append((base, data))
            else:  # only the good chunks; the refetched ones are already listed
                bad = {start for start, _ in done.writes}
                done.writes.extend((c.start, bytes(view[c.start - base:c.end - base]))
                                   for c in self.chunks[a:b] if c.start not in bad)
            done.copied += good
        return done

    def write(self, run: Run, first: int, end: int, done: Done) -> None:
        """Writer side, in plan order."""
        kind = run[0]
        stats = self.stats
        for offset, data in done.writes:
            self.put(data, offset)
        count = end - first
        if kind == assembler.RUN_IN_PLACE:
            stats.chunks_in_place += count
        elif kind == assembler.RUN_STORE or kind == assembler.RUN_SEED:
            self.count(done)
        elif kind == assembler.RUN_ZERO:
            stats.chunks_from_seeds += count
            stats.bytes_copied += self.zeros(first, end)
        else:
            self.write_self(run, first, end)

    def count(self, done: Done) -> None:
        """Add what was done for store and seed chunks to the stats."""
        stats = self.stats
        stats.chunks_from_store += done.from_store
        stats.chunks_from_seeds += done.from_seed
        stats.bytes_copied += done.copied
        stats.bytes_cloned += done.cloned

    def put(self, data: bytes | memoryview, offset: int) -> None:
        """Write ``data`` at ``offset``; its zero blocks as holes unless holes are off."""
        if self.holes:
            try:
                write_with_holes(self.fd, data, offset, block=self.block,
                                 fresh=offset >= self.existing)
                return
            except HolesUnsupported:
                log.info("%s cannot hold holes: writing zeros", self.target)
                self.holes = False
        write_at(self.fd, data, offset)

    def punch_shared_blocks(self) -> None:
        """Over old data (-k), a zero block that two chunks share is written in two parts,
        and a partial last block is written whole: each write puts zeros there, and only a
        whole block can be punched. When everything is written, such blocks that hold only
        zeros are punched (a new file needs none of this: its writes leave zeros out)."""
        if not self.holes or self.existing == 0:
            return
        block = self.block
        edges = {c.start - c.start % block for c in self.chunks if c.start % block}
        if self.index.length % block:
            edges.add(self.index.length - self.index.length % block)
        for start in sorted(edges):
            if start >= self.existing:
                break
            length = min(block, self.index.length - start)
            if os.pread(self.fd, length, start) == bytes(length):
                try:
                    punch_hole(self.fd, start, length)
                except HolesUnsupported:
                    return

    def zeros(self, first: int, end: int) -> int:
        """Chunks ``first..end-1`` are all zeros. The file was sized with ftruncate: past the
        bytes it held before, they read as zeros already (a hole); over old data a hole is
        punched, or zeros are written (a device, or holes off: then everywhere, so that the
        file ends up fully allocated as casync's --punch-holes=no leaves it). Returns the
        bytes zeroed."""
        offset = self.chunks[first].start
        stop = self.chunks[end - 1].end
        if self.holes or self.device:
            stop = min(stop, self.existing)
        if offset >= stop:
            return 0
        if self.holes:
            try:
                punch_hole(self.fd, offset, stop - offset)
                return stop - offset
            except HolesUnsupported:
                log.info("%s cannot hold holes: writing zeros", self.target)
                self.holes = False
        done = 0
        while offset < stop:
            n = min(stop - offset, BATCH_BYTES)
            write_at(self.fd, memoryview(_ZEROS)[:n], offset)
            offset += n
            done += n
        return done

    def write_self(self, run: Run, first: int, end: int) -> None:
        """RUN_SELF: copy (or clone) from earlier in the output, written by now. A clone
        shares the source's holes; a copy made in the kernel would fill them, so with holes
        on the bytes pass through here and their zero blocks stay holes."""
        stats = self.stats
        src = self.chunks[run[4]].start
        dst = self.chunks[first].start
        length = self.chunks[end - 1].end - dst
        if self._self_clones():
            copied, cloned = clone_or_copy(self.fd, self.fd, src, length, dst, self.block)
        elif self.holes:
            copied, cloned = 0, 0
            # One kept buffer (only the writer copies): a fresh 1 MiB per read is memory
            # to fault in each time.
            if self._copy_buffer is None:
                self._copy_buffer = memoryview(bytearray(BATCH_BYTES))
            buffer = self._copy_buffer
            while copied < length:
                got = os.preadv(self.fd, [buffer[:min(length - copied, BATCH_BYTES)]],
                                src + copied)
                if not got:  # the output is shorter than it was sized: cannot be
                    raise OSError(errno.EIO, "short read while copying a range")
                self.put(buffer[:got], dst + copied)
                copied += got
        else:
            copied, cloned = copy_range(self.fd, self.fd, src, length, dst), 0
        stats.chunks_from_seeds += end - first
        stats.bytes_copied += copied
        stats.bytes_cloned += cloned

    def _self_clones(self) -> bool:
        if self.device:
            return False
        known = self._clone.get(0)
        if known is None:
            known = can_clone(self.out_dir, self.fd, self.block)
            self._clone[0] = known
        return known
