"""chunk-server and index-server under load and under failure (spec/http.md).

64 concurrent loopback clients send mixed GET/HEAD/PUT requests, missing objects included,
and check every answer: the status it must have and, for a body, its exact bytes. Then the
servers' upstream fails or stalls, and the disk fills up: the answers must be clear 5xx,
the server must stay up and serve again once the fault is gone. Last, ``extract`` from a
server that drops or stalls mid-body retries as configured and ends in a one-line error
without leaving an output file.

``DESYNC_REF_LOAD_SECONDS`` (default 10) is the length of each load run; the request rates
and memory figures are printed (``pytest -s``), never asserted.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import assert_clean_failure, run_cli, skip_not_component
from httputil import Scripted, Server, send_file

from desync_ref.formats.index import parse_index

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only

CLIENTS = 64
SECONDS = float(os.environ.get("DESYNC_REF_LOAD_SECONDS", "10"))
MiB = 1024 * 1024


def chunk_path(chunk_id: bytes) -> str:
    h = chunk_id.hex()
    return f"/{h[:4]}/{h}.cacnk"


def rss(pid: int) -> int:
    """Resident set size of a process in bytes (/proc/PID/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@dataclass
class Tally:
    """What the clients saw: statuses per kind of request, and every problem."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, status: int, problem: str | None = None) -> None:
        with self.lock:
            self.requests += 1
            self.statuses[(kind, status)] += 1
            if problem is not None and len(self.problems) < 20:
                self.problems.append(f"{kind}: {problem}")

    def count_5xx(self) -> int:
        return sum(n for (_, status), n in self.statuses.items() if status >= 500)


# One request: (method, path, body) and a check of (status, body) that returns a problem or None.
Request = tuple[str, str, bytes | None, Callable[[int, bytes], str | None]]


def hammer(port: int, seconds: float, next_request: Callable[[random.Random], Request],
           clients: int = CLIENTS, timeout: float = 60) -> Tally:
    """``clients`` threads with one keep-alive connection each, for ``seconds``."""
    tally = Tally()
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        while time.monotonic() < stop:
            method, path, body, check = next_request(rng)
            kind = f"{method} {check.__name__}"
            try:
                conn.request(method, path, body=body)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                tally.add(kind, 0, f"transport error {exc!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                continue
            tally.add(kind, resp.status, check(resp.status, data))
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + timeout + 30)
    return tally


def report(name: str, tally: Tally, seconds: float, rss_start: int | None = None,
           rss_end: int | None = None) -> None:
    memory = "" if rss_start is None or rss_end is None else \
        f", RSS {rss_start / MiB:.1f} -> {rss_end / MiB:.1f} MiB"
    print(f"\n[load] {name}: {tally.requests} requests in {seconds:.0f} s = {tally.requests / seconds:.0f}/s, "
          f"5xx {tally.count_5xx()}{memory}; {dict(sorted(tally.statuses.items()))}", flush=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two blobs: one in the served store, one whose chunks the clients PUT."""
    base = tmp_path_factory.mktemp("load")
    for name in ("a", "b"):
        (base / name).write_bytes(os.urandom(2_000_000))
        run_cli(["make", "-m", "16:32:64", "-s", base / f"store-{name}", base / f"{name}.caibx", base / name])
    return {"base": base, "store": base / "store-a", "new": base / "store-b",
            "index": base / "a.caibx", "new_index": base / "b.caibx", "blob": base / "a"}


def chunk_files(store: Path, index: Path) -> dict[bytes, bytes]:
    """id → the chunk file's bytes (the compressed wire form)."""
    ids = [c.id for c in parse_index(index.read_bytes()).chunks]
    return {cid: (store / chunk_path(cid).lstrip("/")).read_bytes() for cid in ids}


def expect(status: int, want: bytes | None = None) -> Callable[[int, bytes], str | None]:
    def check(got: int, body: bytes) -> str | None:
        if got != status:
            return f"status {got}, expected {status}: {body[:100]!r}"
        if want is not None and body != want:
            return f"wrong body ({len(body)} bytes, expected {len(want)})"
        return None

    check.__name__ = str(status)
    return check


def test_chunk_server_mixed_load(data: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "store"
    shutil.copytree(data["store"], target)
    have = chunk_files(data["store"], data["index"])
    new = chunk_files(data["new"], data["new_index"])
    have_ids, new_ids = list(have), list(new)

    def got_new(cid: bytes) -> Callable[[int, bytes], str | None]:
        def check(got: int, body: bytes) -> str | None:  # not PUT yet (404) or exactly right
            if got == 404 or (got == 200 and body == new[cid]):
                return None
            return f"status {got}, {len(body)} bytes for a chunk being written"

        check.__name__ = "new"
        return check

    def next_request(rng: random.Random) -> Request:
        roll = rng.random()
        if roll < 0.45:
            cid = rng.choice(have_ids)
            return "GET", chunk_path(cid), None, expect(200, have[cid])
        if roll < 0.55:
            return "HEAD", chunk_path(rng.choice(have_ids)), None, expect(200)
        if roll < 0.65:
            missing = rng.randbytes(32)
            return rng.choice(["GET", "HEAD"]), chunk_path(missing), None, expect(404)
        if roll < 0.80:
            cid = rng.choice(new_ids)
            return "PUT", chunk_path(cid), new[cid], expect(200)
        if roll < 0.85:
            cid = rng.choice(have_ids)  # a valid chunk again: kept, 200
            return "PUT", chunk_path(cid), have[cid], expect(200)
        if roll < 0.90:
            return "PUT", chunk_path(rng.choice(have_ids)), b"not a chunk", expect(400)
        cid = rng.choice(new_ids)
        return "GET", chunk_path(cid), None, got_new(cid)

    with Server("chunk-server", ["-s", target, "-w", "-n", "16"]) as srv:
        hammer(srv.port, 1.5, next_request)  # warm up: threads, pools, page cache
        start = rss(srv.proc.pid)
        tally = hammer(srv.port, SECONDS, next_request)
        end = rss(srv.proc.pid)
        assert srv.proc.poll() is None
        report("chunk-server GET/HEAD/PUT", tally, SECONDS, start, end)
    assert not tally.problems, tally.problems
    assert tally.count_5xx() == 0
    assert tally.statuses[("GET 200", 200)] > 0 and tally.statuses[("PUT 400", 400)] > 0
    assert end <= start + max(64 * MiB, start), (start, end)
    for cid, blob in {**have, **new}.items():  # the store holds exactly the right chunks
        path = target / chunk_path(cid).lstrip("/")
        assert not path.exists() or path.read_bytes() == blob
    assert all((target / chunk_path(cid).lstrip("/")).read_bytes() == blob for cid, blob in have.items())


def test_index_server_mixed_load(data: dict[str, Path], tmp_path: Path) -> None:
    indexes = tmp_path / "indexes"
    indexes.mkdir()
    a, b = data["index"].read_bytes(), data["new_index"].read_bytes()
    (indexes / "a.caibx").write_bytes(a)
    names = [f"p{i}.caibx" for i in range(8)]

    def written(name: str) -> Callable[[int, bytes], str | None]:
        def check(got: int, body: bytes) -> str | None:
            return None if got == 404 or (got == 200 and body == b) else f"status {got}, {len(body)} bytes"

        check.__name__ = "new"
        return check

    def next_request(rng: random.Random) -> Request:
        roll = rng.random()
        if roll < 0.4:
            return "GET", "/a.caibx", None, expect(200, a)
        if roll < 0.5:
            return "HEAD", "/a.caibx", None, expect(200)
        if roll < 0.6:
            return rng.choice(["GET", "HEAD"]), f"/missing-{rng.randrange(1000)}.caibx", None, expect(404)
        if roll < 0.75:
            return "PUT", "/" + rng.choice(names), b, expect(200)
        if roll < 0.8:
            return "PUT", "/" + rng.choice(names), b"not an index", expect(415)
        name = rng.choice(names)
        return "GET", "/" + name, None, written(name)

    with Server("index-server", ["-s", indexes, "-w"]) as srv:
        hammer(srv.port, 1.5, next_request)
        start = rss(srv.proc.pid)
        tally = hammer(srv.port, SECONDS, next_request)
        end = rss(srv.proc.pid)
        assert srv.proc.poll() is None
        report("index-server GET/HEAD/PUT", tally, SECONDS, start, end)
    assert not tally.problems, tally.problems
    assert tally.count_5xx() == 0
    assert end <= start + max(64 * MiB, start), (start, end)
    assert all((indexes / name).read_bytes() == b for name in names if (indexes / name).exists())


class Switch:
    """An upstream chunk store whose behaviour the test switches: ok, error (500), stall."""

    def __init__(self, store: Path, stall: float) -> None:
        self.root = store
        self.mode = "ok"
        self.stall = stall
        self.server = Scripted(self.respond)

    def respond(self, h: http.server.BaseHTTPRequestHandler) -> None:
        mode = self.mode
        if mode == "error":
            h.send_response(503)
            h.send_header("Content-Length", "0")
            h.end_headers()
        elif mode == "stall":
            h.send_response(200)
            h.send_header("Content-Length", "100000")
            h.end_headers()
            h.wfile.write(b"\x28\xb5")  # the start of a zstd frame, then nothing
            h.wfile.flush()
            time.sleep(self.stall)
            h.close_connection = True
        else:
            send_file(h, self.root, body=h.command != "HEAD")


def test_chunk_server_upstream_failing_or_slow(data: dict[str, Path], tmp_path: Path) -> None:
    have = chunk_files(data["store"], data["index"])
    ids = list(have)
    switch = Switch(data["store"], stall=5.0)
    up = switch.server
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"store-options": {up.url: {
        "timeout": 1_000_000_000, "error-retry": 2, "error-retry-base-interval": 50_000_000}}}))
    phase = max(3.0, SECONDS / 3)

    def next_request(rng: random.Random) -> Request:
        cid = rng.choice(ids)
        if switch.mode == "ok":
            return "GET", chunk_path(cid), None, expect(200, have[cid])

        def failed(got: int, body: bytes) -> str | None:  # a clear 500, or right bytes (a
            # request that the dedup queue or timing let through before the switch)
            if got == 500 and body == b"internal server error\n":
                return None
            if got == 200 and body == have[cid]:
                return None
            return f"status {got}, {body[:60]!r}"

        return "GET", chunk_path(cid), None, failed

    try:
        with Server("chunk-server", ["--config", cfg, "-s", up.url, "-n", "16"]) as srv:
            tallies = {}
            for mode in ("ok", "error", "stall", "ok"):
                switch.mode = mode
                tallies[mode] = tally = hammer(srv.port, phase, next_request)
                report(f"chunk-server, upstream {mode}", tally, phase)
                assert not tally.problems, (mode, tally.problems)
                assert srv.proc.poll() is None
            assert tallies["error"].count_5xx() > 0 and tallies["stall"].count_5xx() > 0
            assert tallies["ok"].count_5xx() == 0  # recovered
            assert tallies["ok"].statuses[("GET 200", 200)] > 0
            _, err = srv.stop()
        assert "failed to retrieve chunk" in err and "Traceback" not in err
    finally:
        up.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        skip_not_component("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if proc.returncode != 0:
        skip_not_component(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield disk  # type: ignore[misc]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_chunk_server_full_disk(data: dict[str, Path], small_disk: Path) -> None:
    new = chunk_files(data["new"], data["new_index"])  # ~2 MB: does not fit in 1 MiB
    ids = list(new)
    store = small_disk / "store"
    store.mkdir()

    def put(rng: random.Random) -> Request:
        cid = rng.choice(ids)

        def check(got: int, body: bytes) -> str | None:
            if got == 200 or (got == 500 and body == b"internal server error\n"):
                return None
            return f"status {got}, {body[:60]!r}"

        return "PUT", chunk_path(cid), new[cid], check

    with Server("chunk-server", ["-s", store, "-w"]) as srv:
        tally = hammer(srv.port, max(3.0, SECONDS / 2), put, clients=16)
        report("chunk-server PUT, disk full", tally, max(3.0, SECONDS / 2))
        assert not tally.problems, tally.problems
        assert tally.count_5xx() > 0 and srv.proc.poll() is None
        stored = {p for p in store.glob("*/*.cacnk")}
        assert not [p for p in store.rglob("*") if p.name.startswith(".tmp")]  # no partial files
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        for path in stored:  # what was stored is whole and served
            cid = bytes.fromhex(path.name.removesuffix(".cacnk"))
            conn.request("GET", chunk_path(cid))
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read() == new[cid]
        # room again: writes work again
        for path in stored:
            path.unlink()
        cid = ids[0]
        conn.request("PUT", chunk_path(cid), body=new[cid])
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        assert (store / chunk_path(cid).lstrip("/")).read_bytes() == new[cid]
        conn.close()
        code, err = srv.stop()
    assert code == 128 + signal.SIGTERM and "failed to store chunk" in err and "Traceback" not in err


@pytest.mark.parametrize("fault", ["drop", "stall"])
def test_extract_from_a_server_that_drops_or_stalls(data: dict[str, Path], tmp_path: Path, fault: str) -> None:
    ids = [c.id for c in parse_index(data["index"].read_bytes()).chunks]
    victim = chunk_path(ids[len(ids) // 2])
    failures = {"left": 10**6}
    lock = threading.Lock()

    def respond(h: http.server.BaseHTTPRequestHandler) -> None:
        with lock:
            bad = h.path == victim and failures["left"] > 0
            if bad:
                failures["left"] -= 1
        if not bad:
            send_file(h, data["store"], body=h.command != "HEAD")
            return
        blob = (data["store"] / victim.lstrip("/")).read_bytes()
        h.send_response(200)
        h.send_header("Content-Length", str(len(blob)))
        h.end_headers()
        h.wfile.write(blob[: len(blob) // 2])
        h.wfile.flush()
        if fault == "stall":
            time.sleep(4)
        h.close_connection = True  # the connection ends mid-body

    with Scripted(respond) as up:
        cfg = tmp_path / "config.json"
        cfg.write_text(json.dumps({"store-options": {up.url: {
            "timeout": 1_000_000_000, "error-retry": 3, "error-retry-base-interval": 10_000_000}}}))
        out = tmp_path / "out"
        err = assert_clean_failure(run_cli(["--config", cfg, "extract", "-s", up.url, data["index"], out],
                                           check=False))
        assert victim.rsplit("/", 1)[1] in err, err
        assert sum(1 for s in up.seen if s.path == victim) == 3  # tried as configured
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name not in ("config.json",)], list(tmp_path.iterdir())
        # one failure only: the retry gets the chunk and the output is right
        failures["left"] = 1
        run_cli(["--config", cfg, "extract", "-s", up.url, data["index"], out])
        assert out.read_bytes() == data["blob"].read_bytes()
