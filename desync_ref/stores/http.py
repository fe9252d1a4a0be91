"""HTTP(S) chunk and index stores on urllib3: ``GET/HEAD/PUT <base>/<xxxx>/<id>.cacnk``.

The backend module of ``http://`` and ``https://`` in the scheme registry
(``stores/registry.py``); it is imported only when such a location is opened.

Spec: ``spec/http.md``. Behaviour of desync ``remotehttp.go`` (chunks) and
``remotehttpindex.go`` (indexes): 200 is the object, 404 is "missing", anything else is an
error; transport errors and 5xx are retried ``error_retry`` times in all with a linear
back-off (attempt N waits N times the base interval, ``IssueRetryableHttpRequest``); a 404 is never
retried. PUT succeeds with 200 or 201 (``StoreObject``). No compression is negotiated
(``DisableCompression``), proxies come from the environment (``ProxyFromEnvironment``).
What Go's ``http.Client`` does for desync is done here by hand: credentials in the URL are
sent as Basic auth (``Client.send``), redirects are followed up to 10 times without the
credentials when they lead to another host (``Client.do``, ``shouldCopyHeaderOnRedirect``),
and the timeout is one deadline for the whole exchange (``Client.Timeout``).
"""

from __future__ import annotations

import base64
import ssl
import threading
import time
import urllib.parse
import urllib.request
import warnings
from typing import Any, Final

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    InsecureRequestWarning,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import parse_url

from desync_ref.errors import ChunkMissing, IndexMissing, InvalidFormat, StoreError
from desync_ref.formats.chunk import MAX_STORED_CHUNK_SIZE, Digest, chunk_file_name
from desync_ref.formats.index import Index, encode_index, parse_index
from desync_ref.log import get_logger
from desync_ref.stores import Chunk
from desync_ref.stores.index_stores import MAX_INDEX_BYTES
from desync_ref.stores.options import DEFAULT_OPTIONS, StoreOptions, redact
from desync_ref.stores.storage_form import storage_form

log = get_logger(__name__)  # --verbose: retries and their causes

USER_AGENT: Final = "desync-ref"
SCHEMES: Final = ("http://", "https://")
# Go's http.Client stops after 10 redirects (defaultCheckRedirect).
MAX_REDIRECTS: Final = 10
REDIRECT_STATUSES: Final = (301, 302, 303, 307, 308)
MAX_INDEX_BODY: Final = MAX_INDEX_BYTES
# Error bodies are shown cut to 200 characters; no need to read more of them.
MAX_ERROR_BODY: Final = 64 * 1024
_READ_PIECE: Final = 1024 * 1024

def split_credentials(location: str) -> tuple[str, str | None]:
    """(the URL without its user info, the Basic Authorization value it asked for, or None)."""
    parts = urllib.parse.urlsplit(location)
    if "@" not in parts.netloc:
        return location, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
    clean = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return clean, "Basic " + base64.b64encode(token.encode("utf-8")).decode("ascii")


def _ssl_context(options: StoreOptions) -> ssl.SSLContext:
    """desync ``tlsClientConfig``: the system trust store, or only --ca-cert; a client pair."""
    if options.ca_cert:
        # Go sets RootCAs to a pool of just this file: the system store is not consulted.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            ctx.load_verify_locations(cafile=options.ca_cert)
        except (OSError, ssl.SSLError) as exc:
            raise StoreError(f"cannot load CA certificates from {options.ca_cert}: {error_reason(exc)}") from None
    else:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if options.trust_insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if bool(options.client_cert) != bool(options.client_key):
        raise StoreError("--client-key and --client-cert options need to be provided together")
    if options.client_cert and options.client_key:
        try:
            ctx.load_cert_chain(options.client_cert, options.client_key)
        except (OSError, ssl.SSLError) as exc:
            raise StoreError(f"failed to load client certificate from {options.client_cert}: {error_reason(exc)}") from None
    return ctx


def error_reason(exc: BaseException) -> str:
    """The innermost useful message of a urllib3/ssl/socket error, on one line."""
    while isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or exc.__class__.__name__
    # urllib3 prefixes its own object reprs ("<urllib3.connection...>: Failed to ...").
    if text.startswith("<") and ">: " in text:
        text = text.split(">: ", 1)[1]
    return redact(" ".join(text.split()))


def proxy_for(url: str) -> str | None:
    """The proxy for ``url`` from http_proxy/https_proxy/no_proxy, as Go's ProxyFromEnvironment."""
    parsed = parse_url(url)
    host = parsed.host or ""
    if urllib.request.proxy_bypass_environment(host):  # type: ignore[attr-defined]
        return None
    proxies = urllib.request.getproxies_environment()
    proxy: str | None = proxies.get(parsed.scheme or "http")
    return proxy


def origin_of(url: str) -> tuple[str, str, int | None]:
    parsed = parse_url(url)
    scheme = (parsed.scheme or "http").lower()
    return scheme, (parsed.host or "").lower(), parsed.port or (443 if scheme == "https" else 80)


class Deadline(Exception):
    """The request's overall timeout ran out."""


class BodyTooLarge(Exception):
    """A response body larger than the cap of what was asked for."""


class HTTPBase:
    """Shared request machinery for chunk and index stores under one base URL."""

    kind = "object"
    max_body = MAX_STORED_CHUNK_SIZE

    def __init__(self, location: str, options: StoreOptions = DEFAULT_OPTIONS) -> None:
        shown = redact(location)
        if not location.lower().startswith(SCHEMES):
            raise StoreError(f"unsupported scheme in {shown}, expected http or https")
        try:
            parsed = parse_url(location)
        except ValueError as exc:
            raise StoreError(f"invalid store URL {shown}: {redact(str(exc))}") from None
        if not parsed.host:
            raise StoreError(f"invalid store URL {shown}: no host")
        clean, basic = split_credentials(location)
        self.base = clean if clean.endswith("/") else clean + "/"
        self.location = shown
        self.options = options
        self._headers: dict[str, str] = {"User-Agent": USER_AGENT}
        # Go: an Authorization header set on the request wins over the URL's user info.
        if options.http_auth:
            self._headers["Authorization"] = options.http_auth
        elif basic:
            self._headers["Authorization"] = basic
        if options.http_cookie:
            self._headers["Cookie"] = options.http_cookie
        self._ssl = _ssl_context(options) if parsed.scheme == "https" else None
        self._lock = threading.Lock()
        self._pool: urllib3.PoolManager | None = None

    def __str__(self) -> str:
        return self.location

    # A make over several processes pickles the store into each worker (fork context):
    # the connection pool stays behind and is built again on first use.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _manager(self) -> urllib3.PoolManager:
        pool = self._pool
        if pool is not None:
            return pool
        with self._lock:
            if self._pool is None:
                kwargs: dict[str, Any] = {
                    "num_pools": 4,
                    "maxsize": max(1, self.options.n),
                    "block": False,
                    "retries": False,
                }
                if self._ssl is not None:
                    kwargs["ssl_context"] = self._ssl
                    if self.options.trust_insecure:
                        kwargs["cert_reqs"] = "CERT_NONE"
                        kwargs["assert_hostname"] = False
                proxy = proxy_for(self.base)
                self._pool = urllib3.ProxyManager(proxy, **kwargs) if proxy else urllib3.PoolManager(**kwargs)
            return self._pool

    def url(self, name: str) -> str:
        return self.base + name

    def _remaining(self, deadline: float | None) -> float | None:
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise Deadline
        return left

    def _read(self, resp: urllib3.BaseHTTPResponse, limit: int, deadline: float | None,
              cut: bool = False) -> bytes:
        """The body, up to ``limit`` bytes (more is BodyTooLarge, or cut off with ``cut``), within
        the deadline (the socket timeout shrinks with it, so a server sending a byte now and
        then cannot hold the request past it)."""
        declared = resp.headers.get("Content-Length")
        if not cut and declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge
        parts: list[bytes] = []
        size = 0
        sock = getattr(getattr(resp, "connection", None), "sock", None)
        while True:
            left = self._remaining(deadline)
            if sock is not None and left is not None:
                sock.settimeout(left)
            piece = resp.read1(min(_READ_PIECE, limit + 1 - size))
            if not piece:
                return b"".join(parts)
            size += len(piece)
            if size > limit:
                if cut:
                    return b"".join(parts)
                raise BodyTooLarge
            parts.append(piece)

    def _once(self, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
        """One attempt: the request and its redirects under one deadline (Go's Client.Timeout)."""
        timeout = self.options.timeout
        deadline = time.monotonic() + timeout if timeout else None
        headers = dict(self._headers)
        origin = origin_of(url)
        for _ in range(MAX_REDIRECTS + 1):
            left = self._remaining(deadline)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InsecureRequestWarning)
                resp = self._manager().request(method, url, body=body, headers=headers, redirect=False,
                                               preload_content=False, decode_content=False,
                                               timeout=urllib3.Timeout(connect=left, read=left))
            whole = False
            try:
                location = resp.headers.get("Location")
                if resp.status not in REDIRECT_STATUSES or not location:
                    if resp.status == 200:
                        data = self._read(resp, self.max_body, deadline)
                        whole = True
                    else:  # only the start of an error body is shown
                        data = self._read(resp, MAX_ERROR_BODY, deadline, cut=True)
                    return resp.status, data
                self._read(resp, MAX_ERROR_BODY, deadline, cut=True)
            finally:
                if not whole:  # a connection with unread bytes on it must not be reused
                    resp.close()
                resp.release_conn()
            url = urllib.parse.urljoin(url, location)
            if not url.lower().startswith(SCHEMES):
                raise StoreError(f"{method} {redact(url)}: redirect to an unsupported scheme")
            if origin_of(url) != origin:
                # Go drops Authorization and Cookie on a redirect to another host; once
                # dropped they stay dropped, whatever host comes next.
                headers.pop("Authorization", None)
                headers.pop("Cookie", None)
            if resp.status in (301, 302, 303) and method not in ("GET", "HEAD"):
                method, body = "GET", None  # Go: the body is not sent again for these
        raise StoreError(f"{method} {redact(url)}: stopped after {MAX_REDIRECTS} redirects")

    def request(self, method: str, name: str, body: bytes | None = None) -> tuple[int, bytes]:
        """One exchange, retried on transport errors and 5xx; returns (status, body)."""
        url = self.url(name)
        attempts = max(1, self.options.error_retry)
        attempt = 0
        while True:
            attempt += 1
            try:
                status, data = self._once(method, url, body)
            except SSLError as exc:  # a certificate does not get better by asking again
                raise StoreError(f"{method} {url}: TLS error: {error_reason(exc)}") from None
            except BodyTooLarge:  # nor does the size of an object
                raise StoreError(f"{method} {url}: response larger than {self.max_body} bytes") from None
            except Deadline:
                if attempt >= attempts:
                    raise StoreError(f"{method} {url}: timed out after {self.options.timeout:g} s") from None
                cause = "timed out"
            except (HTTPError, OSError) as exc:
                cause = error_reason(exc)
                if attempt >= attempts:
                    # the socket timeout is what is left of the deadline: either way it ran
                    # out (urllib3's NewConnectionError is a ConnectTimeoutError, but is not one)
                    if (isinstance(exc, (TimeoutError, ReadTimeoutError, ConnectTimeoutError))
                            and not isinstance(exc, NewConnectionError) and self.options.timeout):
                        raise StoreError(f"{method} {url}: timed out after {self.options.timeout:g} s") from None
                    raise StoreError(f"{method} {url}: {error_reason(exc)}") from None
            else:
                if not 500 <= status < 600 or attempt >= attempts:
                    return status, data
                cause = f"HTTP {status}"
            log.info("%s %s: attempt %d of %d failed (%s), retrying", method, redact(url), attempt,
                     attempts, cause)
            time.sleep(attempt * self.options.error_retry_base_interval)

    def unexpected(self, method: str, name: str, status: int, body: bytes) -> StoreError:
        detail = redact(" ".join(body[:200].decode("utf-8", "replace").split()))
        what = {401: "unauthorized", 403: "forbidden"}.get(status, "unexpected status")
        suffix = f": {detail}" if detail else ""
        return StoreError(f"{method} {self.url(name)}: {what} (HTTP {status}){suffix}")

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.clear()
class HTTPStore(HTTPBase):
    """A remote chunk store (desync ``RemoteHTTP``): a WriteStore."""

    kind = "chunk"

    def __init__(self, location: str, options: StoreOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(location, options)
        self.form = storage_form(options, location)
        self.uncompressed = not self.form.compressed
        self.suffix = self.form.extension
        # An encrypted store names itself in decryption errors; unencrypted messages stay as they were.
        self._where = str(self) if self.form.encrypted else ""

    def name(self, chunk_id: bytes) -> str:
        return chunk_file_name(chunk_id, self.suffix)

    def get_chunk(self, chunk_id: bytes, digest: Digest | None) -> Chunk:
        name = self.name(chunk_id)
        status, body = self.request("GET", name)
        if status == 200:
            return self.form.from_storage(chunk_id, body, None if self.options.skip_verify else digest,
                                          where=self._where)
        if status == 404:
            raise ChunkMissing(chunk_id.hex(), str(self))
        raise self.unexpected("GET", name, status, body)

    def has_chunk(self, chunk_id: bytes) -> bool:
        name = self.name(chunk_id)
        status, body = self.request("HEAD", name)
        if status == 200:
            return True
        if status == 404:
            return False
        raise self.unexpected("HEAD", name, status, body)

    def store_chunk(self, chunk: Chunk) -> None:
        name = self.name(chunk.id)
        payload = self.form.to_storage(chunk)
        status, body = self.request("PUT", name, payload)
        if status not in (200, 201):
            raise self.unexpected("PUT", name, status, body)

    def remove_chunk(self, chunk_id: bytes) -> None:
        """The protocol has no DELETE (desync's handler answers 405): a valid extra chunk stays."""


class HTTPIndexStore(HTTPBase):
    """A remote index store (desync ``RemoteHTTPIndex``): ``<base>/<name>``, an IndexWriteStore."""

    kind = "index"
    max_body = MAX_INDEX_BODY

    def get_index(self, name: str) -> Index:
        status, body = self.request("GET", name)
        if status == 404:
            raise IndexMissing(f"index {self.url(name)} not found")
        if status != 200:
            raise self.unexpected("GET", name, status, body)
        try:
            return parse_index(body)
        except InvalidFormat as exc:
            raise InvalidFormat(f"{self.url(name)}: {exc}") from None

    def store_index(self, name: str, index: Index) -> None:
        status, body = self.request("PUT", name, encode_index(index))
        if status not in (200, 201):
            raise self.unexpected("PUT", name, status, body)


def split_index_url(location: str) -> tuple[str, str]:
    """``http://h/p/x.caibx`` → (``http://h/p/``, ``x.caibx``), as desync ``indexStoreFromLocation``."""
    parsed = parse_url(location)
    path = parsed.path or ""
    name = path.rsplit("/", 1)[-1]
    if not name:
        raise StoreError(f"index URL {redact(location)} names no index")
    base = parsed._replace(path=path[: len(path) - len(name)], query=None, fragment=None).url
    return base, name


# --- backend entry points (stores/registry.py) ----------------------------------------------

def open_chunk_store(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                     create: bool = False) -> HTTPStore:
    """``create`` has no meaning over HTTP: the server's store exists or it does not."""
    return HTTPStore(location, options.for_location(location))


def open_index_store(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                     create: bool = False) -> HTTPIndexStore:
    return HTTPIndexStore(location, options.for_location(location))


def open_index_location(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                        create: bool = False) -> tuple[HTTPIndexStore, str]:
    base, name = split_index_url(location)
    return HTTPIndexStore(base, options.for_location(base.rstrip("/"))), name
