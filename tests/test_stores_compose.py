"""The store wrappers on their own: router, cache (repair), failover, swap, their types, the
scheme registry, and operations.parallel.ordered_map."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from desync_ref.errors import (
    ChunkInvalid,
    ChunkMissing,
    DesyncRefError,
    InvalidParameter,
    StoreError,
)
from desync_ref.formats.chunk import chunk_file_name, compress, decompress
from desync_ref.operations.parallel import ordered_map
from desync_ref.server.chunks import ChunkHandler
from desync_ref.stores import Chunk, InlineRead, PruneStore, Store, WriteStore
from desync_ref.stores.cache import CachedStore
from desync_ref.stores.failover import FailoverGroup
from desync_ref.stores.index_stores import index_store_for
from desync_ref.stores.local import LocalStore
from desync_ref.stores.location import open_chain, open_store, open_writable, open_write_store
from desync_ref.stores.options import DEFAULT_OPTIONS
from desync_ref.stores.registry import BACKENDS, LOCAL, backend_for
from desync_ref.stores.router import StoreRouter
from desync_ref.stores.swap import SwapStore, SwapWriteStore

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only


def digest(data: bytes) -> bytes:
    return hashlib.new("sha512_256", data).digest()


class Counting:
    """The digest, counting its calls: how often a chunk was checked."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, data: bytes) -> bytes:
        self.calls += 1
        return digest(data)


class MemoryStore:
    """A WriteStore in a dict that records what was asked of it and can be made to fail."""

    def __init__(self, name: str, chunks: dict[bytes, bytes] | None = None,
                 error: Exception | None = None) -> None:
        self.name = name
        self.chunks = dict(chunks or {})
        self.error = error
        self.gets: list[bytes] = []

    def __str__(self) -> str:
        return self.name

    def get_chunk(self, chunk_id: bytes, check: object) -> Chunk:
        self.gets.append(chunk_id)
        if self.error is not None:
            raise self.error
        if chunk_id not in self.chunks:
            raise ChunkMissing(chunk_id.hex(), self.name)
        return Chunk.with_id(chunk_id, check, data=self.chunks[chunk_id])  # type: ignore[arg-type]

    def has_chunk(self, chunk_id: bytes) -> bool:
        if self.error is not None:
            raise self.error
        return chunk_id in self.chunks

    def store_chunk(self, chunk: Chunk) -> None:
        self.chunks[chunk.id] = chunk.data()

    def remove_chunk(self, chunk_id: bytes) -> None:
        self.chunks.pop(chunk_id, None)

    def close(self) -> None:
        pass


class ReadOnlyStore:
    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner

    def get_chunk(self, chunk_id: bytes, check: object) -> Chunk:
        return self.inner.get_chunk(chunk_id, check)

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self.inner.has_chunk(chunk_id)

    def close(self) -> None:
        pass


DATA = b"the chunk's bytes"
CID = digest(DATA)
OTHER = b"other bytes"


# --- router (-s a -s b) -----------------------------------------------------------------

def test_router_first_hit_wins() -> None:
    a, b = MemoryStore("a", {CID: DATA}), MemoryStore("b", {CID: DATA})
    router = StoreRouter([a, b])
    assert router.get_chunk(CID, digest).data() == DATA
    assert (a.gets, b.gets) == ([CID], [])
    # a miss in the first store moves on
    a.chunks.clear()
    assert router.get_chunk(CID, digest).data() == DATA
    assert b.gets == [CID]


def test_router_missing_everywhere_names_the_stores() -> None:
    router = StoreRouter([MemoryStore("a"), MemoryStore("b")])
    with pytest.raises(ChunkMissing) as info:
        router.get_chunk(CID, digest)
    assert str(info.value) == f"chunk {CID.hex()} not found in a,b"


def test_router_does_not_route_around_an_error() -> None:
    b = MemoryStore("b", {CID: DATA})
    router = StoreRouter([MemoryStore("a", error=StoreError("down")), b])
    with pytest.raises(StoreError, match="down"):
        router.get_chunk(CID, digest)
    assert b.gets == []


# --- cache (-c) ------------------------------------------------------------------------------

def _corrupt_cache(tmp_path: Path) -> tuple[LocalStore, Path]:
    cache = LocalStore(tmp_path / "cache", create=True)
    path = tmp_path / "cache" / chunk_file_name(CID)
    path.parent.mkdir()
    path.write_bytes(compress(OTHER))  # decompresses, but to bytes of another id
    return cache, path


def test_cache_repair_replaces_a_corrupt_chunk(tmp_path: Path) -> None:
    cache, path = _corrupt_cache(tmp_path)
    upstream = MemoryStore("up", {CID: DATA})
    store = CachedStore(upstream, cache, digest, repair=True)
    assert store.get_chunk(CID, digest).data() == DATA
    assert upstream.gets == [CID]
    assert decompress(path.read_bytes()) == DATA  # the bad copy was replaced
    upstream.chunks.clear()
    assert store.get_chunk(CID, digest).data() == DATA  # now served from the cache


def test_cache_without_repair_is_an_error(tmp_path: Path) -> None:
    cache, path = _corrupt_cache(tmp_path)
    upstream = MemoryStore("up", {CID: DATA})
    store = CachedStore(upstream, cache, digest, repair=False)
    with pytest.raises(ChunkInvalid) as info:
        store.get_chunk(CID, digest)
    assert str(info.value) == f"chunk id {CID.hex()} does not match its hash {digest(OTHER).hex()} in store {cache}"
    assert upstream.gets == []
    assert decompress(path.read_bytes()) == OTHER


def test_cache_miss_fills_the_cache_with_checked_chunks_only(tmp_path: Path) -> None:
    cache = LocalStore(tmp_path / "cache", create=True)
    store = CachedStore(MemoryStore("up", {CID: DATA}), cache, digest)
    assert store.get_chunk(CID, None).data() == DATA
    assert cache.has_chunk(CID)
    bad = CachedStore(MemoryStore("up", {digest(OTHER): DATA}), cache, digest)
    with pytest.raises(ChunkInvalid):
        bad.get_chunk(digest(OTHER), None)
    assert not cache.has_chunk(digest(OTHER))


def test_a_chunk_is_checked_once(tmp_path: Path) -> None:
    """Through cache and router, a fetched chunk is hashed exactly once."""
    upstream = LocalStore(tmp_path / "up", create=True)
    upstream.store_chunk(Chunk(CID, data=DATA))
    cache = LocalStore(tmp_path / "cache", create=True)
    counting = Counting()
    chain = CachedStore(StoreRouter([MemoryStore("empty"), upstream]), cache, counting)
    assert chain.get_chunk(CID, counting).data() == DATA  # miss: checked upstream
    assert counting.calls == 1
    assert chain.get_chunk(CID, counting).data() == DATA  # hit: checked in the cache
    assert counting.calls == 2


# --- failover (a|b) ----------------------------------------------------------------------------

@pytest.mark.parametrize("error", [StoreError("a is down"), ConnectionRefusedError(111, "refused")])
def test_failover_moves_on_after_an_error(error: Exception) -> None:
    a = MemoryStore("a", {CID: DATA}, error=error)
    b = MemoryStore("b", {CID: DATA})
    group = FailoverGroup([a, b])
    assert group.get_chunk(CID, digest).data() == DATA
    assert group.active == 1
    # b stays active: a is not asked again
    assert group.get_chunk(CID, digest).data() == DATA
    assert (len(a.gets), len(b.gets)) == (1, 2)


def test_failover_does_not_move_on_a_missing_chunk() -> None:
    """desync failover.go: members hold the same chunks, so ChunkMissing is the answer."""
    b = MemoryStore("b", {CID: DATA})
    group = FailoverGroup([MemoryStore("a"), b])
    with pytest.raises(ChunkMissing):
        group.get_chunk(CID, digest)
    assert b.gets == []
    assert group.active == 0


def test_failover_does_not_move_on_an_invalid_chunk() -> None:
    b = MemoryStore("b", {CID: DATA})
    group = FailoverGroup([MemoryStore("a", {CID: OTHER}), b])
    with pytest.raises(ChunkInvalid):
        group.get_chunk(CID, digest)
    assert b.gets == []


def test_failover_all_failing_raises_the_last_error() -> None:
    group = FailoverGroup([MemoryStore("a", error=StoreError("a down")),
                          MemoryStore("b", error=StoreError("b down"))])
    with pytest.raises(StoreError, match="b down"):
        group.get_chunk(CID, digest)
    with pytest.raises(StoreError):
        group.has_chunk(CID)


def test_failover_has_chunk_moves_on() -> None:
    group = FailoverGroup([MemoryStore("a", error=StoreError("down")), MemoryStore("b", {CID: DATA})])
    assert group.has_chunk(CID)
    assert str(group) == "a|b"


# --- swap stores and the types of the wrappers -----------------------------------------------

def test_wrappers_claim_only_what_they_can_do(tmp_path: Path) -> None:
    local = LocalStore(tmp_path, create=True)
    readonly = ReadOnlyStore(MemoryStore("m"))
    assert isinstance(local, PruneStore) and isinstance(local, InlineRead)
    for wrapper in (StoreRouter([local]), FailoverGroup([local]), CachedStore(local, local, digest),
                    SwapStore(readonly), SwapStore(local)):
        assert isinstance(wrapper, Store)
        assert not isinstance(wrapper, WriteStore), wrapper
    assert isinstance(SwapWriteStore(local), WriteStore)
    assert not isinstance(SwapWriteStore(local), PruneStore)


def test_chunk_server_refuses_a_put_to_a_read_only_swap_store(tmp_path: Path) -> None:
    handler = ChunkHandler(SwapStore(ReadOnlyStore(MemoryStore("m"))), digest, writable=True)
    reply = handler._store(CID, compress(DATA))
    assert reply.status == 400
    assert reply.body == b"upstream chunk store does not support writing\n"
    local = LocalStore(tmp_path, create=True)
    handler = ChunkHandler(SwapWriteStore(local), digest, writable=True)
    assert handler._store(CID, compress(DATA)).status == 200
    assert local.get_chunk(CID, digest).data() == DATA


def test_chunk_server_checks_a_put_once_when_asked(tmp_path: Path) -> None:
    local = LocalStore(tmp_path, create=True)
    handler = ChunkHandler(local, digest, writable=True, skip_verify_write=False)
    reply = handler._store(CID, compress(OTHER))
    assert reply.status == 400
    assert reply.body.decode().startswith(f"chunk id {CID.hex()} does not match its hash")
    assert not local.has_chunk(CID)


def test_swap_rules(tmp_path: Path) -> None:
    first = MemoryStore("first", {CID: DATA})
    second = MemoryStore("second", {CID: OTHER})
    readonly = ReadOnlyStore(MemoryStore("ro"))
    writer = SwapWriteStore(first)
    with pytest.raises(StoreError, match="a writable store can only be swapped for another writable store"):
        writer.swap(readonly)
    assert writer.swap(second) is first
    assert writer.get_chunk(CID, None).data() == OTHER
    writer.store_chunk(Chunk(b"\x01" * 32, data=b"new"))
    assert second.chunks[b"\x01" * 32] == b"new" and b"\x01" * 32 not in first.chunks
    # desync Swap: the rule is on what the wrapped store can do, also for a read-only SwapStore
    reader = SwapStore(first)
    with pytest.raises(StoreError):
        reader.swap(StoreRouter([first]))
    reader = SwapStore(StoreRouter([first]))
    assert isinstance(reader.swap(readonly), StoreRouter)
    assert isinstance(reader.swap(second), ReadOnlyStore)


def test_swap_store_answers_inline_reads_for_what_it_holds(tmp_path: Path) -> None:
    local = LocalStore(tmp_path, create=True)
    swap = SwapStore(local)
    assert swap.reads_inline(False) and not swap.reads_inline(True)
    swap.swap(LocalStore(tmp_path, uncompressed=True))
    assert swap.reads_inline(True)
    swap.swap(MemoryStore("m"))
    assert not swap.reads_inline(False)


# --- locations and the scheme registry ----------------------------------------------------------

@pytest.mark.parametrize(("location", "module"), [
    ("s3+http://host/bucket", "desync_ref.stores.s3"), ("gs://bucket/x", "desync_ref.stores.gcs"),
    ("sftp://h/p", "desync_ref.stores.sftp"), ("ssh://h/p", "desync_ref.stores.ssh"),
    ("oci+http://h/repo", "desync_ref.stores.oci"), ("HTTP://h/", "desync_ref.stores.http"),
    ("ftp://h/p", "desync_ref.stores.local"), ("rel/dir", "desync_ref.stores.local")])
def test_scheme_registry(location: str, module: str) -> None:
    """Each scheme reaches its backend (case-insensitively); anything else is a local path."""
    assert backend_for(location).module == module


@pytest.mark.parametrize("location", ["ssh://h/p/x.caibx", "oci+http://h/repo/x.caibx"])
def test_schemes_without_index_storage(location: str) -> None:
    with pytest.raises(StoreError, match=r"^index storage is not supported by (ssh|oci) stores"):
        index_store_for(location)


def test_location_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter, match=r"^empty store location$"):
        open_store("")
    with pytest.raises(InvalidParameter, match=r"^no store given$"):
        open_chain([], None, digest)
    with pytest.raises(StoreError, match="must be a local directory here"):
        open_write_store("http://127.0.0.1:9/")
    with pytest.raises(StoreError, match="is not supported yet"):
        open_writable(f"{tmp_path}|{tmp_path}")


def test_composition(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert isinstance(open_store(f"{tmp_path / 'a'}|{tmp_path / 'b'}"), FailoverGroup)
    chain = open_chain([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "c"), digest)
    assert isinstance(chain, CachedStore) and isinstance(chain.store, StoreRouter)
    assert (tmp_path / "c").is_dir()  # a cache is created on demand


def test_registry_capabilities_match_the_types(tmp_path: Path) -> None:
    local = LOCAL.load().open_chunk_store(str(tmp_path), DEFAULT_OPTIONS)
    assert isinstance(local, PruneStore) and LOCAL.prunes and LOCAL.writes
    http = backend_for("HTTPS://example.invalid/store")
    assert http.name == "http" and http.writes and not http.prunes and http.indexes
    store = http.load().open_chunk_store("https://example.invalid/store", DEFAULT_OPTIONS)
    assert isinstance(store, WriteStore) and not isinstance(store, PruneStore)
    for backend in BACKENDS:
        assert all(scheme == scheme.lower() for scheme in backend.schemes)
    assert backend_for("relative/dir") is LOCAL


def test_a_local_command_does_not_import_the_http_client(tmp_path: Path) -> None:
    index = tmp_path / "x.caibx"
    from desync_ref.formats.index import Index, encode_index

    index.write_bytes(encode_index(Index(0x2000000000000000, 16, 32, 64)))
    code = ("import sys; from desync_ref.cli import main; "
            f"rc = main(['list-chunks', {str(index)!r}]); "
            "sys.exit(rc if 'urllib3' not in sys.modules else 99)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


# --- ordered_map --------------------------------------------------------------------------------

def test_ordered_map_keeps_order() -> None:
    def slow(n: int) -> int:
        time.sleep(0.001 * ((n * 7) % 5))
        return n * n

    assert list(ordered_map(slow, range(50), 4)) == [n * n for n in range(50)]
    assert list(ordered_map(slow, range(5), 1)) == [n * n for n in range(5)]


def test_ordered_map_bounds_the_work_in_flight() -> None:
    workers = 3
    lock = threading.Lock()
    running = 0
    peak = 0
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for n in range(40):
            pulled += 1
            yield n

    def work(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.002)
        with lock:
            running -= 1
        return n

    results = ordered_map(work, items(), workers)
    consumed = 0
    for _ in results:
        consumed += 1
        # the generator reads ahead by at most 2 * workers items
        assert pulled - consumed <= 2 * workers
    assert consumed == 40
    assert peak <= workers


def test_ordered_map_raises_the_first_error_and_stops() -> None:
    started: list[int] = []

    def work(n: int) -> int:
        started.append(n)
        if n == 3:
            raise DesyncRefError("bad item 3")
        time.sleep(0.002)
        return n

    got: list[int] = []
    with pytest.raises(DesyncRefError, match="bad item 3"):
        for value in ordered_map(work, range(1000), 2):
            got.append(value)
    assert got == [0, 1, 2]
    assert max(started) < 3 + 2 * 2 + 1  # nothing far past the window was started

