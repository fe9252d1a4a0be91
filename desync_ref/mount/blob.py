"""The file system of ``mount-index``: one read-only file holding the blob of an index.

desync's ``IndexMountFS`` (``mount-index.go``) and ``SparseMountFS`` (``mount-sparse.go``):
the root directory holds one regular file, mode 0444, named after the index, as long as
the blob. A read maps its byte range to the index's chunks (a bisection on their starts)
and gets only those: from the copy-on-read file when one is given (``cor.py``), else from
a small bounded cache of chunks, else a seed that holds the chunk (beyond desync; its data
is checked against the id first), else the store through ``ChunkSource`` (which checks
it). A chunk of zeros is made, not fetched. Reads may run in parallel (fusepy calls from
several libfuse threads): a chunk wanted by several readers at once is fetched once. A
chunk that cannot be had fails the read with EIO and a log line; the mount stays.

Spec: spec/mount.md.
"""

from __future__ import annotations

import bisect
import errno
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import cast

from desync_ref import kernels
from desync_ref.errors import DesyncRefError
from desync_ref.formats.index import Index, IndexChunk
from desync_ref.log import get_logger
from desync_ref.mount.cor import SparseFile
from desync_ref.operations.chunk_source import ChunkSource
from desync_ref.operations.seeds import Seed

log = get_logger(__name__)

assembler = kernels.load("assembler")

# Decoded chunks kept between reads, in bytes. A read is at most 128 KiB (the kernel's
# FUSE request) and reads come in order with a few in parallel (readahead), so a few
# chunks past the largest suffice; 16 MiB holds 64 chunks of desync's default 256 KiB max.
CACHE_BYTES = 16 * 1024 * 1024


class ChunkLoader:
    """Chunk number ``n`` of the index, checked: zeros, a seed holding it, or the store."""

    def __init__(self, index: Index, source: ChunkSource, seeds: list[Seed]) -> None:
        self.index = index
        self.source = source
        source.expect([])  # keeping chunks is the mount's cache's job, bounded
        self.seeds = seeds
        self._where = [assembler.positions(seed.ids) for seed in seeds]
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()
        self.from_seeds = 0
        self.from_store = 0

    def is_zero(self, n: int) -> bool:
        return self.source.is_zero(self.index.chunks[n])

    def load(self, n: int) -> bytes:
        chunk = self.index.chunks[n]
        if self.source.is_zero(chunk):
            return bytes(chunk.size)
        data = self._from_seed(chunk)
        if data is not None:
            with self._lock:
                self.from_seeds += 1
            return data
        data = self.source.get(chunk)
        with self._lock:
            self.from_store += 1
        return data

    def _from_seed(self, chunk: IndexChunk) -> bytes | None:
        for number, seed in enumerate(self.seeds):
            for at in self._where[number].get(chunk.id, ()):
                if seed.sizes[at] != chunk.size:
                    continue
                try:
                    data = os.pread(self._fd(number, seed), chunk.size, seed.index.chunks[at].start)
                except OSError as exc:
                    log.warning("cannot read seed %s: %s", seed.data, exc.strerror or exc)
                    break
                if len(data) == chunk.size and self.source.digest(data) == chunk.id:
                    return data
                # The seed changed since it was indexed: the store has the chunk.
                log.warning("seed %s does not hold chunk %s any more", seed.data, chunk.id.hex())
                break
        return None

    def _fd(self, number: int, seed: Seed) -> int:
        with self._lock:
            fd = self._fds.get(number)
            if fd is None:
                fd = os.open(seed.data, os.O_RDONLY)
                self._fds[number] = fd
            return fd

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


class ChunkCache:
    """A least-recently-used cache of decoded chunks, at most ``budget`` bytes; concurrent
    requests for one chunk wait for a single load."""

    def __init__(self, load: Callable[[int], bytes], budget: int = CACHE_BYTES) -> None:
        self._load = load
        self.budget = budget
        self._kept: OrderedDict[int, bytes] = OrderedDict()
        self._bytes = 0
        self._loading: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def get(self, n: int) -> bytes:
        while True:
            with self._lock:
                data = self._kept.get(n)
                if data is not None:
                    self._kept.move_to_end(n)
                    return data
                waiting = self._loading.get(n)
                if waiting is None:
                    done = self._loading[n] = threading.Event()
                    break
            waiting.wait()  # then look again: the load may have failed
        try:
            data = self._load(n)
            with self._lock:
                self._keep(n, data)
            return data
        finally:
            with self._lock:
                del self._loading[n]
            done.set()

    def _keep(self, n: int, data: bytes) -> None:
        if len(data) > self.budget:
            return
        self._kept[n] = data
        self._bytes += len(data)
        while self._bytes > self.budget:
            _, old = self._kept.popitem(last=False)
            self._bytes -= len(old)

    @property
    def size(self) -> int:
        with self._lock:
            return self._bytes


def file_name(index_location: str) -> str:
    """desync's name for the file: the index's base name without its extension (Go's
    ``filepath.Base`` and ``filepath.Ext``: the extension starts at the last dot)."""
    base = index_location.rstrip("/").rsplit("/", 1)[-1] or "/"
    dot = base.rfind(".")
    name = base[:dot] if dot > 0 else base
    return name


class BlobOperations:
    """fusepy operations (duck-typed: fusepy looks the methods up by name) for one file."""

    use_ns = True  # fusepy: times in nanoseconds

    def __init__(self, name: str, index: Index, loader: ChunkLoader, *,
                 sparse: SparseFile | None = None, cache_bytes: int = CACHE_BYTES) -> None:
        self.name = name
        self.path = "/" + name
        self.index = index
        self.length = index.length
        self.loader = loader
        self.sparse = sparse
        self.cache = ChunkCache(self._checked_load, cache_bytes)
        self._starts = [c.start for c in index.chunks]
        self._time = time.time_ns()  # desync: the mount's time is the file's mtime

    def __call__(self, op: str, *args: object) -> object:
        method = getattr(self, op, None)
        if method is None:
            raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
        return cast(Callable[..., object], method)(*args)

    def _checked_load(self, n: int) -> bytes:
        return self.loader.load(n)

    def chunk_range(self, offset: int, end: int) -> range:
        """Numbers of the chunks holding bytes ``offset..end-1`` (``offset < end``)."""
        first = bisect.bisect_right(self._starts, offset) - 1
        last = bisect.bisect_left(self._starts, end)
        return range(max(first, 0), last)

    # -- fusepy operations -----------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        times = {"st_atime": self._time, "st_mtime": self._time, "st_ctime": self._time}
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, "st_size": 0, **times}
        if path == self.path:
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": self.length,
                    "st_blocks": (self.length + 511) // 512, **times}
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))

    def readdir(self, path: str, fh: int) -> list[str]:
        if path != "/":
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        return [".", "..", self.name]

    def open(self, path: str, flags: int) -> int:
        if path != self.path:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        if path != self.path:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        end = min(offset + size, self.length)
        if offset >= end:
            return b""
        try:
            if self.sparse is not None:
                return self.sparse.read(offset, end - offset, self.chunk_range(offset, end))
            return self._assemble(offset, end)
        except (DesyncRefError, OSError) as exc:
            message = getattr(exc, "strerror", None) or str(exc)
            log.error("read of %d bytes at %d failed: %s", end - offset, offset, message)
            raise OSError(errno.EIO, os.strerror(errno.EIO)) from None

    def _assemble(self, offset: int, end: int) -> bytes:
        parts: list[bytes | memoryview] = []
        for n in self.chunk_range(offset, end):
            chunk = self.index.chunks[n]
            data = self.cache.get(n)
            lo = max(offset, chunk.start) - chunk.start
            hi = min(end, chunk.end) - chunk.start
            parts.append(data if lo == 0 and hi == len(data) else memoryview(data)[lo:hi])
        return parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)

    def release(self, path: str, fh: int) -> int:
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        blocks = (self.length + 4095) // 4096
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": blocks, "f_bfree": 0,
                "f_bavail": 0, "f_files": 2, "f_ffree": 0, "f_favail": 0, "f_namemax": 255}
