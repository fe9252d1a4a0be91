"""``pull``: serve chunks of any store over a byte stream (stdin/stdout) with the casync protocol.

Spec: ``spec/protocol.md`` (§ Pull flow, § Where desync differs). What ``casync pull - - -
STORE`` does as the remote end of ``casync extract --store=host:/path`` (``verb_pull`` in
casync ``src/casync-tool.c``) and what desync's ``pull`` does (``protocolserver.go``,
``cmd/desync/pull.go``): send HELLO offering a readable store, then answer each requested id
with CHUNK (compressed, as both send it) or MISSING. Unlike desync's server, which reads only
the first id of a REQUEST, every id is answered, as casync does. The session ends cleanly on
GOODBYE or at the end of the input; an ABORT from the client, a protocol error or a store
failure ends it with an error (a store failure is first sent to the client as ABORT).

The protocol is ``formats/casync_protocol.py``; this is only the loop that moves bytes.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from desync_ref.errors import ChunkMissing, DesyncRefError, ProtocolError
from desync_ref.formats import casync_protocol as proto
from desync_ref.stores import Store

_READ_SIZE = 1 << 20
_FLUSH_AT = 1 << 20  # answers are written in batches of about this many bytes


def _lookup(stores: Sequence[Store]) -> Callable[[bytes], proto.ChunkData | proto.Missing]:
    """The answer to one id: the first store holding it, as casync tries its stores in order."""

    def answer(chunk_id: bytes) -> proto.ChunkData | proto.Missing:
        for store in stores:
            try:
                # Not checked here: the client checks every chunk against its id (desync's
                # pull sets SkipVerify for the same reason).
                chunk = store.get_chunk(chunk_id, None)
            except ChunkMissing:
                continue
            return proto.ChunkData(chunk_id, chunk.compressed(), compressed=True)
        return proto.Missing(chunk_id)

    return answer


def serve(stores: Sequence[Store], read_fd: int, write_fd: int, *, workers: int = 1) -> None:
    """Answer one client on ``read_fd``/``write_fd`` until GOODBYE or end of input.

    ``workers`` > 1 looks chunks up concurrently (for remote stores); answers keep the
    order of the ids in each REQUEST.
    """
    conn = proto.Connection("server", proto.READABLE_STORE)
    os.set_blocking(read_fd, True)
    out = _Writer(write_fd)
    out.write(conn.hello())
    out.flush()
    answer = _lookup(stores)
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        while True:
            data = os.read(read_fd, _READ_SIZE)
            conn.receive_data(data)
            for event in _events(conn):
                if isinstance(event, proto.Request):
                    _answer(conn, event, answer, pool, out)
                elif isinstance(event, proto.Abort):
                    raise ProtocolError(f"client aborted: {event.reason or os.strerror(event.error)}")
                elif isinstance(event, proto.Goodbye):
                    out.flush()  # the answers to the REQUESTs before it
                    return
                elif isinstance(event, proto.Hello) and not event.flags & proto.PULL_CHUNKS:
                    raise ProtocolError(f"client does not ask for chunks (HELLO flags {event.flags:#x})")
            out.flush()
            if not data or conn.closed:
                return
    except DesyncRefError as exc:
        if not conn.closed:
            try:
                out.write(conn.send(proto.Abort(errno.EPROTO if isinstance(exc, ProtocolError) else errno.EIO,
                                                str(exc))))
                out.flush()
            except (OSError, ProtocolError):
                pass
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _events(conn: proto.Connection) -> Iterator[proto.Event]:
    while True:
        event = conn.next_event()
        if isinstance(event, proto.NeedData | proto.Closed):
            return
        yield event


def _answer(conn: proto.Connection, request: proto.Request,
            answer: Callable[[bytes], proto.ChunkData | proto.Missing],
            pool: ThreadPoolExecutor | None, out: _Writer) -> None:
    # An id asked twice in one REQUEST is answered once (casync's queue holds it once).
    ids = list(dict.fromkeys(request.ids))
    results = pool.map(answer, ids) if pool is not None else map(answer, ids)
    for result in results:
        out.write(conn.send(result))
        if out.pending >= _FLUSH_AT:
            out.flush()


class _Writer:
    """Blocking writes of whole batches to a descriptor (casync may hand us a non-blocking pipe)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._parts: list[bytes] = []
        self.pending = 0
        os.set_blocking(fd, True)

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self.pending += len(data)

    def flush(self) -> None:
        if not self._parts:
            return
        view = memoryview(b"".join(self._parts))
        self._parts.clear()
        self.pending = 0
        while view:
            view = view[os.write(self.fd, view):]
