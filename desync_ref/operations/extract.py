"""extract: rebuild a blob from its index, seeds and a store (``desync extract``).

Every chunk is verified against its id before it is written (operations/assemble.py). A new
file is written under a temp name beside the target and renamed on success; ``in_place``
(``-k``) rewrites only the chunks that differ, so an interrupted extract can resume. Every
write is carried through short writes; a write that fails (a full disk) ends the run with
the target named, and a new file is then never renamed into place. A new file is fsynced
before the rename, so the final name never holds an empty or partial file after a power
loss (spec/store.md "Durability"). Seeds: desync's ``cmd/desync/extract.go`` and
``AssembleFile`` (``assemble.go``).

Spec: spec/extract.md, spec/index.md, spec/store.md (reading chunks).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from itertools import chain

from desync_ref.errors import DesyncRefError, InvalidParameter
from desync_ref.formats.index import Index
from desync_ref.fs.atomic import atomic_output
from desync_ref.fs.holes import write_at
from desync_ref.log import get_logger
from desync_ref.operations import extract_workers
from desync_ref.operations.assemble import (
    Assembler,
    ExtractStats,
    InvalidSeedAction,
    assembler,
)
from desync_ref.operations.chunk_source import ChunkSource
from desync_ref.operations.files import collector_paused
from desync_ref.operations.seeds import Seed
from desync_ref.progress import Progress, no_progress
from desync_ref.stores import Store

log = get_logger(__name__)

__all__ = ["ExtractStats", "InvalidSeedAction", "extract", "write_at"]


def assemble(fd: int, target: str, index: Index, store: Store, seeds: list[Seed], *,
             blank: bool, in_place: bool, workers: int, action: InvalidSeedAction,
             device: bool = False, processes: int = 0, holes: bool = True,
             progress: Progress = no_progress) -> ExtractStats:
    source = ChunkSource(store, index)
    work = Assembler(fd, target, index, source, seeds, blank=blank, in_place=in_place,
                     workers=workers, action=action, device=device, holes=holes,
                     progress=progress)
    try:
        with collector_paused():
            with _writing(target):
                runs = work.plan()  # reads the target (-k) and seeds; writes nothing yet
            wanted = list(chain.from_iterable(index.chunks[first:end]
                                              for kind, first, end, _, _ in runs
                                              if kind == assembler.RUN_STORE))
            source.expect(wanted)
        if wanted:
            log.info("%d chunks to fetch from %s", len(wanted), store)
        with _writing(target):
            if not device:  # a device keeps its size: never truncated (desync's isBlkDevice)
                os.ftruncate(fd, index.length)
            if extract_workers.can_use(store, work, runs, processes):
                stats = extract_workers.run_plan(work, runs, processes)
            else:
                stats = work.run_plan(runs)
            work.punch_shared_blocks()
            return stats
    finally:
        work.close()


def extract(index: Index, store: Store, target: str | os.PathLike[str], *,
            in_place: bool = False, workers: int = 1, seeds: list[Seed] | None = None,
            action: InvalidSeedAction = InvalidSeedAction.BAIL_OUT, processes: int = 0,
            holes: bool = True, progress: Progress = no_progress) -> ExtractStats:
    """Write the blob of ``index`` to ``target``. ``workers`` threads fetch and verify;
    ``processes`` above 1 lets a local store's chunks be written by that many worker
    processes instead (operations/extract_workers.py). ``holes``: runs of zero blocks in a
    file are left as holes (punched over old data), as casync's ``--punch-holes`` does by
    default; off, every byte is written. A block device never gets holes."""
    name = os.fspath(target)
    seeds = seeds or []
    if _is_block_device(name):
        return _extract_device(index, store, name, seeds, in_place=in_place, workers=workers,
                               action=action, processes=processes, progress=progress)
    if in_place:
        fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            blank = os.fstat(fd).st_size == 0
            return assemble(fd, name, index, store, seeds, blank=blank, in_place=True,
                            workers=workers, action=action, processes=processes,
                            holes=holes, progress=progress)
        finally:
            os.close(fd)
    with atomic_output(name) as out:
        stats = assemble(out.fileno(), name, index, store, seeds, blank=True, in_place=False,
                         workers=workers, action=action, processes=processes, holes=holes,
                         progress=progress)
        with _writing(name):
            os.fsync(out.fileno())
    return stats


def _is_block_device(name: str) -> bool:
    """A block device target; any other special file (a character device, a FIFO) is
    refused, since a temp file renamed over it would replace the node."""
    try:
        mode = os.stat(name).st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise DesyncRefError(f"cannot open {name}: {exc.strerror or exc}") from None
    if stat.S_ISBLK(mode):
        return True
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise InvalidParameter(f"{name} is not a regular file or a block device",
                               parameter="output")
    return False


def _extract_device(index: Index, store: Store, name: str, seeds: list[Seed], *,
                    in_place: bool, workers: int, action: InvalidSeedAction, processes: int,
                    progress: Progress) -> ExtractStats:
    """Write into a block device: no temp file (it cannot be renamed over a device), no
    truncate, no holes; ``in_place`` keeps chunks already right, else every chunk is
    written. desync's ``AssembleFile`` (``isBlkDevice``) writes a device the same way."""
    try:
        fd = os.open(name, os.O_RDWR)
    except OSError as exc:
        raise DesyncRefError(f"cannot open {name}: {exc.strerror or exc}") from None
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        if size < index.length:
            raise InvalidParameter(f"device {name} is too small for the index: {size} bytes, "
                                   f"the index needs {index.length}", parameter="output")
        log.info("extracting onto block device %s (%d bytes, index %d bytes)%s", name, size,
                 index.length, ", keeping chunks in place" if in_place else "")
        stats = assemble(fd, name, index, store, seeds, blank=False, in_place=in_place,
                         workers=workers, action=action, device=True, processes=processes,
                         holes=False, progress=progress)
        with _writing(name):
            os.fsync(fd)
        return stats
    finally:
        os.close(fd)


@contextlib.contextmanager
def _writing(target: str) -> Iterator[None]:
    """A failed write to the target (ENOSPC, EIO, EFBIG) as one error naming it."""
    try:
        yield
    except OSError as exc:
        raise DesyncRefError(f"cannot write {target}: {exc.strerror or exc}") from None
