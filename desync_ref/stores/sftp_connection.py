"""SFTP connections for the ``sftp://`` stores (``stores/sftp.py``): the location, the two
transports and the pool of ``-n`` connections.

Spec: ``spec/sftp.md`` ("Location", "Transports", "Connections"). The location is parsed as
desync's ``cmd/desync/store.go`` does (``storeFromLocation``); the ``CASYNC_SSH_PATH``
transport runs desync's argv (``sftp.go``, ``newSFTPStoreBase``) plus ``-p`` for a port.

* ``CASYNC_SSH_PATH`` set: ``<ssh> [-p PORT] -s -- [user@]host sftp``, SFTP over its stdin
  and stdout (the user's ssh configuration, agent and known_hosts decide everything);
* otherwise paramiko's SSH client with the user's agent, ``~/.ssh`` keys and known hosts:
  an unknown host key is refused, never learnt.

A broken connection (EOF, timeout, the ssh program gone) is dropped and the operation
retried on a new one, ``error_retry`` attempts in all with a linear back-off; an error the
SFTP server answers is not retried.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import select
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import paramiko

from desync_ref.errors import DesyncRefError, StoreError
from desync_ref.log import get_logger
from desync_ref.stores.options import StoreOptions, redact

log = get_logger(__name__)  # --verbose: retries and their causes

SCHEME: Final = "sftp://"
SSH_PATH_ENV: Final = "CASYNC_SSH_PATH"
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

class ConnectionPool:
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


