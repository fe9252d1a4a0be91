"""fs/direct.py and extract's direct writes (spec/extract.md § "Direct writes"): the bytes
and the holes of a file written direct are those the buffered path writes, what goes
direct leaves the page cache alone, a file system that refuses a direct write gets it
buffered, and a failed direct write ends the run as any failed write does."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import mmap
import os
import random
import re
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from conftest import run_cli

from desync_ref.errors import DesyncRefError
from desync_ref.formats.index import parse_index
from desync_ref.fs import direct
from desync_ref.fs.holes import write_with_holes
from desync_ref.operations import extract_workers
from desync_ref.operations.extract import extract
from desync_ref.stores.local import LocalStore

MIB = 1 << 20
BLOCK = 4096


def _direct_or_skip(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    probe = direct.open_direct(fd)
    os.close(fd)
    if probe < 0:
        pytest.skip(f"the file system of {path.parent} refuses O_DIRECT")
    os.close(probe)


def _data_map(path: Path) -> list[tuple[int, int]]:
    """The file's data regions as SEEK_DATA/SEEK_HOLE report them."""
    regions = []
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size
        position = 0
        while position < end:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:
                break
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            regions.append((start, stop))
            position = stop
    finally:
        os.close(fd)
    return regions


def _content() -> bytes:
    """Random data with zero blocks inside it (whole, split and unaligned runs)."""
    rng = random.Random(14)
    parts = [rng.randbytes(700_001), bytes(3 * BLOCK), rng.randbytes(BLOCK + 17), bytes(9000),
             rng.randbytes(1_200_003), bytes(2 * BLOCK + 5), rng.randbytes(333)]
    return b"".join(parts)


# Ranges that split the content at page and non-page offsets, as extract's units do.
_CUTS = [0, 5000, 4096 * 40, 700_001, 730_000, 1_000_000, 1_500_000, 1_500_001]


def _write_ranges(path: Path, content: bytes, fail: Callable[[int, int], bool] | None = None) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(fd, len(content))
    direct_fd = direct.open_direct(fd)
    writer = direct.DirectWriter(fd, direct_fd, capacity=len(content) + 2 * direct.PAGE,
                                 block=BLOCK, holes=True)
    try:
        cuts = [*_CUTS, len(content)]
        for start, stop in pairwise(cuts):
            base = start - start % direct.PAGE
            number, view = writer.take()
            view[start - base:stop - base] = content[start:stop]
            writer.submit(number, base, start, stop)
    finally:
        try:
            writer.close()
        finally:
            os.close(direct_fd)
            os.close(fd)


def _resident_pages(path: Path, start: int = 0, stop: int | None = None) -> int:
    """How many of the file's pages (from ``start`` to ``stop``) are in the page cache
    (mincore on a mapping of it)."""
    size = path.stat().st_size
    libc = ctypes.CDLL(None, use_errno=True)
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), size) as mapping:
        pages = -(-size // mmap.PAGESIZE)
        vector = (ctypes.c_ubyte * pages)()
        address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
        try:
            if libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vector) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
            end = pages if stop is None else -(-stop // mmap.PAGESIZE)
            return sum(v & 1 for v in vector[start // mmap.PAGESIZE:end])
        finally:
            del address


def test_ranges_written_direct_equal_buffered_writes_and_their_holes(tmp_path: Path) -> None:
    _direct_or_skip(tmp_path / "probe")
    content = _content()
    _write_ranges(tmp_path / "direct", content)
    fd = os.open(tmp_path / "buffered", os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, len(content))
    cuts = [*_CUTS, len(content)]
    for start, stop in pairwise(cuts):
        write_with_holes(fd, content[start:stop], start, block=BLOCK, fresh=True)
    os.close(fd)
    assert (tmp_path / "direct").read_bytes() == content
    assert _data_map(tmp_path / "direct") == _data_map(tmp_path / "buffered")
    assert len(_data_map(tmp_path / "direct")) >= 3  # the zero blocks are holes


def test_direct_pages_stay_out_of_the_page_cache(tmp_path: Path) -> None:
    _direct_or_skip(tmp_path / "probe")
    content = random.Random(3).randbytes(4 * MIB + 1234)
    _write_ranges(tmp_path / "direct", content)
    pages = -(-len(content) // mmap.PAGESIZE)
    # Only the partial pages at the ranges' ends went through the page cache.
    assert _resident_pages(tmp_path / "direct") <= 2 * len(_CUTS)
    with open(tmp_path / "buffered", "wb") as f:
        f.write(content)
    assert _resident_pages(tmp_path / "buffered") == pages  # what the check tells apart


def _is_direct(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EOPNOTSUPP])
def test_a_refused_direct_write_goes_buffered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              code: int) -> None:
    _direct_or_skip(tmp_path / "probe")
    real = os.pwrite
    refused = []

    def refusing(fd: int, data: bytes, offset: int) -> int:
        if _is_direct(fd):
            refused.append(offset)
            raise OSError(code, os.strerror(code))
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", refusing)
    content = _content()
    _write_ranges(tmp_path / "out", content)
    monkeypatch.undo()
    assert len(refused) == 1  # refused once, then every write went buffered
    assert (tmp_path / "out").read_bytes() == content


def test_a_buffer_taken_and_not_submitted_is_not_waited_for(tmp_path: Path) -> None:
    _direct_or_skip(tmp_path / "probe")
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, MIB)
    direct_fd = direct.open_direct(fd)
    writer = direct.DirectWriter(fd, direct_fd, capacity=MIB, block=BLOCK, holes=True)
    number, view = writer.take()
    view[:MIB] = b"x" * MIB
    writer.submit(number, 0, 0, MIB)
    writer.take()  # filling it failed, say: never submitted
    writer.close()  # returns: it waits for the submitted write only
    os.close(direct_fd)
    os.close(fd)
    assert (tmp_path / "out").read_bytes() == b"x" * MIB


def test_a_failed_direct_write_is_raised_to_the_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _direct_or_skip(tmp_path / "probe")
    real = os.pwrite

    def full(fd: int, data: bytes, offset: int) -> int:
        if _is_direct(fd) and offset >= 1_000_000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OSError, match="No space left on device"):
        _write_ranges(tmp_path / "out", _content())


# -- extract on the process path -------------------------------------------------------------

def _made(tmp: Path) -> tuple[Path, Path, bytes]:
    rng = random.Random(9)
    data = b"".join(rng.randbytes(rng.randrange(1, 900_000)) + bytes(rng.randrange(0, 20_000))
                    for _ in range(24))
    (tmp / "blob").write_bytes(data)
    run_cli(["make", "-s", tmp / "s", "-m", "16:64:256", tmp / "x.caibx", tmp / "blob"])
    return tmp / "x.caibx", tmp / "s", data


def test_extract_writes_direct_what_the_thread_path_writes(tmp_path: Path) -> None:
    _direct_or_skip(tmp_path / "probe")
    index_path, store, data = _made(tmp_path)
    index = parse_index(index_path.read_bytes())
    threads = extract(index, LocalStore(store), tmp_path / "threads", workers=2)
    processes = extract(index, LocalStore(store), tmp_path / "processes", workers=2, processes=2)
    # The workers wrote direct: the output is not in the page cache, unlike the threads'
    # (looked at before anything reads the files).
    pages = -(-len(data) // mmap.PAGESIZE)
    assert _resident_pages(tmp_path / "processes") < pages // 4
    assert _resident_pages(tmp_path / "threads") > pages // 2
    assert processes == threads
    assert (tmp_path / "processes").read_bytes() == data
    assert _data_map(tmp_path / "processes") == _data_map(tmp_path / "threads")


@pytest.mark.parametrize("where", ["early", "last"])
def test_a_failed_direct_write_in_a_worker_ends_extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        where: str) -> None:
    _direct_or_skip(tmp_path / "probe")
    index_path, store, data = _made(tmp_path)
    index = parse_index(index_path.read_bytes())
    # Early: a write in the first task fails, and a later take() in that worker raises it.
    # Last: only the file's last pages fail, written after the tasks ended (the worker's
    # finish raises it).
    limit = 2 * MIB if where == "early" else len(data) - 2 * direct.PAGE
    real = os.pwrite

    def full(fd: int, buffer: bytes, offset: int) -> int:
        if _is_direct(fd) and offset + len(buffer) > limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, buffer, offset)

    monkeypatch.setattr(os, "pwrite", full)  # inherited by the forked workers
    with pytest.raises(DesyncRefError,
                       match=re.escape(f"cannot write {tmp_path / 'out'}: No space left on device")):
        extract(index, LocalStore(store), tmp_path / "out", workers=2, processes=2)
    monkeypatch.undo()
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


@contextlib.contextmanager
def _counting_open_direct() -> Iterator[list[int]]:
    """The descriptors fs/direct.open_direct is asked to reopen, while the block runs."""
    opened: list[int] = []
    real = direct.open_direct

    def counting(fd: int) -> int:
        opened.append(fd)
        return real(fd)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(direct, "open_direct", counting)
        yield opened


def test_no_direct_writes_into_an_existing_file(tmp_path: Path) -> None:
    """-k over old data: pages may be cached and old bytes kept, so writes stay buffered."""
    index_path, store, data = _made(tmp_path)
    index = parse_index(index_path.read_bytes())
    (tmp_path / "out").write_bytes(bytes(len(data)))
    with _counting_open_direct() as opened:
        extract(index, LocalStore(store), tmp_path / "out", workers=2, processes=2, in_place=True)
    assert opened == []
    assert (tmp_path / "out").read_bytes() == data
    assert extract_workers._direct_fd == -1


def test_no_direct_writes_for_chunks_of_many_mebibytes(tmp_path: Path) -> None:
    """Each worker would hold fs/direct.DEPTH buffers of a unit plus a chunk: past
    DIRECT_CAPACITY_MAX a buffer, the writes go buffered."""
    rng = random.Random(4)
    data = rng.randbytes(12 * MIB)
    (tmp_path / "blob").write_bytes(data)
    run_cli(["make", "-s", tmp_path / "s", "-m", "1024:4096:16384", tmp_path / "x.caibx",
             tmp_path / "blob"])
    index = parse_index((tmp_path / "x.caibx").read_bytes())
    assert index.chunk_size_max + extract_workers.BATCH_BYTES > extract_workers.DIRECT_CAPACITY_MAX
    with _counting_open_direct() as opened:
        extract(index, LocalStore(tmp_path / "s"), tmp_path / "out", workers=2, processes=2)
    assert opened == []
    assert (tmp_path / "out").read_bytes() == data


def test_an_extract_copying_a_seed_writes_buffered(tmp_path: Path) -> None:
    """A direct write that allocates holds the file's lock until the device has the data,
    which stalled the workers copying seed data (extract_workers._direct_plan): with a seed,
    the output goes through the page cache, as before direct writes."""
    _direct_or_skip(tmp_path / "probe")
    rng = random.Random(8)
    own, shared = rng.randbytes(6 * MIB), rng.randbytes(6 * MIB)
    (tmp_path / "blob").write_bytes(own + shared)
    (tmp_path / "seed").write_bytes(shared)
    for name in ("blob", "seed"):
        run_cli(["make", "-s", tmp_path / "s", tmp_path / f"{name}.caibx", tmp_path / name])
    pages = -(-12 * MIB // mmap.PAGESIZE)
    run_cli(["extract", "-n", "2", "-s", tmp_path / "s", tmp_path / "blob.caibx", tmp_path / "plain"])
    seeded = run_cli(["extract", "-n", "2", "--print-stats", "-s", tmp_path / "s",
                      "--seed", tmp_path / "seed.caibx", tmp_path / "blob.caibx", tmp_path / "seeded"])
    assert _resident_pages(tmp_path / "plain") < pages // 4  # direct
    assert _resident_pages(tmp_path / "seeded") > pages // 2  # buffered
    assert json.loads(seeded.stdout)["bytes-copied-from-seeds"] > 4 * MIB
    assert (tmp_path / "seeded").read_bytes() == own + shared


def test_the_sources_of_self_seed_runs_are_written_buffered(tmp_path: Path) -> None:
    """The parent copies self-seed runs after the workers, reading their sources back: those
    units go through the page cache (extract_workers._self_sources), the others direct."""
    _direct_or_skip(tmp_path / "probe")
    rng = random.Random(12)
    repeated, other = rng.randbytes(6 * MIB), rng.randbytes(6 * MIB)
    data = repeated + other + repeated
    (tmp_path / "blob").write_bytes(data)
    run_cli(["make", "-s", tmp_path / "s", tmp_path / "x.caibx", tmp_path / "blob"])
    done = run_cli(["extract", "-n", "2", "--print-stats", "-s", tmp_path / "s",
                    tmp_path / "x.caibx", tmp_path / "out"])
    assert json.loads(done.stdout)["bytes-copied-from-seeds"] > 5 * MIB  # the repeat
    third = 6 * MIB // mmap.PAGESIZE
    assert _resident_pages(tmp_path / "out", 0, 6 * MIB) > third * 3 // 4  # source: buffered
    assert _resident_pages(tmp_path / "out", 6 * MIB, 12 * MIB) < third // 4  # direct
    assert (tmp_path / "out").read_bytes() == data
