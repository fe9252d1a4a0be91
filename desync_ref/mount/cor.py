"""The copy-on-read file of ``mount-index --cor-file``: a sparse file as long as the blob,
filled chunk by chunk as reads need them, and its state file.

desync's ``SparseFile`` (``sparse-file.go``): the state is one bit per index chunk, set
once the chunk is written to the file; saved (``--cor-state-save``) at unmount and on
SIGHUP as the bare bitmap, ``ceil(chunks / 8)`` bytes, chunk ``n`` at bit ``n % 8`` (value
``1 << (n % 8)``) of byte ``n // 8`` (``github.com/boljen/go-bitmap``). A state file of any
other length does not belong to the index. At start: a file of the blob's length with a
loadable saved state is used as it is; otherwise the file is set to the blob's length and
an optional ``--cor-state-init`` state names chunks to load into it in the background with
``--cor-init-n`` threads. Chunks of zeros are never written nor marked: the file holds
zeros there already. Unlike desync, a file that is not reused is emptied first (desync
only truncates it, so the old bytes under a chunk of zeros would be read back).

Spec: spec/mount.md (copy-on-read file).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable

from desync_ref.errors import DesyncRefError
from desync_ref.fs.atomic import atomic_output
from desync_ref.fs.holes import write_at
from desync_ref.log import get_logger

log = get_logger(__name__)


def state_length(chunks: int) -> int:
    return (chunks + 7) // 8


def parse_state(data: bytes, chunks: int) -> bytearray:
    """A state file's bitmap, refused unless its length is the index's (desync's only check)."""
    if len(data) != state_length(chunks):
        raise DesyncRefError("sparse state file does not match the index")
    return bytearray(data)


def is_set(bitmap: bytes | bytearray, n: int) -> bool:
    return bool(bitmap[n >> 3] & (1 << (n & 7)))


class SparseFile:
    """The copy-on-read file of one index; ``load(n)`` gives chunk ``n``'s checked bytes and
    ``is_zero(n)`` says whether it is all zeros."""

    def __init__(self, path: str, length: int, chunks: int, load: Callable[[int], bytes],
                 starts: list[int], is_zero: Callable[[int], bool], *,
                 state_save: str | None = None) -> None:
        self.path, self.length, self.chunks = path, length, chunks
        self._load, self._starts, self._is_zero = load, starts, is_zero
        self.state_save = state_save
        self.done = bytearray(state_length(chunks))
        self._lock = threading.Lock()
        self._chunk_locks: dict[int, threading.Lock] = {}
        self.loaded = 0  # chunks written to the file by this process
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DesyncRefError(f"cannot open {path}: {exc.strerror}") from None

    @classmethod
    def open(cls, path: str, length: int, chunks: int, load: Callable[[int], bytes],
             starts: list[int], is_zero: Callable[[int], bool], *, state_save: str | None = None,
             state_init: str | None = None, init_n: int = 10) -> SparseFile:
        """desync's ``NewSparseFile``: reuse the file with its saved state, or start it."""
        sparse = cls(path, length, chunks, load, starts, is_zero, state_save=state_save)
        try:
            if os.fstat(sparse.fd).st_size == length and state_save:
                try:
                    with open(state_save, "rb") as handle:
                        sparse.done = parse_state(handle.read(), chunks)
                    log.info("reusing %s with the state in %s", path, state_save)
                    return sparse
                except (OSError, DesyncRefError) as exc:
                    log.info("state %s not used: %s", state_save, getattr(exc, "strerror", None) or exc)
            os.ftruncate(sparse.fd, 0)  # no stale bytes where zero chunks are never written
            os.ftruncate(sparse.fd, length)
            if state_init:
                try:
                    with open(state_init, "rb") as handle:
                        wanted = parse_state(handle.read(), chunks)
                except OSError as exc:
                    raise DesyncRefError(f"cannot read {state_init}: {exc.strerror}") from None
                sparse.preload(wanted, init_n)
        except BaseException:
            sparse.close(save=False)
            raise
        return sparse

    def preload(self, wanted: bytearray, workers: int) -> None:
        """Load the chunks set in ``wanted`` with ``workers`` background threads (the mount
        does not wait; a read of a chunk still loading waits for it)."""
        todo: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        count = 0
        for n in range(self.chunks):
            if is_set(wanted, n):
                todo.put(n)
                count += 1
        workers = max(1, min(workers, count))
        log.info("loading %d chunks named in the initial state with %d threads", count, workers)

        def work() -> None:
            while (n := todo.get()) is not None:
                try:
                    self.ensure(n)
                except (DesyncRefError, OSError) as exc:  # a read of it will try again
                    log.warning("initial load of chunk %d failed: %s", n, exc)

        for _ in range(workers):
            todo.put(None)
        for number in range(workers):
            threading.Thread(target=work, name=f"cor-init-{number}", daemon=True).start()

    def has(self, n: int) -> bool:
        with self._lock:
            return is_set(self.done, n)

    def ensure(self, n: int) -> None:
        """Chunk ``n`` is in the file (loaded once, however many readers want it)."""
        if self.has(n) or self._is_zero(n):
            return
        with self._lock:
            lock = self._chunk_locks.setdefault(n, threading.Lock())
        with lock:
            if self.has(n):
                return
            data = self._load(n)
            write_at(self.fd, data, self._starts[n])
            with self._lock:
                self.done[n >> 3] |= 1 << (n & 7)
                self.loaded += 1
                self._chunk_locks.pop(n, None)

    def read(self, offset: int, size: int, chunks: range) -> bytes:
        for n in chunks:
            self.ensure(n)
        return os.pread(self.fd, size, offset)

    def save_state(self) -> None:
        """Write the state file (``--cor-state-save``), replacing it whole."""
        if not self.state_save:
            return
        with self._lock:
            state = bytes(self.done)
        try:
            with atomic_output(self.state_save) as out:
                out.write(state)
        except OSError as exc:
            raise DesyncRefError(f"failed to save state to {self.state_save}: {exc.strerror}") from None

    def close(self, *, save: bool = True) -> None:
        try:
            if save:
                self.save_state()
        finally:
            os.close(self.fd)
