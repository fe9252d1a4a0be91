"""Chunk-size parameters and the push-driven chunker driver around the chunker kernel.

Spec: ``spec/chunker.md`` (§ "Chunk-size parameters", § "The driver"). Parameter rules
follow casync ``ca_chunker_set_size`` (``src/cachunker.c``); the boundary rule is the
kernel's (``desync_ref.kernels.chunker.find_cut``). The ``-m`` flag's syntax is parsed in
``desync_ref.cli.common``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from desync_ref import kernels
from desync_ref.errors import InvalidParameter
from desync_ref.formats.constants import CA_CHUNK_SIZE_LIMIT_MAX, CA_CHUNK_SIZE_LIMIT_MIN

READ_BLOCK = 4 * 1024 * 1024


def discriminator_from_avg(avg: int) -> int:
    """CA_CHUNKER_DISCRIMINATOR_FROM_AVG (cachunker.h), computed in double and truncated."""
    return int(avg / (-1.42888852e-7 * avg + 1.33237515))


@dataclass(frozen=True, slots=True)
class ChunkSizes:
    min: int
    avg: int
    max: int

    def __post_init__(self) -> None:
        for name, value in (("min", self.min), ("avg", self.avg), ("max", self.max)):
            if not CA_CHUNK_SIZE_LIMIT_MIN <= value <= CA_CHUNK_SIZE_LIMIT_MAX:
                raise InvalidParameter(f"chunk size {name} {value} is out of range 1..128MiB",
                                       parameter="chunk sizes")
        if self.min > self.avg:
            raise InvalidParameter("min chunk size must not be greater than avg",
                                   parameter="chunk sizes")
        if self.avg > self.max:
            raise InvalidParameter("avg chunk size must not be greater than max",
                                   parameter="chunk sizes")

    @property
    def discriminator(self) -> int:
        # casync clamps the discriminator into [min, max] (ca_chunker_set_size). For
        # avg >= 9324557 the formula turns negative; casync stores it in a size_t, where
        # it becomes huge, so the clamp yields max (spec/chunker.md).
        raw = discriminator_from_avg(self.avg)
        if raw < 0:
            return self.max
        return min(max(raw, self.min), self.max)

    @property
    def fixed(self) -> bool:
        return self.min == self.avg == self.max

    def __str__(self) -> str:
        return f"{self.min}:{self.avg}:{self.max}"


DEFAULT_CHUNK_SIZES = ChunkSizes(16 * 1024, 64 * 1024, 256 * 1024)


def iter_cuts(buffer: bytes, sizes: ChunkSizes, *, final: bool, start: int = 0) -> Iterator[int]:
    """End offsets of the chunks in ``buffer`` from ``start``; without ``final`` the last
    chunk, which more data could still lengthen, is held back."""
    pos = start
    end = len(buffer)
    if sizes.fixed:
        while end - pos >= sizes.avg:
            pos += sizes.avg
            yield pos
    else:
        find_cut = kernels.load("chunker").find_cut
        lo, hi, d = sizes.min, sizes.max, sizes.discriminator
        while pos < end:
            if not final and end - pos < hi:
                return
            cut = find_cut(buffer, pos, end, lo, hi, d)
            if cut < 0:
                break
            yield cut
            pos = cut
    if final and pos < end:
        yield end


class Chunker:
    """Push-driven chunker: ``feed`` bytes as they come, ``finish`` at the end; each call
    returns the chunks it completed as (stream offset, bytes).

    A chunk is cut only once ``max`` bytes past its start are in (or the input ended),
    which is all ``find_cut`` ever looks at, so the cuts do not depend on how the input
    is split into ``feed`` calls. Small pieces are collected in a list and joined only
    when a batch is worth scanning, so feeding many small writes costs no repeated
    copying; memory is one batch plus the carried-over tail (less than ``max``).
    """

    def __init__(self, sizes: ChunkSizes, *, batch: int | None = None) -> None:
        self.sizes = sizes
        # Scanning starts once this much is pending (any value gives the same cuts).
        self._batch = batch if batch is not None else max(READ_BLOCK, 2 * sizes.max)
        self._carry = b""  # the unfinished chunk, from stream offset _offset
        self._pieces: list[bytes] = []
        self._pending = 0  # bytes in _carry and _pieces
        self._offset = 0
        self._finished = False

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._finished:
            raise RuntimeError("feed after finish")
        if not data:
            return []
        self._pieces.append(bytes(data))
        self._pending += len(data)
        if self._pending < self._batch:
            return []
        return self._cut(final=False)

    def finish(self) -> list[tuple[int, bytes]]:
        """The remaining chunks; the chunker takes no more input after this."""
        if self._finished:
            return []
        self._finished = True
        return self._cut(final=True)

    def _cut(self, *, final: bool) -> list[tuple[int, bytes]]:
        if not self._carry and len(self._pieces) == 1:
            buffer = self._pieces[0]
        else:
            buffer = b"".join([self._carry, *self._pieces])
        self._pieces.clear()
        chunks = []
        pos = 0
        for cut in iter_cuts(buffer, self.sizes, final=final):
            chunks.append((self._offset + pos, buffer[pos:cut]))
            pos = cut
        self._carry = buffer[pos:]
        self._pending = len(self._carry)
        self._offset += pos
        return chunks


def iter_chunks(stream: BinaryIO, sizes: ChunkSizes) -> Iterator[tuple[int, bytes]]:
    """(start offset, bytes) of each chunk of the stream, reading it block by block."""
    chunker = Chunker(sizes)
    while block := stream.read(READ_BLOCK):
        yield from chunker.feed(block)
    yield from chunker.finish()


def chunk_views(read: Callable[[int, int], bytes], start: int, length: int, sizes: ChunkSizes, *,
                block: int = READ_BLOCK) -> Iterator[tuple[int, memoryview]]:
    """(start offset, bytes) of each chunk of a file of ``length`` bytes from ``start`` on,
    as if a chunk began there; ``read(offset, size)`` gives the file's bytes (``os.pread``).

    The bytes are views into the block just read, valid until the next chunk is asked for:
    hashing or writing them copies nothing. Each block is read from the last cut, so the
    unfinished chunk is read again with the next block (less than ``max`` bytes) instead
    of being joined to it. Cuts equal ``iter_chunks``' from ``start`` (see ``Chunker``).
    """
    size = max(block, 2 * sizes.max)  # every full block then holds at least one cut
    offset = start
    while offset < length:
        want = min(size, length - offset)
        data = read(offset, want)
        # A short read means the file ended early (it shrank): its end is the last cut.
        final = len(data) < want or offset + want >= length
        view = memoryview(data)
        pos = 0
        for cut in iter_cuts(data, sizes, final=final):
            yield offset + pos, view[pos:cut]
            pos = cut
        if final:
            return
        offset += pos
