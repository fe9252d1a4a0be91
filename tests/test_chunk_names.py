"""The one grammar of chunk names (formats/chunk.py) and its three users: the local store,
the HTTP client and the chunk-server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from desync_ref.errors import InvalidParameter
from desync_ref.formats.chunk import (
    CHUNK_ID_HEX_DIGITS,
    COMPRESSED_CHUNK_SUFFIX,
    UNCOMPRESSED_CHUNK_SUFFIX,
    NameProblem,
    chunk_file_name,
    is_temp_chunk_name,
    parse_chunk_path,
    parse_id,
)
from desync_ref.formats.constants import CA_CHUNK_ID_SIZE
from desync_ref.server.chunks import ChunkHandler
from desync_ref.stores import Chunk
from desync_ref.stores.http import HTTPStore
from desync_ref.stores.local import LocalStore

CID = hashlib.sha256(b"x").digest()
HEX = CID.hex()
SUFFIXES = (COMPRESSED_CHUNK_SUFFIX, UNCOMPRESSED_CHUNK_SUFFIX)


def sha512_256(data: bytes) -> bytes:
    return hashlib.new("sha512_256", data).digest()


def test_id_size_comes_from_the_format() -> None:
    assert CHUNK_ID_HEX_DIGITS == 2 * CA_CHUNK_ID_SIZE == len(HEX)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_build_and_parse_round_trip(suffix: str) -> None:
    name = chunk_file_name(CID, suffix)
    assert name == f"{HEX[:4]}/{HEX}{suffix}"
    assert parse_chunk_path(name, suffix) == CID
    assert parse_chunk_path("/" + name, suffix, root="/") == CID
    # upper-case hex is read (desync decodes with hex.DecodeString), never written
    upper = f"{HEX[:4].upper()}/{HEX.upper()}{suffix}"
    assert parse_chunk_path(upper, suffix) == CID


@pytest.mark.parametrize(("path", "suffix", "problem"), [
    (f"{HEX[:4]}/{HEX}", COMPRESSED_CHUNK_SUFFIX, NameProblem.EXTENSION),
    (f"{HEX[:4]}/{HEX}.cacnk", UNCOMPRESSED_CHUNK_SUFFIX, NameProblem.EXTRA_EXTENSION),
    (f"{HEX[:4]}/{HEX}.zst.cacnk", COMPRESSED_CHUNK_SUFFIX, NameProblem.EXTRA_EXTENSION),
    (f"ffff/{HEX}.cacnk", COMPRESSED_CHUNK_SUFFIX, NameProblem.LAYOUT),
    (f"{HEX}.cacnk", COMPRESSED_CHUNK_SUFFIX, NameProblem.LAYOUT),
    (f"x/{HEX[:4]}/{HEX}.cacnk", COMPRESSED_CHUNK_SUFFIX, NameProblem.LAYOUT),
    ("abc.cacnk", COMPRESSED_CHUNK_SUFFIX, NameProblem.LAYOUT),
    (f"{HEX[:4]}/{HEX[:-1]}.cacnk", COMPRESSED_CHUNK_SUFFIX, NameProblem.ID),
    (f"{HEX[:4]}/{HEX}00.cacnk", COMPRESSED_CHUNK_SUFFIX, NameProblem.ID),
    (f"{HEX[:4]}/{HEX[:-1]}g.cacnk", COMPRESSED_CHUNK_SUFFIX, NameProblem.ID),
    (f"{HEX[:4]}/{HEX[:-2]} 0", UNCOMPRESSED_CHUNK_SUFFIX, NameProblem.ID),
])
def test_what_is_not_a_chunk_name(path: str, suffix: str, problem: NameProblem) -> None:
    assert parse_chunk_path(path, suffix) is problem


def test_parse_id() -> None:
    assert parse_id(HEX) == CID
    assert parse_id(HEX.upper()) == CID
    for bad in ("", HEX[:-2], HEX + "00", HEX[:-1] + "z", " ".join([HEX[:32], HEX[32:62]])):
        with pytest.raises(InvalidParameter, match=r"^invalid chunk id") as info:
            parse_id(bad)
        assert info.value.parameter == "chunk id"
        assert str(info.value) == f"invalid chunk id '{bad}'"


def test_temp_names() -> None:
    assert is_temp_chunk_name(".tmp-cacnk123456")
    assert is_temp_chunk_name(f"{HEX}.8ec8a7a565e627dd.tmp")
    assert not is_temp_chunk_name(f"{HEX}.cacnk")
    assert not is_temp_chunk_name(f"{HEX}.XYZ.tmp")
    assert not is_temp_chunk_name(f"{HEX[:-1]}.1.tmp")


@pytest.mark.parametrize("uncompressed", [False, True])
def test_local_store_writes_and_lists_by_the_grammar(tmp_path: Path, uncompressed: bool) -> None:
    store = LocalStore(tmp_path, uncompressed=uncompressed)
    data = b"some chunk"
    cid = sha512_256(data)
    store.store_chunk(Chunk(cid, data=data))
    suffix = store.suffix
    assert (tmp_path / chunk_file_name(cid, suffix)).is_file()
    # files the grammar refuses are not chunks: neither listed nor pruned
    (tmp_path / chunk_file_name(cid, suffix)).parent.joinpath(f"{cid.hex()[:-1]}{suffix}").write_bytes(b"")
    (tmp_path / "ffff").mkdir()
    (tmp_path / "ffff" / f"{cid.hex()}{suffix}").write_bytes(b"")
    assert list(store.chunk_ids()) == [cid]
    assert store.prune(set()) == 1
    assert (tmp_path / "ffff" / f"{cid.hex()}{suffix}").exists()


@pytest.mark.parametrize("uncompressed", [False, True])
def test_http_client_and_chunk_server_agree(uncompressed: bool) -> None:
    suffix = UNCOMPRESSED_CHUNK_SUFFIX if uncompressed else COMPRESSED_CHUNK_SUFFIX
    from desync_ref.stores.options import StoreOptions

    client = HTTPStore("http://127.0.0.1:9/store", StoreOptions(uncompressed=uncompressed))
    name = client.name(CID)
    assert name == chunk_file_name(CID, suffix)
    assert client.url(name) == f"http://127.0.0.1:9/store/{HEX[:4]}/{HEX}{suffix}"
    server = ChunkHandler(LocalStore.__new__(LocalStore), sha512_256, uncompressed=uncompressed)
    assert server.id_from_path("/" + name) == CID


def test_chunk_server_messages() -> None:
    server = ChunkHandler(LocalStore.__new__(LocalStore), sha512_256)
    assert server.id_from_path(f"/{HEX[:4]}/{HEX}") == (
        "invalid chunk extension, verify compression and encryption settings")
    assert server.id_from_path(f"/{HEX[:4]}/{HEX}.x.cacnk") == (
        "requested chunk with an unexpected file extension, this server expects "
        "'<chunkid>.cacnk', verify compression and encryption settings")
    assert server.id_from_path(f"/ffff/{HEX}.cacnk") == "expected format '/<prefix>/<chunkid>.cacnk"
    assert server.id_from_path(f"{HEX[:4]}/{HEX}.cacnk") == "expected format '/<prefix>/<chunkid>.cacnk"
    bad = HEX[:-1] + "g"
    assert server.id_from_path(f"/{bad[:4]}/{bad}.cacnk") == f"invalid chunk id '{bad}'"
    short = HEX[:10]
    assert server.id_from_path(f"/{short[:4]}/{short}.cacnk") == f"invalid chunk id '{short}'"
