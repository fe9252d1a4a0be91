"""Every example command of desync's README, run as ``desync-ref`` (issue 16).

Each README line is kept verbatim in ``EXAMPLES``; :func:`substitute` applies the same
substitutions to every line, by code:

* ``desync`` -> this interpreter running ``desync_ref``; the working directory is a fresh
  copy of the prepared world ``W``, and absolute paths (``/some/local/store``,
  ``/tmp/store``, ``/path/to/index``, ...) are taken under ``W``;
* ``ssh://192.168.1.N/PATH`` -> ``ssh://127.0.0.1W/hosts/192.168.1.N/PATH``: OpenSSH's sshd
  on 127.0.0.1 (``sshd`` fixture, ``CASYNC_SSH_PATH``), casync's ``pull`` serving;
* ``http://192.168.1.N/PATH`` -> a loopback HTTP server serving ``W/hosts/192.168.1.N``;
  ``https://192.168.1.N/`` the same over TLS, with a test CA trusted via ``SSL_CERT_FILE``;
* ``s3+https://s3-eu-west-3.amazonaws.com/BUCKET/PREFIX`` and
  ``s3+http://127.0.0.1:9000/BUCKET`` -> ``s3+http://`` to the Ceph RGW (``rgw`` fixture;
  it speaks plain HTTP: the TLS of that line is the chunk-server's own ``--cert/--key``);
* listen addresses ``:8080`` and ``127.0.0.1:https`` -> the same host with a free port (the
  service name ``https`` itself is resolved as desync's Go ``net.Listen`` does, see
  ``server/options.py``); ``chunk-server -s /some/local/store`` (default ``:http``) gets
  ``-l :PORT`` appended; ``cert.pem``/``key.pem`` -> the test CA's server certificate.

Every line is checked by its outcome: bytes or trees restored exactly, the index casync
makes, the chunks a store holds, a chunk served by a server.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require_fuse, run_cli
from httputil import Certs, free_port, make_certs, send_file, wait_for
from rgw_server import Rgw
from sshd_server import Sshd

from desync_ref.formats.index import parse_index

pytestmark = pytest.mark.compiled_pass_only

EXAMPLES = [
    "desync extract -s ssh://192.168.1.1/path/to/casync.store/ -c /tmp/store somefile.tar.caibx somefile.tar",
    "desync extract -s /some/local/store -s ssh://192.168.1.1/path/to/casync.store/ somefile.tar.caibx somefile.tar",
    "desync extract -s ssh://192.168.1.1/path/to/casync.store/ -s http://192.168.1.2/casync.store/ -s https://192.168.1.3/ssl.store/ -c /path/to/cache somefile.tar.caibx somefile.tar",
    "desync verify -s /some/local/store",
    "desync cache -s ssh://192.168.1.1/path/to/casync.store/ -c /local/cache somefile.tar.caibx other.file.caibx",
    "desync list-chunks somefile.tar.caibx",
    "desync chop -s /some/local/store somefile.tar.caibx somefile.tar",
    "desync tar archive.catar /some/dir",
    "desync tar -i -s /some/local/store archive.caidx /some/dir",
    "desync untar archive.catar /some/dir",
    "desync untar -i -s /some/local/store archive.caidx /some/dir",
    "desync prune -s /some/local/store index1.caibx index2.caibx",
    "desync chunk-server -s /some/local/store",
    "desync chunk-server -s http://192.168.1.1/ -s ssh://192.168.1.2/store -c cache -l :8080",
    "desync chunk-server -s s3+https://s3-eu-west-3.amazonaws.com/desync.bucket/prefix -c cache -l 127.0.0.1:https --cert cert.pem --key key.pem",
    "desync make -s /some/local/store index.caibx /some/blob",
    "desync mount-index -s /some/local/store index.caibx /some/mnt",
    "desync info -j -s /tmp/store -s s3+http://127.0.0.1:9000/store /path/to/index",
]

HOSTS = ("192.168.1.1", "192.168.1.2", "192.168.1.3")
# Stores of the prepared world that hold every chunk of somefile.tar and other.file
FULL_STORES = ("some/local/store", "hosts/192.168.1.1/path/to/casync.store", "hosts/192.168.1.1",
               "hosts/192.168.1.2/store", "hosts/192.168.1.2/casync.store", "hosts/192.168.1.3/ssl.store",
               "tmp/store")
SIZES = ["-m", "16:64:256"]


class FileServer:
    """Files under ``root`` over HTTP(S) on 127.0.0.1 (GET and HEAD)."""

    def __init__(self, root: Path, tls: ssl.SSLContext | None = None) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                send_file(self, root)

            def do_HEAD(self) -> None:
                send_file(self, root, body=False)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class World:
    template: Path
    sshd: Sshd
    rgw: Rgw
    certs: Certs
    servers: dict[str, FileServer]
    blobs: dict[str, bytes]  # name -> bytes of somefile.tar, other.file, some/blob
    ids: dict[str, set[str]]  # index name -> chunk ids


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


def _ids(index: Path) -> set[str]:
    return {c.id.hex() for c in parse_index(index.read_bytes()).chunks}


def _store_ids(store: Path) -> set[str]:
    return {p.name.removesuffix(".cacnk") for p in store.glob("????/*.cacnk")}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sshd: Sshd, rgw: Rgw) -> Iterator[World]:
    w = tmp_path_factory.mktemp("readme")
    blobs = {"somefile.tar": os.urandom(400_000), "other.file": os.urandom(300_000),
             "some/blob": os.urandom(350_000)}
    for name, data in blobs.items():
        (w / name).parent.mkdir(parents=True, exist_ok=True)
        (w / name).write_bytes(data)
    for name in ("somefile.tar", "other.file"):
        run_cli(["make", *SIZES, "-s", w / "some/local/store", w / f"{name}.caibx", w / name])
    for store in FULL_STORES[1:]:
        shutil.copytree(w / "some/local/store", w / store, dirs_exist_ok=True)
    # prune's indexes: two kept, a third whose chunks go
    for n in (1, 2, 3):
        (w / f"idx{n}").write_bytes(os.urandom(100_000))
        run_cli(["make", *SIZES, "-s", w / "some/local/store", w / f"index{n}.caibx", w / f"idx{n}"])
    # a tree for tar/untar, and its archives
    (w / "tree/sub").mkdir(parents=True)
    (w / "tree/a").write_bytes(os.urandom(70_000))
    (w / "tree/sub/b").write_text("bee\n" * 100)
    os.symlink("a", w / "tree/link")
    run_cli(["tar", w / "archive.catar", w / "tree"])
    run_cli(["tar", "-i", *SIZES, "-s", w / "some/local/store", w / "archive.caidx", w / "tree"])
    # info's index at /path/to/index; the RGW buckets of the S3 lines
    (w / "path/to").mkdir(parents=True)
    shutil.copy(w / "somefile.tar.caibx", w / "path/to/index")
    env = rgw.key_env()
    for bucket, prefix in (("store", ""), ("desync.bucket", "prefix")):
        rgw.bucket(bucket)
        run_cli_env(["cache", "-s", w / "some/local/store", "-c", rgw.location(bucket, prefix),
                     w / "somefile.tar.caibx"], env)
    certs = make_certs(w / "certs")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certs.server_cert, certs.server_key)
    servers = {host: FileServer(w / "hosts" / host, tls if host == "192.168.1.3" else None) for host in HOSTS}
    ids = {p.name: _ids(p) for p in w.glob("*.caibx")}
    try:
        yield World(w, sshd, rgw, certs, servers, blobs, ids)
    finally:
        for server in servers.values():
            server.close()


def run_cli_env(args: list[str | os.PathLike[str]], env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "desync_ref", *map(str, args)], env=env,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()


def substitute(line: str, world: World, cwd: Path) -> tuple[list[str], dict[str, int]]:
    """The README line as an argv for this machine; the free ports it was given."""
    ports: dict[str, int] = {}

    def remote(match: re.Match[str]) -> str:
        scheme, host, rest = match.groups()
        if scheme == "ssh":
            return f"ssh://127.0.0.1{cwd}/hosts/{host}/{rest}"
        return world.servers[host].url + rest

    line = re.sub(r"(ssh|https?)://(192\.168\.1\.\d)/(\S*)", remote, line)
    line = line.replace("s3+https://s3-eu-west-3.amazonaws.com/", f"s3+http://{world.rgw.host}/")
    line = line.replace("s3+http://127.0.0.1:9000/", f"s3+http://{world.rgw.host}/")

    def port(match: re.Match[str]) -> str:
        ports[match.group(0)] = free_port()
        return f"{match.group(1)}:{ports[match.group(0)]}"

    line = re.sub(r"(?<= -l )(127\.0\.0\.1|):(8080|https)\b", port, line)
    if line.startswith("desync chunk-server") and " -l " not in line:
        ports[":http"] = free_port()
        line += f" -l :{ports[':http']}"
    words = line.split()
    assert words[0] == "desync"
    argv = []
    for word in words[1:]:
        if word.startswith("/"):
            word = f"{cwd}{word}"
        elif word in ("cert.pem", "key.pem"):
            word = str(world.certs.server_cert if word == "cert.pem" else world.certs.server_key)
        argv.append(word)
    return argv, ports


def _env(world: World) -> dict[str, str]:
    env = {**world.rgw.key_env(), "CASYNC_SSH_PATH": str(world.sshd.ssh_wrapper),
           "SSL_CERT_FILE": str(world.certs.ca)}
    env.pop("CASYNC_REMOTE_PATH", None)
    return env


def _get(url: str, ca: Path) -> bytes:
    import urllib.request

    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(url, timeout=30, context=context) as reply:
        data: bytes = reply.read()
        return data


def _serve_and_check(argv: list[str], ports: dict[str, int], world: World, cwd: Path, env: dict[str, str]) -> None:
    """A chunk-server line: it serves a chunk of somefile.tar with the store's bytes, and
    stops on SIGTERM."""
    port = next(iter(ports.values()))
    proc = subprocess.Popen([sys.executable, "-m", "desync_ref", *argv], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        assert wait_for(listening, 30), proc.stderr.read().decode() if proc.poll() is not None else "not up"
        chunk = sorted(world.ids["somefile.tar.caibx"])[0]
        scheme = "https" if "--cert" in argv else "http"
        got = _get(f"{scheme}://127.0.0.1:{port}/{chunk[:4]}/{chunk}.cacnk", world.certs.ca)
        assert got == (world.template / "some/local/store" / chunk[:4] / f"{chunk}.cacnk").read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()


def _mount_and_check(argv: list[str], world: World, cwd: Path, env: dict[str, str]) -> None:
    require_fuse()
    mnt = cwd / "some/mnt"
    mnt.mkdir(parents=True)
    # index.caibx of /some/blob: made first (the make example's output)
    run_cli(["make", "-s", cwd / "some/local/store", cwd / "index.caibx", cwd / "some/blob"])
    proc = subprocess.Popen([sys.executable, "-m", "desync_ref", *argv], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: os.path.ismount(mnt), 30), "not mounted"
        assert (mnt / "index").read_bytes() == world.blobs["some/blob"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        if os.path.ismount(mnt):
            subprocess.run(["fusermount", "-u", "-z", str(mnt)], check=False)
    assert code == 143  # 128 + SIGTERM, after unmounting
    assert not os.path.ismount(mnt)


@pytest.mark.parametrize("line", EXAMPLES, ids=[" ".join(e.split()[1:3]) + f" #{n}" for n, e in enumerate(EXAMPLES)])
def test_readme_example(line: str, world: World, tmp_path: Path, casync: str) -> None:
    cwd = tmp_path / "w"
    shutil.copytree(world.template, cwd, symlinks=True)
    argv, ports = substitute(line, world, cwd)
    env = _env(world)
    command = argv[0]
    if command == "chunk-server":
        (cwd / "cache").mkdir(exist_ok=True)
        _serve_and_check(argv, ports, world, cwd, env)
        return
    if command == "mount-index":
        _mount_and_check(argv, world, cwd, env)
        return
    if command == "chop":
        shutil.rmtree(cwd / "some/local/store")
        (cwd / "some/local/store").mkdir()
    if command == "untar":
        shutil.rmtree(cwd / "some/dir", ignore_errors=True)
        (cwd / "some/dir").mkdir(parents=True)
    if command == "tar":
        shutil.copytree(cwd / "tree", cwd / "some/dir", symlinks=True)
        (cwd / argv[-2]).unlink()
    if command == "cache":
        (cwd / "local/cache").mkdir(parents=True)
    if command == "make":
        shutil.rmtree(cwd / "some/local/store")
    if command == "prune":
        (cwd / "index3.caibx").unlink()
    # prune asks before deleting, as desync's does: the user answers "y"
    proc = subprocess.run([sys.executable, "-m", "desync_ref", *argv], cwd=cwd, env=env,
                          input=b"y\n" if command == "prune" else b"", capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()

    store = cwd / "some/local/store"
    if command == "extract":
        assert (cwd / "somefile.tar").read_bytes() == world.blobs["somefile.tar"]
        if "-c" in argv:
            cache = Path(argv[argv.index("-c") + 1])
            assert world.ids["somefile.tar.caibx"] <= _store_ids(cache)
    elif command == "verify":
        assert _store_ids(store) == _store_ids(world.template / "some/local/store")
    elif command == "cache":
        assert _store_ids(cwd / "local/cache") == world.ids["somefile.tar.caibx"] | world.ids["other.file.caibx"]
    elif command == "list-chunks":
        assert proc.stdout.decode().split() == [c.id.hex() for c in parse_index(
            (cwd / "somefile.tar.caibx").read_bytes()).chunks]
    elif command == "chop":
        assert _store_ids(store) == world.ids["somefile.tar.caibx"]
    elif command == "tar":
        if "-i" in argv:
            run_cli(["untar", "-i", "-s", store, cwd / "archive.caidx", cwd / "back"])
        else:
            run_cli(["untar", cwd / "archive.catar", cwd / "back"])
        assert _tree(cwd / "back") == _tree(world.template / "tree")
    elif command == "untar":
        assert _tree(cwd / "some/dir") == _tree(world.template / "tree")
    elif command == "prune":
        assert _store_ids(store) == world.ids["index1.caibx"] | world.ids["index2.caibx"]
    elif command == "make":
        # the oracle: casync's index of the same file (casync's default chunk sizes are desync's)
        subprocess.run([casync, "make", f"--store={cwd / 'casync.store'}", str(cwd / "casync.caibx"),
                        str(cwd / "some/blob")], check=True, capture_output=True)
        assert (cwd / "index.caibx").read_bytes() == (cwd / "casync.caibx").read_bytes()
        assert _store_ids(store) == _store_ids(cwd / "casync.store")
    elif command == "info":
        info = json.loads(proc.stdout)
        assert info["size"] == len(world.blobs["somefile.tar"])
        assert info["total"] == len(parse_index((cwd / "path/to/index").read_bytes()).chunks)
        assert info["in-store"] == info["unique"] == len(world.ids["somefile.tar.caibx"])
    else:
        raise AssertionError(f"no check for {command}")


def test_substitutions_leave_no_example_host_or_port(world: World, tmp_path: Path) -> None:
    """No line still names a README host, AWS, or a fixed port once substituted."""
    for line in EXAMPLES:
        argv, _ = substitute(line, world, tmp_path)
        text = " ".join(argv)
        assert not re.search(r"://192\.168\.|amazonaws|:9000\b|:8080\b|:https\b", text), text
