"""What every remote backend must do alike, each against its real server: S3 (Ceph RGW),
GCS (fake-gcs-server), OCI (docker-registry) and SFTP (OpenSSH).

* Chunk encryption: the store options come from a config file, as a user sets them. What
  the server holds is read with the server's own API, not through the store under test:
  every stored name carries the encrypted extension (spec/store.md "Chunk encryption") and
  no stored object is a zstd frame or the plain chunk. A wrong key fails the extract with
  one line and no output.
* A server that dies in the middle of an extract (a proxy in front of it cuts every
  connection after some bytes and then refuses new ones): one line, exit 1, no output.
* chunk-server and index-server in front of each backend that holds chunks or indexes.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from gcs_server import FakeGcs
from httputil import Server
from oci_registry_server import Registry
from rgw_server import Rgw
from sshd_server import Sshd

from desync_ref.formats.index import parse_index

pytestmark = pytest.mark.compiled_pass_only

KEY = "3f" * 32
OTHER_KEY = "a0" * 32
# desync's extension: the algorithm, then the first 4 bytes of sha256 over the raw key.
EXTENSION = ".cacnk.xchacha20-poly1305-" + hashlib.sha256(bytes.fromhex(KEY)).digest()[:4].hex()
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


# Each test gets its own bucket or repository.
_NAMES = (f"backend-{n}" for n in itertools.count())


@dataclass
class Backend:
    location: str
    env: dict[str, str]
    stored: Callable[[], dict[str, bytes]]  # stored name -> bytes, read by the server's API


def _s3(request: pytest.FixtureRequest) -> Backend:
    rgw: Rgw = request.getfixturevalue("rgw")
    bucket = rgw.bucket(next(_NAMES))
    return Backend(rgw.location(bucket, "store"), rgw.key_env(),
                   lambda: {k: rgw.get(bucket, k) for k in rgw.keys(bucket)})


def _gcs(request: pytest.FixtureRequest) -> Backend:
    gcs: FakeGcs = request.getfixturevalue("gcs")
    bucket = next(_NAMES)
    gcs.create_bucket(bucket)

    def stored() -> dict[str, bytes]:
        return {name: gcs.get(bucket, name) or b"" for name in gcs.names(bucket)}

    return Backend(f"gs://{bucket}/store", gcs.env(), stored)


def _oci(request: pytest.FixtureRequest) -> Backend:
    registry: Registry = request.getfixturevalue("oci_registry")
    repo = f"{next(_NAMES)}/store"

    def get(path: str, accept: str = "") -> bytes:
        req = urllib.request.Request(registry.url + path, headers={"Accept": accept} if accept else {})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body: bytes = resp.read()
            return body

    def stored() -> dict[str, bytes]:
        out = {}
        for tag in json.loads(get(f"/v2/{repo}/tags/list"))["tags"] or []:
            manifest = json.loads(get(f"/v2/{repo}/manifests/{tag}", "application/vnd.oci.image.manifest.v1+json"))
            out[tag] = get(f"/v2/{repo}/blobs/{manifest['layers'][0]['digest']}")
        return out

    return Backend(registry.location(repo), dict(os.environ), stored)


def _sftp(request: pytest.FixtureRequest) -> Backend:
    sshd: Sshd = request.getfixturevalue("sshd")
    root = request.getfixturevalue("tmp_path") / "sftp-store"
    root.mkdir()

    def stored() -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    return Backend(f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{root}", sshd.ssh_env(), stored)


BACKENDS = {"s3": _s3, "gcs": _gcs, "oci": _oci, "sftp": _sftp}


def _cli(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "desync_ref", *map(str, args)], env=env,
                          capture_output=True, timeout=300)


def _config(path: Path, location: str, key: str) -> Path:
    path.write_text(json.dumps({"store-options": {location: {"encryption": True, "encryption-key": key}}}))
    return path


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_encrypted_store_round_trip(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    backend = BACKENDS[name](request)
    blob, index, out = tmp_path / "blob", tmp_path / "blob.caibx", tmp_path / "out"
    blob.write_bytes(os.urandom(96 * 1024) + b"text " * 20000)
    config = _config(tmp_path / "config.json", backend.location, KEY)
    made = _cli(backend.env, "make", "--config", config, "-s", backend.location, "-m", "16:64:256", index, blob)
    assert made.returncode == 0, made.stderr.decode()

    stored = backend.stored()
    ids = {c.id.hex() for c in parse_index(index.read_bytes()).chunks}
    assert {n.rsplit("/", 1)[-1] for n in stored} == {i + EXTENSION for i in ids}
    for data in stored.values():
        assert not data.startswith(ZSTD_MAGIC) and data not in blob.read_bytes()

    done = _cli(backend.env, "extract", "--config", config, "-s", backend.location, index, out)
    assert done.returncode == 0, done.stderr.decode()
    assert out.read_bytes() == blob.read_bytes()

    wrong = _config(tmp_path / "wrong.json", backend.location, OTHER_KEY)
    failed = _cli(backend.env, "extract", "--config", wrong, "-s", backend.location, index, tmp_path / "bad")
    err = failed.stderr.decode()
    assert failed.returncode == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "not found" in err and not (tmp_path / "bad").exists()


# --- a server dying mid-transfer --------------------------------------------------------------

class CuttingProxy:
    """A TCP proxy that forwards until ``budget`` bytes have gone to clients, then closes
    every connection and its listening socket: the server died in the middle of a body."""

    def __init__(self, upstream: tuple[str, int], budget: int) -> None:
        self.upstream, self.budget = upstream, budget
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = 0
        self.dead = threading.Event()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.dead.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while data := src.recv(65536):
                if counted:
                    with self.lock:
                        self.sent += len(data)
                        if self.sent > self.budget:
                            self.die()
                            return
                dst.sendall(data)
        except OSError:
            pass

    def die(self) -> None:
        self.dead.set()
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _host_port(url_host: str) -> tuple[str, int]:
    host, _, port = url_host.rpartition(":")
    return host, int(port)


@pytest.mark.parametrize("name", ["s3", "gcs", "oci"])
def test_server_dying_mid_extract(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    backend = BACKENDS[name](request)
    blob, index = tmp_path / "blob", tmp_path / "blob.caibx"
    blob.write_bytes(os.urandom(512 * 1024))
    made = _cli(backend.env, "make", "-s", backend.location, "-m", "16:64:256", index, blob)
    assert made.returncode == 0, made.stderr.decode()
    env, location = dict(backend.env), backend.location
    if name == "gcs":  # the server is named by the emulator variable, not the location
        proxy = CuttingProxy(_host_port(env["STORAGE_EMULATOR_HOST"]), budget=200 * 1024)
        env["STORAGE_EMULATOR_HOST"] = f"127.0.0.1:{proxy.port}"
    else:
        scheme, _, rest = location.partition("://")
        real, _, path = rest.partition("/")
        proxy = CuttingProxy(_host_port(real), budget=200 * 1024)
        location = f"{scheme}://127.0.0.1:{proxy.port}/{path}"
    try:
        out = tmp_path / "out"
        failed = _cli(env, "extract", "-n", "2", "-e", "2", "-b", "10ms", "-s", location, index, out)
    finally:
        proxy.die()
    err = failed.stderr.decode()
    assert proxy.sent > 200 * 1024, "the proxy never cut the transfer"
    assert failed.returncode == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "127.0.0.1" in err or location in err, err
    assert not out.exists() and not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))


# --- servers in front of each backend ---------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_chunk_server_in_front(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """chunk-server over the backend: casync's layout out, the backend's chunks through it.
    And ``info -s`` counts the chunks the backend holds."""
    backend = BACKENDS[name](request)
    blob, index = tmp_path / "blob", tmp_path / "blob.caibx"
    blob.write_bytes(os.urandom(100 * 1024))
    made = _cli(backend.env, "make", "-s", backend.location, "-m", "16:64:256", index, blob)
    assert made.returncode == 0, made.stderr.decode()
    info = _cli(backend.env, "info", "-s", backend.location, index)
    assert info.returncode == 0, info.stderr.decode()
    unique = len({c.id for c in parse_index(index.read_bytes()).chunks})
    assert json.loads(info.stdout)["in-store"] == unique
    with Server("chunk-server", ["-s", backend.location], env=backend.env) as srv:
        out = tmp_path / "out"
        done = _cli(backend.env, "extract", "-s", srv.url, index, out)
        assert done.returncode == 0, done.stderr.decode()
        assert out.read_bytes() == blob.read_bytes()


@pytest.mark.parametrize("name", ["gcs", "s3", "sftp"])
def test_index_server_in_front(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """An index written by make into the backend's index store, served by index-server."""
    backend = BACKENDS[name](request)
    blob, local = tmp_path / "blob", tmp_path / "local.caibx"
    blob.write_bytes(os.urandom(100 * 1024))
    indexes = backend.location.rstrip("/") + "-indexes"
    if name == "sftp":  # an SFTP index directory must exist, as in desync
        Path(indexes.split(f":{request.getfixturevalue('sshd').port}", 1)[1]).mkdir()
    for target in (local, f"{indexes}/blob.caibx"):
        made = _cli(backend.env, "make", "-s", backend.location, "-m", "16:64:256", target, blob)
        assert made.returncode == 0, made.stderr.decode()
    with (Server("index-server", ["-s", indexes], env=backend.env) as srv,
          urllib.request.urlopen(srv.url + "blob.caibx") as resp):
        assert resp.read() == local.read_bytes()
