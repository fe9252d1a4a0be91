"""Regression tests of the HTTP hardening round (spec/http.md): --ca-cert pins, chunk-server
PUTs are verified and never replace a valid chunk, URL credentials are sent and never shown,
redirects are followed without credentials to another host, response bodies are capped and
a request has one deadline, servers time out slow headers and idle connections, config -w
writes through a fresh temp file."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import urllib3
from conftest import assert_clean_failure, run_cli
from httputil import Scripted, Server, make_certs, send_file

from desync_ref.formats.chunk import compress, decompress
from desync_ref.formats.index import parse_index

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only

SECRET = "s3cr3t-pw"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hardening")
    blob = base / "blob"
    blob.write_bytes(os.urandom(300_000))
    store = base / "store"
    run_cli(["make", "-m", "16:32:64", "-s", store, base / "x.caibx", blob])
    return {"base": base, "blob": blob, "store": store, "index": base / "x.caibx"}


def chunk_ids(data: dict[str, Path]) -> list[bytes]:
    return [c.id for c in parse_index(data["index"].read_bytes()).chunks]


def chunk_path(chunk_id: bytes) -> str:
    h = chunk_id.hex()
    return f"{h[:4]}/{h}.cacnk"


def cli(args: list[str | os.PathLike[str]], env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "desync_ref", *map(str, args)], capture_output=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def config_file(tmp_path: Path, entries: dict[str, dict[str, object]]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"store-options": entries}))
    return path


# --- 6: --ca-cert replaces the system trust store ------------------------------------------

def test_ca_cert_pins_instead_of_adding(data: dict[str, Path], tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    assert certs.other_ca is not None
    # OpenSSL's system trust store, as Python's default context loads it: only CA A.
    system = {"SSL_CERT_FILE": str(certs.ca), "SSL_CERT_DIR": str(tmp_path / "no-dir")}
    args = ["-s", data["store"], "--cert", certs.server_cert, "--key", certs.server_key]
    with Server("chunk-server", args, tls=True) as srv:
        trusted = tmp_path / "trusted"
        proc = cli(["extract", "-s", srv.url, data["index"], trusted], env=system)
        assert proc.returncode == 0, proc.stderr
        assert trusted.read_bytes() == data["blob"].read_bytes()
        # pinned to CA B: the server's CA A is in the system store, and still refused
        pinned = tmp_path / "pinned"
        err = assert_clean_failure(cli(["extract", "-e", "1", "--ca-cert", certs.other_ca, "-s", srv.url,
                                        data["index"], pinned], env=system))
        assert "certificate" in err.lower(), err
        assert not pinned.exists()
        # pinned to CA A itself: accepted with an empty system store
        empty = {"SSL_CERT_FILE": str(certs.other_ca), "SSL_CERT_DIR": str(tmp_path / "no-dir")}
        proc = cli(["extract", "--ca-cert", certs.ca, "-s", srv.url, data["index"], tmp_path / "a"], env=empty)
        assert proc.returncode == 0, proc.stderr


# --- 7: PUTs verified by default; a valid chunk is never replaced -------------------------

def test_put_is_verified_and_keeps_valid_chunks(data: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "target"
    shutil.copytree(data["store"], target)
    ids = chunk_ids(data)
    first, second, third = ids[0], ids[1], ids[2]
    good = {cid: (data["store"] / chunk_path(cid)).read_bytes() for cid in (first, second, third)}
    http = urllib3.PoolManager(retries=False)
    with Server("chunk-server", ["-s", target, "-w"]) as srv:
        r = http.request("PUT", srv.url + chunk_path(first), body=b"not a chunk")
        assert r.status == 400
        r = http.request("PUT", srv.url + chunk_path(first), body=compress(b"other data"))
        assert r.status == 400
        assert (target / chunk_path(first)).read_bytes() == good[first]
        # a missing chunk's right bytes are taken
        (target / chunk_path(second)).unlink()
        assert http.request("PUT", srv.url + chunk_path(second), body=good[second]).status == 200
        assert (target / chunk_path(second)).read_bytes() == good[second]
    with Server("chunk-server", ["-s", target, "-w", "--skip-verify-write"]) as srv:
        # unverified writes (desync's default) still cannot replace a valid chunk
        assert http.request("PUT", srv.url + chunk_path(first), body=b"not a chunk").status == 200
        assert (target / chunk_path(first)).read_bytes() == good[first]
        # a corrupt chunk in the store is replaced
        (target / chunk_path(third)).write_bytes(b"rotten")
        assert http.request("PUT", srv.url + chunk_path(third), body=good[third]).status == 200
        assert (target / chunk_path(third)).read_bytes() == good[third]
    out = tmp_path / "out"
    run_cli(["extract", "-s", target, data["index"], out])
    assert out.read_bytes() == data["blob"].read_bytes()


def test_uncompressed_put_is_verified(data: dict[str, Path], tmp_path: Path) -> None:
    """``-u``: PUT bodies are plain chunk bytes, checked against the id all the same."""
    target = tmp_path / "target"
    shutil.copytree(data["store"], target)
    first = chunk_ids(data)[0]
    good = (data["store"] / chunk_path(first)).read_bytes()
    plain_path = chunk_path(first).removesuffix(".cacnk")
    (target / chunk_path(first)).unlink()
    http = urllib3.PoolManager(retries=False)
    with Server("chunk-server", ["-s", target, "-w", "-u"]) as srv:
        assert http.request("PUT", srv.url + plain_path, body=b"other data").status == 400
        assert not (target / chunk_path(first)).exists()
        assert http.request("PUT", srv.url + plain_path, body=decompress(good)).status == 200
    assert decompress((target / chunk_path(first)).read_bytes()) == decompress(good)


# --- 8: credentials in a URL: sent as Basic auth, never shown ------------------------------

def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _fail_500(h: http.server.BaseHTTPRequestHandler) -> None:
    h.send_response(500)
    body = f"upstream says no to http://alice:{SECRET}@elsewhere/".encode()
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def test_url_credentials_are_sent(data: dict[str, Path], tmp_path: Path) -> None:
    store = data["store"]
    with Scripted(lambda h: send_file(h, store, body=h.command != "HEAD")) as up:
        url = f"http://alice:{SECRET}%40x@127.0.0.1:{up.port}/"
        out = tmp_path / "out"
        run_cli(["extract", "-s", url, data["index"], out])
        assert out.read_bytes() == data["blob"].read_bytes()
        assert up.seen
        assert {s.headers.get("Authorization") for s in up.seen} == {_basic("alice", SECRET + "@x")}


def test_url_credentials_never_shown(data: dict[str, Path], tmp_path: Path) -> None:
    with Scripted(_fail_500) as bad:
        cred = f"http://alice:{SECRET}@127.0.0.1:{bad.port}/"
        errors = [
            cli(["extract", "-e", "1", "-s", cred, data["index"], tmp_path / "o1"]),
            cli(["extract", "-e", "1", "-s", data["store"], cred + "x.caibx", tmp_path / "o2"]),
            cli(["extract", "-e", "1", "-s", f"http://alice:{SECRET}@127.0.0.1:1/", data["index"],
                 tmp_path / "o3"]),
            cli(["list-chunks", f"http://alice:{SECRET}@127.0.0.1:{bad.port}/"]),
        ]
        with Scripted(lambda h: send_file(h, data["base"] / "nowhere")) as empty:
            errors.append(cli(["extract", "-e", "1", "-s", f"http://alice:{SECRET}@127.0.0.1:{empty.port}/",
                               data["index"], tmp_path / "o4"]))
            assert "not found in http://alice:xxxxx@127.0.0.1" in errors[-1].stderr.decode()
        for proc in errors:
            err = assert_clean_failure(proc)
            assert SECRET not in err, err
        # the server's log and warnings
        with Server("chunk-server", ["-s", cred, "--log", "-", "-e", "1"]) as srv:
            r = urllib3.PoolManager(retries=False).request("GET", srv.url + chunk_path(chunk_ids(data)[0]))
            assert r.status == 500
            _, log = srv.stop()
        assert "failed to retrieve chunk" in log and SECRET not in log, log
    # config shows the entry redacted; config -w keeps the real key in the file
    cfg = config_file(tmp_path, {f"https://alice:{SECRET}@example.invalid/store": {"n": 4}})
    shown = run_cli(["--config", cfg, "config"]).stdout.decode()
    assert SECRET not in shown and "https://alice:xxxxx@example.invalid/store" in shown, shown
    run_cli(["--config", cfg, "config", "-w"])
    assert f"https://alice:{SECRET}@example.invalid/store" in cfg.read_text()


# --- 9: redirects -----------------------------------------------------------------------

def test_redirects_followed_without_credentials_to_another_host(data: dict[str, Path], tmp_path: Path) -> None:
    store = data["store"]
    (tmp_path / "real").symlink_to(store.parent)

    def same_host(h: http.server.BaseHTTPRequestHandler) -> None:
        if h.path.startswith("/real/"):
            send_file(h, tmp_path, body=h.command != "HEAD")  # /real/store/<x> is store/<x>
            return
        h.send_response(307)
        h.send_header("Location", "/real/" + store.name + h.path)
        h.send_header("Content-Length", "0")
        h.end_headers()

    with Scripted(lambda h: send_file(h, store, body=h.command != "HEAD")) as target:
        def elsewhere(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(302)
            h.send_header("Location", f"http://localhost:{target.port}{h.path}")
            h.send_header("Content-Length", "0")
            h.end_headers()

        with Scripted(elsewhere) as front:
            out = tmp_path / "out"
            run_cli(["extract", "-s", f"http://alice:{SECRET}@127.0.0.1:{front.port}/", data["index"], out])
            assert out.read_bytes() == data["blob"].read_bytes()
            assert front.seen and all(s.headers.get("Authorization") for s in front.seen)
            assert target.seen and not any("Authorization" in s.headers for s in target.seen)
    with Scripted(same_host) as one:
        out = tmp_path / "out2"
        run_cli(["extract", "-s", f"http://alice:{SECRET}@127.0.0.1:{one.port}/", data["index"], out])
        assert out.read_bytes() == data["blob"].read_bytes()
        real = [s for s in one.seen if s.path.startswith("/real/")]
        assert real and all(s.headers.get("Authorization") == _basic("alice", SECRET) for s in real)

    def loop(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", h.path)
        h.send_header("Content-Length", "0")
        h.end_headers()

    with Scripted(loop) as circle:
        err = assert_clean_failure(cli(["extract", "-e", "1", "-n", "1", "-s", circle.url, data["index"],
                                        tmp_path / "o"]))
        assert "redirects" in err
        assert len(circle.seen) == 11  # the request and its 10 redirects (Go's limit)


# --- 10: body caps and one deadline per request -----------------------------------------

def _endless(h: http.server.BaseHTTPRequestHandler) -> None:
    """200 with no length, then zeros until the client hangs up (at most 300 MiB)."""
    h.send_response(200)
    h.send_header("Connection", "close")
    h.end_headers()
    block = bytes(1 << 20)
    for _ in range(300):
        h.wfile.write(block)


def _huge_length(h: http.server.BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", str(10 << 30))
    h.end_headers()
    h.wfile.write(b"\0" * 1000)
    time.sleep(2)


@pytest.mark.parametrize("respond", [_endless, _huge_length], ids=["endless", "declared-huge"])
def test_response_bodies_are_capped(data: dict[str, Path], tmp_path: Path, respond: object) -> None:
    with Scripted(respond) as up:  # type: ignore[arg-type]
        out = tmp_path / "out"
        err = assert_clean_failure(cli(["extract", "-e", "1", "-n", "1", "-s", up.url, data["index"], out],
                                       timeout=90))
        assert "response larger than" in err, err
        assert not out.exists()
        err = assert_clean_failure(cli(["info", up.url + "x.caibx"], timeout=90))
        assert f"response larger than {256 * 1024 * 1024} bytes" in err, err


def test_deadline_covers_the_whole_body(data: dict[str, Path], tmp_path: Path) -> None:
    def drip(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(600):  # a byte every 0.1 s: never a read timeout, never done
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.1)

    with Scripted(drip) as up:
        cfg = config_file(tmp_path, {up.url: {"timeout": 1_500_000_000, "error-retry": 2,
                                              "error-retry-base-interval": 10_000_000}})
        out = tmp_path / "out"
        err = assert_clean_failure(cli(["--config", cfg, "extract", "-n", "1", "-s", up.url, data["index"], out],
                                       timeout=50))
        assert "timed out after 1.5 s" in err, err
        assert not out.exists()
        assert len(up.seen) == 2  # tried as configured


# --- desync's server timeouts ----------------------------------------------------------

def test_server_times_out_slow_headers_and_idle_connections() -> None:
    from aiohttp import web

    from desync_ref.server.base import make_web_server

    async def ok(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text="ok")

    ready = threading.Event()
    stop: list[asyncio.AbstractEventLoop] = []
    port: list[int] = []

    def serve() -> None:
        async def main() -> None:
            runner = web.ServerRunner(make_web_server(ok, header_timeout=0.5, idle_timeout=1.0),
                                      handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port.append(runner.addresses[0][1])
            stop.append(asyncio.get_running_loop())
            ready.set()
            try:
                await asyncio.Event().wait()
            finally:
                await runner.cleanup()

        with pytest.raises(asyncio.CancelledError):
            asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)

    def closed_within(sock: socket.socket, seconds: float) -> bool:
        sock.settimeout(seconds)
        try:
            while sock.recv(65536):
                pass
        except TimeoutError:
            return False
        return True

    try:
        with socket.create_connection(("127.0.0.1", port[0])) as slow:
            slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            assert closed_within(slow, 5)
        with socket.create_connection(("127.0.0.1", port[0])) as silent:
            assert closed_within(silent, 5)
        with socket.create_connection(("127.0.0.1", port[0])) as idle:
            idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            idle.settimeout(5)
            assert idle.recv(65536).startswith(b"HTTP/1.1 200")
            assert closed_within(idle, 5)  # idle past 1 s after the answer
    finally:
        loop = stop[0]
        for task in asyncio.all_tasks(loop):
            loop.call_soon_threadsafe(task.cancel)
        thread.join(10)


# --- 12: config -w ----------------------------------------------------------------------

def test_config_write_uses_a_fresh_temp_file(tmp_path: Path) -> None:
    cfg = config_file(tmp_path, {"https://example.invalid/store": {"http-auth": "Bearer secret"}})
    os.chmod(cfg, 0o600)
    stale = tmp_path / ".config.json.tmp"  # the fixed temp name of old, left world-readable
    stale.write_text("stale")
    os.chmod(stale, 0o644)
    run_cli(["--config", cfg, "config", "-w"])
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert "Bearer secret" in cfg.read_text()
    assert stale.read_text() == "stale"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".config.json.tmp", "config.json"]


def test_config_write_removes_its_temp_file_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from desync_ref import config as config_mod

    cfg = config_file(tmp_path, {"https://example.invalid/store": {"n": 2}})
    loaded = config_mod.load_config(cfg)

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(config_mod.os, "replace", failing_replace)
    with pytest.raises(OSError):
        config_mod.write_config(loaded)
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
