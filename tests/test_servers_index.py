"""index-server, index URLs as arguments, and make writing its index to an index store URL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import urllib3
from conftest import assert_clean_failure, run_cli
from httputil import Server

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("indexdata")
    blob = base / "blob"
    blob.write_bytes(os.urandom(600_000))
    store = base / "store"
    run_cli(["make", "-s", store, base / "x.caibx", blob])
    return {"base": base, "blob": blob, "store": store, "index": base / "x.caibx"}


def test_index_round_trip(data: dict[str, Path], tmp_path: Path) -> None:
    indexes = tmp_path / "indexes"
    indexes.mkdir()
    with Server("index-server", ["-s", indexes, "-w"]) as idx, \
            Server("chunk-server", ["-s", data["store"]]) as chunks:
        # make writes its index to the index store URL
        run_cli(["make", "-s", data["store"], idx.url + "made.caibx", data["blob"]])
        assert (indexes / "made.caibx").read_bytes() == data["index"].read_bytes()
        assert not [p for p in indexes.iterdir() if p.name.startswith(".")]
        # every command that reads an index takes the URL
        out = tmp_path / "out"
        run_cli(["extract", "-s", chunks.url, idx.url + "made.caibx", out])
        assert out.read_bytes() == data["blob"].read_bytes()
        listed = run_cli(["list-chunks", idx.url + "made.caibx"]).stdout
        assert listed == run_cli(["list-chunks", data["index"]]).stdout
        run_cli(["verify-index", idx.url + "made.caibx", data["blob"]])
        info = run_cli(["info", "-s", chunks.url, idx.url + "made.caibx"]).stdout
        assert b'"size"' in info
        # a missing index, and a bad URL: one line each
        err = assert_clean_failure(run_cli(["list-chunks", idx.url + "nope.caibx"], check=False))
        assert "not found" in err
        assert_clean_failure(run_cli(["list-chunks", idx.url], check=False))


def test_index_status_codes(data: dict[str, Path], tmp_path: Path) -> None:
    indexes = tmp_path / "indexes"
    indexes.mkdir()
    blob = data["index"].read_bytes()
    (indexes / "a.caibx").write_bytes(blob)
    http = urllib3.PoolManager(retries=False)
    with Server("index-server", ["-s", indexes, "-w", "--authorization", "Basic x"]) as srv:
        auth = {"Authorization": "Basic x"}
        assert http.request("GET", srv.url + "a.caibx").status == 401
        r = http.request("GET", srv.url + "a.caibx", headers=auth)
        assert r.status == 200 and r.data == blob
        assert http.request("HEAD", srv.url + "a.caibx", headers=auth).status == 200
        assert http.request("GET", srv.url + "b.caibx", headers=auth).status == 404
        assert http.request("HEAD", srv.url + "b.caibx", headers=auth).status == 404
        r = http.request("PUT", srv.url + "c.caibx", body=b"not an index", headers=auth)
        assert r.status == 415
        assert not (indexes / "c.caibx").exists()
        assert http.request("PUT", srv.url + "c.caibx", body=blob, headers=auth).status == 200
        assert (indexes / "c.caibx").read_bytes() == blob
        for bad in ("sub/a.caibx", "..", "%2e%2e", "a%2Fb.caibx", ""):
            assert http.request("GET", srv.url + bad, headers=auth).status in (400, 404), bad
        assert http.request("PUT", srv.url + "..%2Fescape.caibx", body=blob, headers=auth).status == 400
        assert not (tmp_path / "escape.caibx").exists()
        assert http.request("DELETE", srv.url + "a.caibx", headers=auth).status == 405
    with Server("index-server", ["-s", indexes]) as srv:
        r = http.request("PUT", srv.url + "d.caibx", body=blob)
        assert r.status == 400 and b"not enabled" in r.data
        # the client's PUT to a read-only index server fails cleanly
        err = assert_clean_failure(run_cli(["make", srv.url + "e.caibx", data["blob"]], check=False))
        assert "400" in err


def test_local_directory_as_index_store(data: dict[str, Path], tmp_path: Path) -> None:
    """An index server can front another index server (HTTP index store upstream)."""
    indexes = tmp_path / "indexes"
    indexes.mkdir()
    (indexes / "a.caibx").write_bytes(data["index"].read_bytes())
    with Server("index-server", ["-s", indexes]) as inner, Server("index-server", ["-s", inner.url]) as outer:
        listed = run_cli(["list-chunks", outer.url + "a.caibx"]).stdout
        assert listed == run_cli(["list-chunks", data["index"]]).stdout
