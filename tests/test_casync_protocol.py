"""The casync protocol core (``formats/casync_protocol.py``) against bytes the real casync sent.

The vectors in ``fixtures/casync_protocol/`` were captured from casync 2 by
``make_vectors.py`` there: both directions of ``casync extract --store=host:STORE``
against ``casync pull``, and casync pull's answer to a REQUEST for a present and an absent
chunk. Spec: ``spec/protocol.md``.
"""

from __future__ import annotations

import itertools
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from desync_ref.errors import ProtocolError
from desync_ref.formats import casync_protocol as p
from desync_ref.formats.chunk import digest_function
from desync_ref.formats.index import parse_index
from desync_ref.stores import Chunk

pytestmark = pytest.mark.compiled_pass_only

VECTORS = ROOT / "fixtures" / "casync_protocol"
ZERO = bytes(32)


def _events(conn: p.Connection, data: bytes, pieces: list[int] | None = None) -> list[p.Event]:
    events: list[p.Event] = []
    cuts = [0, *(pieces or []), len(data)]
    for start, end in itertools.pairwise(cuts):
        conn.receive_data(data[start:end])
        while not isinstance(event := conn.next_event(), p.NeedData | p.Closed):
            events.append(event)
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), p.Closed)
    return events


def _index_ids() -> list[bytes]:
    return [c.id for c in parse_index((VECTORS / "blob.caibx").read_bytes()).chunks]


def test_casync_client_stream() -> None:
    """casync's client: HELLO 0x40 (pull chunks), then REQUESTs, one of them for several ids."""
    data = (VECTORS / "client.bin").read_bytes()
    assert data[:24].hex() == "1800000000000000eefba58c94d0713c4000000000000000"
    events = _events(p.Connection("server", p.READABLE_STORE), data)
    assert events[0] == p.Hello(p.PULL_CHUNKS)
    requests = [e for e in events[1:] if isinstance(e, p.Request)]
    assert len(requests) == len(events) - 1
    assert max(len(r.ids) for r in requests) > 1  # casync batches ids
    assert {i for r in requests for i in r.ids} == set(_index_ids())
    # Our encoder writes exactly casync's bytes for the same messages.
    assert b"".join(p.encode(e) for e in events) == data


def test_casync_server_stream() -> None:
    """casync pull: HELLO 0x1 (readable store), then a compressed CHUNK for every id asked."""
    data = (VECTORS / "server.bin").read_bytes()
    events = _events(p.Connection("client", p.PULL_CHUNKS), data)
    assert events[0] == p.Hello(p.READABLE_STORE)
    chunks = events[1:]
    assert all(isinstance(c, p.ChunkData) and c.compressed for c in chunks)
    index = parse_index((VECTORS / "blob.caibx").read_bytes())
    digest = digest_function(index.digest)
    plain = {c.chunk_id: Chunk.with_id(c.chunk_id, digest, compressed=c.data).data()
             for c in chunks if isinstance(c, p.ChunkData)}
    assert b"".join(plain[c.id] for c in index.chunks) == (VECTORS / "blob").read_bytes()
    assert b"".join(p.encode(e) for e in events) == data


def test_casync_missing_answer() -> None:
    """casync pull answers the all-zero id with MISSING (48 bytes: header + id)."""
    data = (VECTORS / "missing.bin").read_bytes()
    events = _events(p.Connection("client", p.PULL_CHUNKS), data)
    assert isinstance(events[1], p.ChunkData)
    assert events[2] == p.Missing(ZERO)
    assert data[-48:] == struct.pack("<QQ", 48, p.MISSING) + ZERO
    assert b"".join(p.encode(e) for e in events) == data


def test_split_anywhere() -> None:
    """The same events however the bytes arrive."""
    data = (VECTORS / "server.bin").read_bytes()
    whole = _events(p.Connection("client", p.PULL_CHUNKS), data)
    rng = random.Random(5)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(data)), 40))
        assert _events(p.Connection("client", p.PULL_CHUNKS), data, cuts) == whole
    one_by_one = list(range(1, 200))
    assert _events(p.Connection("client", p.PULL_CHUNKS), data, one_by_one) == whole


def _running_server() -> p.Connection:
    conn = p.Connection("server", p.READABLE_STORE)
    conn.hello()
    conn.receive_data(p.encode(p.Hello(p.PULL_CHUNKS)))
    assert conn.next_event() == p.Hello(p.PULL_CHUNKS)
    return conn


@pytest.mark.parametrize("size", [0, 15, p.SIZE_MAX + 1, 1 << 63])
def test_frame_size_checked_before_buffering(size: int) -> None:
    conn = p.Connection("client", p.PULL_CHUNKS)
    conn.receive_data(struct.pack("<QQ", size, p.CHUNK))
    with pytest.raises(ProtocolError, match="size"):
        conn.next_event()


@pytest.mark.parametrize("first", [p.Request((ZERO,)), p.Goodbye(), p.Missing(ZERO)])
def test_nothing_before_hello(first: p.Event) -> None:
    conn = p.Connection("server", p.READABLE_STORE)
    conn.receive_data(p.encode(first))
    with pytest.raises(ProtocolError, match="before HELLO"):
        conn.next_event()
    with pytest.raises(ProtocolError, match="before HELLO"):
        p.Connection("client", p.PULL_CHUNKS).send(p.Request((ZERO,)))


def test_out_of_order_and_forbidden_messages() -> None:
    conn = _running_server()
    conn.receive_data(p.encode(p.Hello(p.PULL_CHUNKS)))
    with pytest.raises(ProtocolError, match="HELLO twice"):
        conn.next_event()
    # A pulling client never sends chunks, and the server never receives an INDEX here.
    for event in (p.ChunkData(ZERO, b"x", True), p.IndexData(b"x"), p.Missing(ZERO)):
        conn = _running_server()
        conn.receive_data(p.encode(event))
        with pytest.raises(ProtocolError, match="do not allow"):
            conn.next_event()
    with pytest.raises(ProtocolError, match="do not allow"):
        _running_server().send(p.Request((ZERO,)))
    conn = _running_server()
    conn.receive_data(p.encode(p.Goodbye()) + p.encode(p.Request((ZERO,))))
    assert conn.next_event() == p.Goodbye()
    with pytest.raises(ProtocolError, match="after the session ended"):
        conn.next_event()


def test_incompatible_hello() -> None:
    """A client wanting an index from a server that offers only chunks (``ca_remote_process_hello``)."""
    conn = p.Connection("server", p.READABLE_STORE)
    conn.receive_data(p.encode(p.Hello(p.PULL_INDEX)))
    with pytest.raises(ProtocolError, match="do not match"):
        conn.next_event()
    conn = p.Connection("server", p.READABLE_STORE)
    conn.receive_data(p.encode(p.Hello(1 << 13)))
    with pytest.raises(ProtocolError, match="unknown feature flags"):
        conn.next_event()


@pytest.mark.parametrize("frame", [
    struct.pack("<QQQ", 24 + 31, p.REQUEST, 0) + bytes(31),  # not a whole id
    struct.pack("<QQQ", 24, p.REQUEST, 0),  # no id
    struct.pack("<QQQ", 56, p.REQUEST, 2) + ZERO,  # unknown flag
    struct.pack("<QQ", 17, p.GOODBYE) + b"x",
    struct.pack("<QQQ", 26, p.ABORT, 0) + b"a\n",  # control character, no NUL
    struct.pack("<QQ", 16, 0x1234),  # unknown type
])
def test_malformed_messages(frame: bytes) -> None:
    conn = _running_server()
    conn.receive_data(frame)
    with pytest.raises(ProtocolError):
        conn.next_event()


def test_truncated_stream() -> None:
    conn = p.Connection("client", p.PULL_CHUNKS)
    conn.receive_data(p.encode(p.Hello(p.READABLE_STORE))[:20])
    conn.receive_data(b"")
    with pytest.raises(ProtocolError, match="middle of a message"):
        conn.next_event()


def test_abort_round_trip() -> None:
    conn = _running_server()
    frame = conn.send(p.Abort(5, "store\nbroken"))
    assert frame == struct.pack("<QQQ", 16 + 8 + 13, p.ABORT, 5) + b"store broken\0"
    client = p.Connection("client", p.PULL_CHUNKS)
    client.receive_data(frame)
    assert client.next_event() == p.Abort(5, "store broken")
    assert client.closed


def test_casync_reads_our_multi_id_request(casync: str, tmp_path: Path) -> None:
    """``casync pull`` answers every id of one REQUEST we encode (the ids of the vectors'
    index, plus an absent one), each exactly once."""
    store = tmp_path / "store"
    subprocess.run([casync, "make", f"--store={store}", "--chunk-size=4096", str(tmp_path / "x.caibx"),
                    str(VECTORS / "blob")], check=True, capture_output=True)
    ids = [*dict.fromkeys(_index_ids()), ZERO]
    client = p.Connection("client", p.PULL_CHUNKS)
    stream = client.hello() + p.encode(p.Request(tuple(ids), high_priority=True)) + p.encode(p.Goodbye())
    out = subprocess.run([casync, "pull", "-", "-", "-", str(store)], input=stream, capture_output=True,
                         check=True, timeout=60).stdout
    events = _events(client, out)
    answered = [e.chunk_id for e in events[1:] if isinstance(e, p.ChunkData | p.Missing)]
    assert sorted(answered) == sorted(ids)
    assert events[-1] == p.Missing(ZERO)


def test_our_pull_answers_every_id(tmp_path: Path, casync: str) -> None:
    """``desync-ref pull`` answers all ids of a REQUEST (desync's answers only the first),
    MISSING for the absent one, and exits 0 at end of input without GOODBYE."""
    store = tmp_path / "store"
    subprocess.run([casync, "make", f"--store={store}", "--chunk-size=4096", str(tmp_path / "x.caibx"),
                    str(VECTORS / "blob")], check=True, capture_output=True)
    ids = [*dict.fromkeys(_index_ids()), ZERO]
    client = p.Connection("client", p.PULL_CHUNKS)
    for tail in (b"", p.encode(p.Goodbye())):
        client = p.Connection("client", p.PULL_CHUNKS)
        stream = client.hello() + p.encode(p.Request(tuple(ids))) + tail
        proc = subprocess.run([sys.executable, "-m", "desync_ref", "pull", "-", "-", "-", str(store)],
                              input=stream, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr.decode()
        events = _events(client, proc.stdout)
        assert events[0] == p.Hello(p.READABLE_STORE)
        assert [e.chunk_id for e in events[1:] if isinstance(e, p.ChunkData | p.Missing)] == ids
        assert events[-1] == p.Missing(ZERO)
        # The chunk bytes are the store's .cacnk files, as casync sends them.
        first = events[1]
        assert isinstance(first, p.ChunkData) and first.compressed
        cacnk = store / first.chunk_id.hex()[:4] / f"{first.chunk_id.hex()}.cacnk"
        assert first.data == cacnk.read_bytes()


def test_our_pull_refuses_garbage(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    proc = subprocess.run([sys.executable, "-m", "desync_ref", "pull", "-", "-", "-", str(tmp_path / "store")],
                          input=b"GET / HTTP/1.1\r\n\r\n", capture_output=True, timeout=60)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert len(err.strip().splitlines()) == 1 and "size" in err, err
    events = _events(p.Connection("client", p.PULL_CHUNKS), proc.stdout)
    assert events[0] == p.Hello(p.READABLE_STORE)
    assert isinstance(events[1], p.Abort) and "size" in events[1].reason
