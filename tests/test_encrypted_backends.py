"""Chunk encryption on every remote backend: S3 (Ceph RGW), GCS (fake-gcs-server), OCI
(docker-registry) and SFTP (OpenSSH), each against its real server.

The store options come from a config file, as a user sets them. What the server holds is
read with the server's own API, not through the store under test: every stored name
carries the encrypted extension (spec/store.md "Chunk encryption") and no stored object is
a zstd frame or the plain chunk. A wrong key fails the extract with one line and no output.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from gcs_server import FakeGcs
from oci_registry_server import Registry
from rgw_server import Rgw
from sshd_server import Sshd

from desync_ref.formats.index import parse_index

pytestmark = pytest.mark.remote_store

KEY = "3f" * 32
OTHER_KEY = "a0" * 32
# desync's extension: the algorithm, then the first 4 bytes of sha256 over the raw key.
EXTENSION = ".cacnk.xchacha20-poly1305-" + hashlib.sha256(bytes.fromhex(KEY)).digest()[:4].hex()
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass
class Backend:
    location: str
    env: dict[str, str]
    stored: Callable[[], dict[str, bytes]]  # stored name -> bytes, read by the server's API


def _s3(request: pytest.FixtureRequest) -> Backend:
    rgw: Rgw = request.getfixturevalue("rgw")
    bucket = rgw.bucket("encrypted")
    return Backend(rgw.location(bucket, "store"), rgw.key_env(),
                   lambda: {k: rgw.get(bucket, k) for k in rgw.keys(bucket)})


def _gcs(request: pytest.FixtureRequest) -> Backend:
    gcs: FakeGcs = request.getfixturevalue("gcs")
    gcs.create_bucket("encrypted")

    def stored() -> dict[str, bytes]:
        return {name: gcs.get("encrypted", name) or b"" for name in gcs.names("encrypted")}

    return Backend("gs://encrypted/store", gcs.env(), stored)


def _oci(request: pytest.FixtureRequest) -> Backend:
    registry: Registry = request.getfixturevalue("oci_registry")
    repo = "encrypted/store"

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
