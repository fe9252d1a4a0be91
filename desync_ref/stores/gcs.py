"""Google Cloud Storage chunk and index stores: ``gs://bucket/prefix`` over GCS's JSON API.

The backend module of ``gs://`` in the scheme registry (``stores/registry.py``); it is
imported only when such a location is opened.

Spec: ``spec/gcs.md``. Key layout of desync ``gcs.go`` (``normalizeGCPrefix``:
the path without leading and trailing ``/``, then one ``/`` if not empty; ``nameFromID``:
``<prefix><xxxx>/<id><ext>``) and ``gcsindex.go`` (an index is ``<prefix><name>``); the
listing of ``Prune`` keeps only names that parse as this store's chunks
(``chunkIDFromObjectName``, ``types.go``). desync speaks through Google's Go client; here
the JSON API is spoken over urllib3 (object GET ``?alt=media``, media upload, list with
``pageToken``, DELETE). Credentials are Google's application default credentials, looked
up as Go's ``google.FindDefaultCredentials`` does, through the optional ``google-auth``
package (extra ``gcs``); ``STORAGE_EMULATOR_HOST`` selects an emulator and anonymous
access, as Google's clients do. Retries follow desync ``s3.go`` ``GetChunk`` (#335): transport
errors, 5xx and 429 are retried with a linear back-off, and a chunk that fails its check is
fetched again before it is called invalid.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import urllib3
from urllib3.exceptions import HTTPError, SSLError

from desync_ref.errors import ChunkInvalid, ChunkMissing, IndexMissing, InvalidFormat, StoreError
from desync_ref.formats.chunk import (
    MAX_STORED_CHUNK_SIZE,
    Digest,
    chunk_file_name,
    parse_chunk_path,
)
from desync_ref.formats.index import Index, encode_index, parse_index
from desync_ref.log import get_logger
from desync_ref.stores import Chunk
from desync_ref.stores.http import USER_AGENT, error_reason, proxy_for
from desync_ref.stores.index_stores import MAX_INDEX_BYTES, valid_index_name
from desync_ref.stores.options import DEFAULT_OPTIONS, StoreOptions, redact
from desync_ref.stores.storage_form import StorageForm, storage_form

log = get_logger(__name__)  # --verbose: retries and their causes

SCHEME: Final = "gs://"
GCS_ENDPOINT: Final = "https://storage.googleapis.com"
EMULATOR_ENV: Final = "STORAGE_EMULATOR_HOST"
# Go's storage.NewClient asks for full control (storage.ScopeFullControl).
SCOPE: Final = "https://www.googleapis.com/auth/devstorage.full_control"
# desync gcs.go StoreChunk / gcsindex.go StoreIndex.
CHUNK_CONTENT_TYPE: Final = "application/zstd"
INDEX_CONTENT_TYPE: Final = "application/octet-stream"
# Where Linux shows the machine's maker; a GCE VM says "Google Compute Engine" (Go's
# metadata.systemInfoSuggestsGCE, google-auth's detect_gce_residency_linux).
DMI_PRODUCT_NAME = Path("/sys/class/dmi/id/product_name")
METADATA_PROBE_TIMEOUT: Final = 0.5  # seconds: a metadata server answers at once or is absent
MAX_ERROR_BODY: Final = 64 * 1024
_RETRY_STATUS: Final = frozenset({429})


def parse_location(location: str) -> tuple[str, str]:
    """``gs://bucket/a/b/`` → (``bucket``, ``a/b/``): desync ``NewGCStoreBase`` and
    ``normalizeGCPrefix`` (no leading ``/``, one trailing ``/`` unless empty)."""
    shown = redact(location)
    if not location.lower().startswith(SCHEME):
        raise StoreError(f"invalid scheme in {shown}, expected 'gs'")
    parts = urllib.parse.urlsplit(location)
    bucket = parts.netloc
    if not bucket or "@" in bucket:
        raise StoreError(f"invalid GCS location {shown}: no bucket name")
    prefix = urllib.parse.unquote(parts.path).strip("/")
    return bucket, prefix + "/" if prefix else ""


def endpoint() -> tuple[str, bool]:
    """(the API's base URL, whether it is an emulator). ``STORAGE_EMULATOR_HOST`` is a host
    (``127.0.0.1:4443``, then http) or a URL, as in Google's Go and Python clients."""
    host = os.environ.get(EMULATOR_ENV, "")
    if not host:
        return GCS_ENDPOINT, False
    base = host if "://" in host else "http://" + host
    return base.rstrip("/"), True


# --- credentials -------------------------------------------------------------------------------

def _google(module: str, location: str) -> Any:
    """A google-auth module, or a StoreError naming the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise StoreError(f"{location}: Google credentials need the google-auth package "
                         "(pip install 'desync-ref[gcs]'), or set STORAGE_EMULATOR_HOST "
                         "for an emulator") from None


def _gcloud_adc_file() -> Path:
    """gcloud's ADC file: ``$CLOUDSDK_CONFIG`` or ``~/.config/gcloud``, then
    ``application_default_credentials.json`` (Go ``wellKnownFile``)."""
    config = os.environ.get("CLOUDSDK_CONFIG")
    base = Path(config) if config else Path.home() / ".config" / "gcloud"
    return base / "application_default_credentials.json"


def on_gce() -> bool:
    """Whether a GCE metadata server serves this machine. ``GCE_METADATA_HOST`` says so; a
    readable DMI product name decides without any network call; otherwise one probe of the
    metadata address, bounded by METADATA_PROBE_TIMEOUT, that must answer as Google's."""
    if os.environ.get("GCE_METADATA_HOST"):
        return True
    try:
        return DMI_PRODUCT_NAME.read_text().strip().startswith("Google")
    except OSError:
        pass
    address = os.environ.get("GCE_METADATA_IP", "169.254.169.254")
    try:  # straight to the address: never through a proxy
        resp = urllib3.PoolManager().request("GET", f"http://{address}/", headers={"Metadata-Flavor": "Google"},
                            timeout=urllib3.Timeout(total=METADATA_PROBE_TIMEOUT), retries=False)
    except (HTTPError, OSError):
        return False
    return bool(resp.headers.get("Metadata-Flavor") == "Google")


def _load_file(path: Path, location: str) -> Any:
    """Credentials from an ADC JSON file of the two kinds Google's tools write: a service
    account key (a signed JWT traded for a token) or gcloud's ``authorized_user`` (a refresh
    token). Each kind goes to its own loader, so no other kind is taken from the file."""
    try:
        info = json.loads(path.read_text())
        kind = info.get("type") if isinstance(info, dict) else None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{location}: cannot load Google credentials from {path}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    try:
        if kind == "service_account":
            module = _google("google.oauth2.service_account", location)
            return module.Credentials.from_service_account_info(info, scopes=[SCOPE])
        if kind == "authorized_user":
            module = _google("google.oauth2.credentials", location)
            return module.Credentials.from_authorized_user_info(info, scopes=[SCOPE])
    except (ValueError, KeyError) as exc:
        raise StoreError(f"{location}: cannot load Google credentials from {path}: {exc}") from None
    raise StoreError(f"{location}: cannot load Google credentials from {path}: type {kind!r} is not "
                     "supported (service_account or authorized_user)")


def default_credentials(location: str) -> Any:
    """Google application default credentials, in Go ``FindDefaultCredentials`` order:
    ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's ADC file, the GCE metadata server."""
    _google("google.auth", location)
    named = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if named:  # named: must work, a missing file is an error
        return _load_file(Path(named), location)
    if _gcloud_adc_file().is_file():
        return _load_file(_gcloud_adc_file(), location)
    if on_gce():
        return _google("google.auth.compute_engine", location).Credentials()
    raise StoreError(f"{location}: no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS, "
                     "run 'gcloud auth application-default login', or run on GCE "
                     "(STORAGE_EMULATOR_HOST for an emulator)")


class _Auth:
    """Bearer tokens from the credentials, refreshed when they run out (one refresh at a time)."""

    def __init__(self, location: str, http: urllib3.PoolManager) -> None:
        self.location = location
        self._credentials = default_credentials(location)
        self._lock = threading.Lock()
        self._exceptions = _google("google.auth.exceptions", location)
        self._request = _google("google.auth.transport.urllib3", location).Request(http)

    def apply(self, headers: dict[str, str]) -> None:
        with self._lock:
            try:
                if not self._credentials.valid:
                    self._credentials.refresh(self._request)
            except self._exceptions.TransportError as exc:
                raise OSError(f"cannot reach Google's token service: {exc}") from None  # retried
            except self._exceptions.GoogleAuthError as exc:
                raise StoreError(f"{self.location}: cannot get a Google access token: "
                                 f"{redact(' '.join(str(exc).split()))}") from None
            self._credentials.apply(headers)


# --- the API -----------------------------------------------------------------------------------

class GCSBase:
    """Requests to one bucket under one prefix, retried as desync's object stores do."""

    page_size = 1000  # names per listing page: GCS's default and largest (maxResults)

    def __init__(self, location: str, options: StoreOptions = DEFAULT_OPTIONS) -> None:
        self.location = redact(location)
        self.bucket, self.prefix = parse_location(location)
        self.options = options
        self.endpoint, self.emulator = endpoint()
        self._lock = threading.Lock()
        self._pool: urllib3.PoolManager | None = None
        self._auth: _Auth | None = None
        self._bucket_checked = False

    def __str__(self) -> str:
        return self.location

    # A make over several processes pickles the store into each worker (fork context): the
    # pool and the credentials stay behind and are built again on first use.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_pool=None, _lock=None, _auth=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _manager(self) -> urllib3.PoolManager:
        with self._lock:
            if self._pool is None:
                kwargs: dict[str, Any] = {"num_pools": 4, "maxsize": max(1, self.options.n),
                                          "block": False, "retries": False}
                proxy = proxy_for(self.endpoint)
                self._pool = urllib3.ProxyManager(proxy, **kwargs) if proxy else urllib3.PoolManager(**kwargs)
            return self._pool

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT}
        if self.emulator:
            return headers  # emulators take anonymous requests, as Google's clients send them
        auth = self._auth
        if auth is None:
            http = self._manager()
            with self._lock:
                if self._auth is None:
                    self._auth = _Auth(self.location, http)
                auth = self._auth
        auth.apply(headers)
        return headers

    def object_url(self, name: str, media: bool = False) -> str:
        quoted = urllib.parse.quote(name, safe="")
        return f"{self.endpoint}/storage/v1/b/{urllib.parse.quote(self.bucket, safe='')}/o/{quoted}" + (
            "?alt=media" if media else "")

    def _once(self, method: str, url: str, body: bytes | None, content_type: str | None,
              limit: int) -> tuple[int, bytes]:
        headers = self._headers()
        if content_type:
            headers["Content-Type"] = content_type
        timeout = self.options.timeout
        resp = self._manager().request(
            method, url, body=body, headers=headers, redirect=False, preload_content=False,
            decode_content=True, timeout=urllib3.Timeout(connect=timeout, read=timeout))
        try:
            cap = limit if resp.status == 200 else MAX_ERROR_BODY
            data = resp.read(cap + 1)
            if len(data) > cap:
                if resp.status == 200:
                    raise StoreError(f"{method} {url}: response larger than {limit} bytes")
                data = data[:cap]
            return resp.status, data
        finally:
            resp.release_conn()

    def request(self, method: str, url: str, body: bytes | None = None, *,
                content_type: str | None = None, limit: int = MAX_STORED_CHUNK_SIZE) -> tuple[int, bytes]:
        """One exchange, tried ``error_retry`` times in all on transport errors, 5xx and 429,
        waiting N times the base interval after attempt N (desync's linear back-off)."""
        attempts = max(1, self.options.error_retry)
        attempt = 0
        while True:
            attempt += 1
            try:
                status, data = self._once(method, url, body, content_type, limit)
            except SSLError as exc:  # a certificate does not get better by asking again
                raise StoreError(f"{self}: {method} {url}: TLS error: {error_reason(exc)}") from None
            except (HTTPError, OSError) as exc:
                if attempt >= attempts:
                    raise StoreError(f"{self}: {method} {url}: {error_reason(exc)}") from None
                cause = error_reason(exc)
            else:
                if not (status >= 500 or status in _RETRY_STATUS) or attempt >= attempts:
                    return status, data
                cause = f"HTTP {status}"
            log.info("%s: %s %s: attempt %d of %d failed (%s), retrying", self, method, url, attempt,
                     attempts, cause)
            time.sleep(attempt * self.options.error_retry_base_interval)

    def failure(self, method: str, url: str, status: int, body: bytes) -> StoreError:
        """A StoreError for a reply that is neither the object nor "no such object"."""
        detail = _error_message(body)
        what = {401: "unauthorized", 403: "access denied", 404: "not found"}.get(status, "unexpected status")
        suffix = f": {detail}" if detail else ""
        return StoreError(f"{self}: {method} {url}: {what} (HTTP {status}){suffix}")

    def check_bucket(self) -> None:
        """After a 404, once per store: a missing bucket is an error, not a missing object.
        GCS says which in its message, an emulator may not; asking for the bucket settles it.
        A 403 (the bucket may be read without buckets.get) leaves the 404 a missing object."""
        if self._bucket_checked:
            return
        url = f"{self.endpoint}/storage/v1/b/{urllib.parse.quote(self.bucket, safe='')}?fields=name"
        status, body = self.request("GET", url, limit=MAX_ERROR_BODY)
        if status == 404:
            raise StoreError(f"{self}: bucket '{self.bucket}' does not exist")
        if status == 401:
            raise self.failure("GET", url, status, body)
        self._bucket_checked = True

    def missing(self, body: bytes) -> None:
        """A 404 for an object: raise if it means the bucket is missing."""
        if "bucket does not exist" in _error_message(body).lower():
            raise StoreError(f"{self}: bucket '{self.bucket}' does not exist")
        self.check_bucket()

    def get_object(self, name: str, limit: int) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        url = self.object_url(name, media=True)
        status, body = self.request("GET", url, limit=limit)
        if status == 200:
            return body
        if status == 404:
            self.missing(body)
            return None
        raise self.failure("GET", url, status, body)

    def has_object(self, name: str) -> bool:
        url = self.object_url(name) + "?fields=name"
        status, body = self.request("GET", url, limit=MAX_ERROR_BODY)
        if status == 200:
            return True
        if status == 404:
            self.missing(body)
            return False
        raise self.failure("GET", url, status, body)

    def put_object(self, name: str, data: bytes, content_type: str) -> None:
        """A media upload: one request, the whole object (a rewrite of the same bytes on retry)."""
        url = (f"{self.endpoint}/upload/storage/v1/b/{urllib.parse.quote(self.bucket, safe='')}/o"
               f"?uploadType=media&name={urllib.parse.quote(name, safe='')}")
        status, body = self.request("POST", url, data, content_type=content_type, limit=MAX_ERROR_BODY)
        if status == 200:
            return
        if status == 404:  # an upload's only 404 is the bucket's
            raise StoreError(f"{self}: bucket '{self.bucket}' does not exist")
        raise self.failure("POST", url, status, body)

    def delete_object(self, name: str) -> None:
        """Delete if present; an object already gone is no error."""
        url = self.object_url(name)
        status, body = self.request("DELETE", url, limit=MAX_ERROR_BODY)
        if status in (200, 204):
            return
        if status == 404:
            self.missing(body)
            return
        raise self.failure("DELETE", url, status, body)

    def list_names(self) -> Iterator[str]:
        """Every object name under the prefix, a page at a time (``nextPageToken``)."""
        base = (f"{self.endpoint}/storage/v1/b/{urllib.parse.quote(self.bucket, safe='')}/o"
                f"?prefix={urllib.parse.quote(self.prefix, safe='')}"
                f"&fields={urllib.parse.quote('items(name),nextPageToken', safe='')}"
                f"&maxResults={self.page_size}")
        token = ""
        while True:
            url = base + (f"&pageToken={urllib.parse.quote(token, safe='')}" if token else "")
            status, body = self.request("GET", url, limit=MAX_INDEX_BYTES)
            if status == 404:
                raise StoreError(f"{self}: bucket '{self.bucket}' does not exist")
            if status != 200:
                raise self.failure("GET", url, status, body)
            try:
                page = json.loads(body)
                names = [item["name"] for item in page.get("items", [])]
                token = page.get("nextPageToken") or ""
            except (ValueError, TypeError, KeyError, AttributeError):
                raise StoreError(f"{self}: GET {url}: not a GCS object listing") from None
            yield from (name for name in names if isinstance(name, str))
            if not token:
                return

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            self._auth = None
        if pool is not None:
            pool.clear()


def _error_message(body: bytes) -> str:
    """The message of a JSON API error body (``{"error": {"message": ...}}``), or its text."""
    text = body.decode("utf-8", "replace")
    try:
        message = json.loads(text)["error"]["message"]
        if isinstance(message, str):
            text = message
    except (ValueError, TypeError, KeyError):
        pass
    return redact(" ".join(text[:200].split()))


class GCSStore(GCSBase):
    """A chunk store in a bucket (desync ``GCStore``): a PruneStore."""

    def __init__(self, location: str, options: StoreOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(location, options)
        self.form: StorageForm = storage_form(options, location)

    def key(self, chunk_id: bytes) -> str:
        return self.prefix + chunk_file_name(chunk_id, self.form.extension)

    def get_chunk(self, chunk_id: bytes, digest: Digest | None) -> Chunk:
        """A chunk that fails its check is fetched again, up to ``error_retry`` times in
        all (a short read is transient; desync #335): only then is it invalid."""
        attempts = max(1, self.options.error_retry)
        for attempt in range(1, attempts + 1):
            blob = self.get_object(self.key(chunk_id), MAX_STORED_CHUNK_SIZE)
            if blob is None:
                raise ChunkMissing(chunk_id.hex(), str(self))
            try:
                return self.form.from_storage(chunk_id, blob, None if self.options.skip_verify else digest)
            except ChunkInvalid as exc:
                if attempt >= attempts:
                    raise ChunkInvalid(f"{exc} in store {self}") from None
            time.sleep(attempt * self.options.error_retry_base_interval)
        raise AssertionError("unreachable")

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self.has_object(self.key(chunk_id))

    def store_chunk(self, chunk: Chunk) -> None:
        self.put_object(self.key(chunk.id), self.form.to_storage(chunk), CHUNK_CONTENT_TYPE)

    def remove_chunk(self, chunk_id: bytes) -> None:
        self.delete_object(self.key(chunk_id))

    def _chunk_keys(self) -> Iterator[tuple[str, bytes]]:
        """(key, id) of every object named like one of this store's chunks."""
        for name in self.list_names():
            chunk_id = parse_chunk_path(name, self.form.extension, self.prefix)
            if isinstance(chunk_id, bytes):
                yield name, chunk_id

    def chunk_ids(self) -> Iterator[bytes]:
        for _, chunk_id in self._chunk_keys():
            yield chunk_id

    def prune(self, keep: set[bytes]) -> int:
        """Delete this store's chunk keys not in ``keep``, ``-n`` at a time; other keys under
        the prefix (indexes, other forms, foreign objects) stay."""
        doomed = [name for name, chunk_id in self._chunk_keys() if chunk_id not in keep]
        with ThreadPoolExecutor(max_workers=max(1, self.options.n)) as pool:
            for _ in pool.map(self.delete_object, doomed):
                pass
        return len(doomed)


class GCSIndexStore(GCSBase):
    """An index store in a bucket (desync ``GCIndexStore``): ``<prefix><name>``."""

    def _key(self, name: str) -> str:
        if not valid_index_name(name):
            raise StoreError(f"invalid index name '{name}'")
        return self.prefix + name

    def get_index(self, name: str) -> Index:
        data = self.get_object(self._key(name), MAX_INDEX_BYTES)
        if data is None:
            raise IndexMissing(f"index {name} not found in {self}")
        try:
            return parse_index(data)
        except InvalidFormat as exc:
            raise InvalidFormat(f"{self}/{name}: {exc}") from None

    def store_index(self, name: str, index: Index) -> None:
        self.put_object(self._key(name), encode_index(index), INDEX_CONTENT_TYPE)


def split_index_location(location: str) -> tuple[str, str]:
    """``gs://b/p/x.caibx`` → (``gs://b/p``, ``x.caibx``), as desync ``indexStoreFromLocation``
    (``path.Dir`` and ``path.Base`` of the URL path)."""
    parts = urllib.parse.urlsplit(location)
    path = parts.path
    name = urllib.parse.unquote(path.rsplit("/", 1)[-1])
    if not valid_index_name(name):
        raise StoreError(f"index location {redact(location)} names no index")
    base = urllib.parse.urlunsplit(parts._replace(path=path[: path.rfind("/")], query="", fragment=""))
    return base, name


# --- backend entry points (stores/registry.py) ----------------------------------------------

def open_chunk_store(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                     create: bool = False) -> GCSStore:
    """``create`` has no meaning here: buckets are made by their owner, prefixes need none."""
    return GCSStore(location, options.for_location(location))


def open_index_store(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                     create: bool = False) -> GCSIndexStore:
    return GCSIndexStore(location, options.for_location(location))


def open_index_location(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                        create: bool = False) -> tuple[GCSIndexStore, str]:
    base, name = split_index_location(location)
    return GCSIndexStore(base, options.for_location(base)), name
