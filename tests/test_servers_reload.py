"""chunk-server --store-file: SIGHUP swaps the stores under a running extract."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import urllib3
from conftest import run_cli
from httputil import Server, wait_for

from desync_ref.formats.index import parse_index


def test_sighup_reload_during_extract(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(1_200_000))
    first = tmp_path / "first"
    run_cli(["make", "-m", "16:32:64", "-s", first, tmp_path / "x.caibx", blob])
    second = tmp_path / "second"
    shutil.copytree(first, second)
    store_file = tmp_path / "stores.json"
    store_file.write_text(json.dumps({"stores": [str(first)]}))
    with Server("chunk-server", ["--store-file", store_file, "--log", "-"]) as srv:
        out = tmp_path / "out"
        proc = subprocess.Popen([sys.executable, "-m", "desync_ref", "extract", "-n", "1", "-s", srv.url,
                                 str(tmp_path / "x.caibx"), str(out)], stderr=subprocess.PIPE)
        assert wait_for(lambda: srv.stderr().count("Response: 200") >= 3)
        store_file.write_text(json.dumps({"stores": [str(second)]}))
        srv.send(signal.SIGHUP)
        assert wait_for(lambda: "reloaded stores" in srv.stderr())
        shutil.rmtree(first)  # from now on only the second store can answer
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        assert out.read_bytes() == blob.read_bytes()
        # an invalid store file keeps the old stores, with a message
        store_file.write_text("{ not json")
        srv.send(signal.SIGHUP)
        assert wait_for(lambda: "failed to reload configuration" in srv.stderr())
        cid = parse_index((tmp_path / "x.caibx").read_bytes()).chunks[0].id.hex()
        r = urllib3.PoolManager(retries=False).request("HEAD", f"{srv.url}{cid[:4]}/{cid}.cacnk")
        assert r.status == 200
        code, err_text = srv.stop()
    assert code == 0
    assert "Traceback" not in err_text
