"""Hardening of chunk reading: bounded decompression (zstd bombs), the index entry's size
checked where chunks are verified, empty chunk files (a write cut short by a power loss)
treated as absent and repaired, invalid chunks named with their store, missing chunks not
retried, and ``verify -r`` removing only chunks proven invalid.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import assert_clean_failure, run_cli

from desync_ref.errors import ChunkInvalid, ChunkMissing, StoreError
from desync_ref.formats.chunk import (
    ChunkCheck,
    chunk_file_name,
    compress,
    decompress,
    digest_function,
)
from desync_ref.formats.index import parse_index
from desync_ref.operations.verify import verify_store
from desync_ref.stores import Chunk
from desync_ref.stores.cache import CachedStore
from desync_ref.stores.failover import FailoverGroup
from desync_ref.stores.local import LocalStore

DIGEST = digest_function("sha512-256")
MIB = 1024 * 1024


def rle_bomb(blocks: int) -> bytes:
    """A zstd frame (no content size, as casync writes) of RLE blocks of 128 KiB each: four
    bytes per block, so a few KiB claim hundreds of MiB."""
    out = bytearray(b"\x28\xb5\x2f\xfd\x00\x58")
    for n in range(blocks):
        header = (1 if n == blocks - 1 else 0) | (1 << 1) | ((128 * 1024) << 3)
        out += header.to_bytes(3, "little") + b"A"
    return bytes(out)


# --- 1: decompression bomb -----------------------------------------------------------------

_MEASURE = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    from desync_ref.errors import ChunkInvalid
    from desync_ref.formats.chunk import ChunkCheck, decompress, digest_function
    from desync_ref.stores import Chunk
    from desync_ref.stores.local import LocalStore
    bomb = Path(sys.argv[2]).read_bytes()
    chunk_id = bytes(32)
    ways = {
        "decompress": lambda: decompress(bomb, chunk_id),
        "put": lambda: Chunk.with_id(chunk_id, digest_function("sha512-256"), compressed=bomb),
        "store-read-with-index-limit": lambda: LocalStore(sys.argv[3]).get_chunk(
            chunk_id, ChunkCheck(digest_function("sha512-256"), 65536, 256 * 1024)),
    }
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        ways[sys.argv[1]]()
        outcome = "accepted"
    except ChunkInvalid as exc:
        outcome = str(exc)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(grown * 1024)
    print(outcome)
""")


@pytest.mark.parametrize(("way", "bound"), [
    ("decompress", 128 * MIB + 64 * MIB),  # casync's hard limit, plus slack
    ("put", 128 * MIB + 64 * MIB),  # the chunk-server's PUT check builds chunks this way
    ("store-read-with-index-limit", 32 * MIB),  # index max 256 KiB
])
def test_zstd_bomb_is_refused_with_bounded_memory(tmp_path: Path, way: str, bound: int) -> None:
    bomb = rle_bomb(4000)  # 16 KB claiming 500 MiB
    (tmp_path / "bomb").write_bytes(bomb)
    store = tmp_path / "s"
    (store / "0000").mkdir(parents=True)
    (store / chunk_file_name(bytes(32))).write_bytes(bomb)
    proc = subprocess.run([sys.executable, "-c", _MEASURE, way, str(tmp_path / "bomb"), str(store)],
                          capture_output=True, check=True, timeout=300)
    grown, outcome = proc.stdout.decode().splitlines()
    assert "decompresses to more than" in outcome, outcome
    assert int(grown) < bound, f"peak memory grew by {int(grown) // MIB} MiB"


def test_declared_content_size_past_limit_is_refused() -> None:
    import zstandard

    frame = zstandard.ZstdCompressor().compress(bytes(300_000))  # content size in the header
    with pytest.raises(ChunkInvalid, match="decompresses to more than 200000 bytes"):
        decompress(frame, limit=200_000)
    assert decompress(frame, limit=300_000) == bytes(300_000)


@pytest.mark.parametrize("size", [1, 5000, 128 * 1024, 1 * MIB + 100, 3 * MIB + 7])
def test_bounded_decompression_round_trips(size: int) -> None:
    rng = random.Random(size)
    # Compressible, so the frame has several compressed blocks whose worst case exceeds the
    # limit: the piecewise path is taken.
    data = bytes(rng.choice(b"abcd") for _ in range(size))
    blob = compress(data)
    assert decompress(blob, limit=size) == data
    with pytest.raises(ChunkInvalid, match="decompresses to more than"):
        decompress(blob, limit=size - 1)
    with pytest.raises(ChunkInvalid, match="truncated stream or trailing data"):
        decompress(blob + b"\0", limit=size)
    with pytest.raises(ChunkInvalid, match="not valid compressed data"):
        decompress(blob[:-3], limit=size)
    with pytest.raises(ChunkInvalid, match="truncated stream or trailing data"):
        decompress(blob + blob, limit=2 * size)


def test_bomb_below_the_limit_still_decodes() -> None:
    assert decompress(rle_bomb(3)) == b"A" * (3 * 128 * 1024)


# --- 4: size against the index ---------------------------------------------------------------

def _index_over(tmp: Path, entries: list[tuple[bytes, int]], *, cache: bool = False) -> tuple[Path, Path]:
    """A store holding the given chunks' data and an index that lists (id, size) entries."""
    from desync_ref.formats.index import Index, IndexChunk, encode_index
    from desync_ref.operations.make import blob_index_flags

    store = LocalStore(tmp / "s", create=True)
    index = Index(blob_index_flags("sha512-256"), 4, 16, 64)
    start = 0
    for data, size in entries:
        chunk_id = DIGEST(data)
        store.store_chunk(Chunk(chunk_id, data=data))
        index.chunks.append(IndexChunk(start, size, chunk_id))
        start += size
    (tmp / "x.caibx").write_bytes(encode_index(index))
    return tmp / "x.caibx", tmp / "s"


@pytest.mark.parametrize("entries", [
    [(b"fifteen bytes!!", 12)],  # shorter than the chunk
    [(b"abcd", 4), (b"fifteen bytes!!", 40)],  # longer than the chunk
    [(b"fifteen bytes!!", 15), (b"fifteen bytes!!", 12)],  # a repeated chunk, kept in memory
])
@pytest.mark.parametrize("command", ["extract", "extract-cached", "cat"])
def test_chunk_size_differing_from_index_fails(tmp_path: Path, entries: list[tuple[bytes, int]],
                                               command: str) -> None:
    index, store = _index_over(tmp_path, entries)
    bad_id = DIGEST(b"fifteen bytes!!").hex()
    bad_size = next(size for data, size in entries if size != len(data))
    if command == "cat":
        args = ["cat", "-s", store, index]
    else:
        args = ["extract", "-s", store, index, tmp_path / "out"]
        if command == "extract-cached":
            args[1:1] = ["-c", tmp_path / "cache"]
    err = assert_clean_failure(run_cli(args, check=False))
    assert f"chunk {bad_id} has 15 bytes, the index says {bad_size}" in err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


# --- invalid chunks name their store; missing chunks are asked for once ----------------------

def test_invalid_local_chunk_names_id_and_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s", create=True)
    chunk_id = DIGEST(b"payload")
    (tmp_path / "s" / chunk_file_name(chunk_id)).parent.mkdir()
    (tmp_path / "s" / chunk_file_name(chunk_id)).write_bytes(compress(b"other"))
    with pytest.raises(ChunkInvalid) as info:
        store.get_chunk(chunk_id, DIGEST)
    assert chunk_id.hex() in str(info.value) and str(tmp_path / "s") in str(info.value)


class CountingStore(LocalStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path, create=True)
        self.asked: list[bytes] = []

    def get_chunk(self, chunk_id: bytes, digest: object) -> Chunk:  # type: ignore[override]
        self.asked.append(chunk_id)
        return super().get_chunk(chunk_id, digest)  # type: ignore[arg-type]


def test_missing_chunk_is_not_retried(tmp_path: Path) -> None:
    first, second = CountingStore(tmp_path / "a"), CountingStore(tmp_path / "b")
    cache = CountingStore(tmp_path / "c")
    chain = CachedStore(FailoverGroup([first, second]), cache, DIGEST)
    chunk_id = DIGEST(b"nowhere")
    with pytest.raises(ChunkMissing):
        chain.get_chunk(chunk_id, ChunkCheck(DIGEST, 7, 64))
    assert (cache.asked, first.asked, second.asked) == ([chunk_id], [chunk_id], [])


# --- 14: empty chunk files (a write cut short) -----------------------------------------------

def _empty_victim(tmp: Path) -> tuple[Path, Path, Path, bytes]:
    data = random.Random(3).randbytes(100_000)
    (tmp / "blob").write_bytes(data)
    run_cli(["make", "-s", tmp / "s", "-m", "1:4:16", tmp / "x.caibx", tmp / "blob"])
    victim_id = parse_index((tmp / "x.caibx").read_bytes()).chunks[1].id
    victim = tmp / "s" / chunk_file_name(victim_id)
    victim.write_bytes(b"")
    return tmp / "x.caibx", tmp / "s", victim, data


def test_empty_chunk_file_is_not_had(tmp_path: Path) -> None:
    _, store, victim, _ = _empty_victim(tmp_path)
    chunk_id = bytes.fromhex(victim.name.removesuffix(".cacnk"))
    assert not LocalStore(store).has_chunk(chunk_id)
    with pytest.raises(ChunkInvalid, match=chunk_id.hex()):
        LocalStore(store).get_chunk(chunk_id, DIGEST)


def test_cache_command_replaces_empty_chunk(tmp_path: Path) -> None:
    index, store, victim, _ = _empty_victim(tmp_path)
    good = tmp_path / "good"
    run_cli(["make", "-s", good, "-m", "1:4:16", tmp_path / "y.caibx", tmp_path / "blob"])
    run_cli(["cache", "-s", good, "-c", store, index])
    chunk_id = bytes.fromhex(victim.name.removesuffix(".cacnk"))
    assert decompress(victim.read_bytes(), chunk_id) and LocalStore(store).get_chunk(chunk_id, DIGEST)


def test_cached_extract_repairs_empty_chunk_in_cache(tmp_path: Path) -> None:
    index, cache, victim, data = _empty_victim(tmp_path)
    good = tmp_path / "good"
    run_cli(["make", "-s", good, "-m", "1:4:16", tmp_path / "y.caibx", tmp_path / "blob"])
    run_cli(["extract", "-s", good, "-c", cache, index, tmp_path / "out"])
    assert (tmp_path / "out").read_bytes() == data
    chunk_id = bytes.fromhex(victim.name.removesuffix(".cacnk"))
    LocalStore(cache).get_chunk(chunk_id, DIGEST)  # replaced by a good copy


# --- 5: verify -r removes only chunks proven invalid -------------------------------------------

def _store_with(tmp: Path, *payloads: bytes) -> tuple[LocalStore, list[bytes]]:
    store = LocalStore(tmp / "s", create=True)
    ids = []
    for payload in payloads:
        chunk = Chunk(DIGEST(payload), data=payload)
        store.store_chunk(chunk)
        ids.append(chunk.id)
    return store, ids


class UnreadableStore(LocalStore):
    """One chunk cannot be read (EACCES, which root never sees, so it is simulated)."""

    unreadable = b""

    def get_chunk(self, chunk_id: bytes, digest: object) -> Chunk:  # type: ignore[override]
        if chunk_id == self.unreadable:
            raise StoreError(f"cannot read chunk {chunk_id.hex()} from {self}: Permission denied")
        return super().get_chunk(chunk_id, digest)  # type: ignore[arg-type]


def test_verify_repair_keeps_unreadable_chunks(tmp_path: Path) -> None:
    _, (good, unreadable, bad) = _store_with(tmp_path, b"good", b"unreadable", b"bad")
    (tmp_path / "s" / chunk_file_name(bad)).write_bytes(compress(b"not bad"))
    store = UnreadableStore(tmp_path / "s")
    store.unreadable = unreadable
    lines: list[str] = []
    with pytest.raises(StoreError, match=r"1 of 3 chunks .* could not be read"):
        verify_store(store, DIGEST, repair=True, report=lines.append)
    assert (tmp_path / "s" / chunk_file_name(unreadable)).exists()
    assert (tmp_path / "s" / chunk_file_name(good)).exists()
    assert not (tmp_path / "s" / chunk_file_name(bad)).exists()
    assert sorted(lines) == sorted([
        f"cannot read chunk {unreadable.hex()} from {store}: Permission denied",
        f"chunk id {bad.hex()} does not match its hash {DIGEST(b'not bad').hex()} in store {store}: removed",
    ])


def test_verify_cli_fails_on_unreadable_chunk_and_keeps_it(tmp_path: Path) -> None:
    _, (good, bad) = _store_with(tmp_path, b"good", b"bad")
    os.unlink(tmp_path / "s" / chunk_file_name(good))
    (tmp_path / "s" / chunk_file_name(good)).mkdir()  # cannot be read, whoever runs this
    (tmp_path / "s" / chunk_file_name(bad)).write_bytes(b"")
    proc = run_cli(["verify", "-r", "-s", tmp_path / "s"], check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "could not be read" in err.splitlines()[-1]
    assert f"{bad.hex()}" in err and ": removed" in err
    assert (tmp_path / "s" / chunk_file_name(good)).is_dir()
    assert not (tmp_path / "s" / chunk_file_name(bad)).exists()
