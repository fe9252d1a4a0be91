"""A 200 answer whose body is an open file, sent with sendfile(2) where the socket allows.

Spec: ``spec/http.md`` ("Worker processes"). chunk-server answers a GET of a chunk a local
store holds in the form the client asked for with the file itself, as nginx or desync's
``http.ServeContent`` would; the bytes are not copied through the interpreter.

aiohttp's own ``FileResponse`` does more (ranges, ETags, a thread per read) and, under
uvloop, whose loop has no ``sendfile``, reads the file in a thread. Here the headers are
written to the transport first; when the transport then holds nothing unsent (the usual
case: the kernel took the headers at once) the file goes straight to the socket with
``os.sendfile`` until the socket would block, and whatever is left is read and handed to
the transport, which sends it in order after the bytes already on the socket. A TLS
connection always takes that second way (the socket carries records, not the file).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from aiohttp import web


def _send_direct(transport: asyncio.BaseTransport, fd: int, size: int) -> int:
    """How many bytes of the file ``os.sendfile`` put on the transport's socket."""
    if not isinstance(transport, asyncio.WriteTransport) or transport.get_write_buffer_size():
        return 0
    if transport.get_extra_info("sslcontext") is not None:
        return 0
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    out = sock.fileno()
    sent = 0
    while sent < size:
        try:
            n = os.sendfile(out, fd, sent, size - sent)
        except OSError:
            # Would block, or the peer went away: the transport takes the rest (and sees
            # the error itself, as for any write).
            break
        if n == 0:
            break
        sent += n
    return sent


class FileBody(web.StreamResponse):
    """``size`` bytes of ``file`` (opened by the caller, closed here once sent or dropped)."""

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
            sent = 0
            transport = request.transport if request is not None else None
            if writer is not None and transport is not None:
                writer.send_headers()
                sent = _send_direct(transport, file.fileno(), self._size)
            rest = os.pread(file.fileno(), self._size - sent, sent) if sent < self._size else b""
            await super().write_eof(rest)
        finally:
            file.close()
