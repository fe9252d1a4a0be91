"""Progress on stderr and --verbose logging (spec/cli.md "Progress and logging").

A bar appears when stderr is a terminal (a pseudo-terminal here) and stdout stays exactly
what it is without one; ``DESYNC_ENABLE_PARSABLE_PROGRESS`` gives desync's plain lines
(operation, percent, time) that reach 100%; with neither, stderr carries nothing extra.
``--verbose`` names the seeds used and dropped, and the retries of an HTTP store.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from desync_ref.progress import ParsableBar, go_duration
from tests.conftest import run_cli
from tests.httputil import Scripted, send_file

pytestmark = pytest.mark.compiled_pass_only

PROGRESS_VARS = ("DESYNC_PROGRESSBAR_ENABLED", "DESYNC_ENABLE_PARSABLE_PROGRESS")
# desync's parsable line: "<operation> <%6.02f>%" and a Go duration (time left, or taken).
PARSABLE = re.compile(r"^(?P<op>\S.*?) +(?P<pct>\d+\.\d\d)%(?: (?P<eta>(?:\d+h)?(?:\d+m)?\d+s))?$")


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 MiB blob, its index (blob.caibx) and store (store/)."""
    base = tmp_path_factory.mktemp("progress")
    (base / "blob").write_bytes(random.Random(5).randbytes(1 << 20))
    run_cli(["make", "-m", "16:64:256", "-s", base / "store", base / "blob.caibx", base / "blob"])
    return base


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in PROGRESS_VARS}
    return {**clean, **extra}


def run(args: list[str | Path], *, environ: dict[str, str],
        stderr_tty: bool = False) -> tuple[int, bytes, bytes]:
    """The CLI with stdout on a pipe and stderr on a pipe or a pseudo-terminal."""
    command = [sys.executable, "-m", "desync_ref", *map(str, args)]
    if not stderr_tty:
        proc = subprocess.run(command, capture_output=True, env=environ, timeout=120)
        return proc.returncode, proc.stdout, proc.stderr
    master, slave = os.openpty()
    seen = bytearray()

    def drain() -> None:  # the pty buffer is small: read while the command runs
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO once the slave side is closed everywhere
                return
            if not data:
                return
            seen.extend(data)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave, env=environ) as p:
            os.close(slave)
            slave = -1
            out, _ = p.communicate(timeout=120)
        reader.join(30)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    return p.returncode, out, bytes(seen)


def test_bar_on_a_terminal(blob: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, tty = run(["extract", "--print-stats", "-s", blob / "store", blob / "blob.caibx",
                             out], environ=env(), stderr_tty=True)
    assert code == 0, tty
    text = tty.decode(errors="replace")
    assert "Attempt 1: Assembling" in text and "100%" in text, text
    assert "\r" in text  # redrawn in place
    stats = json.loads(stdout)  # stdout holds the stats alone, no bar in it
    assert stats["chunks-from-store"] + stats["chunks-from-seeds"] == stats["chunks-total"]
    assert out.read_bytes() == (blob / "blob").read_bytes()
    # make: the index on stdout is byte-identical to the one made without a terminal.
    code, index, tty = run(["make", "-m", "16:64:256", "-", blob / "blob"], environ=env(),
                           stderr_tty=True)
    assert code == 0 and "Chunking" in tty.decode(errors="replace")
    assert index == (blob / "blob.caibx").read_bytes()


def parsable(stderr: bytes) -> dict[str, list[tuple[float, str | None]]]:
    """Operation -> [(percent, time)] from desync's parsable lines; every line must parse."""
    found: dict[str, list[tuple[float, str | None]]] = {}
    for line in stderr.decode().splitlines():
        match = PARSABLE.match(line)
        assert match, f"not a progress line: {line!r}"
        found.setdefault(match["op"], []).append((float(match["pct"]), match["eta"]))
    return found


@pytest.mark.parametrize("command", ["extract", "make", "cache", "chop", "verify-index",
                                     "verify", "untar", "tar"])
def test_parsable_lines(blob: Path, tmp_path: Path, command: str) -> None:
    store, index, data = blob / "store", blob / "blob.caibx", blob / "blob"
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "file").write_bytes(data.read_bytes()[:200_000])
    if command == "untar":
        run_cli(["tar", "-i", "-s", tmp_path / "tstore", tmp_path / "t.caidx", tree])
    args: dict[str, list[str | Path]] = {
        "extract": ["extract", "-s", store, index, tmp_path / "out"],
        "make": ["make", "-m", "16:64:256", "-n", "2", "-s", tmp_path / "s", tmp_path / "i.caibx",
                 data],
        "cache": ["cache", "-s", store, "-c", tmp_path / "cache", index],
        "chop": ["chop", "-s", tmp_path / "chopped", index, data],
        "verify-index": ["verify-index", index, data],
        "verify": ["verify", "-s", store],
        "untar": ["untar", "-i", "-s", tmp_path / "tstore", tmp_path / "t.caidx",
                  tmp_path / "untarred"],
        "tar": ["tar", "-i", "-s", tmp_path / "tstore2", tmp_path / "t2.caidx", tree],
    }
    for made in ("cache", "chopped"):
        (tmp_path / made).mkdir()
    code, _, stderr = run(args[command], environ=env(DESYNC_ENABLE_PARSABLE_PROGRESS="1"))
    assert code == 0, stderr
    found = parsable(stderr)
    assert found, "no progress line"
    for op, updates in found.items():
        last_percent, last_time = updates[-1]
        if command != "tar":  # tar does not know its size in advance
            assert last_percent == 100.0, (op, updates)
        assert last_time is not None  # the time taken, on the last line
        assert [p for p, _ in updates] == sorted(p for p, _ in updates)
    if command == "extract":
        assert "Attempt 1: Assembling" in found
        assert (tmp_path / "out").read_bytes() == data.read_bytes()
    if command == "make":
        # "Storing" is a bar of its own only when the file is chunked in parallel spans
        # (not at this size): here chunks are stored as they are cut.
        assert set(found) == {"Chunking"}, found
        assert (tmp_path / "i.caibx").read_bytes() == index.read_bytes()


def test_nothing_extra_without_a_terminal(blob: Path, tmp_path: Path) -> None:
    code, stdout, stderr = run(["extract", "--print-stats", "-s", blob / "store",
                                blob / "blob.caibx", tmp_path / "out"], environ=env())
    assert code == 0 and stderr == b""
    assert json.loads(stdout)["chunks-total"] > 0
    code, _, stderr = run(["make", "-s", tmp_path / "s", tmp_path / "i.caibx", blob / "blob"],
                          environ=env())
    assert code == 0 and stderr == b""


def test_forced_bar_without_a_terminal(blob: Path, tmp_path: Path) -> None:
    code, _, stderr = run(["verify-index", blob / "blob.caibx", blob / "blob"],
                          environ=env(DESYNC_PROGRESSBAR_ENABLED="1"))
    assert code == 0 and b"Verifying" in stderr and b"100%" in stderr


def test_parsable_time_left() -> None:
    """The time left is extrapolated from the rate so far, in Go's duration form."""
    now = [100.0]
    lines: list[str] = []

    class Out:
        def write(self, text: str) -> None:
            lines.append(text.rstrip("\n"))

        def flush(self) -> None:
            pass

    bar = ParsableBar("Assembling", 200, Out(), clock=lambda: now[0])  # type: ignore[arg-type]
    now[0] = 130.0
    bar.update(50)  # 50 in 30 s: 150 more take 90 s
    now[0] = 130.1
    bar.update(1)  # within 500 ms of the last line: not printed
    now[0] = 400.0
    bar.update(149)
    bar.close()
    assert lines == ["Assembling   0.00%", "Assembling  25.00% 1m30s",
                     "Assembling 100.00% 0s", "Assembling 100.00% 5m0s"]
    assert [go_duration(s) for s in (0, 59.9, 3600, 3725)] == ["0s", "59s", "1h0m0s", "1h2m5s"]


def test_verbose_names_seeds(peer: Path, tmp_path: Path) -> None:
    """desync's fixture: blob2_corrupted (its data differs from its index) wins the plan
    first, is found invalid and dropped; blob2 then serves those chunks."""
    data = peer / "cmd" / "desync" / "testdata"
    proc = run_cli(["extract", "--verbose", "-s", "blob1.store", "--seed", "blob2_corrupted.caibx",
                    "--seed", "blob2.caibx", "--skip-invalid-seeds", "blob1.caibx",
                    tmp_path / "out"], cwd=data)
    err = proc.stderr.decode()
    assert re.search(r"dropping seed blob2_corrupted\.caibx: .*doesn't match", err), err
    assert re.search(r"using seed blob2\.caibx for [1-9]", err), err
    assert (tmp_path / "out").read_bytes() == (data / "blob1").read_bytes()
    assert all(line.startswith(("INFO ", "DEBUG ", "WARNING ")) for line in err.splitlines()), err
    quiet = run_cli(["extract", "-s", "blob1.store", "--seed", "blob2_corrupted.caibx",
                     "--skip-invalid-seeds", "blob1.caibx", tmp_path / "out2"], cwd=data)
    assert quiet.stderr == b""  # without --verbose: nothing


def test_verbose_logs_retries(blob: Path, tmp_path: Path) -> None:
    """An HTTP store that fails twice with 503 before serving: two retry lines with the
    cause, and the extract succeeds."""
    failures: dict[str, int] = {}
    lock = threading.Lock()

    def respond(handler: object) -> None:
        import http.server

        assert isinstance(handler, http.server.BaseHTTPRequestHandler)
        with lock:
            count = failures.get(handler.path, 0)
            failures[handler.path] = count + 1
        if handler.path.endswith(".cacnk") and count < 2 and len(failures) == 1:
            handler.send_response(503)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        send_file(handler, blob / "store")

    with Scripted(respond) as server:
        proc = run_cli(["extract", "--verbose", "-n", "1", "-b", "10ms", "-s", server.url,
                        blob / "blob.caibx", tmp_path / "out"])
    err = proc.stderr.decode()
    retries = [line for line in err.splitlines() if "retrying" in line]
    assert len(retries) == 2, err
    assert all("HTTP 503" in line and "127.0.0.1" in line for line in retries), retries
    assert "attempt 1 of 3" in retries[0] and "attempt 2 of 3" in retries[1]
    assert (tmp_path / "out").read_bytes() == (blob / "blob").read_bytes()


def test_make_parallel_reports_chunking_and_storing(blob: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A file chunked in parallel spans: a "Chunking" bar in bytes, then "Storing" in
    chunks, both complete (spans made small so a 1 MiB file is split)."""
    from desync_ref.chunking import ChunkSizes
    from desync_ref.formats.index import encode_index
    from desync_ref.operations import make
    from desync_ref.stores.location import open_writable

    monkeypatch.setattr(make, "MIN_SPAN", 128 * 1024)
    seen: dict[str, list[int]] = {}

    class Recorder:
        def __init__(self, operation: str, total: int) -> None:
            self.counts = seen.setdefault(operation, [total, 0, 0])

        def update(self, n: int = 1) -> None:
            self.counts[1] += n

        def close(self) -> None:
            self.counts[2] += 1

    store = open_writable(str(tmp_path / "store"))
    index, stats = make.make_index(str(blob / "blob"), ChunkSizes(16 << 10, 64 << 10, 256 << 10),
                                   store=store, workers=2, progress=Recorder)
    store.close()
    assert encode_index(index) == (blob / "blob.caibx").read_bytes()
    assert seen["Chunking"] == [1 << 20, 1 << 20, 1]
    assert seen["Storing"] == [stats.unique, stats.unique, 1]
