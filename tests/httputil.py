"""Helpers for the HTTP tests: free ports, test-time certificates, server processes, a
chunk store upstream that can hold requests, and the request log of a server."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5) -> None:
    """SIGTERM, then SIGKILL if the process has not ended within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_client_cert: Path  # signed by a CA the server does not trust
    other_client_key: Path
    other_ca: Path | None = None  # that other CA's own certificate


def make_certs(directory: Path) -> Certs:
    """A CA, a server cert for 127.0.0.1/localhost, a client cert, and a stranger's client cert."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return key, cert

    def leaf(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, cn: str,
             server: bool) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                         else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = make_ca("desync-ref test CA")
    other_key, other = make_ca("some other CA")
    s_key, s_cert = leaf(ca_key, ca, "127.0.0.1", server=True)
    c_key, c_cert = leaf(ca_key, ca, "test client", server=False)
    o_key, o_cert = leaf(other_key, other, "stranger", server=False)
    return Certs(
        ca=write_cert(ca, directory / "ca.pem"),
        server_cert=write_cert(s_cert, directory / "server.pem"),
        server_key=write_key(s_key, directory / "server.key"),
        client_cert=write_cert(c_cert, directory / "client.pem"),
        client_key=write_key(c_key, directory / "client.key"),
        other_client_cert=write_cert(o_cert, directory / "other.pem"),
        other_client_key=write_key(o_key, directory / "other.key"),
        other_ca=write_cert(other, directory / "other-ca.pem"),
    )


class Server:
    """A ``desync-ref`` server subprocess on 127.0.0.1; ``url`` is its base URL."""

    def __init__(self, command: str, args: Sequence[str | os.PathLike[str]], *, tls: bool = False,
                 port: int | None = None, extra_ports: Sequence[int] = (), env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.scheme = "https" if tls else "http"
        listen = ["-l", f"127.0.0.1:{self.port}"]
        for extra in extra_ports:
            listen += ["-l", f"127.0.0.1:{extra}"]
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        cmd = [sys.executable, "-m", "desync_ref", command, *map(str, args), *listen]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._err,
                                     env={**os.environ, **(env or {})}, cwd=ROOT)
        self._wait_ready()

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace")

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.stderr()
                raise RuntimeError(f"server exited early ({self.proc.returncode}): {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("server did not start listening")

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Stop the server; returns (exit code, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode, self.stderr()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.01)
    return False


_LOGGED_GET = re.compile(r"Request: GET (\S+), Response: (\d+)$", re.MULTILINE)


def served(log: str, status: int = 200) -> list[str]:
    """The paths of the GETs a server's ``--log -`` shows answered with ``status``, in order."""
    return [path for path, code in _LOGGED_GET.findall(log) if int(code) == status]


class _LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 and a free port, run in the background."""

    _server: http.server.ThreadingHTTPServer

    def _serve(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Upstream(_LoopbackServer):
    """A plain HTTP chunk store run by the test: serves ``store``'s files to GET and HEAD.

    GET requests are counted in ``hits`` (paths, in order of arrival). From the
    ``hold_from``-th GET on (counting from 0) the handler waits until ``release`` is set,
    so a test can stop a download at a known point and act while it is held.
    """

    def __init__(self, store: Path, *, hold_from: int | None = None) -> None:
        self.store = store
        self.hold_from = hold_from
        self.hits: list[str] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with upstream._lock:
                    number = len(upstream.hits)
                    upstream.hits.append(self.path)
                if upstream.hold_from is not None and number >= upstream.hold_from:
                    upstream.release.wait(60)
                self._answer(body=True)

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def _answer(self, body: bool) -> None:
                path = upstream.store / self.path.lstrip("/")
                data = path.read_bytes() if ".." not in self.path and path.is_file() else None
                try:
                    self.send_response(200 if data is not None else 404)
                    self.send_header("Content-Length", str(len(data or b"")))
                    self.end_headers()
                    if body and data:
                        self.wfile.write(data)
                except OSError:
                    pass  # the client went away (a server the test killed)

            def log_message(self, *args: object) -> None:
                pass

        self._serve(Handler)

    def wait_hits(self, count: int, timeout: float = 20.0) -> bool:
        return wait_for(lambda: len(self.hits) >= count, timeout)

    def close(self) -> None:
        self.release.set()  # a held handler must not keep shutdown waiting
        super().close()


@dataclass
class Seen:
    """One request a :class:`Scripted` server received."""

    method: str
    path: str
    headers: dict[str, str]


def send_file(handler: http.server.BaseHTTPRequestHandler, root: Path, *, body: bool = True) -> None:
    """Answer with the file under ``root`` named by the request path (200), or 404."""
    path = root / handler.path.lstrip("/").split("?", 1)[0]
    data = path.read_bytes() if ".." not in handler.path and path.is_file() else None
    handler.send_response(200 if data is not None else 404)
    handler.send_header("Content-Length", str(len(data or b"")))
    handler.end_headers()
    if body and data:
        handler.wfile.write(data)


class Scripted(_LoopbackServer):
    """A loopback HTTP/1.1 server whose every request is answered by ``respond(handler)``.

    Requests are recorded in ``seen`` (method, path, headers). ``respond`` writes the whole
    answer with the BaseHTTPRequestHandler API and may misbehave (stall, drop, lie about the
    length); errors from a client that went away are ignored."""

    def __init__(self, respond: Callable[[http.server.BaseHTTPRequestHandler], None]) -> None:
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        scripted = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                with scripted._lock:
                    scripted.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                try:
                    respond(self)
                except OSError:
                    self.close_connection = True

            do_GET = do_HEAD = do_PUT = _any

            def log_message(self, *args: object) -> None:
                pass

        self._serve(Handler)

