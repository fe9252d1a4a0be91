"""Holes in files: finding a file's data regions, writing zeros as holes, punching holes.

Spec: spec/extract.md § "Holes". casync writes runs of zeros of at least one file-system
block as holes when it extracts or untars (``--punch-holes``, on by default; its
``loop_write_with_holes`` in ``src/util.c``), and reads files with ``SEEK_DATA``/``SEEK_HOLE``
nowhere: desync_ref does, where the file system can say, so that a sparse file's holes are
neither read nor written.
"""

from __future__ import annotations

import errno
import functools
import os
from typing import TYPE_CHECKING

from desync_ref.fs.libc import libc

if TYPE_CHECKING:
    import ctypes

# linux/falloc.h
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02



@functools.cache
def _fallocate() -> ctypes._NamedFuncPointer:
    import ctypes

    function = libc().fallocate
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


class HolesUnsupported(OSError):
    """The file system cannot punch holes (``EOPNOTSUPP``)."""


def data_regions(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    """The (offset, length) runs of ``fd`` in [start, end) that may hold data, in order.

    Everything outside them reads as zeros. Where the file system cannot tell (``EINVAL``
    or ``ENXIO`` from ``SEEK_DATA`` on a pipe, an old file system), the whole range is data.
    """
    regions: list[tuple[int, int]] = []
    offset = start
    while offset < end:
        try:
            data = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after offset: the rest is a hole
                break
            return [(start, end - start)] if end > start else []
        if data >= end:
            break
        try:
            hole = os.lseek(fd, data, os.SEEK_HOLE)
        except OSError:
            hole = end
        hole = min(hole, end)
        regions.append((data, hole - data))
        offset = hole
    return regions


def next_data(fd: int, offset: int, end: int) -> int:
    """The first offset in [offset, end) that may hold data, or ``end`` if all of it is a
    hole. Where the file system cannot tell, ``offset`` (everything may be data). Moves the
    file position (as ``data_regions``): read with ``pread``."""
    if offset >= end:
        return end
    try:
        return min(os.lseek(fd, offset, os.SEEK_DATA), end)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no data after offset
            return end
        return offset


def has_holes(fd: int, length: int) -> bool:
    """Whether ``fd`` (``length`` bytes) has a hole the file system reports; False where it
    cannot tell (a pipe, a file system without ``SEEK_HOLE``: those report none). The file
    position is left where it was (the caller may go on reading).

    A file with at least as many bytes allocated as its length is taken as having none
    without asking: ``SEEK_HOLE`` walks every page of a tmpfs file (about 16 ms for 512 MiB,
    and make asks once per span). Blocks preallocated past the end can hide a hole that way;
    the file is then read whole, zeros too, which gives the same chunks."""
    try:
        if os.fstat(fd).st_blocks * 512 >= length:
            return False
        position = os.lseek(fd, 0, os.SEEK_CUR)
        hole = os.lseek(fd, 0, os.SEEK_HOLE)
    except OSError:
        return False
    os.lseek(fd, position, os.SEEK_SET)
    return hole < length


def read_sparse(fd: int, offset: int, length: int) -> bytes:
    """``length`` bytes of ``fd`` from ``offset``, reading only its data regions: the holes
    are zeros made in memory. Short (as ``pread``) if a data region ends early, i.e. the
    file shrank while being read."""
    end = offset + length
    buffer = bytearray(length)
    for start, size in data_regions(fd, offset, end):
        data = os.pread(fd, size, start)
        buffer[start - offset:start - offset + len(data)] = data
        if len(data) < size:
            return bytes(buffer[:start - offset + len(data)])
    return bytes(buffer)


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate [offset, offset+length) of ``fd``; it reads as zeros after, the size stays."""
    if length <= 0:
        return
    if _fallocate()(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        import ctypes

        code = ctypes.get_errno()
        if code in (errno.EOPNOTSUPP, errno.ENOSYS):
            raise HolesUnsupported(code, os.strerror(code))
        raise OSError(code, os.strerror(code))


# Zeros to compare against, kept: a fresh ``bytes(n)`` per write is fresh memory whose first
# touch faults page by page (extract compares every chunk it writes). Sizes past the cap
# (rare: writes are chunks or batches of about 1 MiB) are made per call.
_ZEROS_KEPT_MAX = 4 << 20
_zero_buffer = b""


def _zeros(size: int) -> bytes:
    """At least ``size`` zero bytes (``startswith`` compares only the other side's length)."""
    global _zero_buffer
    if size <= len(_zero_buffer):
        return _zero_buffer
    if size > _ZEROS_KEPT_MAX:
        return bytes(size)
    _zero_buffer = bytes(max(size, 1 << 20))
    return _zero_buffer


def zero_blocks(data: bytes | memoryview, offset: int, block: int) -> list[tuple[int, int]]:
    """The runs of whole, block-aligned (in file offsets) all-zero blocks of ``data`` placed
    at ``offset``, as (start, stop) positions within ``data``; merged where adjacent."""
    # ``zeros.startswith(view)`` is one memcmp of the view against zeros, without a copy,
    # stopping at the first byte that is not zero; comparing memoryview slices with ``==``
    # goes item by item (about 60 us per 4 KiB block: untar of a sparse image crawled).
    view = memoryview(data).cast("B")
    runs: list[tuple[int, int]] = []
    first = (-offset) % block
    last = first + max(0, len(view) - first) // block * block
    if last > first and _zeros(last - first).startswith(view[first:last]):
        return [(first, last)]  # all zeros: one run
    zero = _zeros(block)
    # Only a block whose first byte is zero can be all zeros: their first bytes, gathered
    # in one strided copy, name the few blocks worth comparing (one in 256 of random data).
    heads = bytes(view[first:last:block])
    n = heads.find(0)
    while n >= 0:
        position = first + n * block
        if zero.startswith(view[position:position + block]):
            if runs and runs[-1][1] == position:
                runs[-1] = (runs[-1][0], position + block)
            else:
                runs.append((position, position + block))
        n = heads.find(0, n + 1)
    return runs


def write_with_holes(fd: int, data: bytes | memoryview, offset: int, *, block: int,
                     fresh: bool) -> int:
    """``pwrite`` ``data`` at ``offset`` leaving its zero blocks unwritten: the bytes there read
    as zeros because the region is a hole already (``fresh``: a file just sized with
    ``ftruncate``) or because a hole is punched over what it held. In a fresh region the
    zeros of the partial blocks at either end are left out too. Returns the bytes left as
    holes. The caller falls back to plain writes on ``HolesUnsupported``."""
    view = memoryview(data).cast("B")
    runs = zero_blocks(view, offset, block)
    if fresh:
        _partial_ends(view, offset, block, runs)
    if not runs:  # the common case (every chunk of random data): one write
        write_at(fd, view, offset)
        return 0
    position = 0
    skipped = 0
    for start, stop in runs:
        write_at(fd, view[position:start], offset + position)
        if not fresh:
            punch_hole(fd, offset + start, stop - start)
        skipped += stop - start
        position = stop
    write_at(fd, view[position:], offset + position)
    return skipped


def _partial_ends(view: memoryview, offset: int, block: int,
                  runs: list[tuple[int, int]]) -> None:
    """Add to ``runs`` the zero bytes of ``view`` in the partial blocks at its two ends.

    In a region that is a hole already, zeros need no writing at any size: a block that two
    writes share (a chunk boundary inside a block) or the last block of the file stays a
    hole when every write into it leaves out its zeros. casync's ``loop_write_with_holes``
    skips zero runs of 64 bytes and more, so it allocates the same blocks: those holding a
    byte that is not zero.
    """
    size = len(view)
    head = min((-offset) % block, size)
    tail = max(size - (offset + size) % block, head)
    if head and _zeros(head).startswith(view[:head]):
        if runs and runs[0][0] == head:
            runs[0] = (0, runs[0][1])
        else:
            runs.insert(0, (0, head))
    if tail < size and _zeros(size - tail).startswith(view[tail:]):
        if runs and runs[-1][1] == tail:
            runs[-1] = (runs[-1][0], size)
        else:
            runs.append((tail, size))


def write_at(fd: int, data: bytes | memoryview, offset: int) -> None:
    """All of ``data`` at ``offset``: ``pwrite`` may write less than it was given."""
    written = os.pwrite(fd, data, offset)
    view = memoryview(data)
    while written < len(view):  # rare: a partial write
        if written <= 0:  # no progress and no error: give up rather than spin
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        view = view[written:]
        offset += written
        written = os.pwrite(fd, view, offset)

