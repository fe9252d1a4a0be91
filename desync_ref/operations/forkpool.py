"""A minimal pool of forked worker processes: one function over small tasks, results in
task order (issue 14).

Why not ``concurrent.futures.ProcessPoolExecutor``: importing ``multiprocessing`` and
``concurrent.futures.process`` costs about 40 ms, and the executor's queue feeder and
manager threads take about 30 ms more before the first task runs in a worker; an extract of
512 MiB takes about a second, so that was several percent of it. Here the workers are
``os.fork()``ed directly and talk over plain pipes; nothing is imported but ``os``,
``select`` and ``struct`` (``pickle`` only when a value is not a tuple of integers, such as
an error), so the workers run their first task within a few milliseconds.

What crosses (spec/extract.md § "Worker processes"):

* The workers share one task pipe (parent to workers) and each has a result pipe of its
  own (worker to parent). A record is a header (task number, kind, payload length) and a
  payload: a tuple of integers packed as 64-bit integers, or, for anything else, a pickle.
  A task record is padded to TASK_RECORD bytes, written with one ``write`` (atomic: less
  than ``PIPE_BUF``) and read with one ``read`` of that size, so a worker free to work
  takes exactly the next task, whole, and tasks are small: the worker inherits everything
  else (the function, its data) through the fork.
* At most ``2 * processes`` tasks are out at once (handed out, no result yet), so a
  worker slow on one task holds only that one. The results are yielded in task order, and
  an exception a task raised is raised in its turn, so the first error in task order is
  the one the caller sees (as ``ordered_map`` in operations/parallel.py does for threads).
* A worker exits when the task pipe reaches end of file (the parent closed it) and never
  returns into the parent's stack: the child's whole life is wrapped so that it ends in
  ``os._exit`` (no ``atexit`` handler, no ``finally`` of the parent's frames runs twice,
  no buffered output of the parent is flushed again).
* End of file on a result pipe before the parent closed the tasks means the worker died
  (killed, the OOM killer): the pool is broken, and the first task without a result raises
  ``DesyncRefError(died)``, the caller's message.
* Leaving the pool normally closes the task pipe and reaps the workers; leaving it with an
  exception (an error result, Ctrl-C in the parent) SIGKILLs them first, so no worker is
  left running or unreaped when the exception propagates.
* ``finish`` (optional) runs in each worker at the end of the tasks, before it exits: work a
  task left going past its result (extract's direct writes, fs/direct.py) is completed
  there. Its exception comes back as a record numbered -1, which the parent, leaving the
  pool normally, reads before reaping and raises once every worker is reaped; a worker that
  dies then, or exits with a failure status, raises ``DesyncRefError(died)`` the same way.

casync forks no workers for extract; desync runs goroutines (``assemble.go``). The pool
follows the contract of ``concurrent.futures.ProcessPoolExecutor`` with a fork context, as
extract used it before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from desync_ref.errors import DesyncRefError

if TYPE_CHECKING:
    import select

T = TypeVar("T")
R = TypeVar("R")

# A record's header: task number, kind, payload length.
_HEAD = struct.Struct("<qBI")
_INTS, _PICKLE, _RAISED = 0, 1, 2
# The size of every task record: under PIPE_BUF (4096 on Linux, at least 512 by POSIX) so
# one write is atomic, and 2 * processes of them fit in a pipe's 64 KiB up to 128 workers.
TASK_RECORD = 256


class _Worker:
    __slots__ = ("buffer", "pid", "results")

    def __init__(self, pid: int, results: int) -> None:
        self.pid = pid
        self.results = results  # read end of its result pipe
        self.buffer = bytearray()


class ForkPool(Generic[T, R]):
    """``run`` over tasks in ``processes`` forked workers; use as a context manager, then
    ``ordered(tasks)``. ``start(parent_pid)`` runs once in each worker before its first
    task, ``finish()`` once after its last. ``died`` is the message of the error raised when
    a worker dies."""

    def __init__(self, run: Callable[[T], R], processes: int, *,
                 start: Callable[[int], None] | None = None,
                 finish: Callable[[], None] | None = None,
                 died: str = "a worker process died") -> None:
        self._run = run
        self._processes = max(1, processes)
        self._start = start
        self._finish = finish
        self._died = died
        self._tasks = -1  # write end of the task pipe
        self._workers: list[_Worker] = []
        self._by_fd: dict[int, _Worker] = {}
        self._poll: select.poll | None = None
        self._results: dict[int, tuple[int, object]] = {}
        self._out = 0
        self._broken = False

    def __enter__(self) -> ForkPool[T, R]:
        try:
            self._fork()
        except BaseException:
            self._stop(kill=True)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop(kill=kind is not None or self._broken)

    def _fork(self) -> None:
        import select  # here: an extract too small for workers never loads it

        self._poll = poll = select.poll()
        parent = os.getpid()
        task_read, self._tasks = os.pipe()
        try:
            for _ in range(self._processes):
                result_read, result_write = os.pipe()
                pid = os.fork()
                if pid == 0:  # the worker: never leaves this branch but through os._exit
                    code = 1
                    try:
                        os.close(self._tasks)
                        os.close(result_read)
                        for worker in self._workers:  # the others' result pipes, inherited
                            os.close(worker.results)
                        self._workers = []
                        code = _serve(self._run, self._start, self._finish, parent, task_read,
                                      result_write)
                    except BaseException:  # reported as the worker's death by the parent
                        pass
                    finally:
                        os._exit(code)
                os.close(result_write)
                worker = _Worker(pid, result_read)
                self._workers.append(worker)
                self._by_fd[result_read] = worker
                poll.register(result_read, select.POLLIN)
        finally:
            # Only the workers read tasks: with all of them gone a write fails (EPIPE)
            # rather than waiting.
            os.close(task_read)

    def ordered(self, tasks: Iterable[T]) -> Iterator[R]:
        """Hand out the first ``2 * processes`` tasks now, and return the results in task
        order as they come back (each result taken in hands out the next task)."""
        pending = iter(tasks)
        handed = self._hand_out(pending, 0)
        return self._ordered(pending, handed)

    def _ordered(self, pending: Iterator[T], handed: int) -> Iterator[R]:
        number = 0
        while True:
            if number == handed:  # nothing out: all tasks done, or none handed out since
                if self._broken and next(pending, _END) is not _END:
                    raise DesyncRefError(self._died)
                return
            found = self._results.pop(number, None)
            if found is None:
                if self._broken:
                    raise DesyncRefError(self._died)
                self._receive()
                handed = self._hand_out(pending, handed)
                continue
            kind, value = found
            number += 1
            if kind == _RAISED:
                assert isinstance(value, BaseException)
                raise value
            yield cast(R, value)

    def _hand_out(self, pending: Iterator[T], handed: int) -> int:
        """Tasks into the task pipe until ``2 * processes`` are out; the number of tasks
        handed out so far."""
        while self._out < 2 * self._processes and not self._broken:
            task = next(pending, _END)
            if task is _END:
                break
            record = _record(handed, task)
            if len(record) > TASK_RECORD:
                raise ValueError(f"a task of {len(record)} bytes: tasks are records of "
                                 f"{TASK_RECORD} bytes at most")
            try:
                # One write of less than PIPE_BUF: whole or not at all, never split.
                os.write(self._tasks, record.ljust(TASK_RECORD, b"\0"))
            except BrokenPipeError:  # every worker is gone; their result pipes say so too
                self._broken = True
                break
            self._out += 1
            handed += 1
        return handed

    def _receive(self) -> None:
        """Wait for results (or a worker's end) and take them in."""
        poll = self._poll
        assert poll is not None
        for fd, _ in poll.poll():
            worker = self._by_fd[fd]
            data = os.read(fd, 1 << 16)
            if not data:  # end of file: the worker exited before the tasks ended
                poll.unregister(fd)
                self._broken = True
                continue
            worker.buffer += data
            for number, kind, payload in _records(worker.buffer):
                self._results[number] = kind, _decode(kind, payload)
                self._out -= 1

    def _stop(self, kill: bool) -> None:
        """Close the task pipe (the workers exit at end of file) or, with ``kill``,
        SIGKILL the workers; then reap every one. Leaving normally with ``finish``, what
        the workers' ends report is raised after the reaping."""
        workers, self._workers = self._workers, []
        if self._tasks >= 0:
            os.close(self._tasks)
            self._tasks = -1
        ends: list[BaseException] = []
        if not kill and self._finish is not None:
            for worker in workers:  # each ends (finish, exit) now that the tasks ended
                ends.extend(_final_errors(worker))
        for worker in workers:
            # Closed before waiting: a worker blocked writing a result nobody will take
            # (results left unread) gets EPIPE and exits instead of waiting for ever.
            os.close(worker.results)
            if kill:
                _kill(worker.pid)
        try:
            for worker in workers:
                _, status = os.waitpid(worker.pid, 0)
                worker.pid = 0
                if status and not kill and self._finish is not None:
                    ends.append(DesyncRefError(self._died))
        except BaseException:  # Ctrl-C while waiting: stop them rather than leave them
            for worker in workers:
                if worker.pid:
                    _kill(worker.pid)
            for worker in workers:
                if worker.pid:
                    _reap(worker.pid)
            raise
        if ends:
            raise ends[0]


_END = object()
# The number of the record a worker's ``finish`` error comes back in (tasks count from 0).
_FINISH = -1


def _final_errors(worker: _Worker) -> list[BaseException]:
    """Read a worker's result pipe to its end (the worker has no tasks left: it runs
    ``finish`` and exits) and return the error its ``finish`` reported, if any."""
    while data := os.read(worker.results, 1 << 16):
        worker.buffer += data
    errors: list[BaseException] = []
    for number, kind, payload in _records(worker.buffer):
        if number == _FINISH and kind == _RAISED:
            error = _decode(kind, payload)
            assert isinstance(error, BaseException)
            errors.append(error)
    return errors


def _records(buffer: bytearray) -> Iterator[tuple[int, int, bytes]]:
    """The whole records at the front of ``buffer`` (number, kind, payload), each removed
    from it as it is taken; a record not yet whole stays."""
    while len(buffer) >= _HEAD.size:
        number, kind, length = _HEAD.unpack_from(buffer)
        end = _HEAD.size + length
        if len(buffer) < end:
            return
        payload = bytes(buffer[_HEAD.size:end])
        del buffer[:end]
        yield number, kind, payload


def _serve(run: Callable[[T], object], start: Callable[[int], None] | None,
           finish: Callable[[], None] | None, parent: int, tasks: int, results: int) -> int:
    """A worker's life: start, then tasks until end of file, then finish; its exit status."""
    if start is not None:
        start(parent)
    while True:
        record = os.read(tasks, TASK_RECORD)  # one whole record: the parent wrote it so
        if not record:
            if finish is not None:
                try:
                    finish()
                except Exception as exc:  # raised in the parent when it leaves the pool
                    _write_all(results, _raised(_FINISH, exc))
            return 0
        if len(record) != TASK_RECORD:
            return 1
        number, kind, length = _HEAD.unpack_from(record)
        task = cast(T, _decode(kind, record[_HEAD.size:_HEAD.size + length]))
        try:
            reply = _record(number, run(task))
        except Exception as exc:  # raised in the parent in its turn
            reply = _raised(number, exc)
        _write_all(results, reply)


def _record(number: int, value: object) -> bytes:
    if type(value) is tuple and all(type(n) is int for n in value):
        try:
            payload = struct.pack(f"<{len(value)}q", *value)
        except struct.error:  # an integer wider than 64 bits
            pass
        else:
            return _HEAD.pack(number, _INTS, len(payload)) + payload
    import pickle  # only for what is not a tuple of integers (errors, mostly)

    payload = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    return _HEAD.pack(number, _PICKLE, len(payload)) + payload


def _raised(number: int, exc: Exception) -> bytes:
    """An exception as a record. Pickling calls the class with ``exc.args`` again, and a
    class whose constructor builds its message from other arguments (the library's
    ChunkMissing) would come back with another message, or not at all: such an exception is
    rebuilt in the parent from its class, message and attributes instead (_Rebuilt)."""
    import pickle

    try:
        payload = pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
        back = pickle.loads(payload)
        if type(back) is not type(exc) or str(back) != str(exc):
            payload = pickle.dumps(_Rebuilt(exc), pickle.HIGHEST_PROTOCOL)
            pickle.loads(payload)
    except Exception:
        payload = pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
    return _HEAD.pack(number, _RAISED, len(payload)) + payload


class _Rebuilt:
    """Pickles as a call of :func:`_rebuild` with an exception's class, message and the
    attributes of it that pickle (the others are left behind)."""

    def __init__(self, exc: Exception) -> None:
        import pickle

        self.kind, self.message = type(exc), str(exc)
        self.attributes = dict(getattr(exc, "__dict__", {}))
        try:
            pickle.dumps(self.attributes)
        except Exception:
            self.attributes = {}

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return _rebuild, (self.kind, self.message, self.attributes)


def _rebuild(kind: type[Exception], message: str, attributes: dict[str, object]) -> Exception:
    exc = kind.__new__(kind)
    Exception.__init__(exc, message)
    exc.__dict__.update(attributes)
    return exc


def _decode(kind: int, payload: bytes) -> object:
    if kind == _INTS:
        return struct.unpack(f"<{len(payload) // 8}q", payload)
    import pickle

    return pickle.loads(payload)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # gone already
        os.kill(pid, signal.SIGKILL)


def _reap(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except ChildProcessError:
            return
        except KeyboardInterrupt:  # a second Ctrl-C: the worker is SIGKILLed, finish reaping
            continue
