"""chunk-server's fast path (spec/http.md "Fast path", server/fastpath.py): the requests it
answers get the bytes aiohttp sends for them, and every other request reaches aiohttp.

Two servers run in this process on one event loop (uvloop, as chunk-server's) over the same
store and handler: one with the fast path, one plain aiohttp. The same request bytes go to
both and the answers must be equal, Date aside; a count of the connections the fast path
handed to aiohttp says which path answered. One test runs the real command with --log and
Authorization."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from httputil import Server

from desync_ref.formats.chunk import compress, digest_function
from desync_ref.server.base import RequestLog, Service, make_web_server
from desync_ref.server.chunks import ChunkHandler
from desync_ref.server.fastpath import FastConnection, parse_head
from desync_ref.stores import Chunk
from desync_ref.stores.local import LocalStore

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only

DIGEST = digest_function("sha512-256")
SECRET = "Bearer fast-s3cret"
_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")
_LOG_STAMP = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ", re.MULTILINE)


def add_chunk(store: LocalStore, data: bytes) -> str:
    """The request path of a new chunk of ``data`` in ``store``."""
    cid = DIGEST(data)
    store.store_chunk(Chunk(cid, data=data, compressed=compress(data)))
    return f"/{cid.hex()[:4]}/{cid.hex()}.cacnk"


@pytest.fixture(scope="module")
def chunks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("fastpath")
    store = LocalStore(base / "store", create=True)
    small = add_chunk(store, b"fast path " * 300)
    other = add_chunk(store, os.urandom(70_000))
    # 4 MiB of random bytes: more than a loopback socket takes at once
    large = add_chunk(store, os.urandom(4 << 20))
    missing = "/" + "ab" * 2 + "/" + "ab" * 32 + ".cacnk"
    return {"base": base, "store": base / "store", "small": small, "other": other, "large": large,
            "missing": missing}


def file_of(chunks: dict[str, Any], path: str) -> bytes:
    return (chunks["store"] / path.lstrip("/")).read_bytes()


class Pair:
    """A fast-path server and a plain aiohttp server over one handler, in a loop thread."""

    def __init__(self, handler: ChunkHandler, log: Path | None = None) -> None:
        try:
            import uvloop

            self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.log = RequestLog(str(log) if log else None)
        service = self.log.wrap_service(Service(handler))  # as run_server builds it
        assert service.fast is handler
        self.handovers = 0

        def fast_server() -> Any:
            server = make_web_server(service.handler, fast=service.fast, log=service.log)
            slow = server.slow  # type: ignore[attr-defined]

            def counted() -> Any:
                self.handovers += 1
                return slow()

            server.slow = counted  # type: ignore[attr-defined]
            self.fast_server = server
            return server

        self.runners = [self._start(fast_server), self._start(lambda: make_web_server(service.handler))]
        self.fast_port, self.plain_port = (port for _, port in self.runners)

    def _start(self, make: Any) -> tuple[Any, int]:
        from aiohttp import web

        async def start() -> tuple[Any, int]:
            runner = web.ServerRunner(make(), handle_signals=False, shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            return runner, runner.addresses[0][1]

        return asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def close(self) -> None:
        for runner, _ in self.runners:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.log.close()


@contextlib.contextmanager
def pair(handler: ChunkHandler, log: Path | None = None) -> Iterator[Pair]:
    servers = Pair(handler, log)
    try:
        yield servers
    finally:
        servers.close()


def handler_for(chunks: dict[str, Any], **kwargs: Any) -> ChunkHandler:
    return ChunkHandler(LocalStore(chunks["store"]), DIGEST, **kwargs)


def read_responses(sock: socket.socket, methods: list[str]) -> list[bytes]:
    """One whole response per request method, each head and body as sent."""
    buf = b""
    out = []
    for method in methods:
        while b"\r\n\r\n" not in buf:
            more = sock.recv(65536)
            assert more, f"connection closed before a response: {buf!r}"
            buf += more
        end = buf.index(b"\r\n\r\n") + 4
        m = re.search(rb"\r\nContent-Length: (\d+)\r\n", buf[:end])
        size = int(m.group(1)) if m and method != "HEAD" else 0
        while len(buf) < end + size:
            more = sock.recv(1 << 20)
            assert more, "connection closed inside a body"
            buf += more
        out.append(buf[:end + size])
        buf = buf[end + size:]
    assert buf == b"", f"more bytes than the responses: {buf[:200]!r}"
    return out


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


def exchange(port: int, parts: list[bytes], methods: list[str], pause: float = 0.0) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        for i, part in enumerate(parts):
            if i and pause:
                time.sleep(pause)
            sock.sendall(part)
        return read_responses(sock, methods)


def same(fast: list[bytes], plain: list[bytes]) -> bool:
    return [_DATE.sub(b"\r\nDate: -\r\n", r) for r in fast] == [_DATE.sub(b"\r\nDate: -\r\n", r) for r in plain]


def request(method: str, path: str, version: str = "1.1", headers: str = "Host: x\r\n") -> bytes:
    return f"{method} {path} HTTP/{version}\r\n{headers}\r\n".encode()


CURL = "Host: 127.0.0.1\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n"


@pytest.mark.parametrize(("method", "version", "headers"), [
    ("GET", "1.1", CURL),
    ("HEAD", "1.1", CURL),
    ("GET", "1.0", CURL),
    ("GET", "1.0", CURL + "Connection: keep-alive\r\n"),
    ("HEAD", "1.0", "Connection: Keep-Alive\r\n"),
    ("GET", "1.1", CURL + "Connection: close\r\n"),
    ("GET", "1.1", "Host: x\r\nContent-Length: 0\r\nAccept-Encoding: gzip\r\n"),
    ("GET", "1.0", ""),
])
def test_answers_as_aiohttp(chunks: dict[str, Any], method: str, version: str, headers: str) -> None:
    """Status line, headers in order and body as aiohttp's; the file's bytes; closed when
    aiohttp closes; not handed over."""
    with pair(handler_for(chunks)) as servers:
        answers = []
        for port in (servers.fast_port, servers.plain_port):
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                sock.sendall(request(method, chunks["small"], version, headers))
                answers.append(read_responses(sock, [method]))
                if "close" in headers or (version == "1.0" and "eep-" not in headers):
                    assert closed_by_server(sock)
                else:  # kept alive: a second request is answered
                    sock.sendall(request("HEAD", chunks["other"]))
                    assert read_responses(sock, ["HEAD"])[0].startswith(b"HTTP/1.1 200 OK")
        assert servers.handovers == 0
    assert same(answers[0], answers[1]), answers
    head, _, body = answers[0][0].partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/{version} 200 OK".encode())
    assert body == (b"" if method == "HEAD" else file_of(chunks, chunks["small"]))


def test_pipelined_requests_in_order(chunks: dict[str, Any]) -> None:
    names = [chunks["small"], chunks["other"], chunks["large"], chunks["small"], chunks["other"]]
    methods = ["GET", "GET", "GET", "HEAD", "GET"]
    batch = b"".join(request(m, n) for m, n in zip(methods, names, strict=True))
    with pair(handler_for(chunks)) as servers:
        fast = exchange(servers.fast_port, [batch], methods)
        plain = exchange(servers.plain_port, [batch], methods)
        assert servers.handovers == 0
    assert same(fast, plain)
    for method, name, answer in zip(methods, names, fast, strict=True):
        body = answer.partition(b"\r\n\r\n")[2]
        assert body == (b"" if method == "HEAD" else file_of(chunks, name))


def test_slow_reader_gets_every_byte(chunks: dict[str, Any]) -> None:
    """Pipelined 4 MiB answers to a client that reads late: the socket and then the
    transport fill up (sendfile stops, the rest is queued, reading pauses) and every body
    still arrives whole and in order."""
    count = 6
    batch = request("GET", chunks["large"]) * count
    with pair(handler_for(chunks)) as servers, \
            socket.create_connection(("127.0.0.1", servers.fast_port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(batch)
        time.sleep(0.5)
        answers = read_responses(sock, ["GET"] * count)
        assert servers.handovers == 0
    expected = file_of(chunks, chunks["large"])
    assert all(a.partition(b"\r\n\r\n")[2] == expected for a in answers)


def test_keep_alive_then_close(chunks: dict[str, Any]) -> None:
    with pair(handler_for(chunks)) as servers, \
            socket.create_connection(("127.0.0.1", servers.fast_port), timeout=20) as sock:
        for name in (chunks["small"], chunks["other"], chunks["small"]):
            sock.sendall(request("GET", name))
            (answer,) = read_responses(sock, ["GET"])
            assert answer.partition(b"\r\n\r\n")[2] == file_of(chunks, name)
        sock.sendall(request("GET", chunks["other"], headers="Host: x\r\nConnection: close\r\n"))
        (answer,) = read_responses(sock, ["GET"])
        assert b"\r\nConnection: close\r\n" in answer
        assert closed_by_server(sock)
        assert servers.handovers == 0


def test_request_in_two_packets_goes_to_aiohttp(chunks: dict[str, Any]) -> None:
    whole = request("GET", chunks["other"], headers=CURL)
    parts = [whole[:25], whole[25:]]
    with pair(handler_for(chunks)) as servers:
        fast = exchange(servers.fast_port, parts, ["GET"], pause=0.2)
        assert servers.handovers == 1
        plain = exchange(servers.plain_port, [whole], ["GET"])
    assert same(fast, plain)
    assert fast[0].partition(b"\r\n\r\n")[2] == file_of(chunks, chunks["other"])


def test_put_after_fast_get(chunks: dict[str, Any], tmp_path: Path) -> None:
    store = tmp_path / "store"
    LocalStore(store, create=True)
    local = LocalStore(store)
    name = add_chunk(local, b"already here " * 100)
    data = b"put over the same connection " * 50
    new_id = DIGEST(data)
    new_name = f"/{new_id.hex()[:4]}/{new_id.hex()}.cacnk"
    body = compress(data)
    put = f"PUT {new_name} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    handler = ChunkHandler(LocalStore(store), DIGEST, writable=True)
    with pair(handler) as servers, \
            socket.create_connection(("127.0.0.1", servers.fast_port), timeout=20) as sock:
        sock.sendall(request("GET", name))
        (first,) = read_responses(sock, ["GET"])
        assert first.startswith(b"HTTP/1.1 200 OK") and servers.handovers == 0
        sock.sendall(put)
        (stored,) = read_responses(sock, ["PUT"])
        assert stored.startswith(b"HTTP/1.1 200 OK") and servers.handovers == 1
        sock.sendall(request("GET", new_name))  # aiohttp's connection now
        (again,) = read_responses(sock, ["GET"])
    assert again.partition(b"\r\n\r\n")[2] == body == (store / new_name.lstrip("/")).read_bytes()


@pytest.mark.parametrize("given", [None, "Bearer wrong", SECRET])
def test_authorization(chunks: dict[str, Any], given: str | None) -> None:
    headers = "Host: x\r\n" + (f"Authorization: {given}\r\n" if given else "")
    with pair(handler_for(chunks, authorization=SECRET)) as servers:
        fast = exchange(servers.fast_port, [request("GET", chunks["small"], headers=headers)], ["GET"])
        plain = exchange(servers.plain_port, [request("GET", chunks["small"], headers=headers)], ["GET"])
        assert servers.handovers == (0 if given == SECRET else 1)
    assert same(fast, plain)
    assert fast[0].startswith(b"HTTP/1.1 200 OK" if given == SECRET else b"HTTP/1.1 401 Unauthorized")


def test_missing_chunk_404_then_served(chunks: dict[str, Any]) -> None:
    """A 404 goes through aiohttp, which keeps the connection and answers the next GET."""
    methods = ["GET", "HEAD", "GET"]
    batch = (request("GET", chunks["missing"]) + request("HEAD", chunks["missing"])
             + request("GET", chunks["small"]))
    with pair(handler_for(chunks)) as servers:
        fast = exchange(servers.fast_port, [batch], methods)
        assert servers.handovers == 1
        plain = exchange(servers.plain_port, [batch], methods)
    assert same(fast, plain)
    assert [a.split(b"\r\n", 1)[0] for a in fast] == [b"HTTP/1.1 404 Not Found"] * 2 + [b"HTTP/1.1 200 OK"]


@pytest.mark.parametrize("raw", [
    b"GET {p}?x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET {p} HTTP/1.1\r\nAccept: */*\r\n\r\n",
    b"GET {p} HTTP/1.1\r\n\r\n",
    b"GET {p} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET {p} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    b"GET {p} HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    b"GET {p} HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n",
    b"GET {p} HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
    b"GET {p} HTTP/1.1\r\nHost x\r\n\r\n",
    b"GET  {p} HTTP/1.1\r\nHost: x\r\n\r\n",
    b"DELETE {p} HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET {p} HTTP/1.2\r\nHost: x\r\n\r\n",
    b"GET {p}.cacnk HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /abcd/{p} HTTP/1.1\r\nHost: x\r\n\r\n",
])
def test_other_requests_reach_aiohttp(chunks: dict[str, Any], raw: bytes) -> None:
    """Requests the fast path does not take (query, body, repeated or folded headers, a
    bad line, other methods, versions or paths) get aiohttp's answer, whatever it is."""
    data = raw.replace(b"{p}", chunks["small"].encode())
    answers = []
    with pair(handler_for(chunks)) as servers:
        for port in (servers.fast_port, servers.plain_port):
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                sock.sendall(data)
                sock.settimeout(5)
                got = b""
                with contextlib.suppress(TimeoutError):
                    while b"\r\n\r\n" not in got and (more := sock.recv(65536)):
                        got += more
                answers.append(_DATE.sub(b"\r\nDate: -\r\n", got.partition(b"\r\n\r\n")[0]))
        assert servers.handovers == 1
    assert answers[0] == answers[1] and answers[0].startswith(b"HTTP/1.")


def test_log_lines_as_aiohttp(chunks: dict[str, Any], tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    batch = request("GET", chunks["small"]) + request("HEAD", chunks["other"]) + request("GET", chunks["missing"])
    with pair(handler_for(chunks), log) as servers:
        exchange(servers.fast_port, [batch], ["GET", "HEAD", "GET"])
        exchange(servers.plain_port, [batch], ["GET", "HEAD", "GET"])
        assert servers.handovers == 1  # at the 404
    lines = _LOG_STAMP.sub("", log.read_text()).splitlines()
    assert lines[:3] == lines[3:]
    assert lines[:3] == [f"Client: 127.0.0.1, Request: GET {chunks['small']}, Response: 200",
                         f"Client: 127.0.0.1, Request: HEAD {chunks['other']}, Response: 200",
                         f"Client: 127.0.0.1, Request: GET {chunks['missing']}, Response: 404"]
    assert len(_LOG_STAMP.findall(log.read_text())) == 6


def test_shutdown_sends_what_is_queued_then_closes(chunks: dict[str, Any]) -> None:
    """At the server's shutdown an idle fast connection is closed and one whose answer is
    still queued gets all of it first, before the loop ends."""
    with pair(handler_for(chunks)) as servers:
        idle = socket.create_connection(("127.0.0.1", servers.fast_port), timeout=20)
        busy = socket.create_connection(("127.0.0.1", servers.fast_port), timeout=20)
        with idle, busy:
            idle.sendall(request("GET", chunks["small"]))
            read_responses(idle, ["GET"])
            busy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            busy.sendall(request("GET", chunks["large"]))
            time.sleep(0.3)  # the 4 MiB answer waits in the transport: nobody reads it
            runner = servers.runners[0][0]
            stopping = asyncio.run_coroutine_threadsafe(runner.cleanup(), servers.loop)
            time.sleep(0.3)
            assert not stopping.done()  # it waits for the queued answer
            (answer,) = read_responses(busy, ["GET"])
            stopping.result(10)
            assert answer.partition(b"\r\n\r\n")[2] == file_of(chunks, chunks["large"])
            assert closed_by_server(busy) and closed_by_server(idle)
            assert not servers.fast_server.fast_connections  # type: ignore[attr-defined]
        servers.runners = servers.runners[1:]


def test_idle_timeout(chunks: dict[str, Any]) -> None:
    """The header timeout before a first request, the idle timeout after one."""
    handler = handler_for(chunks)
    loop = asyncio.new_event_loop()
    closed: list[float] = []

    class Transport(asyncio.Transport):
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return ("127.0.0.1", 1) if name == "peername" else default

        def write(self, data: Any) -> None:
            pass

        def get_write_buffer_size(self) -> int:
            return 0

        def close(self) -> None:
            closed.append(loop.time())

    def run(first: bytes) -> float:
        closed.clear()
        conn = FastConnection(handler, lambda: pytest.fail("handed over"), loop=loop, log=None,
                              header_timeout=0.2, idle_timeout=0.6, registry=set())
        start = loop.time()
        conn.connection_made(Transport())
        if first:
            conn.data_received(first)
        loop.run_until_complete(asyncio.sleep(1.0))
        assert len(closed) == 1
        return closed[0] - start

    try:
        assert 0.15 < run(b"") < 0.5
        assert 0.55 < run(request("GET", chunks["small"])) < 0.95
    finally:
        loop.close()


class QueueTransport(asyncio.Transport):
    """A transport over one end of a socket pair that keeps what it is given until
    ``flush``, as a transport with unsent bytes does."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.queued = b""
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1), "socket": self.sock}.get(name, default)

    def write(self, data: Any) -> None:
        self.queued += bytes(data)

    def get_write_buffer_size(self) -> int:
        return len(self.queued)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        pass

    def flush(self) -> None:
        self.sock.setblocking(True)
        self.sock.sendall(self.queued)
        self.queued = b""


def test_queued_bytes_go_first(chunks: dict[str, Any]) -> None:
    """Nothing is written to the socket around bytes the transport still holds, and a
    paused transport gets no more answers until it resumes; then they come in order."""
    loop = asyncio.new_event_loop()
    ours, peer = socket.socketpair()
    try:
        ours.setblocking(False)
        transport = QueueTransport(ours)
        conn = FastConnection(handler_for(chunks), lambda: pytest.fail("handed over"), loop=loop, log=None,
                              header_timeout=30, idle_timeout=30, registry=set())
        conn.connection_made(transport)
        transport.write(b"EARLIER")  # an answer not sent yet
        conn.data_received(request("GET", chunks["small"]))
        conn.pause_writing()
        conn.data_received(request("HEAD", chunks["small"]) + request("GET", chunks["other"]))
        queued = transport.queued
        assert not transport.reading  # no more reading while the answers wait
        conn.resume_writing()
        assert transport.reading and len(transport.queued) > len(queued)
        transport.flush()
        peer.settimeout(5)
        assert peer.recv(7) == b"EARLIER"
        answers = read_responses(peer, ["GET", "HEAD", "GET"])
        conn.connection_lost(None)
    finally:
        ours.close()
        peer.close()
        loop.close()
    assert [a.partition(b"\r\n\r\n")[2] for a in answers] == [
        file_of(chunks, chunks["small"]), b"", file_of(chunks, chunks["other"])]


def test_parse_head() -> None:
    target = b"/abcd/" + b"ab" * 32 + b".cacnk"
    parsed = parse_head(b"GET " + target + b" HTTP/1.0\r\nConnection: keep-alive", b"")
    assert parsed is not None and parsed.keep_alive and parsed.method == b"GET" and parsed.target == target
    assert parse_head(b"HEAD / HTTP/1.1\r\nhost: h", b"") == (b"HEAD", b"/", b"HTTP/1.1", True)
    assert parse_head(b"HEAD / HTTP/1.1", b"") is None  # no Host
    assert parse_head(b"HEAD / HTTP/1.0", b"") == (b"HEAD", b"/", b"HTTP/1.0", False)
    assert parse_head(b"GET / HTTP/1.0\r\nAuthorization:  a b \t", b"a b") is not None
    assert parse_head(b"GET / HTTP/1.0\r\nAuthorization: a b", b"a") is None
    assert parse_head(b"GET / HTTP/1.0\r\nAuthorization: a\r\nauthorization: a", b"a") is None
    assert parse_head(b"GET / HTTP/1.0\r\nUpgrade: h2c", b"") is None
    assert parse_head(b"GET / HTTP/1.0\r\nExpect: 100-continue", b"") is None
    assert parse_head(b"GET / HTTP/1.0\r\nX: a\nb", b"") is None
    assert parse_head(b"GET / HTTP/1.0\r\nX: \x00", b"") is None
    many = [b"\r\nX-%d: 1" % i for i in range(33)]
    assert parse_head(b"GET / HTTP/1.0" + b"".join(many[:32]), b"") is not None
    assert parse_head(b"GET / HTTP/1.0" + b"".join(many), b"") is None


def test_chunk_server_command(chunks: dict[str, Any], tmp_path: Path) -> None:
    """The command as users run it: answers, Authorization and --log lines."""
    log = tmp_path / "requests.log"
    args: list[Any] = ["-s", chunks["store"], "--workers", "1", "--log", log, "--authorization", SECRET]
    with Server("chunk-server", args) as srv:
        http = urllib3.PoolManager(retries=False)
        url = srv.url.rstrip("/")
        for name in (chunks["small"], chunks["large"]):
            r = http.request("GET", url + name, headers={"Authorization": SECRET})
            assert r.status == 200 and r.data == file_of(chunks, name)
        assert http.request("HEAD", url + chunks["other"], headers={"Authorization": SECRET}).status == 200
        assert http.request("GET", url + chunks["small"]).status == 401
        code, err = srv.stop()
    assert code == 143 and "Traceback" not in err
    lines = _LOG_STAMP.sub("", log.read_text()).splitlines()
    assert lines == [f"Client: 127.0.0.1, Request: GET {chunks['small']}, Response: 200",
                     f"Client: 127.0.0.1, Request: GET {chunks['large']}, Response: 200",
                     f"Client: 127.0.0.1, Request: HEAD {chunks['other']}, Response: 200",
                     f"Client: 127.0.0.1, Request: GET {chunks['small']}, Response: 401"]
