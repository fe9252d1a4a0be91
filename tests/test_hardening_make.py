"""Hardening of make: parallel chunking never stores a chunk its index does not name and
never deletes one (a concurrent make may rely on it), and an empty chunk file (a write cut
short by a power loss) is written again instead of being taken as present."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from conftest import run_cli

from desync_ref.chunking import ChunkSizes
from desync_ref.errors import ChunkInvalid
from desync_ref.formats.chunk import chunk_file_name, digest_function
from desync_ref.formats.index import parse_index
from desync_ref.operations import make
from desync_ref.stores import Chunk
from desync_ref.stores.local import LocalStore

SIZES = ChunkSizes(1024, 4096, 16384)
DIGEST = digest_function("sha512-256")


class LoggingStore(LocalStore):
    """Logs every write and removal to a file, from whichever process makes it."""

    def __init__(self, path: Path, log: Path) -> None:
        super().__init__(path, create=True)
        self.log = str(log)

    def _note(self, what: str, chunk_id: bytes) -> None:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{what} {chunk_id.hex()}\n".encode())
        finally:
            os.close(fd)

    def store_chunk(self, chunk: Chunk) -> None:
        self._note("store", chunk.id)
        super().store_chunk(chunk)

    def remove_chunk(self, chunk_id: bytes) -> None:
        self._note("remove", chunk_id)
        super().remove_chunk(chunk_id)


@pytest.mark.parametrize("kind", ["random", "no resync"])
def test_parallel_make_writes_only_index_chunks_and_removes_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    monkeypatch.setattr(make, "MIN_SPAN", 64 * 1024)
    monkeypatch.setattr(make, "LOOKAHEAD_CHUNKS", 2)
    if kind == "random":
        data = random.Random(7).randbytes(1_500_000)
    else:  # spans never re-synchronise: the gaps are chunked serially by the parent
        data = random.Random(8).randbytes(50_000) + b"a" * 1_000_000
    (tmp_path / "blob").write_bytes(data)
    store = LoggingStore(tmp_path / "s", tmp_path / "log")
    index, stats = make.make_index(str(tmp_path / "blob"), SIZES, store=store, workers=3)
    wanted = {c.id.hex() for c in index.chunks}
    log = (tmp_path / "log").read_text().split("\n")[:-1]
    assert [line for line in log if line.startswith("remove")] == []
    written = [line.split()[1] for line in log]
    assert set(written) == wanted and len(written) == len(wanted) == stats.stored
    on_disk = {p.name.removesuffix(".cacnk") for p in (tmp_path / "s").glob("*/*.cacnk")}
    assert on_disk == wanted
    serial, _ = make.make_index(str(tmp_path / "blob"), SIZES, workers=1)
    assert serial.chunks == index.chunks


@pytest.mark.parametrize("workers", ["1", "3"])
def test_make_rewrites_empty_chunk_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str) -> None:
    data = random.Random(9).randbytes(400_000)
    (tmp_path / "blob").write_bytes(data)
    run_cli(["make", "-s", tmp_path / "s", "-m", "1:4:16", tmp_path / "x.caibx", tmp_path / "blob"])
    victims = [c.id for c in parse_index((tmp_path / "x.caibx").read_bytes()).chunks[2:5]]
    for victim in victims:
        (tmp_path / "s" / chunk_file_name(victim)).write_bytes(b"")  # as after a power loss
        with pytest.raises(ChunkInvalid):
            LocalStore(tmp_path / "s").get_chunk(victim, DIGEST)
    if workers == "1":
        run_cli(["make", "-n", workers, "-s", tmp_path / "s", "-m", "1:4:16", tmp_path / "y.caibx",
                 tmp_path / "blob"])
    else:  # the parallel path, in-process so its threshold can be lowered
        monkeypatch.setattr(make, "MIN_SPAN", 64 * 1024)
        _, stats = make.make_index(str(tmp_path / "blob"), SIZES, store=LocalStore(tmp_path / "s"), workers=3)
        assert stats.stored == len(victims)
    for victim in victims:
        assert LocalStore(tmp_path / "s").get_chunk(victim, DIGEST).data()
    run_cli(["extract", "-s", tmp_path / "s", tmp_path / "x.caibx", tmp_path / "out"])
    assert (tmp_path / "out").read_bytes() == data
