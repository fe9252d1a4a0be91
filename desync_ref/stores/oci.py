"""OCI registry chunk store: ``oci+http(s)://registry[:port]/repository`` (a PruneStore).

Spec: ``spec/oci.md``. Layout and behaviour of desync ``OCIStore``
(``oci.go``, desync PR #284, on oras-go): every chunk is one artifact, a blob holding the
chunk in storage form and a minimal OCI image manifest (artifact type
``application/vnd.desync.chunk.v1``, the empty JSON config) tagged ``<id hex><extension>``.
The manifest bytes are the ones Go's ``json.Marshal`` gives for desync's ``ocispec.Manifest``
(field order of the struct, compact), so desync and desync_ref read each other's stores.

Requests follow the OCI distribution API: reading a chunk is ``GET manifests/<tag>`` with the
OCI ``Accept`` header, then ``GET blobs/<digest>``; writing is the shared config blob (once
per store), the chunk blob (``HEAD`` then ``POST``/``PUT`` upload when absent) and ``PUT
manifests/<tag>``; removing is ``DELETE manifests/<digest>``; listing is ``GET tags/list`` in
pages of 1000 (desync ``ociTagListPageSize``) following ``Link`` headers. A manifest that is
absent or not of desync's artifact type is a missing chunk (``fetchChunkManifest``).

Transport: urllib3, ``-n`` connections, ``timeout`` per attempt, transport errors, 408, 429
and 5xx retried ``error_retry`` times after the first attempt with a linear back-off (the
oras ``retry.GenericPolicy`` desync builds in ``newOCIRepository``). Authentication as oras
``auth.Client``: a 401 with a ``Bearer`` challenge fetches a token from its realm (with Basic
credentials when there are any) and the request is made again; a ``Basic`` challenge is
answered with the credentials. Credentials: ``stores/oci_credentials.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import urllib.parse
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import urllib3
from urllib3.exceptions import HTTPError, InsecureRequestWarning, SSLError

from desync_ref.errors import ChunkMissing, StoreError
from desync_ref.formats.chunk import MAX_STORED_CHUNK_SIZE, Digest, is_id_hex
from desync_ref.log import get_logger
from desync_ref.stores import Chunk
from desync_ref.stores.http import (
    MAX_ERROR_BODY,
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    BodyTooLarge,
    Deadline,
    HTTPBase,
    error_reason,
    origin_of,
)
from desync_ref.stores.oci_credentials import Credential, lookup, parse_challenge
from desync_ref.stores.options import DEFAULT_OPTIONS, StoreOptions, redact
from desync_ref.stores.storage_form import StorageForm, storage_form

log = get_logger(__name__)  # --verbose: retries and their causes

SCHEMES: Final = ("oci+http://", "oci+https://")
MANIFEST_MEDIA_TYPE: Final = "application/vnd.oci.image.manifest.v1+json"
CHUNK_ARTIFACT_TYPE: Final = "application/vnd.desync.chunk.v1"  # desync OCIChunkArtifactType
EMPTY_CONFIG_MEDIA_TYPE: Final = "application/vnd.oci.empty.v1+json"  # ocispec.DescriptorEmptyJSON
EMPTY_CONFIG: Final = b"{}"
EMPTY_CONFIG_DIGEST: Final = "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest()
# desync pushes the chunk blob with content.NewDescriptorFromBytes("application/octet-stream", b).
LAYER_MEDIA_TYPE: Final = "application/octet-stream"
TITLE_ANNOTATION: Final = "org.opencontainers.image.title"  # ocispec.AnnotationTitle
TAG_PAGE_SIZE: Final = 1000  # desync ociTagListPageSize
MAX_MANIFEST: Final = 4 << 20  # desync maxOCIManifestSize
MAX_CHUNK_BLOB: Final = 1 << 30  # desync maxOCIChunkBlobSize: a layer size above is refused
MAX_TAG_LIST: Final = 4 << 20  # oras' metadata limit on a tag list page
USER_AGENT: Final = "desync-ref"
# Distribution's repository name grammar (distribution/reference ``pathComponent``, joined by "/").
_REPOSITORY: Final = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")


def chunk_manifest(tag: str, blob: bytes) -> bytes:
    """The manifest desync writes for a chunk stored as ``blob`` under ``tag``: Go's
    ``json.Marshal`` of ``ocispec.Manifest`` (struct field order, no spaces)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": CHUNK_ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_CONFIG_MEDIA_TYPE, "digest": EMPTY_CONFIG_DIGEST, "size": len(EMPTY_CONFIG)},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": sha256_digest(blob), "size": len(blob)}],
        "annotations": {TITLE_ANNOTATION: tag},
    }
    return _go_json(manifest)


def _go_json(value: Any) -> bytes:
    # Go escapes <, > and & in strings; tags and digests never hold them, but stay exact.
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode("utf-8"))


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chunk_id_from_tag(tag: str, extension: str) -> bytes | None:
    """desync ``chunkIDFromFilename``: the id of a tag ``<hex id><extension>``, else None."""
    if not tag.endswith(extension):
        return None
    hex_id = tag[: len(tag) - len(extension)]
    return bytes.fromhex(hex_id) if is_id_hex(hex_id) else None


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str


def _registry_errors(body: bytes) -> list[tuple[str, str]]:
    """The (code, message) pairs of a distribution error body ``{"errors": [...]}``."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    errors = value.get("errors") if isinstance(value, dict) else None
    if not isinstance(errors, list):
        return []
    return [(str(e.get("code", "")), str(e.get("message", ""))) for e in errors if isinstance(e, dict)]


class OCIStore(HTTPBase):
    """desync ``OCIStore``: chunks as tagged artifacts in one repository of a registry."""

    kind = "chunk"

    def __init__(self, location: str, options: StoreOptions = DEFAULT_OPTIONS) -> None:
        shown = redact(location)
        lowered = location.lower()
        if not lowered.startswith(SCHEMES):
            raise StoreError(f"unsupported scheme in {shown}, expected oci+https or oci+http")
        parts = urllib.parse.urlsplit(location[len("oci+"):])
        hostport = parts.netloc.rpartition("@")[2]
        repository = parts.path.strip("/")
        if not hostport:
            raise StoreError(f"invalid OCI store location {shown}: no registry host")
        if _REPOSITORY.fullmatch(repository) is None:
            raise StoreError(f"invalid OCI store location {shown}: repository name '{repository}' "
                             "must be lowercase letters, digits and separators")
        self.hostport = hostport
        self.repository = repository
        host = hostport
        if host == "docker.io":  # oras-go Reference.Host: Docker Hub's API host
            host = "registry-1.docker.io"
        super().__init__(f"{parts.scheme}://{host}/", options)
        self.location = shown
        self.form: StorageForm = storage_form(options, location)
        self.credential: Credential | None = lookup(location, hostport, options.oci_credentials)
        self._headers = {"User-Agent": USER_AGENT}  # desync's http-auth/cookie options are not used here
        self._auth: dict[str, str] = {}  # scope kind -> Authorization value that worked
        self._config_pushed = False
        self._config_lock = threading.Lock()  # HTTPBase's _lock guards the pool; not reentrant

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_config_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._config_lock = threading.Lock()

    # --- requests --------------------------------------------------------------------------

    def _path(self, tail: str) -> str:
        return f"{self.base}v2/{self.repository}/{tail}"

    def _exchange(self, method: str, url: str, body: bytes | None, headers: dict[str, str],
                  limit: int) -> _Reply:
        """One attempt under one deadline, redirects of reads followed (blob storage)."""
        timeout = self.options.timeout
        deadline = time.monotonic() + timeout if timeout else None
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
                if resp.status in REDIRECT_STATUSES and location and method in ("GET", "HEAD"):
                    self._read(resp, MAX_ERROR_BODY, deadline, cut=True)
                else:
                    ok = 200 <= resp.status < 300
                    if method == "HEAD":
                        data = b""
                    elif ok:
                        data = self._read(resp, limit, deadline)
                        whole = True
                    else:
                        data = self._read(resp, MAX_ERROR_BODY, deadline, cut=True)
                    return _Reply(resp.status, resp.headers, data, url)
            finally:
                if not whole:
                    resp.close()
                resp.release_conn()
            url = urllib.parse.urljoin(url, location)
            if origin_of(url) != origin:  # a storage backend's signed URL: no registry token
                headers = {k: v for k, v in headers.items() if k != "Authorization"}
        raise StoreError(f"{self.location}: {method} {redact(url)}: stopped after {MAX_REDIRECTS} redirects")

    def _call(self, method: str, url: str, scope: str, *, body: bytes | None = None,
              headers: Mapping[str, str] | None = None, limit: int = MAX_STORED_CHUNK_SIZE) -> _Reply:
        """One request: authenticated on a 401 challenge, retried on transport errors, 408,
        429 and 5xx (``error_retry`` more attempts, attempt N waiting N base intervals)."""
        retries = max(0, self.options.error_retry)
        failures = 0
        challenged = False
        while True:
            sent = {**self._headers, **(headers or {})}
            if scope in self._auth:
                sent["Authorization"] = self._auth[scope]
            try:
                reply = self._exchange(method, url, body, sent, limit)
            except SSLError as exc:
                raise StoreError(f"{self.location}: {method} {redact(url)}: TLS error: {error_reason(exc)}") from None
            except BodyTooLarge:
                raise StoreError(f"{self.location}: {method} {redact(url)}: response larger than {limit} bytes") from None
            except Deadline:
                if failures >= retries:
                    raise StoreError(f"{self.location}: {method} {redact(url)}: timed out after "
                                     f"{self.options.timeout:g} s") from None
                cause = "timed out"
            except (HTTPError, OSError) as exc:
                if failures >= retries:
                    raise StoreError(f"{self.location}: {method} {redact(url)}: {error_reason(exc)}") from None
                cause = error_reason(exc)
            else:
                if reply.status == 401 and not challenged:
                    challenged = True
                    if self._authorize(scope, reply):
                        continue
                    return reply
                if not (reply.status in (408, 429) or 500 <= reply.status < 600) or failures >= retries:
                    return reply
                cause = f"HTTP {reply.status}"
            failures += 1
            log.info("%s: %s %s: failed (%s), retry %d of %d", self.location, method, redact(url),
                     cause, failures, retries)
            time.sleep(failures * self.options.error_retry_base_interval)

    def _authorize(self, scope: str, reply: _Reply) -> bool:
        """Answer a 401's challenge for ``scope``; False when there is nothing to answer with."""
        challenge = parse_challenge(reply.headers.get("WWW-Authenticate"))
        if challenge is None:
            return False
        if challenge.scheme == "basic":
            if self.credential is None:
                return False
            for kind in ("pull", "push", "delete"):  # Basic is not scoped
                self._auth[kind] = self.credential.basic()
            return True
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise StoreError(f"{self.location}: unsupported authentication challenge "
                             f"'{challenge.scheme}' from the registry")
        wanted = challenge.params.get("scope") or self._scope(scope)
        query = {"scope": wanted}
        if challenge.params.get("service"):
            query = {"service": challenge.params["service"], **query}
        realm = challenge.params["realm"]
        token_url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        sent = dict(self._headers)
        if self.credential is not None:
            sent["Authorization"] = self.credential.basic()
        try:
            got = self._exchange("GET", token_url, None, sent, MAX_ERROR_BODY)
        except (HTTPError, OSError, Deadline) as exc:
            raise StoreError(f"{self.location}: token request to {redact(realm)} failed: "
                             f"{error_reason(exc) if not isinstance(exc, Deadline) else 'timed out'}") from None
        if got.status != 200:
            what = "credentials refused" if got.status in (401, 403) else f"HTTP {got.status}"
            raise StoreError(f"{self.location}: token request to {redact(realm)}: {what}")
        try:
            value = json.loads(got.body)
            token = value.get("token") or value.get("access_token")
        except (ValueError, UnicodeDecodeError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise StoreError(f"{self.location}: token request to {redact(realm)}: no token in the reply")
        self._auth[scope] = "Bearer " + token
        return True

    def _scope(self, kind: str) -> str:
        actions = {"pull": "pull", "push": "pull,push", "delete": "delete"}[kind]
        return f"repository:{self.repository}:{actions}"

    def _failure(self, method: str, reply: _Reply) -> StoreError:
        """A reply that is not the expected one, as one line naming the store."""
        what = {401: "unauthorized, check the credentials", 403: "forbidden"}.get(reply.status, "unexpected status")
        errors = _registry_errors(reply.body)
        if any(code == "NAME_UNKNOWN" for code, _ in errors):
            what = f"repository '{self.repository}' not known to the registry"
        if errors:
            detail = "; ".join(f"{code}: {message}" if message else code for code, message in errors)
        else:
            detail = " ".join(reply.body[:200].decode("utf-8", "replace").split())
        detail = redact(detail[:300])
        return StoreError(f"{self.location}: {method} {redact(reply.url)}: {what} (HTTP {reply.status})"
                          + (f": {detail}" if detail else ""))

    def _missing(self, reply: _Reply) -> bool:
        """A 404 that says the manifest or blob is absent; an unknown repository is not."""
        return reply.status == 404 and not any(code == "NAME_UNKNOWN" for code, _ in _registry_errors(reply.body))

    # --- chunks ----------------------------------------------------------------------------

    def tag(self, chunk_id: bytes) -> str:
        """desync ``tagFromID``: the id in hex followed by the storage extension."""
        return chunk_id.hex() + self.form.extension

    def _manifest(self, chunk_id: bytes) -> tuple[dict[str, Any], str] | None:
        """The chunk's manifest and its digest; None when the tag is absent or names
        something other than a desync chunk (desync ``fetchChunkManifest``)."""
        reply = self._call("GET", self._path("manifests/" + self.tag(chunk_id)), "pull",
                           headers={"Accept": MANIFEST_MEDIA_TYPE}, limit=MAX_MANIFEST)
        if self._missing(reply):
            return None
        if reply.status != 200:
            raise self._failure("GET", reply)
        try:
            manifest = json.loads(reply.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreError(f"{self.location}: invalid manifest for chunk {chunk_id.hex()}: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("artifactType") != CHUNK_ARTIFACT_TYPE:
            return None
        return manifest, sha256_digest(reply.body)

    def get_chunk(self, chunk_id: bytes, digest: Digest | None) -> Chunk:
        found = self._manifest(chunk_id)
        if found is None:
            raise ChunkMissing(chunk_id.hex(), self.location)
        layers = found[0].get("layers")
        if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
            count = len(layers) if isinstance(layers, list) else 0
            raise StoreError(f"manifest for chunk {chunk_id.hex()} in {self.location} references "
                             f"{count} blobs, expected exactly one")
        size, blob_digest = layers[0].get("size"), layers[0].get("digest")
        if (not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_CHUNK_BLOB
                or not isinstance(blob_digest, str) or "/" in blob_digest):
            raise StoreError(f"manifest for chunk {chunk_id.hex()} in {self.location} references "
                             f"a blob of invalid size or digest")
        reply = self._call("GET", self._path("blobs/" + blob_digest), "pull", limit=min(size, MAX_STORED_CHUNK_SIZE))
        if self._missing(reply):  # a manifest whose blob is gone: let other stores be tried
            raise ChunkMissing(chunk_id.hex(), self.location)
        if reply.status != 200:
            raise self._failure("GET", reply)
        if len(reply.body) != size or sha256_digest(reply.body) != blob_digest:
            raise StoreError(f"{self.location}: blob of chunk {chunk_id.hex()} does not match its "
                             f"manifest (size or {blob_digest.split(':', 1)[0]} digest)")
        return self.form.from_storage(chunk_id, reply.body, None if self.options.skip_verify else digest,
                                      where=self.location)

    def has_chunk(self, chunk_id: bytes) -> bool:
        """desync ``HasChunk``: the manifest is fetched, so a foreign artifact under a
        chunk-shaped tag does not count."""
        return self._manifest(chunk_id) is not None

    def _blob_exists(self, blob_digest: str, scope: str) -> bool:
        reply = self._call("HEAD", self._path("blobs/" + blob_digest), scope)
        if reply.status == 200:
            return True
        if self._missing(reply):
            return False
        raise self._failure("HEAD", reply)

    def _push_blob(self, data: bytes) -> str:
        """The blob under its sha256 digest, uploaded (POST, then PUT) unless already there."""
        blob_digest = sha256_digest(data)
        if self._blob_exists(blob_digest, "push"):
            return blob_digest
        reply = self._call("POST", self._path("blobs/uploads/"), "push")
        upload = reply.headers.get("Location")
        if reply.status != 202 or not upload:
            raise self._failure("POST", reply)
        upload = urllib.parse.urljoin(reply.url, upload)
        upload += ("&" if "?" in upload else "?") + "digest=" + urllib.parse.quote(blob_digest, safe="")
        reply = self._call("PUT", upload, "push", body=data,
                           headers={"Content-Type": "application/octet-stream"})
        if reply.status != 201:
            raise self._failure("PUT", reply)
        return blob_digest

    def store_chunk(self, chunk: Chunk) -> None:
        if not self._config_pushed:  # desync ensureConfigBlob: checked once per store
            with self._config_lock:
                if not self._config_pushed:
                    self._push_blob(EMPTY_CONFIG)
                    self._config_pushed = True
        blob = self.form.to_storage(chunk)
        self._push_blob(blob)
        tag = self.tag(chunk.id)
        reply = self._call("PUT", self._path("manifests/" + tag), "push", body=chunk_manifest(tag, blob),
                           headers={"Content-Type": MANIFEST_MEDIA_TYPE})
        if reply.status != 201:
            raise self._failure("PUT", reply)

    def _remove(self, chunk_id: bytes) -> bool:
        found = self._manifest(chunk_id)
        if found is None:
            return False
        reply = self._call("DELETE", self._path("manifests/" + found[1]), "delete")
        if reply.status == 202:
            return True
        if self._missing(reply):  # removed meanwhile
            return False
        raise self._failure("DELETE", reply)

    def remove_chunk(self, chunk_id: bytes) -> None:
        """desync ``RemoveChunk``: the manifest goes (only a desync chunk's); the blob is
        left to the registry's garbage collection."""
        self._remove(chunk_id)

    def tags(self) -> Iterator[str]:
        """Every tag of the repository, page by page (``n=1000``, then the ``Link`` header)."""
        url: str | None = self._path(f"tags/list?n={TAG_PAGE_SIZE}")
        while url is not None:
            reply = self._call("GET", url, "pull", limit=MAX_TAG_LIST)
            if reply.status != 200:
                raise self._failure("GET", reply)
            try:
                value = json.loads(reply.body)
                tags = value.get("tags") or []
            except (ValueError, UnicodeDecodeError, AttributeError):
                raise StoreError(f"{self.location}: invalid tag list from the registry") from None
            yield from (tag for tag in tags if isinstance(tag, str))
            url = _next_link(reply.url, reply.headers.get("Link"))

    def chunk_ids(self) -> Iterator[bytes]:
        """The ids of the tags that are this store's chunk names (``<hex id><extension>``)."""
        for tag in self.tags():
            chunk_id = chunk_id_from_tag(tag, self.form.extension)
            if chunk_id is not None:
                yield chunk_id

    def prune(self, keep: set[bytes]) -> int:
        """desync ``Prune``: every chunk tag of this store's form not in ``keep`` loses its
        manifest (``-n`` removals at a time); other tags and artifacts stay."""
        drop = [chunk_id for chunk_id in self.chunk_ids() if chunk_id not in keep]
        if not drop:
            return 0
        with ThreadPoolExecutor(max(1, min(self.options.n, len(drop)))) as pool:
            return sum(pool.map(self._remove, drop))

    def __str__(self) -> str:
        return self.location


def _next_link(current: str, header: str | None) -> str | None:
    """The ``rel="next"`` target of a ``Link`` header, resolved against the page's URL."""
    if not header:
        return None
    for part in header.split(","):
        target, _, params = part.partition(";")
        target = target.strip()
        if target.startswith("<") and target.endswith(">") and 'rel="next"' in params.replace(" ", ""):
            return urllib.parse.urljoin(current, target[1:-1])
    return None


# --- backend entry point (stores/registry.py) -------------------------------------------------

def open_chunk_store(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                     create: bool = False) -> OCIStore:
    """``create`` has no meaning: a registry makes a repository on its first push."""
    return OCIStore(location, options.for_location(location))
