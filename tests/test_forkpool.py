"""operations/forkpool.py, the forked workers of extract (spec/extract.md § "Worker
processes"): results in task order, the first error in task order, a worker's death, no
worker left behind by an exception or Ctrl-C in the parent, and an extract on the process
path that loads neither multiprocessing nor concurrent.futures.process."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import assert_clean_failure, children_of

from desync_ref.errors import ChunkMissing, DesyncRefError
from desync_ref.formats.index import parse_index
from desync_ref.operations.forkpool import ForkPool


def _children() -> list[int]:
    return children_of(os.getpid())


@pytest.fixture(autouse=True)
def no_children_left() -> Iterator[None]:
    assert _children() == []
    yield
    left = _children()
    for pid in left:  # leave nothing behind a failed test
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert left == []


def _slow_square(task: tuple[int, int]) -> tuple[int, int]:
    """Later tasks finish first: results come back out of order."""
    number, delay = task
    time.sleep(delay / 1000)
    return number, number * number


def test_results_in_task_order_with_more_tasks_than_the_window() -> None:
    delays = [random.Random(5).randrange(0, 30) for _ in range(25)]
    tasks = [(n, d) for n, d in enumerate(delays)]
    with ForkPool(_slow_square, 3) as pool:
        results = list(pool.ordered(tasks))
    assert results == [(n, n * n) for n in range(25)]


def _other_values(task: tuple[int, str]) -> object:
    """Values that are not tuples of integers cross as pickles."""
    number, text = task
    return {"text": text * number, "big": 1 << 70, "flag": number % 2 == 0}


def test_values_other_than_integer_tuples() -> None:
    tasks = [(n, "ab") for n in range(9)]
    with ForkPool(_other_values, 2) as pool:
        assert list(pool.ordered(tasks)) == [_other_values(t) for t in tasks]


def _fail_some(task: tuple[int, int]) -> tuple[int]:
    number, delay = task
    time.sleep(delay / 1000)
    if number == 7:
        raise ValueError("task 7 failed")
    if number == 9:
        raise KeyError("task 9 failed")
    return (number,)


def _missing(task: tuple[int]) -> tuple[int]:
    raise ChunkMissing(f"{task[0]:064x}", "a store")


def test_an_error_comes_back_with_its_class_message_and_attributes() -> None:
    """ChunkMissing's constructor takes an id, not its message: pickled as is, it would
    come back as "chunk chunk ... not found not found"."""
    with pytest.raises(ChunkMissing) as caught, ForkPool(_missing, 2) as pool:
        list(pool.ordered([(5,)]))
    assert str(caught.value) == f"chunk {5:064x} not found in a store"
    assert caught.value.chunk_id == f"{5:064x}"


def test_first_error_in_task_order_wins() -> None:
    """Task 9 fails at once, task 7 only after a while: 7 is raised, after the results
    before it."""
    tasks = [(n, 300 if n == 7 else 0) for n in range(12)]
    got: list[tuple[int]] = []
    with pytest.raises(ValueError, match="task 7 failed"), ForkPool(_fail_some, 2) as pool:
        for result in pool.ordered(tasks):
            got.append(result)
    assert got == [(n,) for n in range(7)]


def _gated(task: tuple[int, str]) -> tuple[int]:
    """Notes its start in a file, then waits for the gate file."""
    number, directory = task
    with open(os.path.join(directory, "started"), "a") as log:
        log.write(f"{number}\n")
    while not os.path.exists(os.path.join(directory, "gate")):
        time.sleep(0.01)
    return (number,)


def _wait_for(condition: object, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)


def test_at_most_twice_the_processes_handed_out(tmp_path: Path) -> None:
    """While no result is taken, only 2 * processes tasks reach the workers (both run
    theirs once the gate opens); the rest go out as results come back."""
    started = tmp_path / "started"

    def count() -> int:
        return len(started.read_text().split()) if started.exists() else 0

    with ForkPool(_gated, 2) as pool:
        results = pool.ordered([(n, str(tmp_path)) for n in range(10)])
        _wait_for(lambda: count() >= 2)
        (tmp_path / "gate").touch()
        _wait_for(lambda: count() >= 4)
        time.sleep(0.5)  # a fifth task would have started by now if one had been handed out
        assert sorted(map(int, started.read_text().split())) == [0, 1, 2, 3]
        assert list(results) == [(n,) for n in range(10)]
    assert sorted(map(int, started.read_text().split())) == list(range(10))


def _die_on_three(task: tuple[int]) -> tuple[int]:
    if task[0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.01)
    return task


def test_a_killed_worker_is_an_error_not_a_hang() -> None:
    got = []
    with pytest.raises(DesyncRefError) as caught, \
            ForkPool(_die_on_three, 2, died="a worker process writing OUT died") as pool:
        for result in pool.ordered([(n,) for n in range(40)]):
            got.append(result)
    assert str(caught.value) == "a worker process writing OUT died"
    assert type(caught.value) is DesyncRefError
    assert got == [(n,) for n in range(len(got))] and len(got) <= 3


def _second_dies(directory: str) -> None:
    """Worker start: the first to come lives, the second exits at once."""
    try:
        os.close(os.open(os.path.join(directory, "first"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        os._exit(3)


def _slow_echo(task: tuple[int]) -> tuple[int]:
    time.sleep(0.05)
    return task


def test_a_worker_dead_while_the_others_finish_their_tasks(tmp_path: Path) -> None:
    """One worker exits before its first task; the other delivers every task it took, but
    the tasks not yet handed out are not silently dropped: the death is the error."""
    got = []
    with pytest.raises(DesyncRefError, match=r"^a worker died$"), \
            ForkPool(_slow_echo, 2, start=lambda _: _second_dies(str(tmp_path)),
                     died="a worker died") as pool:
        for result in pool.ordered([(n,) for n in range(12)]):
            got.append(result)
    assert got == [(n,) for n in range(len(got))] and len(got) < 12


def _sleep_then_note(task: tuple[int, str]) -> tuple[int]:
    number, directory = task
    with open(os.path.join(directory, "started"), "a") as log:
        log.write(f"{number}\n")
    time.sleep(1.5)
    with open(os.path.join(directory, "finished"), "a") as log:
        log.write(f"{number}\n")
    return (number,)


@pytest.mark.parametrize("how", ["exception", "Ctrl-C"])
def test_an_exception_in_the_parent_stops_and_reaps_the_workers(tmp_path: Path, how: str) -> None:
    """Workers busy when the parent raises (an error of its own, or SIGINT while it waits
    for results) are killed and reaped before the exception arrives: none is left, as a
    process or a zombie (the fixture checks /proc), and none goes on to finish its task."""
    tasks = [(n, str(tmp_path)) for n in range(6)]
    with pytest.raises(KeyboardInterrupt if how == "Ctrl-C" else RuntimeError), \
            ForkPool(_sleep_then_note, 2) as pool:
        results = pool.ordered(tasks)
        _wait_for(lambda: (tmp_path / "started").exists()
                  and len((tmp_path / "started").read_text().split()) >= 2)
        assert len(_children()) == 2
        if how == "Ctrl-C":
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
            list(results)
        raise RuntimeError("the parent's own error")
    assert _children() == []
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
    time.sleep(2)
    assert not (tmp_path / "finished").exists()


def _blob(tmp_path: Path, casync: str) -> tuple[Path, Path, bytes]:
    blob = random.Random(14).randbytes(12 << 20)
    (tmp_path / "blob").write_bytes(blob)
    subprocess.run([casync, "make", f"--store={tmp_path / 's'}", str(tmp_path / "blob.caibx"),
                    str(tmp_path / "blob")], check=True, capture_output=True)
    return tmp_path / "blob.caibx", tmp_path / "s", blob


def test_extract_with_workers_loads_no_multiprocessing(tmp_path: Path, casync: str) -> None:
    index, store, blob = _blob(tmp_path, casync)
    out = tmp_path / "out"
    probe = ("import sys\nfrom desync_ref.cli import main\n"
             "from desync_ref.operations import extract_workers\n"
             "real = extract_workers.run_plan\nused = []\n"
             "def counted(*args):\n    used.append(1)\n    return real(*args)\n"
             "extract_workers.run_plan = counted\n"
             f"code = main(['extract', '-n', '2', '-s', {str(store)!r}, {str(index)!r}, {str(out)!r}])\n"
             "import json\n"
             "print(json.dumps([code, len(used), sorted(sys.modules)]))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=120)
    code, used, modules = json.loads(done.stdout.splitlines()[-1])
    assert (code, used) == (0, 1)
    assert out.read_bytes() == blob
    assert [m for m in modules if m.startswith(("multiprocessing", "concurrent.futures.process"))] == []
    # Nor what only costs start-up time there (desync_ref/log.py, fs/atomic.make_temp,
    # operations/parallel.ordered_map, cli._Formatter): logging with traceback and tokenize,
    # tempfile, shutil, any thread pool.
    assert [m for m in ("logging", "traceback", "tempfile", "shutil", "concurrent.futures")
            if m in modules] == []


def test_cli_a_killed_worker_is_one_line_and_exit_1(tmp_path: Path, casync: str) -> None:
    """One chunk file is a FIFO, so a worker waits there; killing a worker ends extract with
    the death's message (exit 1, one line), no output, no temp file, no worker left."""
    index, store, _ = _blob(tmp_path, casync)
    ids = [c.id.hex() for c in parse_index(index.read_bytes()).chunks]
    victim = ids[len(ids) // 2]
    chunk = store / victim[:4] / f"{victim}.cacnk"
    chunk.unlink()
    os.mkfifo(chunk)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "desync_ref", "extract", "-n", "2", "-s",
                             str(store), str(index), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(workers := children_of(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) == 2, "the workers never started"
        time.sleep(0.3)
        os.kill(workers[0], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    finished = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert assert_clean_failure(finished).strip().endswith(f"a worker process writing {out} died")
    assert proc.returncode == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob", "blob.caibx", "s"]
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)


def test_leaving_with_results_unread_does_not_wait_for_ever() -> None:
    """A caller that stops taking results (leaves the loop, no error) while workers still
    write results larger than a pipe holds: the workers are not left blocked on a full
    result pipe with the parent waiting for them to exit."""
    code = ("from desync_ref.operations.forkpool import ForkPool\n"
            "def big(task):\n    return 'x' * 200_000\n"
            "with ForkPool(big, 2) as pool:\n"
            "    results = pool.ordered([(n,) for n in range(10)])\n"
            "    assert next(results) == 'x' * 200_000\n"
            "print('left')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout == "left\n"


def _note_task(task: tuple[str, int]) -> tuple[int]:
    return (task[1],)


def _finish_writing(directory: str) -> None:
    Path(directory, str(os.getpid())).write_text("finished")


def test_finish_runs_once_in_every_worker_after_the_tasks(tmp_path: Path) -> None:
    tasks = [(str(tmp_path), n) for n in range(10)]
    with ForkPool(_note_task, 3, finish=lambda: _finish_writing(str(tmp_path))) as pool:
        assert [r[0] for r in pool.ordered(tasks)] == list(range(10))
        assert list(tmp_path.iterdir()) == []  # not before the pool is left
    assert sorted(p.read_text() for p in tmp_path.iterdir()) == ["finished"] * 3


def _failing_finish() -> None:
    raise OSError(28, "No space left on device")


def test_an_error_in_finish_is_raised_as_the_pool_is_left() -> None:
    with (pytest.raises(OSError, match="No space left on device"),
          ForkPool(_note_task, 2, finish=_failing_finish) as pool):
        assert [r[0] for r in pool.ordered([("", n) for n in range(4)])] == [0, 1, 2, 3]


def _dying_finish() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_dying_in_finish_is_the_pools_died_error() -> None:
    with (pytest.raises(DesyncRefError, match="a worker died at the end"),
          ForkPool(_note_task, 2, finish=_dying_finish, died="a worker died at the end") as pool):
        list(pool.ordered([("", n) for n in range(4)]))
