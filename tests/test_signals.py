"""SIGTERM and SIGINT in the middle of a command: exit 143/130 with one line on stderr, no
output under its final name, no temp file left (spec/cli.md "Signals").

Each command is caught at a known point, not after a guessed delay: its input is a pipe or
FIFO the test keeps open after writing part of the data (make, tar, untar), or its
chunks come from a loopback HTTP store that holds every GET from the second on
(``httputil.Upstream``: extract, cat, cache, untar -i). The test waits until the command is
blocked there (and, for file outputs, until its temp file exists), signals it by pid, then
lets the held data through: a command that ignored the signal would complete its output.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require_fuse, run_cli
from httputil import Server, Upstream, wait_for

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only

BLOB = 2 * 1024 * 1024


def _temps(root: Path) -> list[Path]:
    """Temp files anywhere under ``root``: ``fs/atomic.py``'s ``.<name>.*.tmp`` and the
    stores' ``.tmp-cacnk*``."""
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-cacnk")]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A blob (random bytes, many chunks), its index and store; a small tree and its catar."""
    w = tmp_path_factory.mktemp("signals")
    (w / "blob").write_bytes(os.urandom(BLOB))
    run_cli(["make", "-m", "16:64:256", "-s", w / "store", w / "blob.caibx", w / "blob"])
    (w / "tree").mkdir()
    (w / "tree" / "a").write_bytes(os.urandom(BLOB))
    (w / "tree" / "b").write_bytes(b"b" * 1000)
    run_cli(["tar", w / "tree.catar", w / "tree"])
    run_cli(["tar", "-i", "-m", "16:64:256", "-s", w / "store", w / "tree.caidx", w / "tree"])
    return w


@dataclass
class Case:
    """``args(made, work, url)`` is the command line; ``feed`` the bytes written into its
    input pipe (half of them, then held) or None when it reads from the held HTTP store;
    ``final`` the output that must not appear; ``temp_in`` where its temp file shows."""

    args: Callable[[Path, Path, str], list[str | os.PathLike[str]]]
    feed: Callable[[Path], bytes] | None
    final: str
    temp_in: str | None = "."


def _tar_stream(made: Path) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(made / "tree", arcname=".")
    return out.getvalue()


CASES = {
    "make": Case(lambda m, w, u: ["make", "-m", "16:64:256", "-s", w / "st", w / "out.caibx", w / "in"],
                 lambda m: (m / "blob").read_bytes(), "out.caibx", None),
    "tar": Case(lambda m, w, u: ["tar", "--input-format", "tar", w / "out.catar", w / "in"],
                _tar_stream, "out.catar"),
    "tar -i": Case(lambda m, w, u: ["tar", "-i", "--input-format", "tar", "-m", "16:64:256", "-s", w / "st",
                                    w / "out.caidx", w / "in"], _tar_stream, "out.caidx", None),
    # untar writes the tree in place (as desync and casync): what it wrote stays
    "untar": Case(lambda m, w, u: ["untar", w / "in", w / "out"],
                  lambda m: (m / "tree.catar").read_bytes(), "", None),
    "extract": Case(lambda m, w, u: ["extract", "-s", u, m / "blob.caibx", w / "out"], None, "out"),
    "cat": Case(lambda m, w, u: ["cat", "-s", u, m / "blob.caibx", w / "out"], None, "out"),
    "untar -i": Case(lambda m, w, u: ["untar", "-i", "-s", u, m / "tree.caidx", w / "out"], None, "", None),
    "cache": Case(lambda m, w, u: ["cache", "-s", u, "-c", w / "cache", m / "blob.caibx"], None, "", None),
}


def _feed_half(fifo: Path, data: bytes, stop: threading.Event) -> None:
    """Write half of ``data`` into ``fifo`` and keep it open (the reader blocks) until ``stop``."""
    try:
        with open(fifo, "wb") as out:
            out.write(data[:len(data) // 2])
            out.flush()
            stop.wait(60)
    except OSError:
        pass  # the reader is gone


# SIGTERM on every command; SIGINT (KeyboardInterrupt, the same unwinding) on three.
RUNS = [*((name, signal.SIGTERM) for name in CASES), *((name, signal.SIGINT) for name in ("make", "extract", "tar"))]


@pytest.mark.parametrize(("name", "sig"), RUNS, ids=[f"{n}-{signal.Signals(s).name}" for n, s in RUNS])
def test_signal_mid_run_leaves_no_output(made: Path, tmp_path: Path, name: str, sig: int) -> None:
    case = CASES[name]
    stop = threading.Event()
    with Upstream(made / "store", hold_from=1) as upstream:
        feeder = None
        (tmp_path / "cache").mkdir()  # cache's target store must exist
        if case.feed is not None:
            os.mkfifo(tmp_path / "in")
            feeder = threading.Thread(target=_feed_half, args=(tmp_path / "in", case.feed(made), stop))
            feeder.start()
        cmd = [sys.executable, "-m", "desync_ref", *map(str, case.args(made, tmp_path, upstream.url))]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
        try:
            if case.feed is None:
                assert upstream.wait_hits(2), "the command never asked for a second chunk"
            else:
                time.sleep(1.0)  # reading what was fed, then blocked on the pipe
            if case.temp_in is not None:
                where = tmp_path / case.temp_in
                assert wait_for(lambda: where.exists() and bool(_temps(where))), "no temp file appeared"
            time.sleep(0.3)
            assert proc.poll() is None, proc.communicate()[1].decode()
            proc.send_signal(sig)
            time.sleep(0.5)
        finally:
            upstream.release.set()  # the held chunks go through: only the signal stops it
            stop.set()
            try:
                _, err = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                if feeder is not None:
                    # a feeder still waiting for a reader to open the FIFO is let go
                    os.close(os.open(tmp_path / "in", os.O_RDONLY | os.O_NONBLOCK))
                    feeder.join()
    assert proc.returncode == 128 + sig, err.decode()
    assert err.decode().splitlines() == [
        "desync-ref: terminated" if sig == signal.SIGTERM else "desync-ref: interrupted"]
    assert _temps(tmp_path) == []
    # cache writes chunks whole or not at all, and untar a tree in place: no final name
    if case.final:
        assert not (tmp_path / case.final).exists()


def test_sigterm_during_unwinding_is_ignored_once(made: Path, tmp_path: Path) -> None:
    """A second SIGTERM while the first unwinds does not cut the cleanup short."""
    with Upstream(made / "store", hold_from=1) as upstream:
        proc = subprocess.Popen([sys.executable, "-m", "desync_ref", "extract", "-s", upstream.url,
                                 made / "blob.caibx", tmp_path / "out"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert upstream.wait_hits(2)
            assert wait_for(lambda: bool(_temps(tmp_path)))
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
        finally:
            upstream.release.set()
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()
    assert _temps(tmp_path) == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_mount_archive_unmounts_and_exits_128_plus_signal(made: Path, tmp_path: Path, sig: int) -> None:
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "desync_ref", "mount-archive", str(made / "tree.catar"),
                             str(mnt)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: os.path.ismount(mnt), 30), "not mounted"
        assert (mnt / "b").read_bytes() == b"b" * 1000
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if os.path.ismount(mnt):
            subprocess.run(["fusermount", "-u", "-z", str(mnt)], check=False)
    assert proc.returncode == 128 + sig, err.decode()
    assert not os.path.ismount(mnt)


@pytest.mark.parametrize("command", ["chunk-server", "index-server"])
def test_servers_exit_143_on_sigterm(made: Path, command: str) -> None:
    """The servers (desync_ref/server/, changed on another branch): SIGTERM stops them
    with 143, like every other command."""
    server = Server(command, ["-s", made / "store"])
    code, err = server.stop(signal.SIGTERM)
    assert code == 143, err
