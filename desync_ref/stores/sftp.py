"""SFTP chunk and index stores: ``sftp://[user@]host[:port]/path`` over SSH, with paramiko.

Spec: ``spec/sftp.md``. After desync ``sftp.go`` (``newSFTPStoreBase``,
``SFTPStore``, ``StoreObject``, ``Prune``) and ``sftpindex.go`` (``SFTPIndexStore``); the
location is parsed as in ``cmd/desync/store.go`` (``storeFromLocation``,
``indexStoreFromLocation``). The backend module of ``sftp://`` in ``stores/registry.py``.

Two transports carry the SFTP protocol (paramiko's ``SFTPClient`` either way):

* ``CASYNC_SSH_PATH`` set: that program is run as ``<ssh> [-p PORT] -s -- [user@]host sftp``
  (desync's argv, plus ``-p`` for a port in the URL) and SFTP is spoken over its stdin and
  stdout, so the user's ssh configuration, agent and known_hosts decide everything;
* otherwise paramiko's own SSH client, with the user's agent and ``~/.ssh`` keys, and the
  host keys of ``~/.ssh/known_hosts`` (and ``/etc/ssh/ssh_known_hosts``): an unknown host
  key is refused, never learnt.

A store keeps up to ``options.n`` connections (desync's pool of ``-n``), made when first
needed. A connection that breaks (EOF, timeout, the ssh program gone) is dropped and the
operation retried on a new one, ``error_retry`` attempts in all with a linear back-off; an
error the SFTP server answers (permission denied, ...) is not retried. Chunks are written to
a temp name in their prefix directory, then moved over the final name with
``posix-rename@openssh.com`` (desync ``StoreObject``): a reader never sees part of a chunk.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import posixpath
import secrets
import select
import stat
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import paramiko

from desync_ref.errors import ChunkMissing, DesyncRefError, IndexMissing, InvalidFormat, StoreError
from desync_ref.formats.chunk import (
    TMP_CHUNK_PREFIX,
    Digest,
    chunk_file_name,
    is_temp_chunk_name,
    parse_chunk_path,
)
from desync_ref.formats.constants import CA_CHUNK_SIZE_LIMIT_MAX
from desync_ref.formats.index import Index, encode_index, parse_index
from desync_ref.stores import Chunk
from desync_ref.stores.index_stores import MAX_INDEX_BYTES, valid_index_name
from desync_ref.stores.options import DEFAULT_OPTIONS, StoreOptions, redact
from desync_ref.stores.storage_form import storage_form

log = logging.getLogger(__name__)  # --verbose: retries and their causes

SCHEME: Final = "sftp://"
SSH_PATH_ENV: Final = "CASYNC_SSH_PATH"
# A stored chunk is at most the largest chunk, compressed in zstd's worst case.
MAX_CHUNK_FILE: Final = CA_CHUNK_SIZE_LIMIT_MAX + (CA_CHUNK_SIZE_LIMIT_MAX >> 8) + 4096
_PIPE_READ: Final = 256 * 1024
_T = TypeVar("_T")

# paramiko logs a dropped connection from its transport thread; without a handler Python
# would print that to stderr, next to our one-line error.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class SFTPLocation:
    """One ``sftp://`` location: who to log in as, where, and the store's directory."""

    user: str | None
    host: str
    port: int | None
    path: str  # absolute, ends in "/"
    shown: str  # the location as printed (a password redacted)

    @property
    def destination(self) -> str:
        """ssh's destination argument: ``[user@]host`` (desync ``newSFTPStoreBase``)."""
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def address(self) -> str:
        """The host as messages and known_hosts name it: ``host`` or ``[host]:port``."""
        return f"[{self.host}]:{self.port}" if self.port else self.host

    def child(self, path: str) -> SFTPLocation:
        """The same server, another directory."""
        netloc = self.shown.split("://", 1)[1].split("/", 1)[0]
        return SFTPLocation(self.user, self.host, self.port, _dir_path(path), f"{SCHEME}{netloc}{path}")


def _dir_path(path: str) -> str:
    path = path or "/"
    return path if path.endswith("/") else path + "/"


def parse_location(location: str) -> SFTPLocation:
    # A user name is no secret here (ssh prints it too); a password in the URL is hidden.
    shown = location if urllib.parse.urlsplit(location).password is None else redact(location)
    if not location.lower().startswith(SCHEME):
        raise StoreError(f"unsupported scheme in {shown}, expected sftp")
    parts = urllib.parse.urlsplit(location)
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise StoreError(f"invalid store URL {shown}: {exc}") from None
    if not host:
        raise StoreError(f"invalid store URL {shown}: no host")
    user = urllib.parse.unquote(parts.username) if parts.username else None
    # desync sshcmd.go validateSSHHost: a destination ssh would read as an option.
    if (user or host).startswith("-"):
        raise StoreError(f"invalid ssh destination in {shown}: must not begin with '-'")
    return SFTPLocation(user, host, port, _dir_path(urllib.parse.unquote(parts.path)), shown)


# --- transports ------------------------------------------------------------------------------

class _PipeChannel:
    """The socket-like object paramiko's SFTPClient speaks through: the pipes of an ssh
    process (``send``, ``recv``, ``close``, ``get_name`` are all it uses)."""

    def __init__(self, argv: list[str], timeout: float | None) -> None:
        self.timeout = timeout
        self.broken = False
        self._buffer = b""
        # ssh's own messages are kept, not passed on: the last line goes into our error.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the process)
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._stderr)
        except OSError as exc:
            self._stderr.close()
            raise StoreError(f"cannot run {argv[0]} ({SSH_PATH_ENV}): {exc.strerror}") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._in, False)

    def get_name(self) -> str:
        return "ssh"

    def _wait(self, fd: int, write: bool) -> None:
        ready = select.select([], [fd], [], self.timeout) if write else select.select([fd], [], [], self.timeout)
        if not (ready[1] if write else ready[0]):
            self.broken = True
            raise TimeoutError(f"no answer within {self.timeout:g} s")

    def send(self, data: bytes) -> int:
        while True:
            self._wait(self._in, True)
            try:
                return os.write(self._in, data)
            except BlockingIOError:
                continue
            except OSError:
                self.broken = True
                raise

    def recv(self, size: int) -> bytes:
        if not self._buffer:
            self._wait(self._out, False)
            self._buffer = os.read(self._out, max(size, _PIPE_READ))
            if not self._buffer:
                self.broken = True
                return b""
        piece, self._buffer = self._buffer[:size], self._buffer[size:]
        return piece

    def alive(self) -> bool:
        return not self.broken and self.proc.poll() is None

    def stderr_line(self) -> str:
        """The last line ssh wrote (why it gave up), or ''."""
        with contextlib.suppress(OSError):
            self._stderr.seek(0)
            lines = [line.strip() for line in self._stderr.read().decode("utf-8", "replace").splitlines()]
            lines = [line for line in lines if line]
            return lines[-1] if lines else ""
        return ""

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


class _UnknownHostKey(Exception):
    pass


class _RejectUnknown(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    """paramiko's RejectPolicy, raising our own type so the refusal is told apart."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise _UnknownHostKey(hostname)


class _Connection:
    """One SFTP session and what carries it."""

    def __init__(self, sftp: paramiko.SFTPClient, pipe: _PipeChannel | None,
                 client: paramiko.SSHClient | None) -> None:
        self.sftp = sftp
        self.pipe = pipe
        self.client = client

    def alive(self) -> bool:
        if self.pipe is not None:
            return self.pipe.alive()
        channel = self.sftp.get_channel()
        transport = self.client.get_transport() if self.client is not None else None
        return (channel is not None and not channel.closed and not channel.eof_received
                and transport is not None and transport.is_active())

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken session may fail any way
            self.sftp.close()
        if self.pipe is not None:
            self.pipe.close()
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()


class _Lost(Exception):
    """A connection that could not be made or broke: worth another attempt."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason(exc: BaseException) -> str:
    if isinstance(exc, EOFError) or (isinstance(exc, paramiko.SSHException) and "EOF" in str(exc)):
        return "connection closed"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or exc.__class__.__name__


def _connect_pipe(ssh: str, loc: SFTPLocation, timeout: float | None) -> _Connection:
    argv = [ssh, *(["-p", str(loc.port)] if loc.port else []), "-s", "--", loc.destination, "sftp"]
    pipe = _PipeChannel(argv, timeout)
    try:
        sftp = paramiko.SFTPClient(pipe)
    except (OSError, EOFError, paramiko.SSHException) as exc:
        detail = pipe.stderr_line() or _reason(exc)
        pipe.close()
        raise _Lost(f"{ssh} -s {loc.destination} sftp: {detail}") from None
    return _Connection(sftp, pipe, None)


def _load_host_keys(client: paramiko.SSHClient) -> None:
    for path in ("/etc/ssh/ssh_known_hosts", os.path.expanduser("~/.ssh/known_hosts")):
        if os.path.exists(path):
            try:
                client.load_system_host_keys(path)
            except (OSError, paramiko.SSHException) as exc:
                raise StoreError(f"cannot read known hosts from {path}: {_reason(exc)}") from None


def _connect_paramiko(loc: SFTPLocation, timeout: float | None) -> _Connection:
    client = paramiko.SSHClient()
    try:
        _load_host_keys(client)
        client.set_missing_host_key_policy(_RejectUnknown())
        client.connect(loc.host, port=loc.port or 22, username=loc.user or getpass.getuser(),
                       timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                       channel_timeout=timeout, allow_agent=True, look_for_keys=True)
        transport = client.get_transport()
        assert transport is not None
        channel = transport.open_session(timeout=timeout)
        channel.settimeout(timeout)
        channel.invoke_subsystem("sftp")
        sftp = paramiko.SFTPClient(channel)
    except _UnknownHostKey:
        client.close()
        raise StoreError(f"host key for {loc.address} is not known; add it to known_hosts "
                         "(~/.ssh/known_hosts) to use this SFTP store") from None
    except paramiko.BadHostKeyException:
        client.close()
        raise StoreError(f"host key for {loc.address} does not match the one in known_hosts; "
                         "refusing to connect") from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise StoreError(f"ssh authentication as {loc.user or getpass.getuser()} to {loc.address} "
                         f"failed: {_reason(exc)}") from None
    except (OSError, EOFError, paramiko.SSHException) as exc:
        client.close()
        raise _Lost(f"cannot connect to {loc.address}: {_reason(exc)}") from None
    return _Connection(sftp, None, client)


def _connect(loc: SFTPLocation, timeout: float | None) -> _Connection:
    ssh = os.environ.get(SSH_PATH_ENV, "")
    return _connect_pipe(ssh, loc, timeout) if ssh else _connect_paramiko(loc, timeout)


# --- the pool --------------------------------------------------------------------------------

class _Pool:
    """Up to ``size`` connections to one server, made on demand (desync's ``pool`` channel)."""

    def __init__(self, loc: SFTPLocation, options: StoreOptions, size: int) -> None:
        self.loc = loc
        self.options = options
        self._slots = threading.BoundedSemaphore(max(1, size))
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def run(self, what: str, op: Callable[[paramiko.SFTPClient], _T]) -> _T:
        """``op`` on a connection of the pool; retried on a new connection when the one it
        ran on broke. ``what`` names the operation in the error."""
        attempts = max(1, self.options.error_retry)
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._once(what, op)
            except _Lost as lost:
                if attempt >= attempts:
                    raise StoreError(f"{self.loc.shown}: {what}: connection to {self.loc.address} lost: "
                                     f"{lost.reason}") from None
                log.info("%s: %s: attempt %d of %d failed (connection lost: %s), retrying",
                         self.loc.shown, what, attempt, attempts, lost.reason)
            time.sleep(attempt * self.options.error_retry_base_interval)

    def _once(self, what: str, op: Callable[[paramiko.SFTPClient], _T]) -> _T:
        self._slots.acquire()
        try:
            conn = self._take()
        except BaseException:
            self._slots.release()
            raise
        keep = True
        try:
            return op(conn.sftp)
        except (DesyncRefError, FileNotFoundError):  # the caller's to map: the server answered
            raise
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if isinstance(exc, (EOFError, TimeoutError, paramiko.SSHException)) or not conn.alive():
                keep = False
                detail = (conn.pipe.stderr_line() if conn.pipe is not None else "") or _reason(exc)
                raise _Lost(detail) from None
            raise StoreError(f"{self.loc.shown}: {what}: {_reason(exc)}") from None
        except BaseException:
            keep = False  # interrupted mid-request: the session's state is unknown
            raise
        finally:
            if keep:
                with self._lock:
                    self._idle.append(conn)
            else:
                conn.close()
            self._slots.release()

    def _take(self) -> _Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _connect(self.loc, self.options.timeout)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# --- remote file operations (one connection each) ---------------------------------------------

def _read_file(sftp: paramiko.SFTPClient, path: str, limit: int) -> bytes | None:
    """The file's bytes, or None when it is larger than ``limit``."""
    with sftp.open(path, "rb") as remote:
        size = remote.stat().st_size or 0
        if size > limit:
            return None
        remote.prefetch(size)  # the reads go out together, not one round trip each
        data: bytes = remote.read()
    return data if len(data) <= limit else None


def _write_file(sftp: paramiko.SFTPClient, path: str, temp: str, data: bytes) -> None:
    """``data`` under the temp name ``temp`` (same directory), then renamed over ``path``;
    the directory is made when missing (desync ``StoreObject``)."""
    try:
        remote = sftp.open(temp, "wxb")
    except FileNotFoundError:
        with contextlib.suppress(OSError):  # another writer may make it at the same moment
            sftp.mkdir(posixpath.dirname(path))
        remote = sftp.open(temp, "wxb")
    try:
        with remote:
            remote.set_pipelined(True)
            remote.write(data)
        sftp.posix_rename(temp, path)
    except BaseException:
        with contextlib.suppress(Exception):  # over a broken connection this fails too
            sftp.remove(temp)
        raise


def _make_dirs(sftp: paramiko.SFTPClient, path: str) -> None:
    current = ""
    for part in path.strip("/").split("/"):
        current += "/" + part
        try:
            sftp.stat(current)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                sftp.mkdir(current)


class SFTPBase:
    """A store directory on an SFTP server, with its connection pool."""

    def __init__(self, location: str, options: StoreOptions, *, create: bool, size: int,
                 loc: SFTPLocation | None = None) -> None:
        self.loc = loc or parse_location(location)
        self.location = self.loc.shown
        self.root = self.loc.path
        self.options = options
        self._size = size
        self._pool = _Pool(self.loc, options, size)
        self._check_root(create)

    def __str__(self) -> str:
        return self.location

    def _check_root(self, create: bool) -> None:
        """desync stats the path once connected: it must exist (and the login work)."""

        def check(sftp: paramiko.SFTPClient) -> None:
            if create:
                _make_dirs(sftp, self.root)
            try:
                mode = sftp.stat(self.root).st_mode or 0
            except FileNotFoundError:
                raise StoreError(f"{self.location}: {self.root} does not exist on {self.loc.address}") from None
            if not stat.S_ISDIR(mode):
                raise StoreError(f"{self.location}: {self.root} is not a directory")

        self._pool.run("open", check)

    # A make over several processes pickles the store into each worker: the connections
    # stay behind and the worker makes its own.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pool = _Pool(self.loc, self.options, self._size)

    def run(self, what: str, op: Callable[[paramiko.SFTPClient], _T]) -> _T:
        return self._pool.run(what, op)

    def temp_name(self, directory: str, prefix: str, suffix: str = "") -> str:
        # No mkstemp over SFTP: a random name, created exclusively.
        return f"{directory}/{prefix}{secrets.token_hex(8)}{suffix}"

    def close(self) -> None:
        self._pool.close()


class SFTPStore(SFTPBase):
    """An SFTP chunk store (desync ``SFTPStore``): a PruneStore."""

    def __init__(self, location: str, options: StoreOptions = DEFAULT_OPTIONS, *, create: bool = False) -> None:
        super().__init__(location, options, create=create, size=options.n)
        self.form = storage_form(options, location)

    def path(self, chunk_id: bytes) -> str:
        return self.root + chunk_file_name(chunk_id, self.form.extension)

    def get_chunk(self, chunk_id: bytes, digest: Digest | None) -> Chunk:
        path = self.path(chunk_id)
        try:
            blob = self.run(f"read chunk {chunk_id.hex()}", lambda sftp: _read_file(sftp, path, MAX_CHUNK_FILE))
        except FileNotFoundError:
            raise ChunkMissing(chunk_id.hex(), str(self)) from None
        if blob is None:
            raise StoreError(f"{self.location}: chunk file {path} is larger than {MAX_CHUNK_FILE} bytes")
        return self.form.from_storage(chunk_id, blob, digest, where=self.location)

    def has_chunk(self, chunk_id: bytes) -> bool:
        path = self.path(chunk_id)

        def look(sftp: paramiko.SFTPClient) -> bool:
            try:
                info = sftp.stat(path)
            except FileNotFoundError:
                return False
            return stat.S_ISREG(info.st_mode or 0) and (info.st_size or 0) > 0

        return self.run(f"stat chunk {chunk_id.hex()}", look)

    def store_chunk(self, chunk: Chunk) -> None:
        path = self.path(chunk.id)
        data = self.form.to_storage(chunk)
        temp = self.temp_name(posixpath.dirname(path), TMP_CHUNK_PREFIX)
        self.run(f"write chunk {chunk.id.hex()}", lambda sftp: _write_file(sftp, path, temp, data))

    def remove_chunk(self, chunk_id: bytes) -> None:
        path = self.path(chunk_id)

        def remove(sftp: paramiko.SFTPClient) -> None:
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(path)
            # An emptied prefix directory goes too, as in the local store.
            with contextlib.suppress(OSError):
                sftp.rmdir(posixpath.dirname(path))

        self.run(f"remove chunk {chunk_id.hex()}", remove)

    def _listing(self) -> list[tuple[str, bytes | None]]:
        """(path, chunk id) for every chunk file of this store's form and (path, None) for
        every temp file, listed over one connection that is given back before anything is
        deleted (desync #375: a prune holding the only connection waited for it forever)."""

        def walk(sftp: paramiko.SFTPClient) -> list[tuple[str, bytes | None]]:
            found: list[tuple[str, bytes | None]] = []
            for sub in sorted(sftp.listdir_attr(self.root), key=lambda a: a.filename):
                if len(sub.filename) != 4 or not stat.S_ISDIR(sub.st_mode or 0):
                    continue
                for entry in sorted(sftp.listdir_attr(self.root + sub.filename), key=lambda a: a.filename):
                    if not stat.S_ISREG(entry.st_mode or 0):
                        continue
                    path = f"{self.root}{sub.filename}/{entry.filename}"
                    chunk_id = parse_chunk_path(f"{sub.filename}/{entry.filename}", self.form.extension)
                    if isinstance(chunk_id, bytes):
                        found.append((path, chunk_id))
                    elif is_temp_chunk_name(entry.filename):
                        found.append((path, None))
            return found

        return self.run("list chunks", walk)

    def chunk_ids(self) -> Iterator[bytes]:
        for _, chunk_id in self._listing():
            if chunk_id is not None:
                yield chunk_id

    def prune(self, keep: set[bytes]) -> int:
        """Delete chunk files not in ``keep`` and leftover temp files, over up to ``n``
        connections; emptied prefix directories go too. Returns the chunks removed."""
        doomed = [(path, chunk_id) for path, chunk_id in self._listing() if chunk_id not in keep]

        def remove(path: str) -> None:
            def op(sftp: paramiko.SFTPClient) -> None:
                with contextlib.suppress(FileNotFoundError):
                    sftp.remove(path)

            self.run(f"remove {path}", op)

        if doomed:
            with ThreadPoolExecutor(max_workers=max(1, min(self.options.n, len(doomed)))) as workers:
                list(workers.map(remove, [path for path, _ in doomed]))
        for directory in sorted({posixpath.dirname(path) for path, _ in doomed}):
            def rmdir(sftp: paramiko.SFTPClient, directory: str = directory) -> None:
                with contextlib.suppress(OSError):  # not empty: it keeps chunks
                    sftp.rmdir(directory)

            self.run(f"remove {directory}", rmdir)
        return sum(1 for _, chunk_id in doomed if chunk_id is not None)


class SFTPIndexStore(SFTPBase):
    """An SFTP index store (desync ``SFTPIndexStore``): ``<path>/<name>``, one connection."""

    def __init__(self, location: str, options: StoreOptions = DEFAULT_OPTIONS, *, create: bool = False,
                 loc: SFTPLocation | None = None) -> None:
        super().__init__(location, options, create=create, size=1, loc=loc)

    def _path(self, name: str) -> str:
        if not valid_index_name(name):
            raise StoreError(f"invalid index name '{name}'")
        return self.root + name

    def get_index(self, name: str) -> Index:
        path = self._path(name)
        try:
            data = self.run(f"read index {name}", lambda sftp: _read_file(sftp, path, MAX_INDEX_BYTES))
        except FileNotFoundError:
            raise IndexMissing(f"index {self.location.rstrip('/')}/{name} not found") from None
        if data is None:
            raise StoreError(f"{self.location}: index {name} is larger than {MAX_INDEX_BYTES} bytes")
        try:
            return parse_index(data)
        except InvalidFormat as exc:
            raise InvalidFormat(f"{self.location.rstrip('/')}/{name}: {exc}") from None

    def store_index(self, name: str, index: Index) -> None:
        path = self._path(name)
        data = encode_index(index)
        temp = self.temp_name(self.root.rstrip("/"), f".{name}.", ".tmp")
        self.run(f"write index {name}", lambda sftp: _write_file(sftp, path, temp, data))


# --- backend entry points (stores/registry.py) ----------------------------------------------

def open_chunk_store(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                     create: bool = False) -> SFTPStore:
    """``create`` makes the store's directory (and its parents) when missing."""
    return SFTPStore(location, options.for_location(location), create=create)


def open_index_store(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                     create: bool = False) -> SFTPIndexStore:
    return SFTPIndexStore(location, options.for_location(location), create=create)


def open_index_location(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                        create: bool = False) -> tuple[SFTPIndexStore, str]:
    """``sftp://h/p/x.caibx`` → the store at ``/p/`` and ``x.caibx`` (desync
    ``indexStoreFromLocation``: ``path.Dir`` and ``path.Base`` of the URL's path)."""
    loc = parse_location(location)
    full = loc.path.rstrip("/")
    name = posixpath.basename(full)
    if not name:
        raise StoreError(f"index URL {loc.shown} names no index")
    directory = posixpath.dirname(full)
    base = loc.child(directory)
    return SFTPIndexStore(base.shown, options.for_location(base.shown.rstrip("/")), create=create, loc=base), name
