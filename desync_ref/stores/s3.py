"""S3 chunk and index stores on botocore: ``s3+http(s)://host[:port]/bucket[/prefix][?lookup=...]``.

The backend module of ``s3+`` locations in the scheme registry (``stores/registry.py``); it
is imported only when such a location is opened, so botocore is loaded only then.

Spec: ``spec/s3.md``. After desync ``s3.go`` (``NewS3StoreBase``, ``GetChunk``,
``StoreChunk``, ``HasChunk``, ``RemoveChunk``, ``Prune``, ``nameFromID``), ``s3index.go``
and ``types.go`` (``chunkIDFromObjectName``), with the ``lookup`` query of
``cmd/desync/store.go`` (``storeFromLocation``):

* the path's first element is the bucket, the rest (slashes trimmed) the prefix, which gets
  one ``/`` appended when not empty: chunk keys are ``<prefix><xxxx>/<id><ext>`` and index
  keys ``<prefix><name>``;
* ``lookup=path`` addresses the bucket in the path, ``dns`` in the host name, ``auto`` (or
  none) as minio does: in the host name for Amazon and Google endpoints, else in the path
  (minio-go ``isVirtualHostStyleRequest``);
* a missing chunk is never retried (desync #365); bytes that are not the chunk are fetched
  again up to the retry count before ChunkInvalid is reported (desync #335); transport
  errors, 5xx and throttling are retried ``error_retry`` attempts in all with a linear
  back-off, as the HTTP backend does. botocore's own retries are off.

Credentials and region: ``stores/s3_credentials.py``.
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar

# botocore ships no type information (no py.typed, no stubs installed).
import botocore.session
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    SSLError,
)

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
from desync_ref.stores.index_stores import MAX_INDEX_BYTES, valid_index_name
from desync_ref.stores.options import DEFAULT_OPTIONS, StoreOptions, redact
from desync_ref.stores.s3_credentials import S3Credentials, lookup_credentials
from desync_ref.stores.storage_form import storage_form

log = get_logger(__name__)  # --verbose: retries and their causes

T = TypeVar("T")

LOOKUPS: Final = ("", "auto", "dns", "path")
# Error codes S3 servers answer when asked to slow down (retried like a 5xx).
THROTTLING: Final = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                               "TooManyRequests", "RequestThrottled", "RequestTimeout"})
DELETE_BATCH: Final = 1000  # DeleteObjects takes at most 1000 keys
# desync StoreChunk / StoreIndex
CHUNK_CONTENT_TYPE: Final = "application/zstd"
INDEX_CONTENT_TYPE: Final = "application/octet-stream"
_AWS_REGION_HOST: Final = re.compile(r"^s3[.-](?:dualstack\.)?([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


class _Failed(Exception):
    """One attempt failed: the S3 error code (or transport error text) and HTTP status."""

    def __init__(self, code: str, status: int, message: str, *, retryable: bool) -> None:
        super().__init__(code)
        self.code = code
        self.status = status
        self.message = message
        self.retryable = retryable

    @property
    def missing(self) -> bool:
        """No such object (a HEAD's 404 has no body, hence no code to tell a bucket from it)."""
        return self.code in ("NoSuchKey", "404") or (self.status == 404 and self.code != "NoSuchBucket")

    def describe(self) -> str:
        text = f": {self.message}" if self.message and self.message != self.code else ""
        if self.code == str(self.status):  # a HEAD's error has no body, hence no S3 code
            return f"HTTP {self.status}{text}"
        status = f" (HTTP {self.status})" if self.status else ""
        return f"{self.code}{status}{text}"


def _one_line(text: str) -> str:
    return redact(" ".join(text.split()))[:300]


def _failure(exc: Exception) -> _Failed:
    """An attempt's botocore exception as a _Failed, classified for retrying."""
    if isinstance(exc, ClientError):
        meta = exc.response.get("ResponseMetadata", {})
        error = exc.response.get("Error", {})
        status = int(meta.get("HTTPStatusCode") or 0)
        code = str(error.get("Code") or status or "error")
        retryable = status >= 500 or status == 429 or code in THROTTLING
        return _Failed(code, status, _one_line(str(error.get("Message") or "")), retryable=retryable)
    if isinstance(exc, SSLError):  # a certificate does not get better by asking again
        return _Failed("TLS error", 0, _one_line(str(exc)), retryable=False)
    retryable = isinstance(exc, (HTTPClientError, IncompleteReadError, OSError))
    return _Failed(exc.__class__.__name__, 0, _one_line(str(exc)), retryable=retryable)


def split_location(location: str) -> tuple[str, str, str, str, str]:
    """(scheme, host, bucket, prefix, lookup) of an ``s3+http(s)://`` location (desync
    ``NewS3StoreBase``: bucket and prefix from the path, the prefix ending in ``/``)."""
    shown = redact(location)
    parts = urllib.parse.urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme not in ("s3+http", "s3+https"):
        raise StoreError(f"invalid scheme '{parts.scheme}' in {shown}, expected 's3+http' or 's3+https'")
    if not parts.hostname:
        raise StoreError(f"invalid S3 location {shown}: no host")
    fields = parts.path.strip("/").split("/")
    if not fields[0]:
        raise StoreError(f"expected bucket name in path of {shown}")
    prefix = "/".join(fields[1:])
    lookup = urllib.parse.parse_qs(parts.query).get("lookup", [""])[0]
    if lookup not in LOOKUPS:
        raise StoreError(f"unknown S3 bucket lookup type: \"{lookup}\" in {shown}")
    host = parts.netloc.rpartition("@")[2]
    return scheme, host, fields[0], prefix + "/" if prefix else "", lookup


def _addressing(lookup: str, secure: bool, host: str, bucket: str) -> str:
    """botocore's addressing style for desync's lookup (minio-go ``IsVirtualHostSupported``)."""
    if lookup == "path":
        return "path"
    if lookup == "dns":
        return "virtual"
    name = host.rsplit(":", 1)[0].lower() if not host.endswith("]") else host
    big = name.endswith((".amazonaws.com", ".amazonaws.com.cn")) or name == "storage.googleapis.com"
    return "virtual" if big and not (secure and "." in bucket) else "path"


def _region(credentials: S3Credentials, host: str) -> str:
    """The region to sign for: the one configured, else an AWS host's own, else us-east-1
    (what minio settles on for other servers, which ignore it)."""
    if credentials.region:
        return credentials.region
    match = _AWS_REGION_HOST.match(host.rsplit(":", 1)[0].lower())
    return match.group(1) if match and match.group(1) != "external-1" else "us-east-1"


_SESSION_LOCK = threading.Lock()
_SESSIONS: list[Any] = []


def _session() -> Any:
    """One botocore session per process (its loaded service model is what makes a client
    slow to build). Keys, region and endpoint are ours (desync's lookup): it must not read
    a profile, config or credentials file of its own (``AWS_PROFILE`` naming a profile only
    the desync config's credentials file has would even fail). A session variable spec is
    (config name, environment variable, default, conversion). Called under _SESSION_LOCK."""
    if not _SESSIONS:
        _SESSIONS.append(botocore.session.Session(session_vars={
            "profile": (None, None, None, None),
            "config_file": (None, None, os.devnull, None),
            "credentials_file": (None, None, os.devnull, None),
        }))
    return _SESSIONS[0]


class S3Base:
    """A bucket and prefix on one endpoint, with the request and retry machinery."""

    kind = "object"

    def __init__(self, location: str, options: StoreOptions = DEFAULT_OPTIONS) -> None:
        scheme, host, self.bucket, self.prefix, lookup = split_location(location)
        self.location = redact(location)
        self.options = options
        secure = scheme == "s3+https"
        self.endpoint = f"{'https' if secure else 'http'}://{host}"
        self.credentials = lookup_credentials(scheme, host, options.s3_credentials, os.environ)
        self.addressing = _addressing(lookup, secure, host, self.bucket)
        self.region = _region(self.credentials, host)
        self._lock = threading.Lock()
        self._client: Any = None

    def __str__(self) -> str:
        return self.location

    # A make over several processes pickles the store into each worker: the client (its
    # connection pool) stays behind and is built again on first use.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def client(self) -> Any:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def _new_client(self) -> Any:
        opts = self.options
        config = Config(
            region_name=self.region,
            signature_version=UNSIGNED if self.credentials.anonymous else "s3v4",
            s3={"addressing_style": self.addressing},
            retries={"total_max_attempts": 1, "mode": "standard"},  # we retry, see _retrying
            connect_timeout=opts.timeout, read_timeout=opts.timeout,
            max_pool_connections=max(1, opts.n),
            client_cert=(opts.client_cert, opts.client_key) if opts.client_cert and opts.client_key else None,
            # Checksums only where the API requires them: servers other than AWS may not
            # know the newer checksum headers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            user_agent_extra="desync-ref",
        )
        verify: bool | str = False if opts.trust_insecure else (opts.ca_cert or True)
        creds = self.credentials
        with _SESSION_LOCK:
            return _session().create_client(
                "s3", endpoint_url=self.endpoint, config=config, verify=verify,
                aws_access_key_id=creds.access_key or None, aws_secret_access_key=creds.secret_key or None,
                aws_session_token=creds.session_token or None)

    def call(self, operation: str, **params: Any) -> Any:
        """One attempt of one S3 operation; every failure becomes a _Failed."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # urllib3's InsecureRequestWarning with trust-insecure
                return getattr(self.client(), operation)(Bucket=self.bucket, **params)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise _failure(exc) from None

    @staticmethod
    def read_body(response: Any, limit: int) -> bytes:
        """The object's bytes, refused past ``limit``; transport trouble is retryable."""
        length = response.get("ContentLength")
        if isinstance(length, int) and length > limit:
            raise _Failed("object too large", 0, f"{length} bytes, at most {limit} expected", retryable=False)
        try:
            data: bytes = response["Body"].read(limit + 1)
        except (BotoCoreError, OSError) as exc:
            raise _failure(exc) from None
        finally:
            response["Body"].close()
        if len(data) > limit:
            raise _Failed("object too large", 0, f"more than {limit} bytes", retryable=False)
        return data

    def retrying(self, what: str, attempt_once: Callable[[], T]) -> T:
        """``attempt_once`` up to ``error_retry`` times with linear back-off while it fails
        in a way that may pass (transport, 5xx, throttling, and bytes that are not the chunk
        asked for); any other failure at once. ChunkMissing passes through untouched."""
        attempts = max(1, self.options.error_retry)
        attempt = 0
        while True:
            attempt += 1
            try:
                return attempt_once()
            except _Failed as failed:
                if not failed.retryable or attempt >= attempts:
                    raise self.error(what, failed) from None
                cause = str(self.error(what, failed))
            except ChunkInvalid as exc:
                if attempt >= attempts:
                    raise ChunkInvalid(f"{exc} in store {self}") from None
                cause = str(exc)
            log.info("%s %s: attempt %d of %d failed (%s), retrying", what, self, attempt, attempts, cause)
            time.sleep(attempt * self.options.error_retry_base_interval)

    def error(self, what: str, failed: _Failed) -> StoreError:
        if failed.code == "NoSuchBucket":
            return StoreError(f"{what} {self}: bucket '{self.bucket}' does not exist")
        return StoreError(f"{what} {self}: {failed.describe()}")

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


class S3Store(S3Base):
    """A chunk store in a bucket (desync ``S3Store``): a PruneStore."""

    kind = "chunk"

    def __init__(self, location: str, options: StoreOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(location, options)
        self.form = storage_form(options, location)

    def key(self, chunk_id: bytes) -> str:
        """desync ``nameFromID``: ``<prefix><xxxx>/<id><ext>``."""
        return self.prefix + chunk_file_name(chunk_id, self.form.extension)

    def get_chunk(self, chunk_id: bytes, digest: Digest | None) -> Chunk:
        key = self.key(chunk_id)

        def once() -> Chunk:
            try:
                response = self.call("get_object", Key=key)
            except _Failed as failed:
                if failed.missing:
                    raise ChunkMissing(chunk_id.hex(), str(self)) from None
                raise
            # skip-verify (desync s3.go GetChunk passes opt.SkipVerify): trusted bytes
            return self.form.from_storage(chunk_id, self.read_body(response, MAX_STORED_CHUNK_SIZE),
                                          None if self.options.skip_verify else digest)

        return self.retrying(f"GET chunk {chunk_id.hex()} from", once)

    def has_chunk(self, chunk_id: bytes) -> bool:
        key = self.key(chunk_id)

        def once() -> bool:
            try:
                self.call("head_object", Key=key)
            except _Failed as failed:
                if failed.missing:
                    return False
                raise
            return True

        return self.retrying(f"HEAD chunk {chunk_id.hex()} in", once)

    def store_chunk(self, chunk: Chunk) -> None:
        key = self.key(chunk.id)
        body = self.form.to_storage(chunk)
        self.retrying(f"PUT chunk {chunk.id.hex()} to",
                      lambda: self.call("put_object", Key=key, Body=body, ContentType=CHUNK_CONTENT_TYPE))

    def remove_chunk(self, chunk_id: bytes) -> None:
        key = self.key(chunk_id)
        self.retrying(f"DELETE chunk {chunk_id.hex()} from", lambda: self.call("delete_object", Key=key))

    def _pages(self) -> Iterator[list[tuple[str, bytes]]]:
        """ListObjectsV2 under the prefix, one page at a time: (key, id) of every key that
        is one of this store's chunk names (desync ``chunkIDFromObjectName``)."""
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Prefix": self.prefix}
            if token:
                params["ContinuationToken"] = token
            page = self.retrying("LIST", lambda p=params: self.call("list_objects_v2", **p))  # type: ignore[misc]
            found: list[tuple[str, bytes]] = []
            for entry in page.get("Contents", ()):
                key = str(entry["Key"])
                if not key.startswith(self.prefix):
                    continue
                chunk_id = parse_chunk_path(key[len(self.prefix):], self.form.extension)
                if isinstance(chunk_id, bytes):
                    found.append((key, chunk_id))
            yield found
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def chunk_ids(self) -> Iterator[bytes]:
        for page in self._pages():
            for _, chunk_id in page:
                yield chunk_id

    def prune(self, keep: set[bytes]) -> int:
        """Delete the store's chunk keys not in ``keep``, page by page; other keys stay."""
        removed = 0
        for page in self._pages():
            doomed = [key for key, chunk_id in page if chunk_id not in keep]
            for start in range(0, len(doomed), DELETE_BATCH):
                self._delete(doomed[start:start + DELETE_BATCH])
            removed += len(doomed)
        return removed

    def _delete(self, keys: list[str]) -> None:
        request = {"Objects": [{"Key": key} for key in keys], "Quiet": True}
        response = self.retrying("DELETE chunks from", lambda: self.call("delete_objects", Delete=request))
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise StoreError(f"DELETE {first.get('Key', '')} from {self}: {first.get('Code', 'error')}"
                             f" ({len(errors)} of {len(keys)} keys not deleted)")


class S3IndexStore(S3Base):
    """An index store in a bucket (desync ``S3IndexStore``): ``<prefix><name>``."""

    kind = "index"

    def _key(self, name: str) -> str:
        if not valid_index_name(name):
            raise StoreError(f"invalid index name '{name}'")
        return self.prefix + name

    def get_index(self, name: str) -> Index:
        key = self._key(name)

        def once() -> bytes:
            try:
                response = self.call("get_object", Key=key)
            except _Failed as failed:
                if failed.missing:
                    raise IndexMissing(f"index {name} not found in {self}") from None
                raise
            return self.read_body(response, MAX_INDEX_BYTES)

        data = self.retrying(f"GET index {name} from", once)
        try:
            return parse_index(data)
        except InvalidFormat as exc:
            raise InvalidFormat(f"index {name} in {self}: {exc}") from None

    def store_index(self, name: str, index: Index) -> None:
        key = self._key(name)
        body = encode_index(index)
        self.retrying(f"PUT index {name} to",
                      lambda: self.call("put_object", Key=key, Body=body, ContentType=INDEX_CONTENT_TYPE))


def split_index_location(location: str) -> tuple[str, str]:
    """``s3+http://h/b/p/x.caibx?lookup=path`` -> (``s3+http://h/b/p?lookup=path``,
    ``x.caibx``): desync ``indexStoreFromLocation`` takes the path's directory, the query stays."""
    parts = urllib.parse.urlsplit(location)
    directory, _, name = parts.path.rpartition("/")
    if not name:
        raise StoreError(f"index location {redact(location)} names no index")
    return urllib.parse.urlunsplit(parts._replace(path=directory, fragment="")), name


# --- backend entry points (stores/registry.py) ----------------------------------------------

def open_chunk_store(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                     create: bool = False) -> S3Store:
    """``create`` makes no bucket: it exists or requests fail (desync creates none either)."""
    return S3Store(location, options.for_location(location))


def open_index_store(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                     create: bool = False) -> S3IndexStore:
    return S3IndexStore(location, options.for_location(location))


def open_index_location(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                        create: bool = False) -> tuple[S3IndexStore, str]:
    base, name = split_index_location(location)
    # desync looks the options up for the location up to its last "/"
    return S3IndexStore(base, options.for_location(location.rsplit("/", 1)[0])), name
