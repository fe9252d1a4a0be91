"""chunk-server against our own HTTP client and raw urllib3: status codes, TLS, auth, writes."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import urllib3
from conftest import assert_clean_failure, run_cli
from httputil import Certs, Server, Upstream, free_port, make_certs, served, wait_for

from desync_ref.formats.chunk import compress, decompress
from desync_ref.formats.index import parse_index

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 1.5 MB blob chunked into a local store (small chunks: many requests)."""
    base = tmp_path_factory.mktemp("chunkdata")
    blob = base / "blob"
    blob.write_bytes(os.urandom(1_500_000))
    store = base / "store"
    run_cli(["make", "-m", "16:32:64", "-s", store, base / "x.caibx", blob])
    return {"base": base, "blob": blob, "store": store, "index": base / "x.caibx"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def first_chunk(data: dict[str, Path]) -> bytes:
    return parse_index(data["index"].read_bytes()).chunks[0].id


def chunk_path(chunk_id: bytes, ext: str = ".cacnk") -> str:
    h = chunk_id.hex()
    return f"{h[:4]}/{h}{ext}"


def test_extract_over_http(data: dict[str, Path], tmp_path: Path) -> None:
    with Server("chunk-server", ["-s", data["store"]]) as srv:
        out = tmp_path / "out"
        run_cli(["extract", "-s", srv.url, data["index"], out])
        assert out.read_bytes() == data["blob"].read_bytes()
        # the same through a URL without a trailing slash and a concurrency of 1
        run_cli(["extract", "-n", "1", "-s", srv.url.rstrip("/"), data["index"], tmp_path / "out2"])
        assert (tmp_path / "out2").read_bytes() == data["blob"].read_bytes()


def test_status_codes(data: dict[str, Path]) -> None:
    cid = first_chunk(data)
    with Server("chunk-server", ["-s", data["store"]]) as srv:
        http = urllib3.PoolManager(retries=False)
        r = http.request("GET", srv.url + chunk_path(cid))
        assert r.status == 200
        assert r.data == (data["store"] / chunk_path(cid)).read_bytes()
        assert http.request("HEAD", srv.url + chunk_path(cid)).status == 200
        missing = bytes(32)
        r = http.request("GET", srv.url + chunk_path(missing))
        assert r.status == 404 and f"chunk {missing.hex()} not found".encode() in r.data
        assert http.request("HEAD", srv.url + chunk_path(missing)).status == 404
        for bad in ("nonsense", chunk_path(cid, ".cacnk.x"), chunk_path(cid, ""), "abcd/abcd.cacnk",
                    f"ffff/{cid.hex()}.cacnk", "zzzz/" + "z" * 64 + ".cacnk"):
            assert http.request("GET", srv.url + bad).status == 400, bad
        assert http.request("DELETE", srv.url + chunk_path(cid)).status == 405
        r = http.request("PUT", srv.url + chunk_path(cid), body=b"x")
        assert r.status == 400 and b"not enabled" in r.data
        # keep-alive: many requests over one connection
        pool = urllib3.HTTPConnectionPool("127.0.0.1", srv.port, maxsize=1, block=True)
        for _ in range(50):
            assert pool.request("HEAD", "/" + chunk_path(cid)).status == 200
        assert pool.num_connections == 1


def test_uncompressed_serving(data: dict[str, Path], tmp_path: Path) -> None:
    cid = first_chunk(data)
    with Server("chunk-server", ["-s", data["store"], "-u"]) as srv:
        http = urllib3.PoolManager(retries=False)
        r = http.request("GET", srv.url + chunk_path(cid, ""))
        assert r.status == 200
        assert r.data == decompress((data["store"] / chunk_path(cid)).read_bytes())
        assert http.request("GET", srv.url + chunk_path(cid)).status == 400  # .cacnk refused under -u
        out = tmp_path / "out"
        run_cli(["extract", "-u", "-s", srv.url, data["index"], out])
        assert out.read_bytes() == data["blob"].read_bytes()


def test_several_listeners(data: dict[str, Path]) -> None:
    cid = first_chunk(data)
    extra = free_port()
    with Server("chunk-server", ["-s", data["store"]], extra_ports=[extra]) as srv:
        http = urllib3.PoolManager(retries=False)
        for port in (srv.port, extra):
            assert http.request("HEAD", f"http://127.0.0.1:{port}/{chunk_path(cid)}").status == 200


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stops_cleanly(data: dict[str, Path], sig: int) -> None:
    srv = Server("chunk-server", ["-s", data["store"], "--workers", "1"])
    code, err = srv.stop(sig)
    assert code == 128 + sig, err  # 130 for SIGINT, 143 for SIGTERM (issue 16)
    assert "Traceback" not in err


def test_authorization(data: dict[str, Path], tmp_path: Path) -> None:
    cid = first_chunk(data)
    with Server("chunk-server", ["-s", data["store"], "--authorization", "Bearer s3cret"]) as srv:
        http = urllib3.PoolManager(retries=False)
        assert http.request("GET", srv.url + chunk_path(cid)).status == 401
        assert http.request("GET", srv.url + chunk_path(cid), headers={"Authorization": "Bearer nope"}).status == 401
        assert http.request("GET", srv.url + chunk_path(cid), headers={"Authorization": "Bearer s3cret"}).status == 200
        # our client without credentials: one line, non-zero, names the 401
        err = assert_clean_failure(run_cli(["extract", "-s", srv.url, data["index"], tmp_path / "o"], check=False))
        assert "401" in err
        assert not (tmp_path / "o").exists()
        # with the credentials from the config file
        cfg = tmp_path / "config.json"
        cfg.write_text(json.dumps({"store-options": {srv.url: {"http-auth": "Bearer s3cret"}}}))
        run_cli(["--config", cfg, "extract", "-s", srv.url, data["index"], tmp_path / "o"])
        assert (tmp_path / "o").read_bytes() == data["blob"].read_bytes()
    with Server("chunk-server", ["-s", data["store"]], env={"DESYNC_HTTP_AUTH": "Token t"}) as srv:
        assert urllib3.PoolManager(retries=False).request("HEAD", srv.url + chunk_path(cid)).status == 401


def test_tls(data: dict[str, Path], certs: Certs, tmp_path: Path) -> None:
    args = ["-s", data["store"], "--cert", certs.server_cert, "--key", certs.server_key]
    with Server("chunk-server", args, tls=True) as srv:
        out = tmp_path / "out"
        run_cli(["extract", "--ca-cert", certs.ca, "-s", srv.url, data["index"], out])
        assert out.read_bytes() == data["blob"].read_bytes()
        # not trusted: a clean failure, and no retries for a certificate error
        err = assert_clean_failure(run_cli(["extract", "-s", srv.url, data["index"], tmp_path / "o2"], check=False))
        assert "certificate" in err.lower()
        # -t trusts anything
        run_cli(["extract", "-t", "-s", srv.url, data["index"], tmp_path / "o3"])
        assert (tmp_path / "o3").read_bytes() == data["blob"].read_bytes()
        # a CA file that does not exist
        assert_clean_failure(run_cli(["extract", "--ca-cert", tmp_path / "nope.pem", "-s", srv.url,
                                      data["index"], tmp_path / "o4"], check=False))


def test_mutual_tls(data: dict[str, Path], certs: Certs, tmp_path: Path) -> None:
    args = ["-s", data["store"], "--cert", certs.server_cert, "--key", certs.server_key,
            "--mutual-tls", "--client-ca", certs.ca]
    with Server("chunk-server", args, tls=True) as srv:
        good = ["--ca-cert", certs.ca, "--client-cert", certs.client_cert, "--client-key", certs.client_key]
        run_cli(["extract", *good, "-s", srv.url, data["index"], tmp_path / "ok"])
        assert (tmp_path / "ok").read_bytes() == data["blob"].read_bytes()
        for extra in ([], ["--client-cert", certs.other_client_cert, "--client-key", certs.other_client_key]):
            proc = run_cli(["extract", "-e", "1", "--ca-cert", certs.ca, *extra, "-s", srv.url,
                            data["index"], tmp_path / "bad"], check=False)
            assert_clean_failure(proc)
        err = assert_clean_failure(run_cli(["extract", "--ca-cert", certs.ca, "--client-cert", certs.client_cert,
                                            "-s", srv.url, data["index"], tmp_path / "bad"], check=False))
        assert "together" in err
    # server-side option checks
    for bad in (["--mutual-tls"], ["--cert", certs.server_cert],
                ["--cert", certs.server_cert, "--key", certs.server_key, "--mutual-tls"]):
        proc = run_cli(["chunk-server", "-s", data["store"], "-l", "127.0.0.1:0", *bad], check=False)
        assert_clean_failure(proc)


def test_make_into_writable_server(data: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    with Server("chunk-server", ["-s", target, "-w", "--skip-verify-write=false"]) as srv:
        run_cli(["make", "-m", "16:32:64", "-s", srv.url, tmp_path / "y.caibx", data["blob"]])
        assert (tmp_path / "y.caibx").read_bytes() == data["index"].read_bytes()
        ids = {c.id for c in parse_index(data["index"].read_bytes()).chunks}
        stored = {p.name.removesuffix(".cacnk") for p in target.glob("*/*.cacnk")}
        assert stored == {i.hex() for i in ids}
        assert not [p for p in target.rglob("*") if p.name.startswith(".tmp")]
        out = tmp_path / "out"
        run_cli(["extract", "-s", srv.url, tmp_path / "y.caibx", out])
        assert out.read_bytes() == data["blob"].read_bytes()
        # a body that does not hash to its id: 400, and nothing stored under that name
        http = urllib3.PoolManager(retries=False)
        wrong = bytes(range(32))
        r = http.request("PUT", srv.url + chunk_path(wrong), body=compress(b"hello"))
        assert r.status == 400
        assert http.request("PUT", srv.url + chunk_path(wrong), body=b"not zstd").status == 400
        assert not (target / chunk_path(wrong)).exists()
    # -w needs exactly one store and no cache
    assert_clean_failure(run_cli(["chunk-server", "-w", "-s", target, "-s", data["store"], "-l", "127.0.0.1:0"],
                                 check=False))


def test_client_errors_are_one_line(data: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    err = assert_clean_failure(run_cli(["extract", "-e", "2", "-b", "10ms", "-s", f"http://127.0.0.1:{port}/",
                                        data["index"], tmp_path / "o"], check=False))
    assert "refused" in err.lower()
    assert_clean_failure(run_cli(["extract", "-s", "http://", data["index"], tmp_path / "o"], check=False))
    assert_clean_failure(run_cli(["extract", "-b", "soon", "-s", "http://127.0.0.1:1/", data["index"],
                                  tmp_path / "o"], check=False))
    # an upstream that fails makes the chunk-server answer 500, which the client reports
    with Server("chunk-server", ["-e", "1", "-s", f"http://127.0.0.1:{port}/"]) as srv:
        err = assert_clean_failure(run_cli(["extract", "-e", "2", "-b", "10ms", "-s", srv.url, data["index"],
                                            tmp_path / "o"], check=False))
        assert "500" in err
        _, server_err = srv.stop()
    assert "failed to retrieve chunk" in server_err and "Traceback" not in server_err


def test_missing_chunk_falls_through_router(data: dict[str, Path], tmp_path: Path) -> None:
    """``-s a -s b``: chunks missing in the first store come from the second."""
    half = tmp_path / "half"
    shutil.copytree(data["store"], half)
    removed = 0
    for i, path in enumerate(sorted(half.glob("*/*.cacnk"))):
        if i % 2:
            path.unlink()
            removed += 1
    assert removed
    with Server("chunk-server", ["-s", half]) as a, Server("chunk-server", ["-s", data["store"]]) as b:
        out = tmp_path / "out"
        run_cli(["extract", "-s", a.url, "-s", b.url, data["index"], out])
        assert out.read_bytes() == data["blob"].read_bytes()
        # alone, the first one is missing chunks: a clean failure
        err = assert_clean_failure(run_cli(["extract", "-s", a.url, data["index"], tmp_path / "o2"], check=False))
        assert "not found" in err


def test_cache_repair(data: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cid = first_chunk(data)
    with Server("chunk-server", ["-s", data["store"]]) as srv:
        run_cli(["extract", "-s", srv.url, "-c", cache, data["index"], tmp_path / "o1"])
        good = (cache / chunk_path(cid)).read_bytes()
        assert good == (data["store"] / chunk_path(cid)).read_bytes()
        (cache / chunk_path(cid)).write_bytes(compress(b"corrupted chunk"))
        out = tmp_path / "o2"
        run_cli(["extract", "-s", srv.url, "-c", cache, data["index"], out])
        assert out.read_bytes() == data["blob"].read_bytes()
        assert (cache / chunk_path(cid)).read_bytes() == good  # replaced from the source
        # without repair the bad cached copy is an error
        (cache / chunk_path(cid)).write_bytes(compress(b"corrupted chunk"))
        assert_clean_failure(run_cli(["extract", "-r=false", "-s", srv.url, "-c", cache, data["index"],
                                      tmp_path / "o3"], check=False))


def test_failover_group_first_stopped_mid_extract(data: dict[str, Path], tmp_path: Path) -> None:
    """``a|b``: a serves the first chunks, dies with a request in flight, b serves the rest.

    a's store is an upstream the test holds after 5 chunks, so a is killed at a known
    point of the extract; the servers' logs then show who served what.
    """
    wanted = {"/" + chunk_path(c.id) for c in parse_index(data["index"].read_bytes()).chunks}
    with Upstream(data["store"], hold_from=5) as upstream:
        a = Server("chunk-server", ["-s", upstream.url, "--log", "-"])
        b = Server("chunk-server", ["-s", data["store"], "--log", "-"])
        try:
            out = tmp_path / "out"
            proc = subprocess.Popen([sys.executable, "-m", "desync_ref", "extract", "-n", "1", "-e", "1",
                                     "-s", f"{a.url}|{b.url}", str(data["index"]), str(out)],
                                    stderr=subprocess.PIPE)
            # a has served 5 chunks and waits for the 6th from its upstream
            assert upstream.wait_hits(6)
            assert len(served(a.stderr())) == 5
            assert served(b.stderr()) == []  # b is not used while a answers
            assert proc.poll() is None
            a.stop(signal.SIGKILL)
            upstream.release.set()
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode()
            assert out.read_bytes() == data["blob"].read_bytes()
            from_a, from_b = served(a.stderr()), served(b.stderr())
            assert len(from_a) == 5 and from_b  # the failover happened mid-extract
            assert not set(from_a) & set(from_b)
            assert set(from_a) | set(from_b) == wanted
        finally:
            a.stop()
            b.stop()


def test_failover_does_not_skip_missing(data: dict[str, Path], tmp_path: Path) -> None:
    """A member that answers 404 is not a failure: the group reports the chunk missing."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with Server("chunk-server", ["-s", empty]) as a, Server("chunk-server", ["-s", data["store"]]) as b:
        err = assert_clean_failure(run_cli(["extract", "-s", f"{a.url}|{b.url}", data["index"],
                                            tmp_path / "o"], check=False))
        assert "not found" in err


def _tcp_queues(port: int) -> dict[tuple[int, int], tuple[int, int]]:
    """Loopback TCP sockets from /proc/net/tcp: (local port, remote port) -> (tx, rx) queue bytes."""
    found: dict[tuple[int, int], tuple[int, int]] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
        if state != "01":  # ESTABLISHED
            continue
        ports = int(local.split(":")[1], 16), int(remote.split(":")[1], 16)
        if port in ports:
            tx, rx = (int(q, 16) for q in queues.split(":"))
            found[ports] = (tx, rx)
    return found


def test_concurrent_requests_fetch_upstream_once(data: dict[str, Path]) -> None:
    """16 GETs of one chunk, all waiting at the chunk-server, cause a single upstream GET.

    The upstream holds its first request until every client request has been delivered
    to the chunk-server and read by it (its side of each connection has nothing left
    unread in /proc/net/tcp), so all 16 are in flight together, whatever the timing.
    """
    cid = first_chunk(data)
    payload = (data["store"] / chunk_path(cid)).read_bytes()
    clients = 16
    with Upstream(data["store"], hold_from=0) as upstream, \
            Server("chunk-server", ["-s", upstream.url]) as srv:
        request = (f"GET /{chunk_path(cid)} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
                   f"Connection: close\r\n\r\n").encode()
        socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=30) for _ in range(clients)]
        try:
            for sock in socks:
                sock.sendall(request)
            ports = [sock.getsockname()[1] for sock in socks]

            def all_read() -> bool:
                queues = _tcp_queues(srv.port)
                return all(queues.get((p, srv.port), (1, 1))[0] == 0
                           and queues.get((srv.port, p), (1, 1))[1] == 0 for p in ports)

            assert wait_for(all_read)
            assert upstream.wait_hits(1)
            upstream.release.set()
            bodies = []
            for sock in socks:
                response = http.client.HTTPResponse(sock)
                response.begin()
                bodies.append((response.status, response.read()))
        finally:
            for sock in socks:
                sock.close()
        assert bodies == [(200, payload)] * clients
        assert upstream.hits == ["/" + chunk_path(cid)]
