"""A 200 answer whose body is an open file, sent with sendfile(2) where the socket allows.

Spec: ``spec/http.md`` ("Worker processes"). chunk-server answers a GET of a chunk a local
store holds in the form the client asked for with the file itself, as a static file
server would; the bytes are not copied through the interpreter.

aiohttp's own ``FileResponse`` does more (ranges, ETags, a thread per read) and, under
uvloop, whose loop has no ``sendfile``, reads the file in a thread. Here, when the
transport holds nothing unsent (the usual case), the head and then the file go straight
to the socket, the file with ``os.sendfile`` until the socket would block, and whatever is left is read and handed to
the transport, which sends it in order after the bytes already on the socket. A TLS
connection always takes that second way (the socket carries records, not the file).
aiohttp 3.11 and later keep a response's head back until its first body bytes and uvloop
queues a write until the loop's next turn, so the head is taken from aiohttp's writer
and written to the socket here, just before the file.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Final

from aiohttp import web

_MSG_MORE: Final = getattr(socket, "MSG_MORE", 0)  # Linux; elsewhere the head goes alone


def _socket_fd(transport: asyncio.Transport | None) -> int | None:
    """The plain TCP socket under a transport with nothing queued, or None. (uvloop's
    transports are not subclasses of asyncio's: asked for what they do, not their type.)"""
    if transport is None or transport.get_write_buffer_size():
        return None
    if transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    return None if sock is None else int(sock.fileno())


def _take_headers(writer: Any) -> bytes | None:
    """The response head aiohttp (3.11 and later) keeps back to send with the first body
    bytes, taken from its writer; None when it was sent already or is not kept there."""
    head = getattr(writer, "_headers_buf", None)
    if not isinstance(head, bytes) or getattr(writer, "_headers_written", True):
        return None
    writer._headers_buf = None
    writer._headers_written = True
    return head


def _send(out: int, data: bytes | None, fd: int, size: int) -> tuple[int, int]:
    """Write ``data`` and then the file to the socket until it would block: (bytes of
    ``data`` written, bytes of the file sent)."""
    written = 0
    try:
        if data is not None:
            # MSG_MORE: the head waits for the file's bytes and leaves in their segment (on
            # loopback a send of its own costs about as much as the whole file).
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno=out)
            try:
                while written < len(data):
                    written += sock.send(data[written:], _MSG_MORE)
            finally:
                sock.detach()
    except OSError:
        # Would block, or the peer went away: the transport takes the rest (and sees
        # the error itself, as for any write).
        return written, 0
    sent = 0
    while sent < size:
        try:
            n = os.sendfile(out, fd, sent, size - sent)
        except OSError:
            break
        if n == 0:
            break
        sent += n
    return written, sent


class FileBody(web.StreamResponse):
    """``size`` bytes of ``file`` (opened by the caller, closed here once sent or dropped)."""

    # aiohttp (3.12 and later): keep the head back, to go out with the file (_take_headers).
    _send_headers_immediately = False

    def __init__(self, file: Any, size: int, headers: dict[str, str]) -> None:
        super().__init__(status=200, headers=headers)
        self.content_length = size
        self._file = file
        self._size = size

    async def write_eof(self, data: bytes = b"") -> None:
        file = self._file
        try:
            if file.closed:
                return
            writer = self._payload_writer
            request = self._req
            transport = request.transport if request is not None else None
            out = _socket_fd(transport)
            sent = 0
            if writer is not None and transport is not None and out is not None:
                head = _take_headers(writer)
                written, sent = _send(out, head, file.fileno(), self._size)
                if head is not None and written < len(head):
                    transport.write(head[written:])  # sent in order, before the body
            rest = os.pread(file.fileno(), self._size - sent, sent) if sent < self._size else b""
            await super().write_eof(rest)
        finally:
            file.close()
