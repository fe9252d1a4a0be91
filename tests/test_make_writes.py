"""make's write path: the local store's chunk writes (prefix directories made on demand, a
temp name per write, mode 0644), the parallel make's store pass (only what the store lacks,
also for serially chunked gaps), the chunk views the workers hash, and a SIGKILLed
parallel make (no invalid chunk, no chunk outside the index, nothing written after the
kill, a rerun completes the store)."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli

from desync_ref import kernels
from desync_ref.chunking import ChunkSizes, chunk_views, iter_chunks
from desync_ref.errors import StoreError
from desync_ref.formats.chunk import TMP_CHUNK_PREFIX, digest_function
from desync_ref.formats.index import parse_index
from desync_ref.operations import make
from desync_ref.stores import Chunk
from desync_ref.stores.local import LocalStore

SIZES = ChunkSizes(1024, 4096, 16384)
DIGEST = digest_function("sha512-256")


def _chunk(seed: int, size: int = 5000) -> Chunk:
    data = random.Random(seed).randbytes(size)
    return Chunk(DIGEST(data), data=data)


def _chunk_files(store: Path) -> set[str]:
    return {p.name.removesuffix(".cacnk") for p in store.glob("*/*.cacnk")}


# --- the local store's writes ---------------------------------------------------------------

@pytest.mark.compiled_pass_only
def test_store_chunk_makes_prefix_dirs_on_demand_and_files_0644(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s", create=True)
    chunks = [_chunk(n) for n in range(20)]
    old = os.umask(0o077)
    try:
        for chunk in chunks:
            store.store_chunk(chunk)
        store.store_chunk(chunks[0])  # again: replaces, same bytes
    finally:
        os.umask(old)
    assert _chunk_files(tmp_path / "s") == {c.id.hex() for c in chunks}
    for chunk in chunks:
        path = store.chunk_path(chunk.id)
        assert path.stat().st_mode & 0o777 == 0o644
        assert store.get_chunk(chunk.id, DIGEST).data() == chunk.data()
    # nothing but chunks: no temp file is left behind
    assert [p for p in (tmp_path / "s").rglob("*") if p.is_file() and not p.name.endswith(".cacnk")] == []


def _prune_after_first_mkdir(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``os.mkdir`` as a concurrent prune sees it: the first directory made is removed right
    after it is made. The list returned names it once that has happened."""
    real_mkdir = os.mkdir
    removed: list[str] = []

    def racing_mkdir(path: str, *args: object, **kwargs: object) -> None:
        real_mkdir(path)
        if not removed:
            removed.append(path)
            os.rmdir(path)

    monkeypatch.setattr(os, "mkdir", racing_mkdir)
    return removed


@pytest.mark.compiled_pass_only
def test_store_chunk_remakes_a_prefix_dir_removed_under_it(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A concurrent prune removes the (empty) prefix directory right after our mkdir: the
    write makes it again instead of failing."""
    store = LocalStore(tmp_path / "s", create=True)
    chunk = _chunk(1)
    removed = _prune_after_first_mkdir(monkeypatch)
    store.store_chunk(chunk)
    assert removed
    assert store.get_chunk(chunk.id, DIGEST).data() == chunk.data()


@pytest.mark.compiled_pass_only
def test_store_chunk_takes_another_temp_name_on_a_clash(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A temp name already taken (another writer's, or a leftover) is never written into."""
    store = LocalStore(tmp_path / "s", create=True)
    chunk = _chunk(2)
    prefix = tmp_path / "s" / chunk.id.hex()[:4]
    prefix.mkdir()
    bits = iter([7, 7, 8])
    monkeypatch.setattr("desync_ref.stores.local.random.getrandbits", lambda n: next(bits))
    taken = prefix / f"{TMP_CHUNK_PREFIX}{os.getpid():x}-{7:012x}"
    taken.write_bytes(b"someone else's")
    store.store_chunk(chunk)
    assert taken.read_bytes() == b"someone else's"
    assert store.get_chunk(chunk.id, DIGEST).data() == chunk.data()


@pytest.mark.compiled_pass_only
def test_store_chunk_that_cannot_be_written_is_a_store_error(tmp_path: Path) -> None:
    """A file where the prefix directory belongs (fails for root too, unlike permissions)."""
    store = LocalStore(tmp_path / "s", create=True)
    chunk = _chunk(3)
    (tmp_path / "s" / chunk.id.hex()[:4]).write_bytes(b"")
    with pytest.raises(StoreError, match=r"cannot write chunk [0-9a-f]+ to .*: Not a directory"):
        store.store_chunk(chunk)


@pytest.mark.compiled_pass_only
def test_store_chunk_makes_the_directory_first_after_making_one(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a write had to make its prefix directory, the next one makes its directory
    before opening the temp file (a new store: no failed open); a directory found there
    already turns writes back to opening first. Every chunk lands either way."""
    store = LocalStore(tmp_path / "s", create=True)
    chunks = [_chunk(n) for n in range(100, 124)]
    existing = {n for n in range(len(chunks)) if n % 5 in (2, 3)}
    for n in existing:
        (tmp_path / "s" / chunks[n].id.hex()[:4]).mkdir()
    failed_opens: list[str] = []
    real_open = os.open

    def counting_open(path: str, *args: object, **kwargs: object) -> int:
        try:
            return real_open(path, *args, **kwargs)  # type: ignore[arg-type]
        except FileNotFoundError:
            failed_opens.append(path)
            raise

    monkeypatch.setattr(os, "open", counting_open)
    for chunk in chunks:
        store.store_chunk(chunk)
    # a missing directory costs a failed open only first and after an existing one
    expected = sum(1 for n in range(len(chunks))
                   if n not in existing and (n == 0 or n - 1 in existing))
    assert len(failed_opens) == expected
    assert _chunk_files(tmp_path / "s") == {c.id.hex() for c in chunks}
    for chunk in chunks:
        assert store.chunk_path(chunk.id).stat().st_mode & 0o777 == 0o644
        assert store.get_chunk(chunk.id, DIGEST).data() == chunk.data()
    assert [p for p in (tmp_path / "s").rglob("*") if p.is_file() and not p.name.endswith(".cacnk")] == []


@pytest.mark.compiled_pass_only
def test_store_chunk_with_the_directory_made_first_survives_a_prune(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The prefix directory made before the open is removed by a concurrent prune before
    the open: the write makes it again; a file where it belongs is still a StoreError."""
    store = LocalStore(tmp_path / "s", create=True)
    store.store_chunk(_chunk(200))  # made a directory: the next write makes its own first
    removed = _prune_after_first_mkdir(monkeypatch)
    chunk = _chunk(201)
    store.store_chunk(chunk)
    assert removed
    assert store.get_chunk(chunk.id, DIGEST).data() == chunk.data()
    blocked = _chunk(202)
    (tmp_path / "s" / blocked.id.hex()[:4]).write_bytes(b"")
    with pytest.raises(StoreError, match=r"cannot write chunk [0-9a-f]+ to .*: Not a directory"):
        store.store_chunk(blocked)


# --- the chunk views the workers hash ---------------------------------------------------------

@pytest.mark.parametrize("block", [1, 40_000, 1 << 20])
@pytest.mark.parametrize("start", [0, 12345])
def test_chunk_views_equal_iter_chunks(block: int, start: int) -> None:
    data = random.Random(10).randbytes(300_000) + bytes(100_000)
    want = [(start + s, bytes(c)) for s, c in iter_chunks(io.BytesIO(data[start:]), SIZES)]

    def read(offset: int, size: int) -> bytes:
        return data[offset:offset + size]

    got = [(s, bytes(v)) for s, v in chunk_views(read, start, len(data), SIZES, block=block)]
    assert got == want


def test_chunk_views_end_at_a_short_read() -> None:
    """A file that shrank while chunked: its real end is the last cut, no endless re-read."""
    data = random.Random(11).randbytes(150_000)
    calls = []

    def read(offset: int, size: int) -> bytes:
        calls.append(offset)
        assert len(calls) < 100, "reading the same end again and again"
        return data[offset:offset + size]

    got = list(chunk_views(read, 0, 400_000, SIZES, block=64 * 1024))
    assert b"".join(bytes(v) for _, v in got) == data


# --- the parallel make's store pass -------------------------------------------------------------

@pytest.fixture
def small_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(make, "MIN_SPAN", 64 * 1024)
    monkeypatch.setattr(make, "LOOKAHEAD_CHUNKS", 2)


def test_span_worker_stops_at_the_first_cut_the_next_span_shares(tmp_path: Path) -> None:
    data = random.Random(12).randbytes(600_000)
    (tmp_path / "blob").write_bytes(data)
    stop = 20 * SIZES.max
    here = make._chunk_span(str(tmp_path / "blob"), 0, stop, len(data), SIZES, "sha512-256", None)
    following = make._chunk_span(str(tmp_path / "blob"), stop, len(data), len(data), SIZES,
                                 "sha512-256", None)
    shared = [end for end in here.ends if end >= stop and end in set(following.ends)]
    assert shared and here.ends[-1] == shared[0]
    serial = [s + len(c) for s, c in iter_chunks(io.BytesIO(data), SIZES)]
    assert here.ends == serial[:len(here.ends)]


def test_parallel_make_into_populated_store_writes_nothing_also_for_serial_gaps(
        tmp_path: Path, small_spans: None) -> None:
    """Spans that never re-synchronise leave gaps the parent chunks serially, which no
    worker asked the store about: they are asked in the store pass, and only a chunk the
    store lacks is written."""
    data = random.Random(13).randbytes(50_000) + b"a" * 1_000_000
    (tmp_path / "blob").write_bytes(data)
    store = LocalStore(tmp_path / "s", create=True)
    index, stats = make.make_index(str(tmp_path / "blob"), SIZES, store=store, workers=3)
    assert stats.stored == stats.unique == len(_chunk_files(tmp_path / "s"))
    again, stats = make.make_index(str(tmp_path / "blob"), SIZES, store=store, workers=3)
    assert again.chunks == index.chunks and stats.stored == 0
    # a chunk of the serially chunked tail (past the random head) goes missing
    victim = index.chunks[-3].id
    store.chunk_path(victim).unlink()
    _, stats = make.make_index(str(tmp_path / "blob"), SIZES, store=store, workers=3)
    assert stats.stored == 1
    assert store.get_chunk(victim, DIGEST).data()


class CountingStore(LocalStore):
    """Notes every chunk write in a file, from whichever worker process makes it."""

    def __init__(self, path: Path, log: Path) -> None:
        super().__init__(path, create=True)
        self.log = str(log)

    def store_chunk(self, chunk: Chunk) -> None:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, chunk.id.hex().encode() + b"\n")
        finally:
            os.close(fd)
        super().store_chunk(chunk)


def test_parallel_make_stores_each_missing_chunk_once(tmp_path: Path, small_spans: None) -> None:
    """Repeated content: the same chunk found missing by several workers is written once."""
    block = random.Random(14).randbytes(40_000)
    data = block * 40
    (tmp_path / "blob").write_bytes(data)
    store = CountingStore(tmp_path / "s", tmp_path / "log")
    index, stats = make.make_index(str(tmp_path / "blob"), SIZES, store=store, workers=3)
    writes = (tmp_path / "log").read_text().split()
    assert len(writes) == len(set(writes)) == stats.stored == stats.unique
    assert set(writes) == _chunk_files(tmp_path / "s") == {c.id.hex() for c in index.chunks}
    assert len(index.chunks) > 2 * stats.unique  # the content does repeat


# --- a killed parallel make ----------------------------------------------------------------------

COMPILED = kernels.is_compiled(kernels.load("chunker"))


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) in frontier:
                    children.add(int(entry))
        frontier = children - found
        found |= children
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _count_when_dir(store: Path) -> int:
    return len(_chunk_files(store)) if store.is_dir() else 0


def test_killed_parallel_make_leaves_valid_chunks_and_no_writer(tmp_path: Path) -> None:
    """SIGKILL the command while its workers store: every chunk file is valid and named by
    the index, the workers die with it (nothing changes in the store afterwards), and a
    rerun completes the store."""
    size = (2 * make.MIN_SPAN + (8 << 20)) if COMPILED else (3 << 20)
    data = random.Random(15).randbytes(size)
    (tmp_path / "blob").write_bytes(data)
    store = tmp_path / "s"
    # Pure chunker: spans shrink with the file (MIN_SPAN is read once, in the command), so
    # lower the threshold the same way the other pure-pass tests do.
    code = ("import sys; from desync_ref.operations import make; make.MIN_SPAN = 1 << 20; "
            "from desync_ref.cli import main; sys.exit(main(sys.argv[1:]))")
    args = ["make", "-n", "2", "-m", "1:4:16", "-s", str(store), str(tmp_path / "x.caibx"), str(tmp_path / "blob")]
    cmd = [sys.executable, "-m", "desync_ref", *args] if COMPILED else [sys.executable, "-c", code, *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _count_when_dir(store) < 200:
            assert proc.poll() is None, "make ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        workers = _descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert workers, "the parallel path was not taken"
    for _ in range(500):  # PR_SET_PDEATHSIG: the workers get SIGKILL when the parent dies
        if not any(_running(pid) for pid in workers):
            break
        time.sleep(0.01)
    left = _chunk_files(store)
    time.sleep(0.3)
    assert _chunk_files(store) == left, "chunks were written after make was killed"
    run_cli(["make", "-n", "1", "-m", "1:4:16", str(tmp_path / "serial.caibx"), str(tmp_path / "blob")])
    wanted = {c.id.hex() for c in parse_index((tmp_path / "serial.caibx").read_bytes()).chunks}
    assert 0 < len(left) < len(wanted)
    assert left <= wanted, "a chunk outside the index was stored"
    local = LocalStore(store)
    for hex_id in left:
        local.get_chunk(bytes.fromhex(hex_id), DIGEST)  # raises ChunkInvalid if bad
    rerun = subprocess.run(cmd, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert (tmp_path / "x.caibx").read_bytes() == (tmp_path / "serial.caibx").read_bytes()
    assert _chunk_files(store) == wanted
