"""untar/mtree: walk a catar (from a file, stdin or a caidx + store) into a sink.

Spec: ``spec/catar.md`` § "Restoring a tree" and § "Safety". Sinks: the safe disk
writer (``operations/localfs.py``), desync's GNU tar writer (``operations/gnutar.py``) and
desync's mtree printer (``operations/mtree.py``). A directory's metadata is applied after
its children.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from desync_ref.errors import InvalidFormat
from desync_ref.formats.catar import CatarReader, Entry, EntryEvent, FilenameEvent
from desync_ref.formats.index import Index, IndexChunk
from desync_ref.operations.chunk_source import ChunkSource
from desync_ref.stores import Store


class Sink(Protocol):
    """What a walk over an archive calls; ``path`` is the list of names below the root."""

    def directory(self, path: list[bytes], e: Entry) -> None: ...
    def file(self, path: list[bytes], e: Entry, blocks: Iterator[bytes]) -> None: ...
    def other(self, path: list[bytes], e: Entry) -> None: ...
    def end_directory(self, path: list[bytes], e: Entry) -> None: ...
    def close(self) -> None: ...


def walk(reader: CatarReader, sink: Sink) -> None:
    """Drive ``sink`` with every node of the archive, depth first, in archive order."""
    path: list[bytes] = []
    dirs: list[Entry] = []
    pending: bytes | None = None
    for event in reader:
        if isinstance(event, FilenameEvent):
            pending = event.name
        elif isinstance(event, EntryEvent):
            e = event.entry
            here = [*path, pending] if pending is not None else []
            if pending is None and event.depth:
                raise InvalidFormat("ENTRY without FILENAME")
            pending = None
            if stat.S_ISDIR(e.mode):
                sink.directory(here, e)
                path = here
                dirs.append(e)
            elif not dirs:
                raise InvalidFormat("the archive's root is not a directory")
            elif stat.S_ISREG(e.mode):
                sink.file(here, e, reader.payload_blocks())
            else:
                sink.other(here, e)
        else:
            sink.end_directory(path, dirs.pop())
            path = path[:-1]
    sink.close()


class IndexStream:
    """A ``read(n)`` over the blob an index describes, fetching and verifying chunks
    ahead in a few threads; memory is bounded by the prefetch window."""

    def __init__(self, index: Index, store: Store, workers: int = 4) -> None:
        self._source = ChunkSource(store, index)
        self._chunks = iter(index.chunks)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers))
        self._window: list[Future[bytes]] = []
        self._ahead = max(2, workers * 2)
        self._buf = b""
        self._pos = 0

    def _fill(self) -> None:
        while len(self._window) < self._ahead:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._window.append(self._pool.submit(self._get, chunk))

    def _get(self, chunk: IndexChunk) -> bytes:
        data = self._source.get(chunk)
        if len(data) != chunk.size:
            raise InvalidFormat(f"chunk {chunk.id.hex()} has {len(data)} bytes, "
                                f"the index says {chunk.size}")
        return data

    def read(self, n: int) -> bytes:
        if self._pos >= len(self._buf):
            self._fill()
            if not self._window:
                return b""
            self._buf, self._pos = self._window.pop(0).result(), 0
        data = self._buf[self._pos:self._pos + n]
        self._pos += len(data)
        return data

    def close(self) -> None:
        for f in self._window:
            f.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def archive_reader(location: str, *, index: Index | None = None, store: Store | None = None,
                   workers: int = 4) -> Iterator[CatarReader]:
    """A reader over a catar file (``-`` for stdin), or over the blob of ``index``."""
    if index is not None:
        assert store is not None
        stream = IndexStream(index, store, workers)
        try:
            yield CatarReader(stream.read)
        finally:
            stream.close()
    elif location == "-":
        yield CatarReader(sys.stdin.buffer.read)
    else:
        with open(location, "rb", buffering=1024 * 1024) as f:
            yield CatarReader(f.read)


@contextlib.contextmanager
def directory_reader(path: str, flags: int) -> Iterator[CatarReader]:
    """A reader over the catar of a directory, produced on the fly through a pipe."""
    from desync_ref.formats.catar import CatarWriter
    from desync_ref.fs.walk import TreeEncoder

    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def producer() -> None:
        try:
            with os.fdopen(write_fd, "wb", buffering=1024 * 1024) as out:
                TreeEncoder(CatarWriter(out.write), flags).encode(path)
        except BrokenPipeError:
            pass
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    with os.fdopen(read_fd, "rb", buffering=1024 * 1024) as stream:
        try:
            yield CatarReader(stream.read)
        except InvalidFormat:
            if failure:
                raise failure[0] from None
            raise
        finally:
            stream.close()
            thread.join()
    if failure:
        raise failure[0]
