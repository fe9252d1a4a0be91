"""What chunk-server and index-server share: listeners, TLS, Authorization, request log, signals.

Spec: ``spec/http.md``. After ``serve`` in desync ``cmd/desync/indexserver.go``; the request
log line after ``withLog`` in ``cmd/desync/chunkserver.go``. The options arrive checked
(``cli/server_options.py``); what only shows when the server starts (a certificate that does
not load, an address it cannot listen on, a log file it cannot open) is a ServerSetupError.

The stack is aiohttp on asyncio (uvloop when installed): one event loop parses HTTP in C
(llhttp), keeps connections alive and serves many concurrent clients; store calls, which
block, run in a thread pool sized by ``-n``.

Timeouts are desync's (``serve`` in ``cmd/desync/indexserver.go``): 30 s to read a
request's headers (Go ``ReadHeaderTimeout``, which aiohttp lacks: a timer per connection,
armed when a request's first bytes or the connection arrive and stopped when the headers are
parsed) and 120 s for an idle keep-alive connection (``IdleTimeout``: aiohttp's
``keepalive_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TextIO

from aiohttp import web, web_protocol

from desync_ref.errors import ServerSetupError
from desync_ref.server.options import ServerOptions, parse_listen

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

HEADER_TIMEOUT: Final = 30.0  # seconds, desync ReadHeaderTimeout
IDLE_TIMEOUT: Final = 120.0  # seconds, desync IdleTimeout


def tls_context(options: ServerOptions) -> ssl.SSLContext | None:
    if options.cert is None or options.key is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(options.cert, options.key)
    except (OSError, ssl.SSLError) as exc:
        raise ServerSetupError(f"cannot load certificate {options.cert} / key {options.key}: {_ssl_reason(exc)}") from None
    if options.mutual_tls and options.client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_verify_locations(cafile=options.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ServerSetupError(f"no client CA certificates found in {options.client_ca}: {_ssl_reason(exc)}") from None
    return ctx


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join((str(exc) or exc.__class__.__name__).split())


def authorized(request: web.BaseRequest, expected: bytes) -> bool:
    """desync: ``subtle.ConstantTimeCompare`` of the Authorization header, when one is set."""
    if not expected:
        return True
    given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, expected)


async def read_body(request: web.BaseRequest, limit: int) -> bytes | None:
    """The whole request body, or None when it is larger than ``limit``."""
    parts: list[bytes] = []
    size = 0
    while True:
        part = await request.content.readany()
        if not part:
            return b"".join(parts)
        size += len(part)
        if size > limit:
            return None
        parts.append(part)


def text(status: int, message: str = "") -> web.Response:
    """A plain-text answer, as Go's ``http.Error`` writes it (with a trailing newline)."""
    body = (message + "\n").encode() if message else b""
    return web.Response(status=status, body=body, content_type="text/plain", charset="utf-8")


class RequestLog:
    """``--log FILE|-``: one line per request, Go ``log.LstdFlags`` date prefix."""

    def __init__(self, target: str | None) -> None:
        self.out: TextIO | None = None
        self._own = False
        if target == "-":
            self.out = sys.stderr
        elif target:
            try:
                self.out = open(target, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            except OSError as exc:
                raise ServerSetupError(f"cannot open log file {target}: {exc.strerror}") from None
            self._own = True

    def wrap(self, handler: Handler) -> Handler:
        out = self.out
        if out is None:
            return handler

        async def logged(request: web.BaseRequest) -> web.StreamResponse:
            response = await handler(request)
            stamp = time.strftime("%Y/%m/%d %H:%M:%S")
            out.write(f"{stamp} Client: {request.remote}, Request: {request.method} {request.raw_path}, "
                      f"Response: {response.status}\n")
            return response

        return logged

    def close(self) -> None:
        if self._own and self.out is not None:
            self.out.close()


class _Connection(web_protocol.RequestHandler):
    """aiohttp's connection protocol with a deadline for a request's headers."""

    header_timeout: float = HEADER_TIMEOUT
    _header_timer: asyncio.TimerHandle | None = None
    _in_request: bool = False

    def _arm(self) -> None:
        if self._header_timer is None and not self._in_request:
            self._header_timer = self._loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self._in_request:
            self.force_close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if data:
            self._arm()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def request_started(self) -> None:
        self._in_request = True
        self._disarm()

    def request_done(self) -> None:
        self._in_request = False


class _Server(web.Server):
    def __init__(self, handler: Handler, *, header_timeout: float, **kwargs: Any) -> None:
        self.header_timeout = header_timeout
        super().__init__(handler, **kwargs)

    def __call__(self) -> web_protocol.RequestHandler:
        connection = _Connection(self, loop=self._loop, **self._kwargs)
        connection.header_timeout = self.header_timeout
        return connection


def _tracked(handler: Handler) -> Handler:
    async def tracked(request: web.BaseRequest) -> web.StreamResponse:
        connection = request.protocol
        if isinstance(connection, _Connection):
            connection.request_started()
        try:
            return await handler(request)
        finally:
            if isinstance(connection, _Connection):
                connection.request_done()

    return tracked


def make_web_server(handler: Handler, *, header_timeout: float = HEADER_TIMEOUT,
                    idle_timeout: float = IDLE_TIMEOUT) -> web.Server:
    """The low-level aiohttp server of both commands, with desync's timeouts."""
    return _Server(_tracked(handler), header_timeout=header_timeout, access_log=None,
                   handler_cancellation=False, keepalive_timeout=idle_timeout)


def warn(prog: str, message: str) -> None:
    print(f"{prog}: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _event_loop_policy() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve(handler: Handler, options: ServerOptions, prog: str,
                 on_hup: Callable[[], None] | None, executor: ThreadPoolExecutor) -> None:
    ctx = tls_context(options)
    addresses = [parse_listen(address) for address in (options.listen or [":http"])]
    loop = asyncio.get_running_loop()
    loop.set_default_executor(executor)
    server = make_web_server(handler)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for host, port in addresses:
            site = web.TCPSite(runner, host, port, ssl_context=ctx, reuse_address=True, backlog=1024)
            try:
                await site.start()
            except OSError as exc:
                where = f"{host or ''}:{port}"
                raise ServerSetupError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        if on_hup is not None:
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, on_hup))
        scheme = "https" if ctx else "http"
        for site_name in runner.addresses:
            host, port = site_name[0], site_name[1]
            shown = f"[{host}]" if ":" in str(host) else host
            warn(prog, f"listening on {scheme}://{shown}:{port}/")
        await stop.wait()
    finally:
        await runner.cleanup()


def run_server(handler: Handler, options: ServerOptions, prog: str, *,
               on_hup: Callable[[], None] | None = None, **_: Any) -> int:
    """Serve until SIGINT/SIGTERM; in-flight requests finish (up to 5 s) before the exit."""
    log = RequestLog(options.log)
    _event_loop_policy()
    executor = ThreadPoolExecutor(max_workers=max(4, options.threads), thread_name_prefix=prog)
    try:
        asyncio.run(_serve(log.wrap(handler), options, prog, on_hup, executor))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        log.close()
    return 0
