"""desync command-line parity (issue 16): ``info -j``, ``cat`` into a FIFO or a pipe, the
store option ``skip-verify`` (spec/cli.md, spec/store.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import run_cli

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = tmp_path_factory.mktemp("parity")
    (w / "blob").write_bytes(os.urandom(300_000))
    run_cli(["make", "-m", "16:64:256", "-s", w / "store", w / "blob.caibx", w / "blob"])
    return w


def test_info_j_is_f_json(made: Path) -> None:
    old = run_cli(["info", "-j", "-s", made / "store", made / "blob.caibx"]).stdout
    assert old == run_cli(["info", "-f", "json", "-s", made / "store", made / "blob.caibx"]).stdout
    assert json.loads(old)["size"] == 300_000


def test_cat_into_fifo_feeds_its_reader(made: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    proc = run_cli(["cat", "-s", made / "store", made / "blob.caibx", fifo], check=False)
    reader.join(30)
    assert proc.returncode == 0, proc.stderr.decode()
    assert got == [(made / "blob").read_bytes()]
    assert fifo.is_fifo()  # still the FIFO, not a file renamed over it
    assert [p.name for p in tmp_path.iterdir()] == ["fifo"]


@pytest.mark.parametrize("stdout_kind", ["pipe", "file"])
def test_cat_into_dev_fd_1(made: Path, tmp_path: Path, stdout_kind: str) -> None:
    """``/dev/fd/1`` (what ``/dev/stdout`` points at), whether stdout is a pipe or a file,
    gets the bytes written into it. (``/dev/fd/1`` rather than ``/dev/stdout``: a
    regression renaming a temp file over the name must fail here, not replace the
    machine's /dev/stdout link.)"""
    args = [sys.executable, "-m", "desync_ref", "cat", "-s", str(made / "store"),
            str(made / "blob.caibx"), "/dev/fd/1"]
    if stdout_kind == "pipe":
        proc = subprocess.run(args, capture_output=True, timeout=60)
        got = proc.stdout
    else:
        with open(tmp_path / "out", "wb") as out:
            proc = subprocess.run(args, stdout=out, stderr=subprocess.PIPE, timeout=60)
        got = (tmp_path / "out").read_bytes()
    assert proc.returncode == 0, proc.stderr.decode()
    assert got == (made / "blob").read_bytes()


def _corrupt_store(made: Path, tmp_path: Path) -> tuple[Path, bytes]:
    """A copy of the store where one chunk file holds another chunk's bytes."""
    store = tmp_path / "store"
    subprocess.run(["cp", "-a", str(made / "store"), str(store)], check=True)
    files = sorted(store.rglob("*.cacnk"))
    victim, other = files[0], files[1]
    victim.write_bytes(other.read_bytes())
    return store, other.read_bytes()


def test_skip_verify_store_option(made: Path, tmp_path: Path) -> None:
    """Without skip-verify a chunk whose bytes are not its id fails the extract; with the
    store option (config file, desync local.go GetChunk) it is taken as it is."""
    store, _ = _corrupt_store(made, tmp_path)
    args = ["extract", "-s", store, made / "blob.caibx", tmp_path / "out"]
    refused = run_cli(args, check=False)
    assert refused.returncode == 1 and b"does not match" in refused.stderr
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store-options": {str(store): {"skip-verify": True}}}))
    proc = run_cli(["--config", config, *args], check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    # the wrong chunk's bytes were written, unverified: the output differs from the blob
    assert (tmp_path / "out").read_bytes() != (made / "blob").read_bytes()


def test_skip_verify_on_an_http_store(made: Path, tmp_path: Path) -> None:
    """desync passes SkipVerify to NewChunkFromStorage in its HTTP store too
    (remotehttp.go): a chunk-server serving the wrong bytes under an id fails the extract,
    unless the config marks that URL skip-verify."""
    from httputil import Server

    store, _ = _corrupt_store(made, tmp_path)
    with Server("chunk-server", ["-s", str(store)]) as srv:
        args = ["extract", "-s", srv.url, made / "blob.caibx", tmp_path / "out"]
        refused = run_cli(args, check=False)
        assert refused.returncode == 1 and b"does not match" in refused.stderr
        assert not (tmp_path / "out").exists()
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"store-options": {srv.url: {"skip-verify": True}}}))
        proc = run_cli(["--config", config, *args], check=False)
        assert proc.returncode == 0, proc.stderr.decode()
        assert (tmp_path / "out").read_bytes() != (made / "blob").read_bytes()
