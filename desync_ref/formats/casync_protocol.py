"""The casync remoting protocol, sans I/O: bytes in, events out; events to bytes.

Spec: ``spec/protocol.md``. Message numbers, frame layout, feature bits and the checks on
each message are casync's ``src/caprotocol.h`` and ``ca_remote_process_message`` /
``validate_*`` / ``ca_remote_process_hello`` in ``src/caremote.c``; desync's reader is
``protocol.go``. Like h11, a :class:`Connection` never reads or writes anything itself:
the caller feeds it what came off the wire (:meth:`Connection.receive_data`), takes the
events out (:meth:`Connection.next_event`) and writes what :meth:`Connection.send`
returns. Every break of the protocol (a frame size out of casync's range, a malformed
message, a message the agreed feature flags do not allow, anything before HELLO or after
GOODBYE) raises :class:`~desync_ref.errors.ProtocolError`. The frame size is checked
before a byte of the body is buffered, so a peer cannot make us hold more than
``SIZE_MAX`` bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from desync_ref.errors import ProtocolError

# Message types (caprotocol.h, CA_PROTOCOL_*).
HELLO: Final = 0x3C71D0948CA5FBEE
INDEX: Final = 0xB32A91DD2B3E27F8
INDEX_EOF: Final = 0x4F0932F1043718F5
ARCHIVE: Final = 0x95D6428A69EDDCC5
ARCHIVE_EOF: Final = 0x450BEF663F24CBAD
REQUEST: Final = 0x8AB427E0F89D9210
CHUNK: Final = 0x5213DD180A84BC8C
MISSING: Final = 0xD010F9FAC82B7B6C
GOODBYE: Final = 0xAD205DBF1A3686C3
ABORT: Final = 0xE7D9136B7EFEA352

TYPE_NAMES: Final = {HELLO: "HELLO", INDEX: "INDEX", INDEX_EOF: "INDEX_EOF", ARCHIVE: "ARCHIVE",
                     ARCHIVE_EOF: "ARCHIVE_EOF", REQUEST: "REQUEST", CHUNK: "CHUNK",
                     MISSING: "MISSING", GOODBYE: "GOODBYE", ABORT: "ABORT"}

# HELLO feature flags: services offered, then operations wanted (caprotocol.h).
READABLE_STORE: Final = 0x1
WRITABLE_STORE: Final = 0x2
READABLE_INDEX: Final = 0x4
WRITABLE_INDEX: Final = 0x8
READABLE_ARCHIVE: Final = 0x10
WRITABLE_ARCHIVE: Final = 0x20
PULL_CHUNKS: Final = 0x40
PULL_INDEX: Final = 0x80
PULL_ARCHIVE: Final = 0x100
PUSH_CHUNKS: Final = 0x200
PUSH_INDEX: Final = 0x400
PUSH_INDEX_CHUNKS: Final = 0x800
PUSH_ARCHIVE: Final = 0x1000
FEATURE_FLAGS_MAX: Final = 0x1FFF
_OPERATIONS: Final = PULL_INDEX | PULL_CHUNKS | PULL_ARCHIVE | PUSH_CHUNKS | PUSH_INDEX | PUSH_ARCHIVE
# Each operation one side asks for needs this service from the other (operations_and_services_compatible).
_NEEDS: Final = ((PULL_CHUNKS, READABLE_STORE), (PULL_INDEX, READABLE_INDEX), (PULL_ARCHIVE, READABLE_ARCHIVE),
                 (PUSH_CHUNKS, WRITABLE_STORE), (PUSH_INDEX, WRITABLE_INDEX), (PUSH_ARCHIVE, WRITABLE_ARCHIVE))

REQUEST_HIGH_PRIORITY: Final = 0x1  # CA_PROTOCOL_REQUEST_HIGH_PRIORITY
CHUNK_COMPRESSED: Final = 0x1  # CA_PROTOCOL_CHUNK_COMPRESSED

HEADER_SIZE: Final = 16  # le64 size (the whole frame, header included), le64 type
SIZE_MAX: Final = 16 * 1024 * 1024  # CA_PROTOCOL_SIZE_MAX
CHUNK_ID_SIZE: Final = 32
CHUNK_HEADER: Final = HEADER_SIZE + 8 + CHUNK_ID_SIZE  # offsetof(CaProtocolChunk, data)
MAX_CHUNK_PAYLOAD: Final = SIZE_MAX - CHUNK_HEADER
_INT32_MAX: Final = 0x7FFFFFFF

_HEADER = struct.Struct("<QQ")
_U64 = struct.Struct("<Q")


# --- events -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hello:
    flags: int


@dataclass(frozen=True)
class IndexData:
    data: bytes


@dataclass(frozen=True)
class IndexEOF:
    pass


@dataclass(frozen=True)
class ArchiveData:
    data: bytes


@dataclass(frozen=True)
class ArchiveEOF:
    pass


@dataclass(frozen=True)
class Request:
    ids: tuple[bytes, ...]
    high_priority: bool = False


@dataclass(frozen=True)
class ChunkData:
    chunk_id: bytes
    data: bytes
    compressed: bool


@dataclass(frozen=True)
class Missing:
    chunk_id: bytes


@dataclass(frozen=True)
class Goodbye:
    pass


@dataclass(frozen=True)
class Abort:
    error: int  # closest errno, or 0
    reason: str


@dataclass(frozen=True)
class NeedData:
    """No complete frame buffered: feed more bytes (or b"" at end of stream)."""


@dataclass(frozen=True)
class Closed:
    """The stream ended cleanly: after GOODBYE, or at end of input between frames."""


Event = Hello | IndexData | IndexEOF | ArchiveData | ArchiveEOF | Request | ChunkData | Missing | Goodbye | Abort
NEED_DATA: Final = NeedData()
CLOSED: Final = Closed()


# --- encoders -------------------------------------------------------------------------------------

def _frame(kind: int, body: bytes = b"") -> bytes:
    size = HEADER_SIZE + len(body)
    if size > SIZE_MAX:
        raise ProtocolError(f"{TYPE_NAMES[kind]} message of {size} bytes exceeds the protocol's {SIZE_MAX}")
    return _HEADER.pack(size, kind) + body


def _check_id(chunk_id: bytes) -> bytes:
    if len(chunk_id) != CHUNK_ID_SIZE:
        raise ProtocolError(f"chunk id of {len(chunk_id)} bytes, expected {CHUNK_ID_SIZE}")
    return chunk_id


def encode(event: Event) -> bytes:
    """The frame of one message (no state checks: see :meth:`Connection.send`)."""
    if isinstance(event, Hello):
        return _frame(HELLO, _U64.pack(event.flags))
    if isinstance(event, IndexData):
        return _frame(INDEX, event.data)
    if isinstance(event, IndexEOF):
        return _frame(INDEX_EOF)
    if isinstance(event, ArchiveData):
        return _frame(ARCHIVE, event.data)
    if isinstance(event, ArchiveEOF):
        return _frame(ARCHIVE_EOF)
    if isinstance(event, Request):
        if not event.ids:
            raise ProtocolError("REQUEST without a chunk id")
        flags = REQUEST_HIGH_PRIORITY if event.high_priority else 0
        return _frame(REQUEST, _U64.pack(flags) + b"".join(_check_id(i) for i in event.ids))
    if isinstance(event, ChunkData):
        if not event.data:
            raise ProtocolError("CHUNK without data")
        flags = CHUNK_COMPRESSED if event.compressed else 0
        return _frame(CHUNK, _U64.pack(flags) + _check_id(event.chunk_id) + event.data)
    if isinstance(event, Missing):
        return _frame(MISSING, _check_id(event.chunk_id))
    if isinstance(event, Goodbye):
        return _frame(GOODBYE)
    if isinstance(event, Abort):
        # casync's reader wants printable text ending in NUL (validate_abort).
        reason = "".join(ch if ch >= " " else " " for ch in event.reason).encode("utf-8", "replace")
        return _frame(ABORT, _U64.pack(event.error) + reason + b"\0")
    raise TypeError(f"not a protocol event: {event!r}")


def request_frames(ids: list[bytes], *, high_priority: bool = False, max_ids: int = 1 << 15) -> bytes:
    """REQUEST frames for ``ids``, ``max_ids`` to a frame (casync closes a REQUEST frame
    once it reaches its buffer size)."""
    return b"".join(encode(Request(tuple(ids[i:i + max_ids]), high_priority))
                    for i in range(0, len(ids), max_ids))


# --- decoding one frame ---------------------------------------------------------------------------

def _bad(kind: int, why: str) -> ProtocolError:
    return ProtocolError(f"malformed {TYPE_NAMES.get(kind, hex(kind))} message: {why}")


def decode_frame(kind: int, body: bytes) -> Event:
    """The event of one frame's body, checked as casync's ``validate_*`` check it."""
    size = HEADER_SIZE + len(body)
    if kind == HELLO:
        if len(body) != 8:
            raise _bad(kind, f"size {size}, expected 24")
        flags = _U64.unpack(body)[0]
        if flags == 0 or flags == 0xFFFFFFFFFFFFFFFF:
            raise _bad(kind, f"feature flags {flags:#x}")
        return Hello(flags)
    if kind in (INDEX, ARCHIVE):
        if not body:
            raise _bad(kind, "no data")
        return IndexData(body) if kind == INDEX else ArchiveData(body)
    if kind in (INDEX_EOF, ARCHIVE_EOF, GOODBYE):
        if body:
            raise _bad(kind, f"size {size}, expected 16")
        return IndexEOF() if kind == INDEX_EOF else ArchiveEOF() if kind == ARCHIVE_EOF else Goodbye()
    if kind == REQUEST:
        if len(body) < 8 + CHUNK_ID_SIZE or (len(body) - 8) % CHUNK_ID_SIZE:
            raise _bad(kind, f"size {size} is not 24 + a positive multiple of 32")
        flags = _U64.unpack_from(body)[0]
        if flags & ~REQUEST_HIGH_PRIORITY:
            raise _bad(kind, f"unknown flags {flags:#x}")
        ids = tuple(body[i:i + CHUNK_ID_SIZE] for i in range(8, len(body), CHUNK_ID_SIZE))
        return Request(ids, bool(flags & REQUEST_HIGH_PRIORITY))
    if kind == CHUNK:
        if len(body) < 8 + CHUNK_ID_SIZE + 1:
            raise _bad(kind, f"size {size}, expected at least {CHUNK_HEADER + 1}")
        flags = _U64.unpack_from(body)[0]
        if flags & ~CHUNK_COMPRESSED:
            raise _bad(kind, f"unknown flags {flags:#x}")
        return ChunkData(body[8:8 + CHUNK_ID_SIZE], body[8 + CHUNK_ID_SIZE:], bool(flags & CHUNK_COMPRESSED))
    if kind == MISSING:
        if len(body) != CHUNK_ID_SIZE:
            raise _bad(kind, f"size {size}, expected 48")
        return Missing(body)
    if kind == ABORT:
        if len(body) < 9:
            raise _bad(kind, f"size {size}, expected at least 25")
        error = _U64.unpack_from(body)[0]
        text = body[8:]
        if error >= _INT32_MAX or text[-1] != 0 or any(b < 0x20 for b in text[:-1]):
            raise _bad(kind, "bad error number or reason text")
        return Abort(error, text[:-1].decode("utf-8", "replace"))
    raise ProtocolError(f"unknown message type {kind:#018x}")


def _compatible(operations: int, services: int) -> bool:
    return all(not operations & op or services & service for op, service in _NEEDS)


# --- the connection -------------------------------------------------------------------------------

class Connection:
    """One side of a casync protocol stream.

    ``role`` ("client": started the remote; "server": the remote) only names the peer in
    errors; the protocol itself is symmetric. ``local_flags`` is what our HELLO says. The
    first message each way is HELLO; :meth:`send` refuses anything else before it, and
    every message the agreed flags do not allow, as casync's ``ca_remote_process_message``.
    """

    def __init__(self, role: str, local_flags: int) -> None:
        if role not in ("client", "server"):
            raise ValueError(role)
        if not 0 < local_flags <= FEATURE_FLAGS_MAX:
            raise ProtocolError(f"feature flags {local_flags:#x} out of range")
        self.role = role
        self.peer = "server" if role == "client" else "client"
        self.local_flags = local_flags
        self.remote_flags: int | None = None  # set by the peer's HELLO
        self.sent_hello = False
        self.closed = False  # GOODBYE or ABORT seen either way, or end of input
        self._buffer = bytearray()
        self._eof = False
        self._files_done: set[int] = set()

    # -- receiving --

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` says the stream ended."""
        if data:
            if self._eof:
                raise ProtocolError("data after end of stream")
            self._buffer += data
        else:
            self._eof = True

    @property
    def running(self) -> bool:
        return self.remote_flags is not None

    def next_event(self) -> Event | NeedData | Closed:
        """The next complete message, NEED_DATA, or CLOSED at a clean end of the stream."""
        if self.closed:
            if self._buffer:
                raise ProtocolError(f"{self.peer} sent data after the session ended")
            return CLOSED
        buf = self._buffer
        if len(buf) < HEADER_SIZE:
            return self._at_end(partial=bool(buf))
        size, kind = _HEADER.unpack_from(buf)
        # casync refuses these before reading the body (CA_PROTOCOL_SIZE_MIN/MAX).
        if size < HEADER_SIZE or size > SIZE_MAX:
            raise ProtocolError(f"{self.peer} sent a message of size {size}, outside [{HEADER_SIZE}, {SIZE_MAX}]")
        if len(buf) < size:
            return self._at_end(partial=True)
        body = bytes(buf[HEADER_SIZE:size])
        del buf[:size]
        event = decode_frame(kind, body)
        self._check_incoming(event)
        return event

    def _at_end(self, *, partial: bool) -> NeedData | Closed:
        if not self._eof:
            return NEED_DATA
        if partial:
            raise ProtocolError(f"{self.peer} closed the stream in the middle of a message")
        self.closed = True
        return CLOSED

    def _check_incoming(self, event: Event) -> None:
        if isinstance(event, Abort):
            self.closed = True
            return
        if isinstance(event, Hello):
            if self.remote_flags is not None:
                raise ProtocolError(f"{self.peer} sent HELLO twice")
            self._check_hello(event.flags)
            self.remote_flags = event.flags
            return
        if self.remote_flags is None:
            raise ProtocolError(f"{self.peer} sent {_name(event)} before HELLO")
        if not self._allowed(event, incoming=True):
            raise ProtocolError(f"{self.peer} sent {_name(event)}, which the agreed feature flags do not allow")
        if isinstance(event, Goodbye):
            self.closed = True

    def _check_hello(self, flags: int) -> None:
        """``ca_remote_process_hello``."""
        if flags & ~FEATURE_FLAGS_MAX:
            raise ProtocolError(f"{self.peer} HELLO has unknown feature flags {flags:#x}")
        if flags & PUSH_INDEX_CHUNKS and flags & (PUSH_INDEX | PUSH_CHUNKS) != PUSH_INDEX | PUSH_CHUNKS:
            raise ProtocolError(f"{self.peer} HELLO asks PUSH_INDEX_CHUNKS without PUSH_INDEX and PUSH_CHUNKS")
        if not _compatible(flags, self.local_flags) or not _compatible(self.local_flags, flags):
            raise ProtocolError(f"{self.peer} HELLO flags {flags:#x} do not match ours {self.local_flags:#x}: "
                                "an operation one side wants is not a service the other offers")
        if not (flags | self.local_flags) & _OPERATIONS:
            raise ProtocolError(f"neither side asks for anything (flags {flags:#x}, {self.local_flags:#x})")

    def _allowed(self, event: Event, *, incoming: bool) -> bool:
        """Whether ``event`` may travel this way under the flags (casync's per-type checks)."""
        assert self.remote_flags is not None
        # "receiver" wants what the receiving side pulls, or what the sending side pushes.
        recv_flags, send_flags = ((self.local_flags, self.remote_flags) if incoming
                                  else (self.remote_flags, self.local_flags))
        if isinstance(event, IndexData | IndexEOF):
            ok = bool(recv_flags & PULL_INDEX or send_flags & PUSH_INDEX)
            return ok and self._file_open(INDEX, event, incoming)
        if isinstance(event, ArchiveData | ArchiveEOF):
            ok = bool(recv_flags & PULL_ARCHIVE or send_flags & PUSH_ARCHIVE)
            return ok and self._file_open(ARCHIVE, event, incoming)
        if isinstance(event, Request):
            # A REQUEST goes to whoever holds chunks: the side that pushes, or is pulled from.
            return bool(recv_flags & PUSH_CHUNKS or send_flags & PULL_CHUNKS)
        if isinstance(event, ChunkData | Missing):
            return bool(recv_flags & PULL_CHUNKS or send_flags & PUSH_CHUNKS)
        return True  # GOODBYE (ABORT and HELLO are handled before)

    def _file_open(self, kind: int, event: Event, incoming: bool) -> bool:
        """An INDEX/ARCHIVE stream takes no data after its EOF (``ca_remote_file_process``)."""
        key = kind if incoming else -kind
        if key in self._files_done:
            return False
        if isinstance(event, IndexEOF | ArchiveEOF):
            self._files_done.add(key)
        return True

    # -- sending --

    def hello(self) -> bytes:
        """Our HELLO; casync sends it at once, before reading anything."""
        if self.sent_hello:
            raise ProtocolError("HELLO already sent")
        self.sent_hello = True
        return encode(Hello(self.local_flags))

    def send(self, event: Event) -> bytes:
        """The bytes of ``event``, after checking it may be sent now."""
        if isinstance(event, Hello):
            raise ProtocolError("use hello() to send HELLO")
        if not self.sent_hello:
            raise ProtocolError(f"cannot send {_name(event)} before HELLO")
        if isinstance(event, Abort):
            self.closed = True
            return encode(event)
        if self.remote_flags is None:
            raise ProtocolError(f"cannot send {_name(event)} before the {self.peer}'s HELLO")
        if not self._allowed(event, incoming=False):
            raise ProtocolError(f"cannot send {_name(event)}: the agreed feature flags do not allow it")
        data = encode(event)
        if isinstance(event, Goodbye):
            self.closed = True
        return data


def _name(event: Event) -> str:
    return {Hello: "HELLO", IndexData: "INDEX", IndexEOF: "INDEX_EOF", ArchiveData: "ARCHIVE",
            ArchiveEOF: "ARCHIVE_EOF", Request: "REQUEST", ChunkData: "CHUNK", Missing: "MISSING",
            Goodbye: "GOODBYE", Abort: "ABORT"}[type(event)]
