"""HTTP(S) chunk and index stores on urllib3: ``GET/HEAD/PUT <base>/<xxxx>/<id>.cacnk``.

The backend module of ``http://`` and ``https://`` in the scheme registry
(``stores/registry.py``); it is imported only when such a location is opened.

Spec: ``spec/http.md``. Behaviour of desync ``remotehttp.go`` (chunks) and
``remotehttpindex.go`` (indexes): 200 is the object, 404 is "missing", anything else is an
error; transport errors and 5xx are retried ``error_retry`` times in all with a linear
back-off (attempt N waits N times the base interval, ``IssueRetryableHttpRequest``); a 404 is never
retried. PUT succeeds with 200 or 201 (``StoreObject``). No compression is negotiated
(``DisableCompression``), proxies come from the environment (``ProxyFromEnvironment``).
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.request
import warnings
from typing import Any, Final

import urllib3
from urllib3.exceptions import HTTPError, InsecureRequestWarning, MaxRetryError, SSLError
from urllib3.util import parse_url

from desync_ref.errors import ChunkMissing, IndexMissing, InvalidFormat, StoreError
from desync_ref.formats.chunk import (
    COMPRESSED_CHUNK_SUFFIX,
    UNCOMPRESSED_CHUNK_SUFFIX,
    Digest,
    chunk_file_name,
)
from desync_ref.formats.index import Index, encode_index, parse_index
from desync_ref.stores import Chunk
from desync_ref.stores.options import DEFAULT_OPTIONS, StoreOptions

USER_AGENT: Final = "desync-ref"
SCHEMES: Final = ("http://", "https://")


def _ssl_context(options: StoreOptions) -> ssl.SSLContext:
    """desync ``tlsClientConfig``: system trust unless --ca-cert, optional client pair."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if options.trust_insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if options.ca_cert:
        try:
            ctx.load_verify_locations(cafile=options.ca_cert)
        except (OSError, ssl.SSLError) as exc:
            raise StoreError(f"cannot load CA certificates from {options.ca_cert}: {_reason(exc)}") from None
    if bool(options.client_cert) != bool(options.client_key):
        raise StoreError("--client-key and --client-cert options need to be provided together")
    if options.client_cert and options.client_key:
        try:
            ctx.load_cert_chain(options.client_cert, options.client_key)
        except (OSError, ssl.SSLError) as exc:
            raise StoreError(f"failed to load client certificate from {options.client_cert}: {_reason(exc)}") from None
    return ctx


def _reason(exc: BaseException) -> str:
    """The innermost useful message of a urllib3/ssl/socket error, on one line."""
    while isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or exc.__class__.__name__
    # urllib3 prefixes its own object reprs ("<urllib3.connection...>: Failed to ...").
    if text.startswith("<") and ">: " in text:
        text = text.split(">: ", 1)[1]
    return " ".join(text.split())


def _proxy_for(url: str) -> str | None:
    """The proxy for ``url`` from http_proxy/https_proxy/no_proxy, as Go's ProxyFromEnvironment."""
    parsed = parse_url(url)
    host = parsed.host or ""
    if urllib.request.proxy_bypass_environment(host):  # type: ignore[attr-defined]
        return None
    proxies = urllib.request.getproxies_environment()
    proxy: str | None = proxies.get(parsed.scheme or "http")
    return proxy


class HTTPBase:
    """Shared request machinery for chunk and index stores under one base URL."""

    kind = "object"

    def __init__(self, location: str, options: StoreOptions = DEFAULT_OPTIONS) -> None:
        if not location.lower().startswith(SCHEMES):
            raise StoreError(f"unsupported scheme in {location}, expected http or https")
        try:
            parsed = parse_url(location)
        except ValueError as exc:
            raise StoreError(f"invalid store URL {location}: {exc}") from None
        if not parsed.host:
            raise StoreError(f"invalid store URL {location}: no host")
        self.base = location if location.endswith("/") else location + "/"
        self.location = location
        self.options = options
        self._headers: dict[str, str] = {"User-Agent": USER_AGENT}
        if options.http_auth:
            self._headers["Authorization"] = options.http_auth
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
                timeout = urllib3.Timeout(total=self.options.timeout) if self.options.timeout else urllib3.Timeout(None)
                kwargs: dict[str, Any] = {
                    "num_pools": 4,
                    "maxsize": max(1, self.options.n),
                    "block": False,
                    "retries": False,
                    "timeout": timeout,
                }
                if self._ssl is not None:
                    kwargs["ssl_context"] = self._ssl
                    if self.options.trust_insecure:
                        kwargs["cert_reqs"] = "CERT_NONE"
                        kwargs["assert_hostname"] = False
                proxy = _proxy_for(self.base)
                self._pool = urllib3.ProxyManager(proxy, **kwargs) if proxy else urllib3.PoolManager(**kwargs)
            return self._pool

    def url(self, name: str) -> str:
        return self.base + name

    def _once(self, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureRequestWarning)
            resp = self._manager().request(method, url, body=body, headers=self._headers,
                                           redirect=True, preload_content=True, decode_content=False)
        return resp.status, resp.data

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
                raise StoreError(f"{method} {url}: TLS error: {_reason(exc)}") from None
            except (HTTPError, OSError) as exc:
                if attempt >= attempts:
                    raise StoreError(f"{method} {url}: {_reason(exc)}") from None
            else:
                if not 500 <= status < 600 or attempt >= attempts:
                    return status, data
            time.sleep(attempt * self.options.error_retry_base_interval)

    def unexpected(self, method: str, name: str, status: int, body: bytes) -> StoreError:
        detail = " ".join(body[:200].decode("utf-8", "replace").split())
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
        self.uncompressed = options.uncompressed
        self.suffix = UNCOMPRESSED_CHUNK_SUFFIX if options.uncompressed else COMPRESSED_CHUNK_SUFFIX

    def name(self, chunk_id: bytes) -> str:
        return chunk_file_name(chunk_id, self.suffix)

    def get_chunk(self, chunk_id: bytes, digest: Digest | None) -> Chunk:
        name = self.name(chunk_id)
        status, body = self.request("GET", name)
        if status == 200:
            if self.uncompressed:
                return Chunk.with_id(chunk_id, digest, data=body)
            return Chunk.with_id(chunk_id, digest, compressed=body)
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
        payload = chunk.data() if self.uncompressed else chunk.compressed()
        status, body = self.request("PUT", name, payload)
        if status not in (200, 201):
            raise self.unexpected("PUT", name, status, body)

    def remove_chunk(self, chunk_id: bytes) -> None:
        """The protocol has no DELETE (desync's handler answers 405): a valid extra chunk stays."""


class HTTPIndexStore(HTTPBase):
    """A remote index store (desync ``RemoteHTTPIndex``): ``<base>/<name>``, an IndexWriteStore."""

    kind = "index"

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
        raise StoreError(f"index URL {location} names no index")
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
