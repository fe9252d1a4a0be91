"""untar/mtree: decode a catar (from a file, stdin, a caidx + store, or a directory being
encoded) and drive a sink with its nodes.

Spec: ``spec/catar.md`` § "Decoding", § "Restoring a tree" and § "Safety". Sinks: the safe
disk writer (``fs/write.py``), desync's GNU tar writer (``formats/gnutar.py``) and desync's
mtree printer (``formats/mtree.py``). Bytes go into a ``CatarDecoder`` as they are read or
produced and its events are handed on at once, so the catar is never held whole; a
directory's metadata is applied after its children.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Callable, Iterator
from typing import Protocol

from desync_ref.errors import InvalidFormat
from desync_ref.formats.catar import CatarWriter, Entry
from desync_ref.formats.catar_decoder import (
    READ_BLOCK,
    CatarDecoder,
    EndOfArchive,
    EntryEvent,
    Event,
    FileEndEvent,
    GoodbyeEvent,
    NeedData,
    PayloadEvent,
)
from desync_ref.formats.index import Index
from desync_ref.operations.chunk_source import ChunkSource
from desync_ref.operations.parallel import ordered_map
from desync_ref.progress import Bar, Progress, no_progress
from desync_ref.stores import Store


class Sink(Protocol):
    """What a walk over an archive calls; ``path`` is the list of names below the root.
    A regular file is ``begin_file``, ``file_data`` per payload block, ``end_file``."""

    def directory(self, path: list[bytes], e: Entry) -> None: ...
    def begin_file(self, path: list[bytes], e: Entry) -> None: ...
    def file_data(self, data: bytes) -> None: ...
    def end_file(self) -> None: ...
    def other(self, path: list[bytes], e: Entry) -> None: ...
    def end_directory(self, path: list[bytes], e: Entry) -> None: ...
    def close(self) -> None:
        """The archive ended well: finish the output."""

    def abort(self) -> None:
        """The walk failed: release what the sink holds, finish nothing."""


class TreeWalker:
    """Turns decoder events into sink calls, depth first, in archive order."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.path: list[bytes] = []
        self.dirs: list[Entry] = []
        self.done = False

    def handle(self, event: Event) -> None:
        sink = self.sink
        if isinstance(event, PayloadEvent):
            sink.file_data(event.data)
        elif isinstance(event, EntryEvent):
            e = event.entry
            here = [*self.path, event.name] if event.name is not None else []
            if stat.S_ISDIR(e.mode):
                sink.directory(here, e)
                self.path = here
                self.dirs.append(e)
            elif not self.dirs:
                raise InvalidFormat("the archive's root is not a directory")
            elif stat.S_ISREG(e.mode):
                sink.begin_file(here, e)
            else:
                sink.other(here, e)
        elif isinstance(event, FileEndEvent):
            sink.end_file()
        elif isinstance(event, GoodbyeEvent):
            sink.end_directory(self.path, self.dirs.pop())
            self.path = self.path[:-1]
        elif isinstance(event, EndOfArchive):
            self.done = True
            sink.close()

    def feed(self, decoder: CatarDecoder, data: bytes) -> None:
        """Give ``data`` (``b""`` at the end of input) to ``decoder``; handle what it completes."""
        try:
            decoder.receive_data(data)
            while not self.done:
                event = decoder.next_event()
                if isinstance(event, NeedData):
                    return
                self.handle(event)
        except BaseException:
            if not self.done:  # after EndOfArchive the sink has closed itself
                self.sink.abort()
            raise


@contextlib.contextmanager
def _aborting(sink: Sink) -> Iterator[None]:
    """A walk that fails for any reason leaves the sink holding nothing (descriptors of a
    long-lived process would run out otherwise)."""
    try:
        yield
    except BaseException:
        sink.abort()
        raise


def walk_file(location: str, sink: Sink, *, progress: Progress = no_progress) -> None:
    """Decode the catar file ``location`` (``-`` for stdin) into ``sink``; ``progress`` in
    bytes of the archive (desync's "Unpacking" bar sized by the file)."""
    with _aborting(sink):
        if location == "-":
            _walk_reads(sys.stdin.buffer.read, sink, no_progress("", 0))
        else:
            with open(location, "rb", buffering=0) as f:
                bar = progress("Unpacking", os.fstat(f.fileno()).st_size)
                try:
                    _walk_reads(f.read, sink, bar)
                finally:
                    bar.close()


def _walk_reads(read: Callable[[int], bytes], sink: Sink, bar: Bar) -> None:
    decoder, walker = CatarDecoder(), TreeWalker(sink)
    while not walker.done:
        data = read(READ_BLOCK)
        walker.feed(decoder, data)
        bar.update(len(data))


def walk_index(index: Index, store: Store, sink: Sink, *, workers: int = 4,
               progress: Progress = no_progress) -> None:
    """Decode the catar that ``index`` describes, its chunks fetched from ``store``."""
    source = ChunkSource(store, index)

    decoder, walker = CatarDecoder(), TreeWalker(sink)
    # Chunks are fetched a few ahead (remote stores), at most 2 * workers in memory.
    blocks = ordered_map(source.get, index.chunks, workers)  # checked: id and size
    bar = progress("Unpacking", len(index.chunks))  # desync's bar for an index, in chunks
    with _aborting(sink):
        try:
            for data in blocks:
                walker.feed(decoder, data)
                bar.update(1)
        finally:
            blocks.close()
            bar.close()
        walker.feed(decoder, b"")


def walk_directory(path: str, flags: int, sink: Sink) -> None:
    """Encode the directory ``path`` with ``flags`` and decode it into ``sink`` as it is
    written: writer, decoder and sink in one loop."""
    from desync_ref.fs.walk import TreeEncoder

    decoder, walker = CatarDecoder(), TreeWalker(sink)
    with _aborting(sink):
        TreeEncoder(CatarWriter(lambda data: walker.feed(decoder, data)), flags).encode(path)
        walker.feed(decoder, b"")
