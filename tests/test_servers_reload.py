"""chunk-server --store-file: SIGHUP swaps the stores under a running extract."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import urllib3
from conftest import run_cli
from httputil import Server, Upstream, served, wait_for

from desync_ref.formats.index import parse_index

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only

RELOADED = "reloaded stores"


def test_sighup_reload_during_extract(tmp_path: Path) -> None:
    """The first store is an upstream the test holds after 3 chunks; the reload happens
    while the 4th is in flight there. That request finishes on the old store; every later
    one goes to the new store, and the old one is never asked again."""
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(1_200_000))
    first = tmp_path / "first"
    run_cli(["make", "-m", "16:32:64", "-s", first, tmp_path / "x.caibx", blob])
    index = parse_index((tmp_path / "x.caibx").read_bytes())
    wanted = {f"/{c.id.hex()[:4]}/{c.id.hex()}.cacnk" for c in index.chunks}
    second = tmp_path / "second"
    shutil.copytree(first, second)
    store_file = tmp_path / "stores.json"
    with Upstream(first, hold_from=3) as old:
        store_file.write_text(json.dumps({"stores": [old.url]}))
        with Server("chunk-server", ["--store-file", store_file, "--log", "-"]) as srv:
            out = tmp_path / "out"
            proc = subprocess.Popen([sys.executable, "-m", "desync_ref", "extract", "-n", "1", "-s", srv.url,
                                     str(tmp_path / "x.caibx"), str(out)], stderr=subprocess.PIPE)
            assert old.wait_hits(4)  # 3 chunks served, the 4th held at the old store
            store_file.write_text(json.dumps({"stores": [str(second)]}))
            srv.send(signal.SIGHUP)
            assert wait_for(lambda: RELOADED in srv.stderr())
            assert proc.poll() is None  # the reload came mid-extract
            old.release.set()
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode()
            assert out.read_bytes() == blob.read_bytes()
            before, _, after = srv.stderr().partition(RELOADED)
            assert len(served(before)) == 3
            assert len(old.hits) == 4  # nothing asked of the old store after the reload
            assert set(served(before)) | set(served(after)) == wanted
            assert len(served(after)) == len(wanted) - 3
            assert set(served(after)) - set(old.hits)  # the new store answered the rest
            # an invalid store file keeps the current stores, with a message
            store_file.write_text("{ not json")
            srv.send(signal.SIGHUP)
            assert wait_for(lambda: "failed to reload configuration" in srv.stderr())
            cid = index.chunks[0].id.hex()
            r = urllib3.PoolManager(retries=False).request("HEAD", f"{srv.url}{cid[:4]}/{cid}.cacnk")
            assert r.status == 200
            code, err_text = srv.stop()
    assert code == 128 + signal.SIGTERM
    assert "Traceback" not in err_text
