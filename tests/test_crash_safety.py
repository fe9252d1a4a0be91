"""Crash safety: commands SIGKILLed at seeded random moments leave stores that verify, no
partial file under a final name, and a state from which a rerun gives the right bytes.

Spec: ``spec/store.md`` § "Concurrent writers and crashes". Every command runs as a
subprocess (``python -m desync_ref``) and is killed with SIGKILL, by its pid, a delay after
it first changed the state it works on (a new prefix directory in its store, its output
file appearing or changing, the first chunk prune removes). The delays are drawn from
``random.Random(f"{SEED}:{command}")`` over the working time of a clean run (its first
change of the state until its work is all visible), scaled by the share of the work still
to do; ``DESYNC_REF_CRASH_SEED`` picks other delays, and a failure names the seed, the kill
and its delay. Each command is killed KILLS times in chains of up to CHAIN: every kill but
the first of a chain hits a run that resumes what the previous kill left; a chain ends
after CHAIN kills or once a kill came after the work was done, and then a complete rerun
is checked. After every kill the files are checked at once; the chunk files every kill
left are gathered (hard links) and checked by one ``verify -s`` run (the CLI) per test, so
a test costs one verify instead of twenty. A test also demands that several kills caught
its command half-way, or it would check nothing.

Temp names that may stay behind after a kill (and nothing else may):
``<store>/<xxxx>/.tmp-cacnk*`` (a chunk file being written, ``LocalStore.store_chunk``) and
``<dir>/.<name>.*.tmp`` beside an index or an extract output (``fs/atomic.py``); nothing
removes the latter later, ``prune`` removes the former.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_cli
from httputil import Server
from storecheck import SEED, assert_verifies, cli, index_ids

from desync_ref import kernels
from desync_ref.formats.chunk import compress
from desync_ref.formats.index import parse_index

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only

KILLS = 20
CHAIN = 4  # kills in a row, each on what the previous one left, then a complete rerun
MIN_PARTIAL = 5  # kills (of KILLS) that must have caught the command half-way
SIZES = "1:4:16"
# The pure-Python chunker is ~20 times slower: smaller inputs keep each run short.
BLOB_SIZE = 384 * 1024 if kernels.pure_requested() else 1024 * 1024
# extract writes what its workers fetched in batches of 1 MiB (operations/extract.py): a
# half-written output needs a few batches.
EXTRACT_SIZE = 3 * 1024 * 1024 if kernels.pure_requested() else 4 * 1024 * 1024

CHUNK_FILE = re.compile(r"([0-9a-f]{64})\.cacnk")
TEMP_CHUNK = re.compile(r"\.tmp-cacnk.+")

Watch = Callable[[], Callable[[], bool]]  # snapshot now -> "has the state changed since?"




def rng_for(name: str) -> random.Random:
    return random.Random(f"{SEED}:{name}")


def make_blob(rng: random.Random, size: int) -> bytes:
    """Random bytes with a run of zeros and a repeated stretch (zero and duplicate chunks)."""
    head = rng.randbytes(size * 6 // 10)
    tail = rng.randbytes(size - len(head) - size // 16 - size // 8)
    return head + bytes(size // 16) + head[:size // 8] + tail


def edited(blob: bytes, rng: random.Random) -> bytes:
    """``blob`` with a few bytes changed, one stretch inserted and one cut out."""
    out = bytearray(blob)
    for _ in range(5):
        at = rng.randrange(len(out))
        out[at] ^= 0xFF
    at = rng.randrange(len(out))
    out[at:at] = rng.randbytes(3000)
    at = rng.randrange(len(out) - 5000)
    del out[at:at + 5000]
    return bytes(out)




def store_state(store: Path, where: str) -> tuple[set[str], list[Path]]:
    """(chunk ids, temp files) of a store; anything else in it fails the test."""
    ids: set[str] = set()
    temps: list[Path] = []
    if not store.exists():
        return ids, temps
    for sub in store.iterdir():
        assert sub.is_dir() and re.fullmatch(r"[0-9a-f]{4}", sub.name), f"{where}: stray {sub}"
        for entry in sub.iterdir():
            match = CHUNK_FILE.fullmatch(entry.name)
            if match and match[1].startswith(sub.name) and entry.is_file():
                ids.add(match[1])
            elif TEMP_CHUNK.fullmatch(entry.name):
                temps.append(entry)
            else:
                raise AssertionError(f"{where}: {entry} is neither a chunk nor a temp file")
    return ids, temps


def check_store(store: Path, wanted: set[str], where: str) -> set[str]:
    """A store a killed run wrote: chunk files (each one of ``wanted``) and temp files only."""
    ids, _ = store_state(store, where)
    assert ids <= wanted, f"{where}: {len(ids - wanted)} chunks that are not the index's"
    return ids




def assert_output(directory: Path, name: str, expected: bytes, where: str) -> bool:
    """The output is absent or complete and right; other files only under its temp names.
    True if a temp file of the output is there."""
    temp = re.compile(rf"\.{re.escape(name)}\..+\.tmp")
    left = False
    for entry in directory.iterdir():
        if entry.name == name:
            assert entry.read_bytes() == expected, f"{where}: {entry} is there but wrong"
        elif temp.fullmatch(entry.name):
            left = True
        else:
            raise AssertionError(f"{where}: unexpected file {entry}")
    return left


def listing(directory: Path) -> list[str]:
    """The names in a directory that a running command may remove at any time."""
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def count_chunks(store: Path) -> int:
    """Chunk files in a store (cheap enough to poll while a command runs)."""
    return sum(name.endswith(".cacnk") for sub in listing(store) for name in listing(store / sub))


def grows(directory: Path) -> Watch:
    """The state changed once ``directory`` has more entries (a new prefix directory or a
    new temp file) than when the run started."""
    def count() -> int:
        return len(listing(directory))

    def watch() -> Callable[[], bool]:
        before = count()
        return lambda: count() > before
    return watch


def wait_for_work(proc: subprocess.Popen[bytes], started: Callable[[], bool]) -> None:
    """Return once ``started()`` or the process has ended."""
    while proc.poll() is None and not started():
        time.sleep(0.002)


def kill_during_work(cmd: Sequence[str], watch: Watch, delay: float) -> None:
    """Run ``cmd``; ``delay`` s after it first changed the state, SIGKILL it (by pid)."""
    started = watch()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_work(proc, started)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def timed_run(cmd: Sequence[str], watch: Watch,
              done: Callable[[], bool] | None = None) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """A complete run: its working time (from its first change of the state until ``done()``,
    or its end), and its result. Output is small (stats), so the pipes cannot fill."""
    started = watch()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    wait_for_work(proc, started)
    began = time.monotonic()
    took = None
    while done is not None and proc.poll() is None:
        if done():
            took = time.monotonic() - began
            break
        time.sleep(0.002)
    out, err = proc.communicate(timeout=300)
    took = took or time.monotonic() - began
    assert proc.returncode == 0, f"{cmd[3:]} failed: {err.decode()}"
    return took, subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


class Evidence:
    """The chunk files that killed runs left, gathered (hard links) into stores that one
    ``verify -s`` each checks at the end. Files of one name but different bytes go to
    different stores, so each of them is verified."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.stores: list[Path] = []
        self.origin: dict[tuple[int, str], str] = {}

    def add(self, store: Path, ids: set[str], where: str) -> None:
        for chunk_id in ids:
            name = f"{chunk_id[:4]}/{chunk_id}.cacnk"
            path = store / name
            for number in range(len(self.stores) + 1):
                if number == len(self.stores):
                    self.stores.append(self.base / f"evidence{number}")
                dest = self.stores[number] / name
                if not dest.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.link(path, dest)
                    self.origin[number, chunk_id] = where
                    break
                if dest.read_bytes() == path.read_bytes():
                    break

    def verify(self) -> None:
        for number, store in enumerate(self.stores):
            proc = run_cli(["verify", "-s", store])
            if proc.stderr:
                report = proc.stderr.decode()
                bad = [(chunk_id, where) for (n, chunk_id), where in self.origin.items()
                       if n == number and chunk_id in report]
                raise AssertionError(f"verify found invalid chunks left by kills {bad}:\n{report}")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Blob A, its edit B and an unrelated blob C, their indexes, and a store holding the
    chunks of all three; the larger blob X and its edit Y for extract, in their own store."""
    base = tmp_path_factory.mktemp("crash")
    rng = rng_for("data")
    a = make_blob(rng, BLOB_SIZE)
    (base / "a.bin").write_bytes(a)
    (base / "b.bin").write_bytes(edited(a, rng))
    (base / "c.bin").write_bytes(rng.randbytes(BLOB_SIZE // 2))
    for name in ("a", "b", "c"):
        run_cli(["make", "-m", SIZES, "-s", base / "store", base / f"{name}.caibx", base / f"{name}.bin"])
    x = make_blob(rng, EXTRACT_SIZE)
    (base / "x.bin").write_bytes(x)
    (base / "y.bin").write_bytes(edited(x, rng))
    run_cli(["make", "-m", SIZES, "-s", base / "x-store", base / "x.caibx", base / "x.bin"])
    return {"base": base, "a": base / "a.bin", "b": base / "b.bin", "a_index": base / "a.caibx",
            "b_index": base / "b.caibx", "c_index": base / "c.caibx", "store": base / "store",
            "x": base / "x.bin", "y": base / "y.bin", "x_index": base / "x.caibx",
            "x_store": base / "x-store"}


@dataclass
class Left:
    """What a kill left: the chunk ids in the command's store (for ``Evidence``), whether
    the command was caught half-way, and the share of the work still to do (the next kill
    of a chain draws its delay over that share of a clean run's working time)."""

    ids: set[str]
    half_way: bool
    to_do: float


@dataclass
class Crash:
    """One command killed KILLS times. ``reset`` makes the state a chain starts from;
    ``watch`` tells when a run has begun to change it (the kill delays count from there);
    ``after_kill`` checks what a kill left; ``after_rerun`` checks a complete run
    (``rerun``, else ``command``); ``done`` tells, in the clean run that sets the delays,
    when the work is over (the process takes a while longer to end)."""

    name: str
    command: list[str]
    reset: Callable[[], None]
    watch: Watch
    after_kill: Callable[[str], Left]
    after_rerun: Callable[[str, subprocess.CompletedProcess[bytes]], None]
    store: Path | None = None
    rerun: list[str] | None = None
    done: Callable[[], bool] | None = None  # the work is complete (before the process ends)


def crash_loop(crash: Crash, evidence: Evidence) -> None:
    """Calibrate on a clean run, then the chains of kills, each ended by a complete rerun."""
    rerun = crash.rerun or crash.command
    crash.reset()
    work, proc = timed_run(rerun, crash.watch, crash.done)
    crash.after_rerun(f"{crash.name}: clean run", proc)
    rng = rng_for(crash.name)
    partial = 0
    chain = 0
    to_do = 1.0
    for n in range(KILLS):
        if chain == 0:
            crash.reset()
            to_do = 1.0
        delay = rng.uniform(0, work * max(to_do, 0.05))
        where = f"{crash.name}: seed {SEED}, kill {n} ({chain} before it in its chain) {delay:.3f}s in"
        kill_during_work(crash.command, crash.watch, delay)
        left = crash.after_kill(where)
        if crash.store is not None:
            evidence.add(crash.store, left.ids, where)
        partial += left.half_way
        to_do = left.to_do
        chain += 1
        # A chain ends after CHAIN kills, or once a kill came after the work was done.
        if chain == CHAIN or to_do == 0 or n == KILLS - 1:
            crash.after_rerun(f"{where}, then rerun", run_cli(rerun[3:]))
            chain = 0
    evidence.verify()
    assert partial >= MIN_PARTIAL, (
        f"{crash.name}: only {partial} of {KILLS} kills caught the command half-way "
        f"(a clean run works for {work:.3f}s)")


def fresh(*paths: Path) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


# --- the commands ---------------------------------------------------------------------------

def test_killed_make(data: dict[str, Path], tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "out"
    out.mkdir()
    index = out / "a.caibx"
    clean = data["a_index"].read_bytes()
    wanted = index_ids(data["a_index"])

    def after_kill(where: str) -> Left:
        ids = check_store(store, wanted, where)
        left_temp = assert_output(out, "a.caibx", clean, where)
        return Left(ids, 0 < len(ids) < len(wanted) or left_temp, 1 - len(ids) / len(wanted))

    def after_rerun(where: str, proc: subprocess.CompletedProcess[bytes]) -> None:
        assert index.read_bytes() == clean, where
        assert store_state(store, where)[0] == wanted, f"{where}: store does not hold exactly A's chunks"

    crash_loop(Crash("make", cli("make", "-m", SIZES, "-s", store, index, data["a"]),
                     lambda: fresh(store, index), grows(store), after_kill, after_rerun, store,
                     done=lambda: count_chunks(store) == len(wanted)), Evidence(tmp_path))
    assert_verifies(store, "make: last rerun")
    run_cli(["extract", "-s", store, index, tmp_path / "a.out"])
    assert (tmp_path / "a.out").read_bytes() == data["a"].read_bytes()


@pytest.mark.parametrize("in_place", [False, True], ids=["new-file", "in-place"])
def test_killed_extract(data: dict[str, Path], tmp_path: Path, in_place: bool) -> None:
    """Without -k the output appears complete or not at all (the chunks also go into a
    cache ``-c``, whose files must verify); with -k the file is rewritten where it lies,
    starting from Y (X edited), and a rerun resumes: it keeps in place exactly the chunks
    that were already right in the file it found (counted here from the bytes)."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    target = out / "a.out"
    a, b = data["x"].read_bytes(), data["y"].read_bytes()
    wanted = index_ids(data["x_index"])
    flags = ["-k"] if in_place else ["-c", cache]
    command = cli("extract", *flags, "-s", data["x_store"], data["x_index"], target)
    rerun = cli("extract", *flags, "--print-stats", "-s", data["x_store"], data["x_index"], target)
    chunks = parse_index(data["x_index"].read_bytes()).chunks
    right_before: list[int] = []  # chunks already right in the file the next run finds

    def right_now() -> int:
        now = target.read_bytes()
        return sum(now[c.start:c.start + c.size] == a[c.start:c.start + c.size] for c in chunks)

    def reset() -> None:
        fresh(cache)
        for entry in out.iterdir():
            entry.unlink()
        if in_place:
            target.write_bytes(b)
            right_before[:] = [right_now()]

    def changes() -> Callable[[], bool]:  # -k: cut to A's length, or a chunk rewritten
        def look() -> tuple[int, int]:
            info = target.stat()
            return info.st_size, info.st_mtime_ns
        before = look()
        return lambda: look() != before

    def after_kill(where: str) -> Left:
        if in_place:
            assert sorted(out.iterdir()) == [target], f"{where}: -k made other files"
            right_before[:] = [right_now()]
            return Left(set(), target.read_bytes() not in (a, b), 1 - right_before[0] / len(chunks))
        # each run starts a new output file: all the work is still to do
        return Left(check_store(cache, wanted, where), assert_output(out, "a.out", a, where), 1.0)

    def after_rerun(where: str, proc: subprocess.CompletedProcess[bytes]) -> None:
        assert target.read_bytes() == a, where
        assert_output(out, "a.out", a, where)
        if not in_place:
            check_store(cache, wanted, where)
            return
        kept = json.loads(proc.stdout)["chunks-in-place"]
        if where.endswith("clean run"):  # over Y: some chunks are right, some are not
            assert 0 < right_before[0] < len(chunks), right_before
        # Only right bytes are ever written, at their offsets: a rerun keeps all of them.
        assert kept == right_before[0], (
            f"{where}: the rerun kept {kept} chunks in place, {right_before[0]} were right")

    crash_loop(Crash(f"extract{' -k' if in_place else ''}", command, reset,
                     changes if in_place else grows(out), after_kill, after_rerun,
                     None if in_place else cache, rerun), Evidence(tmp_path))


def test_killed_cache(data: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "cache"
    wanted = index_ids(data["a_index"])

    def reset() -> None:
        fresh(target)
        target.mkdir()

    def after_kill(where: str) -> Left:
        ids = check_store(target, wanted, where)
        return Left(ids, 0 < len(ids) < len(wanted), 1 - len(ids) / len(wanted))

    def after_rerun(where: str, proc: subprocess.CompletedProcess[bytes]) -> None:
        assert store_state(target, where)[0] == wanted, f"{where}: the cache does not hold exactly A's chunks"

    crash_loop(Crash("cache", cli("cache", "-s", data["store"], "-c", target, data["a_index"]),
                     reset, grows(target), after_kill, after_rerun, target,
                     done=lambda: count_chunks(target) == len(wanted)), Evidence(tmp_path))
    run_cli(["extract", "-s", target, data["a_index"], tmp_path / "a.out"])
    assert (tmp_path / "a.out").read_bytes() == data["a"].read_bytes()


def test_killed_chop(data: dict[str, Path], tmp_path: Path) -> None:
    store = tmp_path / "store"
    wanted = index_ids(data["a_index"])

    def reset() -> None:
        fresh(store)
        store.mkdir()

    def after_kill(where: str) -> Left:
        ids = check_store(store, wanted, where)
        return Left(ids, 0 < len(ids) < len(wanted), 1 - len(ids) / len(wanted))

    def after_rerun(where: str, proc: subprocess.CompletedProcess[bytes]) -> None:
        assert store_state(store, where)[0] == wanted, f"{where}: the store does not hold exactly A's chunks"

    crash_loop(Crash("chop", cli("chop", "-s", store, data["a_index"], data["a"]),
                     reset, grows(store), after_kill, after_rerun, store,
                     done=lambda: count_chunks(store) == len(wanted)), Evidence(tmp_path))
    run_cli(["extract", "-s", store, data["a_index"], tmp_path / "a.out"])
    assert (tmp_path / "a.out").read_bytes() == data["a"].read_bytes()


def test_killed_prune(data: dict[str, Path], tmp_path: Path) -> None:
    """A killed prune has never removed a chunk of a kept index; a rerun finishes the job
    (the chunks of C and D, stale temp files and emptied prefix directories gone)."""
    store, template = tmp_path / "store", tmp_path / "template"
    shutil.copytree(data["store"], template)
    # Many chunks to remove, so that a kill lands while prune removes them.
    doomed_blob = tmp_path / "d.bin"
    doomed_blob.write_bytes(rng_for("prune").randbytes(BLOB_SIZE))
    run_cli(["make", "-m", SIZES, "-s", template, tmp_path / "d.caibx", doomed_blob])
    keep = index_ids(data["a_index"]) | index_ids(data["b_index"])
    every = keep | index_ids(data["c_index"]) | index_ids(tmp_path / "d.caibx")

    def reset() -> None:
        fresh(store)
        # Hard links: prune only ever unlinks, so the template stays as it is.
        shutil.copytree(template, store, copy_function=os.link)
        (min(store.iterdir()) / ".tmp-cacnk12345").write_bytes(b"left by a killed writer")

    def first_removal() -> Callable[[], bool]:
        """prune removes chunks in sorted order, then temp files, then empty prefix
        directories: the run has begun once the first doomed chunk still there is gone, or
        a prefix directory."""
        paths = [store / c[:4] / f"{c}.cacnk" for c in sorted(every - keep)]
        first = next((path for path in paths if path.exists()), None)
        directories = len(listing(store))
        return lambda: (first is not None and not first.exists()) or len(listing(store)) != directories

    def pruned() -> bool:
        subs = listing(store)
        return count_chunks(store) == len(keep) and all(listing(store / sub) for sub in subs)

    def after_kill(where: str) -> Left:
        ids, temps = store_state(store, where)
        assert keep <= ids, f"{where}: prune removed {len(keep - ids)} chunks of the kept indexes"
        empty = [sub for sub in store.iterdir() if not any(sub.iterdir())]
        to_do = (len(ids - keep) + len(temps) + len(empty)) / (len(every - keep) + 1)
        return Left(ids, ids != keep or bool(temps) or bool(empty), min(1.0, to_do))

    def after_rerun(where: str, proc: subprocess.CompletedProcess[bytes]) -> None:
        ids, temps = store_state(store, where)
        assert ids == keep and not temps, f"{where}: {len(ids - keep)} extra chunks, temp files {temps}"
        assert all(any(sub.iterdir()) for sub in store.iterdir()), f"{where}: empty prefix directory"

    crash_loop(Crash("prune", cli("prune", "-y", "-s", store, data["a_index"], data["b_index"]),
                     reset, first_removal, after_kill, after_rerun, store, done=pruned),
               Evidence(tmp_path))
    run_cli(["extract", "-s", store, data["a_index"], tmp_path / "a.out"])
    assert (tmp_path / "a.out").read_bytes() == data["a"].read_bytes()


def _tree(root: Path, rng: random.Random, size: int) -> None:
    """A few directories of random files, ``size`` bytes in all, fixed mtimes."""
    left = size
    for n in range(12):
        directory = root / f"d{n % 3}"
        directory.mkdir(parents=True, exist_ok=True)
        part = left if n == 11 else rng.randrange(left // 4, left // 2 + 1)
        left -= part
        path = directory / f"f{n}"
        path.write_bytes(rng.randbytes(part))
        os.utime(path, (1_600_000_000, 1_600_000_000 + n))
    for directory in [*root.iterdir(), root]:
        os.utime(directory, (1_600_000_000, 1_600_000_000))


def test_killed_tar_index(tmp_path: Path) -> None:
    tree, store, out = tmp_path / "tree", tmp_path / "store", tmp_path / "out"
    _tree(tree, rng_for("tree"), BLOB_SIZE)
    out.mkdir()
    reference = tmp_path / "ref"
    run_cli(["tar", "-i", "-m", SIZES, "-s", reference / "store", reference / "t.caidx", tree])
    run_cli(["tar", reference / "t.catar", tree])
    clean = (reference / "t.caidx").read_bytes()
    wanted = index_ids(reference / "t.caidx")
    index = out / "t.caidx"

    def after_kill(where: str) -> Left:
        ids = check_store(store, wanted, where)
        left_temp = assert_output(out, "t.caidx", clean, where)
        return Left(ids, 0 < len(ids) < len(wanted) or left_temp, 1 - len(ids) / len(wanted))

    def after_rerun(where: str, proc: subprocess.CompletedProcess[bytes]) -> None:
        assert index.read_bytes() == clean, where
        assert store_state(store, where)[0] == wanted, where

    crash_loop(Crash("tar -i", cli("tar", "-i", "-m", SIZES, "-s", store, index, tree),
                     lambda: fresh(store, index), grows(store), after_kill, after_rerun, store,
                     done=lambda: count_chunks(store) == len(wanted)), Evidence(tmp_path))
    run_cli(["extract", "-s", store, index, tmp_path / "t.catar"])
    assert (tmp_path / "t.catar").read_bytes() == (reference / "t.catar").read_bytes()


def test_killed_chunk_server_receiving_puts(data: dict[str, Path], tmp_path: Path) -> None:
    """``make -s http://...`` into ``chunk-server -w``, and a raw PUT stalled half-way through
    its body; the server is SIGKILLed (then the client). Only whole, valid chunks may be in
    its store, never the stalled PUT's; a rerun through a new server completes the store."""
    store, out = tmp_path / "store", tmp_path / "out"
    out.mkdir()
    store.mkdir()
    blob = tmp_path / "small.bin"
    blob.write_bytes(data["a"].read_bytes()[:BLOB_SIZE // 2])
    reference = tmp_path / "ref.caibx"
    run_cli(["make", "-m", SIZES, reference, blob])
    clean = reference.read_bytes()
    wanted = index_ids(reference)
    foreign = rng_for("foreign").randbytes(6000)
    foreign_id = single_chunk_id(tmp_path, foreign)
    foreign_body = compress(foreign)
    stalled_put = (f"PUT /{foreign_id[:4]}/{foreign_id}.cacnk HTTP/1.1\r\nHost: x\r\n"
                   f"Content-Length: {len(foreign_body)}\r\n\r\n").encode() + foreign_body[:3000]
    index = out / "x.caibx"
    evidence = Evidence(tmp_path)

    def make_cmd(url: str) -> list[str]:
        return cli("make", "-e", "1", "-m", SIZES, "-s", url, index, blob)

    server = Server("chunk-server", ["-w", "-s", store])
    try:
        work, _ = timed_run(make_cmd(server.url), grows(store), lambda: count_chunks(store) == len(wanted))
        assert index.read_bytes() == clean and store_state(store, "clean run")[0] == wanted
        rng = rng_for("chunk-server")
        partial = chain = 0
        to_do = 1.0
        for n in range(KILLS):
            if chain == 0:
                for sub in store.iterdir():
                    shutil.rmtree(sub)
                fresh(index)
                to_do = 1.0
            delay = rng.uniform(0, work * max(to_do, 0.05))
            where = f"chunk-server: seed {SEED}, kill {n} ({chain} before it in its chain) {delay:.3f}s in"
            with socket.create_connection(("127.0.0.1", server.port)) as stalled:
                stalled.sendall(stalled_put)
                started = grows(store)()
                client = subprocess.Popen(make_cmd(server.url), stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
                wait_for_work(client, started)
                time.sleep(delay)
                server.stop(signal.SIGKILL)
                client.send_signal(signal.SIGKILL)
                client.wait()
            ids = check_store(store, wanted, where)
            assert foreign_id not in ids, f"{where}: the half-sent PUT was stored"
            evidence.add(store, ids, where)
            partial += 0 < len(ids) < len(wanted)
            to_do = 1 - len(ids) / len(wanted)
            chain += 1
            server = Server("chunk-server", ["-w", "-s", store])
            if chain == CHAIN or to_do == 0 or n == KILLS - 1:
                run_cli(make_cmd(server.url)[3:])
                assert index.read_bytes() == clean, where
                assert store_state(store, where)[0] == wanted, where
                chain = 0
    finally:
        server.stop(signal.SIGKILL)
    evidence.verify()
    assert partial >= MIN_PARTIAL, f"chunk-server: only {partial} kills caught it half-way"
    assert_verifies(store, "chunk-server: last rerun")


def single_chunk_id(tmp_path: Path, data: bytes) -> str:
    """The id of ``data`` as one chunk (made by the CLI); no blob of this file holds it."""
    path = tmp_path / "foreign.bin"
    path.write_bytes(data)
    run_cli(["make", "-m", "8:16:32", tmp_path / "foreign.caibx", path])
    chunks = parse_index((tmp_path / "foreign.caibx").read_bytes()).chunks
    assert len(chunks) == 1
    return chunks[0].id.hex()


# --- states a crash of the machine (not of the process) can leave -----------------------------

# A zero-length file under a chunk's name is what a machine crash leaves when the rename
# reached the disk and the data did not (spec/store.md "Durability"): a rerun replaces it.
@pytest.mark.parametrize("command", ["make", "chop", "cache"])
def test_rerun_replaces_zero_length_chunk_files(data: dict[str, Path], tmp_path: Path,
                                                command: str) -> None:
    """Rerunning the command that wrote a store must write such chunks again."""
    store = tmp_path / "store"
    shutil.copytree(data["store"], store)
    ids = sorted(index_ids(data["a_index"]))
    for chunk_id in ids[:: max(1, len(ids) // 3)][:3]:
        (store / chunk_id[:4] / f"{chunk_id}.cacnk").write_bytes(b"")
    if command == "make":
        run_cli(["make", "-m", SIZES, "-s", store, tmp_path / "a.caibx", data["a"]])
    elif command == "chop":
        run_cli(["chop", "-s", store, data["a_index"], data["a"]])
    else:  # the damaged store is the cache being filled from the intact one
        run_cli(["cache", "-s", data["store"], "-c", store, data["a_index"]])
    assert_verifies(store, f"{command} over zero-length chunk files")
    run_cli(["extract", "-s", store, data["a_index"], tmp_path / "a.out"])
    assert (tmp_path / "a.out").read_bytes() == data["a"].read_bytes()


def test_verify_repair_keeps_unreadable_chunks(data: dict[str, Path], tmp_path: Path) -> None:
    """``verify -r`` reports a chunk it cannot read but must not delete it: it may be good."""
    store = tmp_path / "store"
    shutil.copytree(data["store"], store)
    victim = sorted(store.rglob("*.cacnk"))[0]
    os.chmod(victim, 0)
    prefix: list[str] = []
    if os.geteuid() == 0:  # root reads anything: take away its right to ignore file modes
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    proc = subprocess.run([*prefix, *cli("verify", "-r", "-s", store)], capture_output=True,
                          timeout=120)
    report = proc.stderr.decode()
    # A store that could not be read whole is not verified: the run fails, naming the chunk.
    assert proc.returncode == 1, report
    assert victim.name.removesuffix(".cacnk") in report, f"the unreadable chunk was not reported: {report}"
    assert victim.exists(), f"verify -r deleted a chunk it could not read: {report}"


def test_put_does_not_replace_a_good_chunk(data: dict[str, Path], tmp_path: Path) -> None:
    """A client killed while it prepared a body, and retried with a truncated one, must not
    destroy a chunk the store already holds intact."""
    store = tmp_path / "store"
    shutil.copytree(data["store"], store)
    path = sorted(store.rglob("*.cacnk"))[0]
    good = path.read_bytes()
    body = good[: len(good) // 2]
    with Server("chunk-server", ["-w", "-s", store]) as server, \
            socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.sendall(f"PUT /{path.parent.name}/{path.name} HTTP/1.1\r\nHost: x\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        while conn.recv(65536):
            pass
    assert_verifies(store, "after a truncated PUT of a stored chunk")
    assert path.read_bytes() == good
