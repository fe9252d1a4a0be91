"""casync's own HTTP client pulling from our chunk-server (and index-server), HTTP and HTTPS."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli, skip_not_component
from httputil import Server, make_certs

pytestmark = [pytest.mark.casync, pytest.mark.compiled_pass_only]

SYSTEM_CA = Path("/usr/local/share/ca-certificates/desync-ref-test-ca.crt")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("casyncdata")
    blob = base / "blob"
    blob.write_bytes(os.urandom(1_000_000))
    store = base / "store"
    run_cli(["make", "-s", store, base / "x.caibx", blob])
    return {"base": base, "blob": blob, "store": store, "index": base / "x.caibx"}


def casync_extract(casync: str, store: str, index: str | Path, out: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([casync, "extract", f"--store={store}", str(index), str(out)],
                          capture_output=True, timeout=120)


def test_casync_extract_over_http(casync: str, data: dict[str, Path], tmp_path: Path) -> None:
    with Server("chunk-server", ["-s", data["store"], "--log", "-"]) as srv:
        out = tmp_path / "out"
        proc = casync_extract(casync, srv.url, data["index"], out)
        assert proc.returncode == 0, proc.stderr.decode()
        assert out.read_bytes() == data["blob"].read_bytes()
        # without the trailing slash too
        proc = casync_extract(casync, srv.url.rstrip("/"), data["index"], tmp_path / "out2")
        assert proc.returncode == 0, proc.stderr.decode()
        assert (tmp_path / "out2").read_bytes() == data["blob"].read_bytes()
        assert "Request: GET /" in srv.stderr()


def test_casync_missing_chunk_fails(casync: str, data: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with Server("chunk-server", ["-s", empty]) as srv:
        proc = casync_extract(casync, srv.url, data["index"], tmp_path / "out")
        assert proc.returncode != 0


def test_casync_index_from_index_server(casync: str, data: dict[str, Path], tmp_path: Path) -> None:
    indexes = tmp_path / "indexes"
    indexes.mkdir()
    shutil.copy(data["index"], indexes / "x.caibx")
    with Server("chunk-server", ["-s", data["store"]]) as chunks, Server("index-server", ["-s", indexes]) as idx:
        out = tmp_path / "out"
        proc = casync_extract(casync, chunks.url, idx.url + "x.caibx", out)
        assert proc.returncode == 0, proc.stderr.decode()
        assert out.read_bytes() == data["blob"].read_bytes()


def test_casync_extract_over_https(casync: str, data: dict[str, Path], tmp_path: Path) -> None:
    """casync trusts only the system store: the test CA goes in, and comes out again."""
    if shutil.which("update-ca-certificates") is None:
        pytest.skip("update-ca-certificates is not installed (Debian package 'ca-certificates')")
    if os.geteuid() != 0:
        skip_not_component("needs root to put the test CA in the system trust store")
    certs = make_certs(tmp_path / "certs")
    args = ["-s", data["store"], "--cert", certs.server_cert, "--key", certs.server_key]
    with Server("chunk-server", args, tls=True) as srv:
        out = tmp_path / "out"
        untrusted = casync_extract(casync, srv.url, data["index"], tmp_path / "untrusted")
        assert untrusted.returncode != 0
        shutil.copy(certs.ca, SYSTEM_CA)
        try:
            subprocess.run(["update-ca-certificates"], capture_output=True, check=True, timeout=120)
            proc = casync_extract(casync, srv.url, data["index"], out)
        finally:
            SYSTEM_CA.unlink(missing_ok=True)
            subprocess.run(["update-ca-certificates", "--fresh"], capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        assert out.read_bytes() == data["blob"].read_bytes()
