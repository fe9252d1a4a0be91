"""What chunk-server and index-server share: listeners, TLS, Authorization, request log, signals.

Spec: ``spec/http.md``. After ``serve`` in desync ``cmd/desync/indexserver.go``; the request
log line after ``withLog`` in ``cmd/desync/chunkserver.go``. The options arrive checked
(``cli/server_options.py``); what only shows when the server starts (a certificate that does
not load, an address it cannot listen on, a log file it cannot open) is a ServerSetupError.

The stack is aiohttp on asyncio (uvloop when installed): one event loop parses HTTP in C
(llhttp), keeps connections alive and serves many concurrent clients; store calls, which
block, run in a thread pool sized by ``-n``. ``run_server`` binds the listening sockets
and serves in this process, or in worker processes (``server/workers.py``) that each
accept on their own SO_REUSEPORT socket and run such a loop over their own store chain
(a :class:`Service`).
A handler that can name the file answering a request (a :class:`FileResponder`,
chunk-server's) gets a fast path on plain TCP (``server/fastpath.py``): such requests are
answered before aiohttp sees them, and a connection goes to aiohttp's protocol at the first
request the fast path does not take.

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
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TextIO

from aiohttp import web, web_protocol

from desync_ref.errors import ServerSetupError
from desync_ref.server.fastpath import FastConnection, FileResponder
from desync_ref.server.options import ServerOptions, parse_listen

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

HEADER_TIMEOUT: Final = 30.0  # seconds, desync ReadHeaderTimeout
IDLE_TIMEOUT: Final = 120.0  # seconds, desync IdleTimeout
BACKLOG: Final = 1024


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


@dataclass
class Service:
    """What one server process serves: the handler, the SIGHUP reload (if the server has
    one) and what to close at the end. Each worker process opens its own. ``fast``: the
    handler, when it can name files that answer requests (``server/fastpath.py``); ``log``:
    where the fast path writes its request log lines."""

    handler: Handler
    on_hup: Callable[[], None] | None = None
    close: Callable[[], None] = lambda: None
    fast: FileResponder | None = None
    log: TextIO | None = None

    def __post_init__(self) -> None:
        if self.fast is None and isinstance(self.handler, FileResponder):
            self.fast = self.handler


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

    def wrap_service(self, service: Service) -> Service:
        return Service(self.wrap(service.handler), service.on_hup, service.close, service.fast, self.out)

    def close(self) -> None:
        """Flushed, so that a worker process's last lines are not lost at its exit."""
        if self.out is None:
            return
        if self._own:
            self.out.close()
        else:
            self.out.flush()


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
    """aiohttp's server; with ``fast``, each connection starts on the fast path
    (``server/fastpath.py``), which hands it to an aiohttp protocol when it must."""

    def __init__(self, handler: Handler, *, header_timeout: float, fast: FileResponder | None = None,
                 log: TextIO | None = None, **kwargs: Any) -> None:
        self.header_timeout = header_timeout
        self.fast = fast
        self.log = log
        self.fast_connections: set[FastConnection] = set()
        super().__init__(handler, **kwargs)

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        if self.fast is not None:
            return FastConnection(self.fast, self.slow, loop=self._loop, log=self.log,
                                  header_timeout=self.header_timeout,
                                  idle_timeout=float(self._kwargs.get("keepalive_timeout", IDLE_TIMEOUT)),
                                  registry=self.fast_connections)
        return self.slow()

    def slow(self) -> web_protocol.RequestHandler:
        connection = _Connection(self, loop=self._loop, **self._kwargs)
        connection.header_timeout = self.header_timeout
        return connection

    def pre_shutdown(self) -> None:
        # as aiohttp's own: each connection closes once what it has queued is sent
        for connection in list(self.fast_connections):
            connection.close()
        super().pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:
        """aiohttp's connections finish their requests; fast ones send what they queued
        (within the same time: the loop ends after this)."""
        deadline = self._loop.time() + (timeout if timeout is not None else 5.0)
        await super().shutdown(timeout)
        while self.fast_connections and self._loop.time() < deadline:
            await asyncio.sleep(0.01)


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
                    idle_timeout: float = IDLE_TIMEOUT, fast: FileResponder | None = None,
                    log: TextIO | None = None) -> web.Server:
    """The low-level aiohttp server of both commands, with desync's timeouts; ``fast``
    (plain TCP only): requests it can answer with a file take the fast path, which writes
    its lines to the request log ``log``."""
    return _Server(_tracked(handler), header_timeout=header_timeout, fast=fast, log=log, access_log=None,
                   handler_cancellation=False, keepalive_timeout=idle_timeout)


def warn(prog: str, message: str) -> None:
    print(f"{prog}: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _event_loop_policy() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _listen_socket(family: int, address: tuple[Any, ...], shared: bool) -> socket.socket | None:
    """A listening socket, or None when the system has no such family (as asyncio's
    create_server, which skips it: no IPv6 on the host, say)."""
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # as asyncio's create_server: "::" must not also take the IPv4 port
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_listeners(listen: list[str], copies: int) -> list[list[socket.socket]]:
    """``copies`` lists of listening sockets, one socket per address (and per address
    family of a host-less address) in each; with more than one copy, every socket of an
    address is bound with SO_REUSEPORT to the same port (a port 0 is picked once), so
    each worker accepts on its own socket and the kernel spreads the connections."""
    sets: list[list[socket.socket]] = [[] for _ in range(copies)]
    try:
        for address in listen:
            host, port = parse_listen(address)
            where = f"{host or ''}:{port}"
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            except (OSError, UnicodeError) as exc:
                raise ServerSetupError(f"cannot listen on {where}: {getattr(exc, 'strerror', None) or exc}") from None
            seen: set[tuple[int, tuple[Any, ...]]] = set()
            bound = len(sets[0])
            for family, _, _, _, sockaddr in infos:
                if (family, sockaddr) in seen:
                    continue
                seen.add((family, sockaddr))
                for copy in sets:
                    try:
                        sock = _listen_socket(family, sockaddr, copies > 1)
                    except OSError as exc:
                        raise ServerSetupError(f"cannot listen on {where}: {exc.strerror or exc}") from None
                    if sock is None:
                        break
                    copy.append(sock)
                    if sockaddr[1] == 0:  # the port the first socket got is everyone's
                        sockaddr = (sockaddr[0], sock.getsockname()[1], *sockaddr[2:])
            if len(sets[0]) == bound:
                raise ServerSetupError(f"cannot listen on {where}: no usable address family")
    except BaseException:
        for copy in sets:
            for sock in copy:
                sock.close()
        raise
    return sets


def _announce(sockets: list[socket.socket], scheme: str, prog: str) -> None:
    for sock in sockets:
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        warn(prog, f"listening on {scheme}://{shown}:{port}/")


async def _serve(service: Service, sockets: list[socket.socket], ctx: ssl.SSLContext | None,
                 executor: ThreadPoolExecutor, unblock: Callable[[], None], worker: bool) -> int:
    """Serve until SIGINT/SIGTERM; the signal's number."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(executor)
    on_hup = service.on_hup
    # The fast path answers on plain TCP only: a TLS connection's bytes are records.
    server = make_web_server(service.handler, fast=service.fast if ctx is None else None, log=service.log)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    stop = asyncio.Event()
    stopped_by = [signal.SIGTERM]

    def stopping(sig: int) -> None:
        stopped_by[0] = signal.Signals(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping, sig)
    if on_hup is not None:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, on_hup))
    elif worker:
        loop.add_signal_handler(signal.SIGHUP, lambda: None)  # only the parent may end a worker
    unblock()  # signals that came during the start are delivered now, to the handlers above
    try:
        for sock in sockets:
            await web.SockSite(runner, sock, ssl_context=ctx, backlog=BACKLOG).start()
        await stop.wait()
    finally:
        await runner.cleanup()
    return int(stopped_by[0])


def _serve_process(service: Service, sockets: list[socket.socket], ctx: ssl.SSLContext | None,
                   options: ServerOptions, prog: str, unblock: Callable[[], None], *, worker: bool) -> int:
    _event_loop_policy()
    executor = ThreadPoolExecutor(max_workers=max(4, options.threads), thread_name_prefix=prog)
    try:
        return asyncio.run(_serve(service, sockets, ctx, executor, unblock, worker))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def run_server(open_service: Callable[[], Service], options: ServerOptions, prog: str, *,
               workers: int = 1, reloads: bool = False) -> int:
    """Serve until SIGINT/SIGTERM, in this process or in ``workers`` worker processes
    (``server/workers.py``); in-flight requests finish (up to 5 s) before the exit, whose
    status is 128 + the signal's number. ``open_service`` runs once per serving process;
    ``reloads``: its services reload on SIGHUP (the parent of workers passes SIGHUP on)."""
    from desync_ref.server.workers import supervise

    # Signals wait until the serving loop has its handlers: the sockets listen (and a
    # client may act on the "listening" line) before it runs.
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP} if reloads else {signal.SIGINT, signal.SIGTERM}
    saved = signal.pthread_sigmask(signal.SIG_BLOCK, held)

    def unblock() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)

    log = RequestLog(options.log)
    try:
        ctx = tls_context(options)
        sets = bind_listeners(options.listen or [":http"], max(1, workers))
        try:
            _announce(sets[0], "https" if ctx else "http", prog)
            if workers <= 1:
                service = open_service()
                try:
                    stopped_by = _serve_process(log.wrap_service(service), sets[0], ctx, options, prog, unblock,
                                                worker=False)
                    return 128 + stopped_by
                finally:
                    service.close()

            def worker(slot: int, unblock_worker: Callable[[], None]) -> int:
                for other, copy in enumerate(sets):
                    if other != slot:
                        for sock in copy:
                            sock.close()
                service = open_service()
                try:
                    _serve_process(log.wrap_service(service), sets[slot], ctx, options, prog, unblock_worker,
                                   worker=True)
                finally:
                    service.close()
                    log.close()
                return 0

            return supervise(workers, worker, prog, reloads=reloads, mask=saved)
        finally:
            for copy in sets:
                for sock in copy:
                    sock.close()
    finally:
        log.close()
        unblock()
