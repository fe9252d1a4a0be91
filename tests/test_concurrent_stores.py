"""Concurrent writers and readers on one local store: which races are safe.

Spec: ``spec/store.md`` § "Concurrent writers and crashes". Every command runs as a
subprocess (``python -m desync_ref``). Safe, and checked here: two ``make`` runs of blobs
that share chunks, into one store at once (a store that verifies, both indexes extract);
``prune`` racing an ``extract`` whose index it keeps (the extract is never hurt); ``prune``
racing an ``extract`` whose chunks it removes (the extract may fail, cleanly, with "chunk
... not found" and no output, but never writes wrong bytes). A parallel ``make`` that
undoes its speculative chunk writes must not remove a chunk another make found there and
relied on. Delays come from ``random.Random(f"{SEED}:{test}")``
(``DESYNC_REF_CRASH_SEED``).
"""

from __future__ import annotations

import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import run_cli
from storecheck import SEED, assert_verifies, cli, index_ids

from desync_ref import kernels
from desync_ref.formats.index import parse_index

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only

SIZES = "1:4:16"
BLOB_SIZE = 512 * 1024 if kernels.pure_requested() else 2 * 1024 * 1024
CHUNK_FILE = re.compile(r"[0-9a-f]{4}/([0-9a-f]{64})\.cacnk")




def start(cmd: Sequence[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes]) -> subprocess.CompletedProcess[bytes]:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def edited(blob: bytes, rng: random.Random) -> bytes:
    """``blob`` with bytes changed, a stretch inserted and one cut out: most chunks shared."""
    out = bytearray(blob)
    for _ in range(6):
        out[rng.randrange(len(out))] ^= 0x5A
    at = rng.randrange(len(out))
    out[at:at] = rng.randbytes(7000)
    at = rng.randrange(len(out) - 9000)
    del out[at:at + 9000]
    return bytes(out)




def chunk_ids(store: Path) -> set[str]:
    return {m[1] for p in store.glob("*/*") if (m := CHUNK_FILE.fullmatch(f"{p.parent.name}/{p.name}"))}




def assert_extracts(store: Path, index: Path, blob: Path, out: Path, where: str) -> None:
    run_cli(["extract", "-s", store, index, out])
    assert out.read_bytes() == blob.read_bytes(), where
    out.unlink()


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A, B (A edited), C (unrelated) and their indexes, made one at a time (the reference)."""
    base = tmp_path_factory.mktemp("concurrent")
    rng = random.Random(f"{SEED}:blobs")
    a = rng.randbytes(BLOB_SIZE)
    for name, data in (("a", a), ("b", edited(a, rng)), ("c", rng.randbytes(BLOB_SIZE // 4))):
        (base / f"{name}.bin").write_bytes(data)
        run_cli(["make", "-m", SIZES, "-s", base / "store", base / f"{name}.caibx", base / f"{name}.bin"])
    return {"base": base, "store": base / "store",
            **{name: base / f"{name}.bin" for name in "abc"},
            **{f"{name}_index": base / f"{name}.caibx" for name in "abc"}}


def test_two_makes_into_one_store(blobs: dict[str, Path], tmp_path: Path) -> None:
    """A and B (sharing most chunks) made into one store at the same time, four times:
    both succeed with the indexes of a lone run, the store holds exactly the union of their
    chunks and verifies, and both extract."""
    union = index_ids(blobs["a_index"]) | index_ids(blobs["b_index"])
    shared = index_ids(blobs["a_index"]) & index_ids(blobs["b_index"])
    assert len(shared) > len(union) // 2, "A and B should share most chunks"
    for round_ in range(4):
        where = f"round {round_}"
        store = tmp_path / f"store{round_}"
        indexes = {name: tmp_path / f"{name}{round_}.caibx" for name in "ab"}
        procs = [start(cli("make", "-m", SIZES, "-s", store, indexes[name], blobs[name]))
                 for name in "ab"]
        for proc in procs:
            done = finish(proc)
            assert done.returncode == 0, f"{where}: {done.stderr.decode()}"
        for name in "ab":
            assert indexes[name].read_bytes() == blobs[f"{name}_index"].read_bytes(), where
        assert chunk_ids(store) == union, f"{where}: the store is not the union of both"
        assert_verifies(store, where)
        for name in "ab":
            assert_extracts(store, indexes[name], blobs[name], tmp_path / "out", where)


# make in parallel mode, with spans small enough for a 2 MiB blob (the CLI as shipped only
# splits inputs of 32 MiB and more); everything else is the command line as run by users.
SMALL_SPANS = ("import sys; import desync_ref.operations.make as m; m.MIN_SPAN = 64 * 1024; "
               "from desync_ref.cli import main; sys.exit(main(sys.argv[1:]))")
# A multiple of the span step (operations/make.py span_starts with 2 workers and MIN_SPAN
# 64 KiB): 256 KiB for the 2 MiB blob, 64 KiB for the 512 KiB one of the pure backend.
SPAN = 256 * 1024


def test_parallel_make_keeps_chunks_a_concurrent_make_relies_on(blobs: dict[str, Path],
                                                              tmp_path: Path) -> None:
    """A parallel make of A is stopped (SIGSTOP) right after one of its workers wrote a
    speculative chunk; a make of a blob that begins with that chunk runs meanwhile and
    finds it in the store; then A goes on. Both indexes must extract from the store."""
    a_ids = index_ids(blobs["a_index"])
    a = blobs["a"].read_bytes()
    # A blob that starts where one of A's worker spans starts: its first chunk is the
    # worker's first, speculative, chunk. Take a span whose first chunk A does not keep.
    for start_at in range(SPAN, len(a), SPAN):
        b = tmp_path / "b.bin"
        b.write_bytes(a[start_at:start_at + 64 * 1024] + random.Random(SEED).randbytes(64 * 1024))
        run_cli(["make", "-m", SIZES, tmp_path / "b-plain.caibx", b])
        speculative = parse_index((tmp_path / "b-plain.caibx").read_bytes()).chunks[0].id.hex()
        if speculative not in a_ids:
            break
    else:
        pytest.fail("every span of A starts on one of its cuts")
    caught = False
    for attempt in range(6):
        store = tmp_path / f"store{attempt}"
        path = store / speculative[:4] / f"{speculative}.cacnk"
        make_a = start([sys.executable, "-c", SMALL_SPANS, "make", "-n", "2", "-m", SIZES,
                        "-s", store, tmp_path / "a.caibx", blobs["a"]])
        while make_a.poll() is None and not path.exists():
            time.sleep(0.0005)
        if make_a.poll() is None:
            make_a.send_signal(signal.SIGSTOP)
        caught = path.exists() and make_a.poll() is None
        try:
            if caught:
                run_cli(["make", "-m", SIZES, "-s", store, tmp_path / "b.caibx", b])
        finally:
            make_a.send_signal(signal.SIGCONT)
            done = finish(make_a)
        assert done.returncode == 0, done.stderr.decode()
        if caught or (not path.exists() and attempt == 5):
            break
    if not caught:  # the race did not happen (a make that writes nothing speculative)
        run_cli(["make", "-m", SIZES, "-s", store, tmp_path / "b.caibx", b])
    assert (tmp_path / "a.caibx").read_bytes() == blobs["a_index"].read_bytes()
    assert_verifies(store, "after both makes")
    assert_extracts(store, tmp_path / "a.caibx", blobs["a"], tmp_path / "out", "A")
    assert_extracts(store, tmp_path / "b.caibx", b, tmp_path / "out", "B")


def _race_prune(blobs: dict[str, Path], tmp_path: Path, keep: list[Path], name: str,
                rounds: int) -> list[subprocess.CompletedProcess[bytes]]:
    """Extract A while prune keeps ``keep``; one of the two starts first, the other a seeded
    delay later (within half an extract's time either way). Returns the extract results.
    Every round checks the output (absent, or right) and the store (exactly the kept
    chunks, and it verifies)."""
    rng = random.Random(f"{SEED}:{name}")
    a = blobs["a"].read_bytes()
    kept = set().union(*(index_ids(index) for index in keep))
    # calibrate: how long an extract of A writes
    out = tmp_path / "out"
    out.mkdir()
    began = time.monotonic()
    run_cli(["extract", "-s", blobs["store"], blobs["a_index"], out / "a.out"])
    took = time.monotonic() - began
    results = []
    for round_ in range(rounds):
        offset = rng.uniform(-took / 2, took / 2)
        where = f"{name}: seed {SEED}, round {round_}, prune started {offset:+.3f}s after the extract"
        store = tmp_path / f"store{round_}"
        shutil.copytree(blobs["store"], store)
        for entry in out.iterdir():
            entry.unlink()
        target = out / "a.out"
        extract_cmd = cli("extract", "-n", "2", "-s", store, blobs["a_index"], target)
        prune_cmd = cli("prune", "-y", "-s", store, *keep)
        first, second = (extract_cmd, prune_cmd) if offset >= 0 else (prune_cmd, extract_cmd)
        procs = [start(first)]
        time.sleep(abs(offset))
        procs.append(start(second))
        finished = {id(cmd): finish(proc) for cmd, proc in zip((first, second), procs, strict=True)}
        prune, done = finished[id(prune_cmd)], finished[id(extract_cmd)]
        assert prune.returncode == 0, f"{where}: {prune.stderr.decode()}"
        err = done.stderr.decode()
        assert "Traceback" not in err, f"{where}: {err}"
        if done.returncode == 0:
            assert target.read_bytes() == a, f"{where}: the extract wrote wrong bytes"
        else:
            assert re.fullmatch(r"desync-ref: chunk [0-9a-f]{64} not found( in \S+)?\n", err), \
                f"{where}: not a clean 'not found' failure: {err}"
            assert not target.exists(), f"{where}: a failed extract left {target}"
            assert all(p.name.startswith(".a.out.") for p in out.iterdir()), where
        assert chunk_ids(store) == kept, f"{where}: the store does not hold exactly the kept chunks"
        assert_verifies(store, where)
        results.append(done)
    return results


def test_prune_keeping_the_index_being_extracted(blobs: dict[str, Path], tmp_path: Path) -> None:
    """prune keeps A (and C) while A is extracted: the extract always succeeds."""
    results = _race_prune(blobs, tmp_path, [blobs["a_index"], blobs["c_index"]], "prune-keeps", 4)
    assert all(done.returncode == 0 for done in results), [d.stderr.decode() for d in results]


def test_prune_removing_the_chunks_being_extracted(blobs: dict[str, Path], tmp_path: Path) -> None:
    """prune keeps only C while A is extracted: the extract fails cleanly or succeeds, and
    never leaves a wrong or partial output under its name."""
    _race_prune(blobs, tmp_path, [blobs["c_index"]], "prune-removes", 5)


def test_two_writers_create_one_new_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two writers starting at once both see no store and both create it: the one that
    comes second must take the directory the first made (the race the test above hit)."""
    from desync_ref.stores.local import LocalStore

    store = tmp_path / "new-store"
    store.mkdir()  # the other writer got there first ...
    real_exists = Path.exists
    seen: list[Path] = []

    def exists_once_missing(self: Path, **kwargs: bool) -> bool:
        if self == store and not seen:
            seen.append(self)
            return False  # ... after this writer looked
        return real_exists(self, **kwargs)

    monkeypatch.setattr(Path, "exists", exists_once_missing)
    assert LocalStore(store, create=True).path == store
    assert seen == [store]
