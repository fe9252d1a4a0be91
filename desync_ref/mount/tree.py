"""A catar's directory tree as a read-only FUSE file system (fusepy ``Operations``).

Spec: ``spec/mount-tree.md``. Follows what casync's ``casync mount`` presents
(``src/cafuse.c``: ``casync_getattr``, ``casync_readdir``, ``casync_read``,
``casync_getxattr``, ``casync_listxattr``, ``casync_ioctl`` for ``FS_IOC_GETFLAGS``,
``casync_statfs``), with the node's metadata as ``untar`` restores it (``table.py``).

The archive is read once to build the entry table (``table.py``); after that a file read
maps its byte range to archive-stream offsets and, for a caidx, to the index chunks that
hold them (bisect over the chunk starts), fetching only those chunks, with the last few
decoded chunks kept in a bounded LRU. A ``.catar`` file is read with ``pread``.
"""

from __future__ import annotations

import bisect
import errno
import os
import stat
import struct
import threading
from array import array
from collections import OrderedDict
from collections.abc import Generator
from typing import Any, Protocol

from desync_ref.errors import DesyncRefError
from desync_ref.formats.index import Index
from desync_ref.log import get_logger
from desync_ref.mount.table import EntryTable, build_table, file_blocks
from desync_ref.operations.chunk_source import ChunkSource
from desync_ref.operations.parallel import ordered_map
from desync_ref.stores import Store

# A chunk that cannot be had is said where the mount's messages go (cli/mount_index.py).
log = get_logger("desync_ref.mount")

# Decoded chunks kept between reads (a sequential reader asks for 128 KiB at a time, so
# one chunk serves many reads; a few readers at once each keep theirs).
CHUNK_CACHE_BYTES = 32 * 1024 * 1024
FS_IOC_GETFLAGS = 0x80086601  # linux/fs.h, _IOR('f', 1, long)
NAME_MAX = 255


class ArchiveReader(Protocol):
    """Bytes of the archive stream by offset."""

    size: int

    def pread(self, offset: int, length: int) -> bytes: ...
    def close(self) -> None: ...


class CatarFileReader:
    """A local ``.catar``: ``os.pread`` (thread-safe, no shared file position)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.size = os.fstat(self.fd).st_size

    def pread(self, offset: int, length: int) -> bytes:
        parts: list[bytes] = []
        while length > 0:
            data = os.pread(self.fd, length, offset)
            if not data:
                raise DesyncRefError(f"archive is shorter than {offset + length} bytes")
            parts.append(data)
            offset += len(data)
            length -= len(data)
        return b"".join(parts)

    def close(self) -> None:
        os.close(self.fd)


class IndexReader:
    """The archive stream a caidx describes: a byte range maps to the chunks holding it
    (bisect over their starts); only those are fetched, through ``ChunkSource`` (which
    checks digest and size), and kept in an LRU of at most ``cache_bytes``."""

    def __init__(self, index: Index, store: Store, *, cache_bytes: int = CHUNK_CACHE_BYTES) -> None:
        self.index = index
        self.store = store
        self.source = ChunkSource(store, index)
        self.source.expect([])  # its keep-for-reuse policy is for one sequential pass
        self.starts = array("Q", (ch.start for ch in index.chunks))
        self.size = index.length
        self.cache_bytes = cache_bytes
        self._lru: OrderedDict[int, bytes] = OrderedDict()  # chunk position -> bytes
        self._held = 0
        self._lock = threading.Lock()

    def chunks_for(self, offset: int, length: int) -> range:
        """Positions of the chunks holding archive bytes ``[offset, offset + length)``."""
        if length <= 0:
            return range(0)
        first = bisect.bisect_right(self.starts, offset) - 1
        last = bisect.bisect_right(self.starts, offset + length - 1) - 1
        return range(max(first, 0), last + 1)

    def chunk(self, pos: int) -> bytes:
        with self._lock:
            data = self._lru.get(pos)
            if data is not None:
                self._lru.move_to_end(pos)
                return data
        ch = self.index.chunks[pos]
        # A zero chunk's bytes are known from its id (see ChunkSource.is_zero).
        data = bytes(ch.size) if self.source.is_zero(ch) else self.source.get(ch)
        with self._lock:
            if pos not in self._lru:
                self._lru[pos] = data
                self._held += len(data)
                while self._held > self.cache_bytes and len(self._lru) > 1:
                    _, old = self._lru.popitem(last=False)
                    self._held -= len(old)
        return data

    def pread(self, offset: int, length: int) -> bytes:
        parts: list[bytes] = []
        end = offset + length
        for pos in self.chunks_for(offset, length):
            ch = self.index.chunks[pos]
            data = self.chunk(pos)
            parts.append(data[max(offset, ch.start) - ch.start:min(end, ch.end) - ch.start])
        return b"".join(parts)

    def scan_blocks(self, workers: int) -> Generator[bytes, None, None]:
        """Every chunk in order, fetched a few ahead (for the one pass that builds the table)."""
        return ordered_map(self.source.get, self.index.chunks, workers)

    def close(self) -> None:
        self.store.close()


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class TreeOperations:
    """fusepy's operations protocol (called as ``ops(name, *args)``; an op it lacks is not
    registered with FUSE). Read-only: every node is answered from the entry table, file
    contents from ``reader``. Paths arrive as ``str`` in ``encoding`` (fusepy's)."""

    use_ns = True  # fusepy: times in ns, as the archive has them
    encoding = "utf-8"

    def __init__(self, table: EntryTable, reader: ArchiveReader) -> None:
        self.table = table
        self.reader = reader

    def __call__(self, op: str, *args: Any) -> Any:
        method = getattr(self, op, None)
        if method is None or op.startswith("_"):
            raise _fail(errno.EROFS if op in _WRITES else errno.ENOSYS)
        try:
            return method(*args)
        except OSError:
            raise
        except DesyncRefError as exc:
            # A chunk that cannot be had: the reader sees EIO; say why where the mount's
            # messages go.
            log.error("%s", exc)
            raise _fail(errno.EIO) from None

    def _entry(self, path: str) -> int:
        i = self.table.lookup(path.encode(self.encoding, "surrogateescape"))
        if i is None:
            raise _fail(errno.ENOENT)
        return i

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        t = self.table
        i = self._entry(path)
        mode = t.mode[i]
        size = t.size[i]
        mtime = t.mtime[i]
        return {"st_mode": mode, "st_nlink": 2 if stat.S_ISDIR(mode) else 1,
                "st_uid": t.uid[i], "st_gid": t.gid[i], "st_size": size,
                "st_blocks": (size + 511) // 512 if stat.S_ISREG(mode) else 0,
                "st_rdev": t.extra_of(i).rdev,
                "st_mtime": mtime, "st_atime": mtime, "st_ctime": mtime}

    def readdir(self, path: str, fh: int) -> list[str]:
        t = self.table
        i = self._entry(path)
        if not stat.S_ISDIR(t.mode[i]):
            raise _fail(errno.ENOTDIR)
        return [".", "..", *(t.name(k).decode(self.encoding, "surrogateescape")
                             for k in t.child_list(i))]

    def readlink(self, path: str) -> str:
        target = self.table.extra_of(self._entry(path)).target
        if target is None:
            raise _fail(errno.EINVAL)
        return target.decode(self.encoding, "surrogateescape")

    def open(self, path: str, flags: int) -> int:
        i = self._entry(path)
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise _fail(errno.EROFS)
        if not stat.S_ISREG(self.table.mode[i]):
            raise _fail(errno.EISDIR if stat.S_ISDIR(self.table.mode[i]) else errno.ENXIO)
        return i  # the file handle is the entry number: reads need no lookup

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        t = self.table
        length = min(size, t.size[fh] - offset)
        if length <= 0:
            return b""
        return self.reader.pread(t.offset[fh] + offset, length)

    def release(self, path: str, fh: int) -> int:
        return 0

    def opendir(self, path: str) -> int:
        self._entry(path)
        return 0

    def releasedir(self, path: str, fh: int) -> int:
        return 0

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        key = name.encode(self.encoding, "surrogateescape")
        for xname, value in self.table.extra_of(self._entry(path)).xattrs:
            if xname == key:
                return value
        raise _fail(errno.ENODATA)

    def listxattr(self, path: str) -> list[str]:
        return [n.decode(self.encoding, "surrogateescape")
                for n, _ in self.table.extra_of(self._entry(path)).xattrs]

    def ioctl(self, path: str, cmd: int, arg: Any, fh: int, flags: int, data: Any) -> int:
        if cmd & 0xFFFFFFFF != FS_IOC_GETFLAGS:
            raise _fail(errno.ENOTTY)
        import ctypes

        value = self.table.extra_of(self._entry(path)).chattr
        ctypes.memmove(data, struct.pack("=Q", value), 8)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": (self.reader.size + 4095) // 4096,
                "f_files": len(self.table), "f_namemax": NAME_MAX}

    def destroy(self, path: str) -> None:
        self.reader.close()


_WRITES = frozenset({"chmod", "chown", "create", "link", "mkdir", "mknod", "rename", "rmdir",
                     "setxattr", "removexattr", "symlink", "truncate", "unlink", "utimens",
                     "write"})


def tree_operations_for_caidx(index: Index, store: Store, *, workers: int = 4) -> TreeOperations:
    """Operations for the tree a caidx describes; reads the whole archive once (its chunks
    ``workers`` at a time) to build the entry table. Closes ``store`` on failure."""
    reader = IndexReader(index, store)
    try:
        blocks = reader.scan_blocks(workers)
        try:
            table = build_table(blocks)
        finally:
            blocks.close()
    except BaseException:
        reader.close()
        raise
    return TreeOperations(table, reader)


def tree_operations_for_catar(path: str) -> TreeOperations:
    """Operations for the tree in the local ``.catar`` file ``path``."""
    reader = CatarFileReader(path)
    try:
        with open(path, "rb", buffering=0) as f:
            table = build_table(file_blocks(f.read))
    except BaseException:
        reader.close()
        raise
    return TreeOperations(table, reader)
