"""chunk-server's fast path: plain chunk GETs and HEADs answered without aiohttp.

Spec: ``spec/http.md`` ("Fast path"). A chunk-server worker's connection protocol is
:class:`FastConnection`. It answers, in order, each complete request in what it has read
that is the usual request of a chunk client (desync ``HTTPHandler.get``/``head`` in
``httphandler.go``, here in the form ``ChunkHandler`` serves as a file): ``GET`` or
``HEAD`` of ``/xxxx/<id><ext>``, HTTP/1.1 or 1.0, a small head of well-formed header
lines, no body, no ``Upgrade``/``Expect``, the right ``Authorization`` when one is
required, and a chunk the local store holds as a file in the wire form. The answer has
the bytes aiohttp writes for the same response (status line, headers in aiohttp's order,
its ``Date`` and ``Server``); the file goes out with ``sendfile`` when nothing else waits
to be sent. Anything else (a head not complete in what was read, any other method, path
or header, a chunk without such a file: 404s, the other compression form, errors) hands
the connection, with the bytes not yet answered, to aiohttp's protocol for the rest of
its life: the same answers as before, with aiohttp's checks and timeouts.

Keep-alive as aiohttp (llhttp ``should_keep_alive``): HTTP/1.1 unless ``Connection:
close`` (answered with ``Connection: close``), HTTP/1.0 only with ``Connection:
keep-alive`` (answered with it). Timeouts as ``server/base.py``: a connection gets the
header timeout to send its first request and the idle timeout between requests.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
import socket
import stat
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Final, NamedTuple, Protocol, TextIO, cast, runtime_checkable

from aiohttp.http import SERVER_SOFTWARE

# A head (request line and headers) longer than this goes to aiohttp, whose own limits
# (8190 bytes per line) and errors then apply.
MAX_HEAD: Final = 4096
_MSG_MORE: Final = getattr(socket, "MSG_MORE", 0)
# O_NOFOLLOW: a symlink is casync's mark of a missing chunk (stores/local.py)
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
# Header lines after the request line: a token, a colon, a value of visible characters,
# spaces and tabs (no obs-fold, no bare CR or LF, no NUL).
_HEADER_LINES: Final = re.compile(rb"(?:\r\n[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*)*")
# Headers that make a request something else than a plain GET/HEAD of a file, or that
# aiohttp refuses (the old WebSocket handshake).
_REFUSED: Final = frozenset({b"transfer-encoding", b"upgrade", b"expect", b"sec-websocket-key1"})
# More header lines than this go to aiohttp, which has its own limit.
MAX_HEADERS: Final = 32
_SERVER: Final = SERVER_SOFTWARE.encode()


@runtime_checkable
class FileResponder(Protocol):
    """What the fast path asks of a request handler (``ChunkHandler``)."""

    # The expected Authorization header value; empty: none is required.
    authorization: bytes

    def chunk_file(self, target: bytes) -> bytes | None:
        """The file that answers a GET or HEAD of request target ``target`` (a regular,
        non-empty file holds the answer), or None: the handler answers it otherwise."""
        ...


class Request(NamedTuple):
    method: bytes  # b"GET" or b"HEAD"
    target: bytes
    version: bytes  # b"HTTP/1.1" or b"HTTP/1.0"
    keep_alive: bool


def parse_head(head: bytes, authorization: bytes) -> Request | None:
    """A request the fast path may answer, from its head (without the blank line that ends
    it), or None. ``authorization``: the value the Authorization header must have, if any."""
    first = head.find(b"\r\n")
    line = head if first < 0 else head[:first]
    parts = line.split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if method != b"GET" and method != b"HEAD":
        return None
    if version != b"HTTP/1.1" and version != b"HTTP/1.0":
        return None
    connection: bytes | None = None
    given: bytes | None = None
    seen: set[bytes] = set()
    if first >= 0:
        if not _HEADER_LINES.fullmatch(head, first):
            return None
        fields = head[first + 2:].split(b"\r\n")
        if len(fields) > MAX_HEADERS:
            return None
        for field in fields:
            name, _, value = field.partition(b":")
            name = name.lower()
            if name in seen or name in _REFUSED:
                return None  # a repeated header: aiohttp refuses some, and decides for all
            seen.add(name)
            if name == b"connection":
                connection = value.strip(b" \t").lower()
            elif name == b"authorization":
                given = value.strip(b" \t")
            elif name == b"content-length" and value.strip(b" \t") != b"0":
                return None
    if version == b"HTTP/1.1" and b"host" not in seen:
        return None  # aiohttp answers 400 "Missing 'Host' header"
    if connection is None:
        keep_alive = version == b"HTTP/1.1"
    elif connection == b"close":
        keep_alive = False
    elif connection == b"keep-alive":
        keep_alive = True
    else:
        return None  # "upgrade", several tokens: aiohttp's parser decides
    if authorization and (given is None or not hmac.compare_digest(given, authorization)):
        return None  # aiohttp answers the 401
    return Request(method, target, version, keep_alive)


def open_file(path: bytes | str) -> tuple[int, int] | None:
    """(descriptor, size) of a regular, non-empty file (no symlink), or None."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        os.close(fd)
        return None
    return fd, info.st_size


def _holds_file(path: bytes) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size > 0


class _Clock:
    """The Date header's value, formatted once a second (as aiohttp's own cache)."""

    second = -1
    value = b""

    @classmethod
    def date(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.value = formatdate(now, usegmt=True).encode()
            cls.second = now
        return cls.value


class _LogClock:
    """The request log's date prefix (Go ``log.LstdFlags``), formatted once a second."""

    second = -1
    value = ""

    @classmethod
    def stamp(cls) -> str:
        now = int(time.time())
        if now != cls.second:
            cls.value = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(now))
            cls.second = now
        return cls.value


def response_head(request: Request, size: int | None) -> bytes:
    """aiohttp's head for the 200 answer: with the body's type and length for a GET, none
    for a HEAD (aiohttp drops Content-Length from a HEAD's answer)."""
    connection = b""
    if request.keep_alive:
        if request.version == b"HTTP/1.0":
            connection = b"Connection: keep-alive\r\n"
    elif request.version == b"HTTP/1.1":
        connection = b"Connection: close\r\n"
    body = b"" if size is None else b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n" % size
    return b"%s 200 OK\r\n%sDate: %s\r\nServer: %s\r\n%s\r\n" % (
        request.version, body, _Clock.date(), _SERVER, connection)


class FastConnection(asyncio.Protocol):
    """One client connection, answered here until a request needs aiohttp."""

    def __init__(self, responder: FileResponder, slow: Callable[[], asyncio.Protocol], *,
                 loop: asyncio.AbstractEventLoop, log: TextIO | None, header_timeout: float,
                 idle_timeout: float, registry: set[FastConnection]) -> None:
        self._responder = responder
        self._slow = slow
        self._loop = loop
        self._log = log
        self._idle_timeout = idle_timeout
        self._header_timeout = header_timeout
        self._registry = registry
        self._transport: asyncio.Transport | None = None
        self._sock: socket.socket | None = None  # the TCP socket, for sendfile (not TLS)
        self._remote = ""
        self._pending = b""  # requests read while the transport's buffer is full
        self._paused = False
        self._eof = False
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio's classes: asked for what they do
        self._transport = cast(asyncio.Transport, transport)
        self._registry.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, (tuple, list)):
            self._remote = str(peer[0])
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            # A socket object of our own over the transport's descriptor, for send() with
            # MSG_MORE (detached, never closed, by _release).
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno=sock.fileno())
        self._deadline = self._loop.time() + self._header_timeout
        self._timer = self._loop.call_at(self._deadline, self._expire)

    def data_received(self, data: bytes) -> None:
        if self._pending:
            self._pending += data
            if self._paused:
                return
            data, self._pending = self._pending, b""
        self._serve(data)

    def eof_received(self) -> bool | None:
        self._eof = True
        return True if self._pending else None  # answer what was read, then close

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        transport = self._transport
        if self._pending and transport is not None:
            data, self._pending = self._pending, b""
            if not self._eof:
                transport.resume_reading()
            self._serve(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._release()
        self._transport = None
        self._pending = b""

    # -- requests --------------------------------------------------------------------------
    def _serve(self, data: bytes) -> None:
        """Answer the complete requests in ``data`` in order; the rest waits (output
        paused) or goes to aiohttp."""
        start = 0
        while True:
            transport = self._transport
            if transport is None:
                return
            if start == len(data):
                if self._eof:
                    transport.close()
                return
            if self._paused:
                self._pending = data[start:]
                if not self._eof:
                    transport.pause_reading()
                return
            end = data.find(b"\r\n\r\n", start, start + MAX_HEAD + 4)
            request = None if end < 0 else parse_head(data[start:end], self._responder.authorization)
            if request is None or not self._answer(request, transport):
                self._hand_over(data[start:] if start else data)
                return
            start = end + 4
            if not request.keep_alive:
                transport.close()
                return
            self._deadline = self._loop.time() + self._idle_timeout

    def _answer(self, request: Request, transport: asyncio.Transport) -> bool:
        """Answer ``request`` if its chunk is there as a file; False: not answered."""
        path = self._responder.chunk_file(request.target)
        if path is None:
            return False
        if request.method == b"HEAD":
            if not _holds_file(path):
                return False
            self._send(transport, response_head(request, None))
        else:
            opened = open_file(path)
            if opened is None:
                return False
            fd, size = opened
            try:
                self._send(transport, response_head(request, size), fd, size)
            finally:
                os.close(fd)
        if self._log is not None:
            self._log.write(f"{_LogClock.stamp()} Client: {self._remote}, Request: "
                            f"{request.method.decode()} {request.target.decode()}, Response: 200\n")
        return True

    def _send(self, transport: asyncio.Transport, head: bytes, fd: int = -1, size: int = 0) -> None:
        """The head, then ``size`` bytes of file ``fd``: straight to the socket while the
        transport holds nothing unsent and the socket takes them, the rest through the
        transport (which sends in order)."""
        written = sent = 0
        sock = self._sock
        if sock is not None and not transport.get_write_buffer_size():
            try:
                # MSG_MORE: the head leaves in the file's first segment
                written = sock.send(head, _MSG_MORE if size else 0)
                if written == len(head):
                    while sent < size:
                        n = os.sendfile(sock.fileno(), fd, sent, size - sent)
                        if n == 0:
                            break
                        sent += n
            except OSError:
                pass  # would block, or the peer is gone: the transport sees to it
        if written < len(head):
            transport.write(head[written:])
        if sent < size:
            try:
                rest = os.pread(fd, size - sent, sent)
            except OSError:  # a read error after the head went out: the length cannot be kept
                rest = b""
            transport.write(rest)
            if len(rest) < size - sent:  # or the file shrank: the client must see it cut short
                transport.abort()

    # -- hand-over, timeouts, end ----------------------------------------------------------
    def _hand_over(self, data: bytes) -> None:
        """aiohttp's protocol takes the connection, with ``data`` as its first bytes."""
        transport = self._transport
        assert transport is not None
        self._release()
        self._transport = None
        protocol = self._slow()
        protocol.connection_made(transport)
        transport.set_protocol(protocol)
        protocol.data_received(data)
        if self._eof:
            protocol.eof_received()

    def _expire(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None:
            return
        now = self._loop.time()
        if transport.get_write_buffer_size():  # a slow reader: still busy, not idle
            self._deadline = max(self._deadline, now + self._idle_timeout)
        if now < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._expire)
            return
        transport.close()

    def close(self) -> None:
        """At the server's shutdown: what is queued is sent, then the connection closes."""
        if self._transport is not None:
            self._transport.close()

    def _release(self) -> None:
        self._registry.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            self._sock.detach()
            self._sock = None
