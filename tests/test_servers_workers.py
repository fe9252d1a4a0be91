"""chunk-server with worker processes (spec/http.md "Worker processes"): every worker
answers with the store's bytes, a large chunk that does not fit the socket at once
arrives whole, signals stop or reload every worker, a dead worker is replaced, and no
process outlives the server; index-server's exit statuses."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import urllib3
from conftest import run_cli
from httputil import Server, wait_for

from desync_ref.formats.chunk import compress, digest_function
from desync_ref.formats.index import parse_index
from desync_ref.stores import Chunk
from desync_ref.stores.local import LocalStore

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only

WORKERS = ["--workers", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("workers")
    blob = base / "blob"
    blob.write_bytes(os.urandom(400_000))
    store = base / "store"
    run_cli(["make", "-m", "16:32:64", "-s", store, base / "x.caibx", blob])
    return {"base": base, "store": store, "index": base / "x.caibx"}


def paths(data: dict[str, Path]) -> list[str]:
    ids = [c.id.hex() for c in parse_index(data["index"].read_bytes()).chunks]
    return [f"{h[:4]}/{h}.cacnk" for h in dict.fromkeys(ids)]


def workers_of(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def established_inodes(port: int) -> set[int]:
    """Inodes of the server's side of established loopback connections to ``port``."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[1].split(":")[1], 16) == port:
            found.add(int(fields[9]))
    return found


def test_every_worker_serves_the_stores_bytes(data: dict[str, Path], tmp_path: Path) -> None:
    """20 connections, each kept open after its requests: both workers hold some of them,
    and every answer is the store's file, a 404 or a HEAD status; the shared request log
    has one whole line per request."""
    log = tmp_path / "requests.log"
    names = paths(data)
    missing = "0000/" + "0" * 64 + ".cacnk"
    with Server("chunk-server", ["-s", data["store"], *WORKERS, "--log", log]) as srv:
        assert wait_for(lambda: len(workers_of(srv.proc.pid)) == 2)
        pools = [urllib3.HTTPConnectionPool("127.0.0.1", srv.port, maxsize=1, retries=False) for _ in range(20)]
        requests = 0
        for i, pool in enumerate(pools):
            for name in names[i % 3::3]:
                r = pool.request("GET", "/" + name)
                assert r.status == 200 and r.data == (data["store"] / name).read_bytes(), name
                requests += 1
            assert pool.request("HEAD", "/" + names[i % len(names)]).status == 200
            r = pool.request("GET", "/" + missing)
            assert r.status == 404 and f"chunk {'0' * 64} not found".encode() in r.data
            assert pool.request("HEAD", "/" + missing).status == 404
            requests += 3
        held = established_inodes(srv.port)
        for worker in workers_of(srv.proc.pid):
            assert socket_inodes(worker) & held, f"worker {worker} holds none of the connections"
        for pool in pools:
            pool.close()
        code, err = srv.stop()
    assert code == 143 and "Traceback" not in err
    lines = log.read_text().splitlines()
    assert len(lines) == requests
    assert all(line.endswith(("Response: 200", "Response: 404")) and "Client: 127.0.0.1" in line for line in lines)


def test_large_chunk_that_fills_the_socket(tmp_path: Path) -> None:
    """An 8 MB chunk to a client that reads only after a pause: sendfile stops when the
    socket buffers are full and the rest goes through the transport, in order."""
    store = tmp_path / "store"
    data = os.urandom(8_000_000)
    cid = digest_function("sha512-256")(data)
    LocalStore(store, create=True).store_chunk(Chunk(cid, data=data, compressed=compress(data)))
    name = f"/{cid.hex()[:4]}/{cid.hex()}.cacnk"
    stored = (store / name.lstrip("/")).read_bytes()
    with Server("chunk-server", ["-s", store, *WORKERS]) as srv:
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
                sock.sendall(f"GET {name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                time.sleep(0.3)
                received = bytearray()
                while part := sock.recv(1 << 20):
                    received += part
            head, _, body = bytes(received).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert f"Content-Length: {len(stored)}".encode() in head
            assert body == stored


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_every_worker(data: dict[str, Path], tmp_path: Path, sig: int) -> None:
    log = tmp_path / "requests.log"
    name = paths(data)[0]
    srv = Server("chunk-server", ["-s", data["store"], *WORKERS, "--log", log])
    try:
        assert wait_for(lambda: len(workers_of(srv.proc.pid)) == 2)
        workers = workers_of(srv.proc.pid)
        http = urllib3.PoolManager(retries=False)
        for _ in range(10):
            assert http.request("GET", srv.url + name).status == 200
    finally:
        code, err = srv.stop(sig)
    assert code == 128 + sig, err
    assert "Traceback" not in err
    assert not [pid for pid in workers if alive(pid)]
    assert len(log.read_text().splitlines()) == 10  # every worker's lines written out


def test_sighup_reaches_every_worker(data: dict[str, Path], tmp_path: Path) -> None:
    """The store file names an empty store, then the full one: after SIGHUP every worker
    serves from the new store (requests over new connections reach both)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    store_file = tmp_path / "stores.json"
    store_file.write_text(json.dumps({"stores": [str(empty)]}))
    name = paths(data)[0]
    with Server("chunk-server", ["--store-file", store_file, *WORKERS]) as srv:
        assert wait_for(lambda: len(workers_of(srv.proc.pid)) == 2)
        http = urllib3.PoolManager(retries=False)
        assert http.request("GET", srv.url + name).status == 404
        store_file.write_text(json.dumps({"stores": [str(data["store"])]}))
        srv.send(signal.SIGHUP)
        assert wait_for(lambda: srv.stderr().count("reloaded stores") == 2)
        for _ in range(20):
            pool = urllib3.HTTPConnectionPool("127.0.0.1", srv.port, maxsize=1, retries=False)
            r = pool.request("GET", "/" + name)
            assert r.status == 200 and r.data == (data["store"] / name).read_bytes()
            pool.close()
        assert len(workers_of(srv.proc.pid)) == 2  # SIGHUP ended no worker
        code, err = srv.stop()
    assert code == 143 and "Traceback" not in err


def test_dead_worker_is_replaced(data: dict[str, Path]) -> None:
    name = paths(data)[0]
    with Server("chunk-server", ["-s", data["store"], *WORKERS]) as srv:
        assert wait_for(lambda: len(workers_of(srv.proc.pid)) == 2)
        time.sleep(1.2)  # past the start-up time in which a death stops the server
        first, second = workers_of(srv.proc.pid)
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: "ended (killed by signal 9), starting another" in srv.stderr())
        assert wait_for(lambda: len(workers_of(srv.proc.pid)) == 2)
        assert first not in workers_of(srv.proc.pid) and second in workers_of(srv.proc.pid)
        http = urllib3.PoolManager(retries=False)
        for _ in range(20):
            pool = urllib3.HTTPConnectionPool("127.0.0.1", srv.port, maxsize=1, retries=False)
            assert pool.request("GET", "/" + name).status == 200
            pool.close()
        assert http.request("HEAD", srv.url + name).status == 200
        workers = workers_of(srv.proc.pid)
        code, err = srv.stop()
    assert code == 143 and "Traceback" not in err
    assert not [pid for pid in workers if alive(pid)]


def test_workers_end_with_a_killed_parent(data: dict[str, Path]) -> None:
    srv = Server("chunk-server", ["-s", data["store"], *WORKERS])
    try:
        assert wait_for(lambda: len(workers_of(srv.proc.pid)) == 2)
        workers = workers_of(srv.proc.pid)
    finally:
        srv.stop(signal.SIGKILL)
    assert wait_for(lambda: not [pid for pid in workers if alive(pid)])


def test_workers_flag_checked(data: dict[str, Path]) -> None:
    proc = run_cli(["chunk-server", "-s", data["store"], "--workers", "0", "-l", "127.0.0.1:0"], check=False)
    assert proc.returncode == 2
    assert proc.stderr.decode().strip().splitlines() == ["desync-ref: --workers must be at least 1"]


def test_address_in_use_reported(data: dict[str, Path]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli(["chunk-server", "-s", data["store"], *WORKERS, "-l", f"127.0.0.1:{port}"], check=False)
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_index_server_exit_status(tmp_path: Path, sig: int) -> None:
    srv = Server("index-server", ["-s", tmp_path])
    code, err = srv.stop(sig)
    assert code == 128 + sig, err
    assert "Traceback" not in err
