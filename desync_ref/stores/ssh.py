"""``ssh://[user@]host[:port]/path``: a read-only chunk store served by ``casync pull`` over ssh.

The backend module of ``ssh://`` in the scheme registry (``stores/registry.py``). Spec:
``spec/protocol.md`` (the protocol, the remote command line) and ``spec/protocol.md`` § "The ssh:// store".
After desync ``remotessh.go`` (``NewRemoteSSHStore``, ``StartProtocol``): run
``$CASYNC_SSH_PATH`` (default ``ssh``) with ``-- [user@]host "<$CASYNC_REMOTE_PATH> pull - -
- '<path>'"`` (remote default ``casync``), exchange HELLOs (we pull chunks, the remote must
offer a readable store), then ask for chunks. The protocol itself is
``formats/casync_protocol.py``; this module only moves its bytes.

Unlike desync, which keeps ``n`` sessions each answering one REQUEST at a time, a session
here is pipelined: callers queue ids, a writer thread sends every queued id in one REQUEST
(as casync's own client does, ``ca_remote_write`` in ``src/caremote.c``) without waiting,
and a reader thread hands each CHUNK or MISSING to whoever asked for that id. Sessions are
started as load needs them (all running ones with SESSION_DEPTH ids in flight), up to
``options.n``. A remote that exits, breaks the protocol
or sends ABORT fails every pending and later read with a StoreError naming the host; a
MISSING is ChunkMissing (routers move on to the next store).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import urllib.parse
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Final

from desync_ref.errors import ChunkMissing, DesyncRefError, ProtocolError, StoreError
from desync_ref.formats import casync_protocol as proto
from desync_ref.formats.chunk import Digest
from desync_ref.stores import Chunk
from desync_ref.stores.options import DEFAULT_OPTIONS, StoreOptions
from desync_ref.stores.storage_form import StorageForm

SCHEME: Final = "ssh://"
# Ids per REQUEST frame; casync's own client closes a frame near 64 KiB (BUFFER_SIZE).
MAX_IDS_PER_REQUEST: Final = 2048
# A further session starts only when every running one has this many ids in flight: one
# pipelined session carries a whole extract's requests, and each ssh start costs a key
# exchange (about a second of CPU on a loaded machine, measured through the tests' sshd).
SESSION_DEPTH: Final = 64
_READ_SIZE: Final = 1 << 20
_STDERR_KEEP: Final = 4096
_COMPRESSED, _PLAIN = StorageForm(compressed=True), StorageForm(compressed=False)


def parse_location(location: str) -> tuple[str, int | None, str]:
    """(``[user@]host``, port or None, remote path) of an ``ssh://`` location."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme.lower() != "ssh" or not parts.hostname:
        raise StoreError(f"invalid ssh store location '{location}': expected ssh://[user@]host[:port]/path")
    try:
        port = parts.port
    except ValueError:
        raise StoreError(f"invalid port in ssh store location '{location}'") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.username:
        host = f"{urllib.parse.unquote(parts.username)}@{host}"
    # desync validateSSHHost: a destination starting with "-" would be read as an option.
    if host.startswith("-"):
        raise StoreError(f"invalid ssh host '{host}' in '{location}'")
    path = urllib.parse.unquote(parts.path)
    if not path:
        raise StoreError(f"ssh store location '{location}' has no path")
    return host, port, path


def remote_argv(host: str, port: int | None, path: str) -> list[str]:
    """The ssh command line of one session: desync's shape, with ``-p`` when a port is given
    (desync passes ``host:port`` as the destination, which OpenSSH does not read)."""
    ssh = os.environ.get("CASYNC_SSH_PATH") or "ssh"
    remote = os.environ.get("CASYNC_REMOTE_PATH") or "casync"
    port_args = ["-p", str(port)] if port is not None else []
    return [ssh, *port_args, "--", host, f"{remote} pull - - - {shlex.quote(path)}"]


class _Session:
    """One ssh process speaking the protocol; thread-safe, pipelined."""

    def __init__(self, argv: list[str], name: str, timeout: float | None) -> None:
        self.name = name
        self.timeout = timeout
        self.conn = proto.Connection("client", proto.PULL_CHUNKS)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: dict[bytes, list[Future[proto.ChunkData | proto.Missing]]] = {}
        self._queue: deque[bytes] = deque()
        self._error: StoreError | None = None
        self._stderr = bytearray()
        self._hello: Future[int] = Future()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise StoreError(f"{name}: cannot run {argv[0]}: {exc.strerror or exc}") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._stdin = self.proc.stdin
        try:
            self._stdin.write(self.conn.hello())
            self._stdin.flush()
        except OSError:
            pass  # the remote is gone already: the reader says why
        threads = [threading.Thread(target=t, daemon=True, name=f"ssh-{t.__name__}")
                   for t in (self._stderr_loop, self._read_loop, self._write_loop)]
        self._stderr_thread = threads[0]
        for thread in threads:
            thread.start()
        try:
            flags = self._hello.result(timeout)
        except FutureTimeout:
            self._fail(StoreError(f"{name}: no HELLO from the remote within {timeout} s"))
            raise self._error or StoreError(name) from None
        if not flags & proto.READABLE_STORE:
            self._fail(StoreError(f"{name}: the remote does not offer chunks (HELLO flags {flags:#x})"))
            raise self._error or StoreError(name)

    @property
    def load(self) -> int:
        return len(self._pending)

    @property
    def error(self) -> StoreError | None:
        return self._error

    def request(self, chunk_id: bytes) -> Future[proto.ChunkData | proto.Missing]:
        future: Future[proto.ChunkData | proto.Missing] = Future()
        with self._lock:
            if self._error is not None:
                raise self._error
            waiters = self._pending.setdefault(chunk_id, [])
            waiters.append(future)
            if len(waiters) == 1:  # one id in flight once, however many ask for it
                self._queue.append(chunk_id)
                self._wake.notify()
        return future

    def _write_loop(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._queue and self._error is None:
                        self._wake.wait()
                    if self._error is not None:
                        return
                    ids = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_IDS_PER_REQUEST))]
                    frame = self.conn.send(proto.Request(tuple(ids), high_priority=True))
                self._stdin.write(frame)
                self._stdin.flush()
        except (OSError, ValueError):
            self._fail(self._exit_error("connection lost"))

    def _read_loop(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        try:
            while True:
                data = os.read(fd, _READ_SIZE)
                if not data:
                    # Only our GOODBYE ends a session: any other end is the remote's failure.
                    before = "" if self.conn.running else " before sending HELLO"
                    self._fail(self._exit_error(f"the remote closed the connection{before}"))
                    return
                self.conn.receive_data(data)
                while True:
                    event = self.conn.next_event()
                    if isinstance(event, proto.NeedData):
                        break
                    if isinstance(event, proto.Closed):
                        self._fail(self._exit_error("the remote closed the connection"))
                        return
                    self._dispatch(event)
        except ProtocolError as exc:
            self._fail(StoreError(f"{self.name}: protocol error: {exc}"))
        except OSError as exc:
            self._fail(self._exit_error(f"connection lost ({exc.strerror or exc})"))
        except StoreError as exc:
            self._fail(exc)

    def _dispatch(self, event: proto.Event) -> None:
        if isinstance(event, proto.Hello):
            self._hello.set_result(event.flags)
        elif isinstance(event, proto.ChunkData | proto.Missing):
            with self._lock:
                waiters = self._pending.pop(event.chunk_id, [])
            for future in waiters:
                future.set_result(event)
        elif isinstance(event, proto.Abort):
            raise StoreError(f"{self.name}: the remote aborted: {event.reason or os.strerror(event.error)}")
        elif isinstance(event, proto.Goodbye):
            raise StoreError(f"{self.name}: the remote ended the session (GOODBYE)")
        else:
            raise StoreError(f"{self.name}: unexpected message from the remote: {type(event).__name__}")

    def _stderr_loop(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr += line
            del self._stderr[:-_STDERR_KEEP]

    def _exit_error(self, what: str) -> StoreError:
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        # The remote's last words (ssh's "Host key verification failed.") may still be in the pipe.
        self._stderr_thread.join(1 if code is not None else 0)
        lines = [ln.strip() for ln in bytes(self._stderr).decode("utf-8", "replace").splitlines() if ln.strip()]
        said = f": {lines[-1]}" if lines else ""
        status = f", exit status {code}" if code is not None else ""
        return StoreError(f"{self.name}: {what}{status}{said}")

    def _fail(self, error: StoreError) -> None:
        with self._lock:
            if self._error is None:
                self._error = error
            error = self._error
            waiters = [f for fs in self._pending.values() for f in fs]
            self._pending.clear()
            self._queue.clear()
            self._wake.notify_all()
        if not self._hello.done():
            self._hello.set_exception(error)
        for future in waiters:
            if not future.done():
                future.set_exception(error)

    def say_goodbye(self) -> None:
        """Send GOODBYE and close our end; the remote then exits (see :meth:`reap`)."""
        with self._lock:
            alive = self._error is None
            if alive:
                self._error = StoreError(f"{self.name}: store closed")
                self._wake.notify_all()
        try:
            if alive and self.conn.running and not self.conn.closed:
                self._stdin.write(self.conn.send(proto.Goodbye()))
            self._stdin.close()
        except (OSError, ValueError, ProtocolError):
            pass

    def reap(self) -> None:
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class SSHStore:
    """A casync protocol chunk store reached over ssh (desync ``RemoteSSH``): reads only."""

    def __init__(self, location: str, options: StoreOptions = DEFAULT_OPTIONS) -> None:
        self.location = location
        if options.encryption:
            # The protocol carries casync's compressed chunks only (desync refuses it too).
            raise StoreError(f"{location}: encryption is not supported by casync protocol (ssh://) stores")
        host, port, path = parse_location(location)
        self.host = host
        self._argv = remote_argv(host, port, path)
        self._max_sessions = max(1, options.n)
        self._timeout = options.timeout
        self._sessions: list[_Session] = []
        self._lock = threading.Lock()
        self._name = f"ssh store {location} (host {host})"

    def __str__(self) -> str:
        return self.location

    def _session(self) -> _Session:
        """The least loaded live session; a new one when all are deep in requests and the pool
        has room."""
        with self._lock:
            self._sessions = [s for s in self._sessions if not s.error is not None] or self._sessions[:1]
            live = [s for s in self._sessions if not s.error is not None]
            if live:
                best = min(live, key=lambda s: s.load)
                if best.load < SESSION_DEPTH or len(self._sessions) >= self._max_sessions:
                    return best
            elif self._sessions:
                # The one session died: say why, do not start another behind the user's back.
                raise self._sessions[0].error or StoreError(self._name)
            session = _Session(self._argv, self._name, self._timeout)
            self._sessions.append(session)
            return session

    def get_chunk(self, chunk_id: bytes, digest: Digest | None) -> Chunk:
        future = self._session().request(chunk_id)
        try:
            answer = future.result(self._timeout)
        except FutureTimeout:
            raise StoreError(f"{self._name}: no answer for chunk {chunk_id.hex()} within {self._timeout} s") from None
        except DesyncRefError:
            raise
        if isinstance(answer, proto.Missing):
            raise ChunkMissing(chunk_id.hex(), self.location)
        form = _COMPRESSED if answer.compressed else _PLAIN
        return form.from_storage(chunk_id, answer.data, digest)

    def has_chunk(self, chunk_id: bytes) -> bool:
        # The protocol has no "do you have": fetch it (desync RemoteSSH.HasChunk does too).
        try:
            self.get_chunk(chunk_id, None)
        except ChunkMissing:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        # All say goodbye first, so the remotes wind down together rather than one by one.
        for session in sessions:
            session.say_goodbye()
        for session in sessions:
            session.reap()


def open_chunk_store(location: str, options: StoreOptions = DEFAULT_OPTIONS, *, create: bool = False) -> SSHStore:
    return SSHStore(location, options.for_location(location))
