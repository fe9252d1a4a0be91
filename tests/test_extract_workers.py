"""extract's worker processes (spec/extract.md § "Worker processes"): on a local store the
plan is written by forked workers; the output, the stats and the errors are those of the
thread path. Index and store come from casync, so the pure pass does not chunk."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import assert_clean_failure, children_of, run_cli

from desync_ref.errors import ChunkMissing, DesyncRefError
from desync_ref.formats.chunk import compress, decompress
from desync_ref.formats.index import parse_index
from desync_ref.operations import extract_workers
from desync_ref.operations.extract import extract
from desync_ref.stores.local import LocalStore

MIB = 1 << 20


def _blob() -> tuple[bytes, bytes]:
    """(blob, seed): store data, zeros, a repeat of earlier data (self-seed runs), and a
    stretch the seed holds."""
    rng = random.Random(23)
    first = rng.randbytes(5 * MIB)
    tail = rng.randbytes(2 * MIB)
    blob = first + bytes(MIB) + first[:2 * MIB] + tail
    seed = rng.randbytes(100_000) + tail + rng.randbytes(50_000)
    return blob, seed


@pytest.fixture
def made(tmp_path: Path, casync: str) -> tuple[Path, Path, bytes]:
    blob, seed = _blob()
    (tmp_path / "blob").write_bytes(blob)
    (tmp_path / "seed").write_bytes(seed)
    for name in ("blob", "seed"):
        subprocess.run([casync, "make", f"--store={tmp_path / 's'}", str(tmp_path / f"{name}.caibx"),
                        str(tmp_path / name)], check=True, capture_output=True)
    return tmp_path / "blob.caibx", tmp_path / "s", blob


@pytest.fixture
def forked(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Notes each time the process path is taken."""
    taken: list[bool] = []
    real = extract_workers.run_plan

    def counted(*args: object, **kwargs: object) -> object:
        taken.append(True)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(extract_workers, "run_plan", counted)
    return taken


def test_processes_write_what_threads_write(made: tuple[Path, Path, bytes], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            forked: list[bool]) -> None:
    index_path, store, blob = made
    index = parse_index(index_path.read_bytes())
    monkeypatch.setattr(extract_workers, "TASK_BYTES", 256 * 1024)  # many tasks, many hand-offs
    threads = extract(index, LocalStore(store), tmp_path / "threads", workers=2)
    assert not forked
    processes = extract(index, LocalStore(store), tmp_path / "processes", workers=2, processes=2)
    assert forked
    assert (tmp_path / "processes").read_bytes() == blob
    assert processes == threads
    assert processes.chunks_from_seeds > 0  # the repeat came from earlier in the output


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: no worker processes")
def test_cli_processes_and_one_thread_agree_with_a_seed(made: tuple[Path, Path, bytes],
                                                        tmp_path: Path) -> None:
    index, store, blob = made
    outputs = {}
    for n in ("1", "2"):
        out = tmp_path / f"out{n}"
        proc = run_cli(["extract", "-n", n, "--print-stats", "-s", store,
                        "--seed", tmp_path / "seed.caibx", index, out])
        outputs[n] = json.loads(proc.stdout)
        assert out.read_bytes() == blob
    assert outputs["1"] == outputs["2"]
    assert outputs["2"]["bytes-copied-from-seeds"] > 0


def test_missing_chunk_in_a_worker_is_the_same_error(made: tuple[Path, Path, bytes],
                                                     tmp_path: Path, forked: list[bool]) -> None:
    index_path, store, _ = made
    index = parse_index(index_path.read_bytes())
    victim = index.chunks[len(index.chunks) // 3].id.hex()
    (store / victim[:4] / f"{victim}.cacnk").unlink()
    errors = []
    for processes in (0, 2):
        with pytest.raises(ChunkMissing) as caught:
            extract(index, LocalStore(store), tmp_path / "out", workers=2, processes=processes)
        assert caught.value.chunk_id == victim
        errors.append(str(caught.value))
        assert len(forked) == (1 if processes else 0)
        assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name) == []
    assert errors[0] == errors[1]
    proc = run_cli(["extract", "-n", "2", "-s", store, index_path, tmp_path / "out"], check=False)
    assert assert_clean_failure(proc).strip().endswith(errors[0])
    assert proc.returncode == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["cut short", "data after the frame", "another chunk's bytes",
                                    "other bytes of its size", "a frame too big",
                                    "plain form only", "missing marker"])
def test_damaged_chunk_in_a_worker_is_what_threads_see(made: tuple[Path, Path, bytes],
                                                       tmp_path: Path, forked: list[bool],
                                                       damage: str) -> None:
    """The workers read store chunks their own lean way (spec/extract.md § "Lean store
    reads"); whatever it does not take goes through the chunk source: the same error as the
    thread path, or the same output when the chunk is only in another form."""
    index_path, store, blob = made
    index = parse_index(index_path.read_bytes())
    victim, neighbour = (c.id.hex() for c in index.chunks[len(index.chunks) // 3:][:2])
    path = store / victim[:4] / f"{victim}.cacnk"
    frame = path.read_bytes()
    if damage == "cut short":
        path.write_bytes(frame[:-5])
    elif damage == "data after the frame":
        path.write_bytes(frame + b"\x00")
    elif damage == "another chunk's bytes":
        path.write_bytes((store / neighbour[:4] / f"{neighbour}.cacnk").read_bytes())
    elif damage == "other bytes of its size":
        data = decompress(frame)
        path.write_bytes(compress(bytes([data[0] ^ 1]) + data[1:]))
    elif damage == "a frame too big":
        path.write_bytes(compress(decompress(frame) + b"more"))
    elif damage == "plain form only":
        path.unlink()
        (store / victim[:4] / victim).write_bytes(decompress(frame))
    else:
        path.unlink()
        path.symlink_to(store / neighbour[:4] / f"{neighbour}.cacnk")
    outcomes = []
    for processes in (0, 2):
        try:
            extract(index, LocalStore(store), tmp_path / "out", workers=2, processes=processes)
            outcomes.append(("written", (tmp_path / "out").read_bytes() == blob))
        except DesyncRefError as exc:
            outcomes.append((type(exc).__name__, str(exc)))
            assert not (tmp_path / "out").exists()
    assert len(forked) == 1
    assert outcomes[0] == outcomes[1]
    assert outcomes[0] == ("written", True) if damage == "plain form only" else victim in outcomes[0][1]


def _gone(pid: int) -> bool:
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def test_workers_exit_with_the_parent(made: tuple[Path, Path, bytes], tmp_path: Path) -> None:
    """A SIGKILLed extract leaves no worker behind (prctl PDEATHSIG in each worker): one
    chunk file is a FIFO, so the worker that opens it waits there until it is killed."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: extract uses no worker processes")
    index_path, store, _ = made
    index = parse_index(index_path.read_bytes())
    victim = index.chunks[len(index.chunks) // 2].id.hex()
    chunk = store / victim[:4] / f"{victim}.cacnk"
    chunk.unlink()
    os.mkfifo(chunk)
    proc = subprocess.Popen([sys.executable, "-m", "desync_ref", "extract", "-n", "2", "-s",
                             str(store), str(index_path), str(tmp_path / "out")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(workers := children_of(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) >= 2, "the workers never started"
        time.sleep(0.5)
        assert proc.poll() is None  # still waiting for the worker stuck on the FIFO
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in workers if not _gone(pid)]
    for pid in left:  # leave nothing stuck on the FIFO behind a failed test
        os.kill(pid, signal.SIGKILL)
    assert left == []


def test_tasks_cover_the_units_in_order_and_shrink_towards_the_end() -> None:
    chunks = [SimpleNamespace(start=n * MIB // 2, end=(n + 1) * MIB // 2) for n in range(1024)]
    units = [(("store",), 2 * n, 2 * n + 2) for n in range(512)]  # 512 units of 1 MiB
    work = SimpleNamespace(chunks=chunks)
    tasks = extract_workers._tasks(work, units, 2)  # type: ignore[arg-type]
    assert [lo for lo, _ in tasks] == [0] + [hi for _, hi in tasks[:-1]]
    assert tasks[-1][1] == len(units)
    sizes = [hi - lo for lo, hi in tasks]  # in MiB: one unit is 1 MiB
    assert max(sizes) == extract_workers.TASK_BYTES // MIB
    assert sizes[:8] == [8] * 8
    # The last tasks are of one unit: the workers run out of work within 1 MiB of each other.
    assert sizes[-4:] == [1, 1, 1, 1]
    assert sizes == sorted(sizes, reverse=True)


def test_self_seed_runs_chained_and_overlapping_as_the_threads_write_them(tmp_path: Path) -> None:
    """Self-seed runs are written while the workers still work, each once the tasks holding
    its source are done (extract_workers._self_runs): repeats of repeats, a repeat right
    after its source and a repeat of a stretch with zeros all come out as the thread path
    writes them."""
    rng = random.Random(31)
    a, b = rng.randbytes(3 * MIB + 1234), rng.randbytes(2 * MIB)
    zeros_inside = rng.randbytes(MIB) + bytes(300_000) + rng.randbytes(700_000)
    blob = a + b + a + a + zeros_inside + b + a + zeros_inside + rng.randbytes(5 * MIB)
    (tmp_path / "blob").write_bytes(blob)
    run_cli(["make", "-s", tmp_path / "s", "-m", "16:64:256", tmp_path / "x.caibx", tmp_path / "blob"])
    index = parse_index((tmp_path / "x.caibx").read_bytes())
    threads = extract(index, LocalStore(tmp_path / "s"), tmp_path / "threads", workers=2)
    processes = extract(index, LocalStore(tmp_path / "s"), tmp_path / "processes", workers=2,
                        processes=2)
    assert processes == threads
    assert processes.chunks_from_seeds > 100  # the repeats came from earlier in the output
    assert (tmp_path / "processes").read_bytes() == blob
