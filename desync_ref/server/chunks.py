"""chunk-server's request handler: ``GET/HEAD/PUT /<xxxx>/<id>.cacnk`` over a store chain.

The wire form (compressed or not, encrypted or not: a :class:`StorageForm`) is the
server's own, independent of how the upstream store keeps its chunks (desync
``NewHTTPHandler``'s converters); encrypted GETs seal a fresh nonce each time, encrypted PUT
bodies are authenticated even with ``--skip-verify-write``.

Spec: ``spec/http.md``. Status codes and messages of desync ``httphandler.go`` and
``httphandlerbase.go``: the Authorization check comes first (401), then the path
(``idFromPath``: 400), then the method (405 for anything but GET, HEAD, PUT). GET: 200 with
the chunk, 404 "chunk <id> not found", 500 on an upstream error. PUT: 400 when the server is
not writable or the body does not verify, 500 when the store fails, 200 when stored.
Concurrent GETs of one chunk share one upstream fetch (desync ``dedupqueue.go``).

Chunks are checked where they are built: a read by the store (with the digest unless
``--skip-verify-read``), a PUT body by ``Chunk.with_id`` (unless ``--skip-verify-write``;
unlike desync, whose default is to skip, PUTs are verified by default). A PUT never replaces
a chunk the store already holds in a form that verifies: the id names the content, so the
chunk there is kept and the PUT answered 200, whatever bytes it brought.
What the store can do is asked of its type: WriteStore for PUT, InlineRead for the fast path.
A GET a local store can answer with its file as it is (the wire form, read unverified as
every GET is by default) is answered with the file (``server/sendfile.py``, sendfile);
anything else, missing files included, takes the store's own read. ``chunk_file`` names
that file to the fast path (``server/fastpath.py``), which answers plain GETs and HEADs of
it before aiohttp.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from typing import Final

from aiohttp import web

from desync_ref.errors import ChunkInvalid, ChunkMissing, DesyncRefError
from desync_ref.formats.chunk import Digest, NameProblem, id_text, parse_chunk_path
from desync_ref.formats.constants import CA_CHUNK_SIZE_LIMIT_MAX
from desync_ref.server.base import authorized, read_body, text, warn
from desync_ref.server.sendfile import FileBody
from desync_ref.stores import InlineRead, Store, WriteStore
from desync_ref.stores.local import LocalStore
from desync_ref.stores.storage_form import StorageForm

PROG: Final = "chunk-server"
# A compressed chunk can be a little larger than the data it holds.
MAX_BODY: Final = CA_CHUNK_SIZE_LIMIT_MAX + 1024 * 1024
ONLY: Final = "only GET, PUT and HEAD are supported"
_OCTETS: Final = {"Content-Type": "application/octet-stream"}
# O_NOFOLLOW: a symlink is casync's mark of a missing chunk (stores/local.py)
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class ChunkHandler:
    def __init__(self, store: Store, digest: Digest, *, writable: bool = False,
                 uncompressed: bool = False, skip_verify_read: bool = True,
                 skip_verify_write: bool = False, authorization: str = "",
                 form: StorageForm | None = None) -> None:
        """``form`` is the wire form (desync's handler converters: what clients send and
        get, whatever the upstream store keeps); it wins over ``uncompressed``."""
        self.store = store
        self.digest = digest
        self.writable = writable
        self.form = form if form is not None else StorageForm(compressed=not uncompressed)
        self.uncompressed = not self.form.compressed
        self.extension = self.form.extension
        self.skip_verify_read = skip_verify_read
        self.skip_verify_write = skip_verify_write
        self.read_digest: Digest | None = None if skip_verify_read else digest
        self.write_digest: Digest | None = None if skip_verify_write else digest
        self.authorization = authorization.encode("utf-8", "surrogateescape")
        self._inflight: dict[bytes, asyncio.Future[bytes]] = {}
        # Asked once: a runtime-checkable Protocol's isinstance costs more than a request.
        self._inline_store: InlineRead | None = store if isinstance(store, InlineRead) else None
        # The usual request path, matched at once; any other goes through parse_chunk_path.
        self._plain_path = re.compile(r"/([0-9a-fA-F]{4})/\1[0-9a-fA-F]{60}" + re.escape(self.extension))
        self._plain_target = re.compile(self._plain_path.pattern.encode())
        # A local store (not one swapped on SIGHUP) holding chunks in the wire form, read
        # unverified: GETs answer with its files (FileBody, sendfile). Asked at the first
        # GET: the handler is made without touching the store.
        self._files: str | None = None
        self._files_known = False
        self._files_bytes: bytes | None = None

    # -- path --------------------------------------------------------------------------
    def id_from_path(self, path: str) -> bytes | str:
        """The chunk id, or the 400 message (desync ``idFromPath``)."""
        ext = self.extension
        parsed = parse_chunk_path(path, ext, root="/")
        if isinstance(parsed, bytes):
            return parsed
        if parsed is NameProblem.EXTENSION:
            return "invalid chunk extension, verify compression and encryption settings"
        if parsed is NameProblem.EXTRA_EXTENSION:
            return (f"requested chunk with an unexpected file extension, this server expects "
                    f"'<chunkid>{ext}', verify compression and encryption settings")
        if parsed is NameProblem.LAYOUT:
            return f"expected format '/<prefix>/<chunkid>{ext}"
        return f"invalid chunk id '{id_text(path, ext)}'"

    # -- dispatch ----------------------------------------------------------------------
    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        if not authorized(request, self.authorization):
            return text(401, "Unauthorized")
        raw = request.raw_path
        parsed: bytes | str
        if self._plain_path.fullmatch(raw):
            parsed = bytes.fromhex(raw[6:70])
        else:
            # anything but the usual path is decoded by aiohttp first
            path = raw if "%" not in raw and "?" not in raw and "#" not in raw else request.path
            parsed = self.id_from_path(path)
            if isinstance(parsed, str):
                return text(400, parsed)
        method = request.method
        if method == "GET":
            return await self.get(parsed)
        if method == "HEAD":
            return await self.head(parsed)
        if method == "PUT":
            return await self.put(parsed, request)
        return text(405, ONLY)

    # -- GET ---------------------------------------------------------------------------
    def _load(self, chunk_id: bytes) -> bytes:
        chunk = self.store.get_chunk(chunk_id, self.read_digest)
        return self.form.to_storage(chunk)

    async def _fetch(self, chunk_id: bytes) -> bytes:
        pending = self._inflight.get(chunk_id)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.run_in_executor(None, self._load, chunk_id)
        self._inflight[chunk_id] = future
        try:
            return await asyncio.shield(future)
        finally:
            if self._inflight.get(chunk_id) is future:
                del self._inflight[chunk_id]

    def _inline(self) -> bool:
        """A local store already in the wire form: a page-cache read is cheaper than a thread hop."""
        store = self._inline_store
        return (self.read_digest is None and not self.form.encrypted and store is not None
                and store.reads_inline(self.uncompressed))

    def _open_file(self, chunk_id: bytes) -> FileBody | None:
        """The chunk's file in the wire form, or None: missing, empty (see LocalStore.has_chunk)
        or unreadable here, the store's own read decides (the other form, 404 or 500)."""
        hex_id = chunk_id.hex()
        try:
            fd = os.open(f"{self._files}/{hex_id[:4]}/{hex_id}{self.extension}", _OPEN_FLAGS)
        except OSError:
            return None
        file = open(fd, "rb", buffering=0)  # noqa: SIM115 - FileBody closes it
        try:
            info = os.fstat(fd)
        except OSError:
            file.close()
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            file.close()
            return None
        return FileBody(file, info.st_size, _OCTETS)

    def chunk_file(self, target: bytes) -> bytes | None:
        """The fast path's question (``server/fastpath.py``): the file that answers a GET or
        HEAD of ``target``, a usual chunk path, when GETs are answered with files; asked per
        request, so that it follows the handler's store."""
        if not self._files_known:
            self._files, self._files_known = self._file_root(), True
        root = self._files
        if root is None or not self._plain_target.fullmatch(target):
            return None
        if self._files_bytes is None:
            self._files_bytes = os.fsencode(root)
        return self._files_bytes + target.lower()  # the store's names are lowercase hex

    def _file_root(self) -> str | None:
        store = self.store
        return os.fspath(store.path) if isinstance(store, LocalStore) and self._inline() else None

    async def get(self, chunk_id: bytes) -> web.StreamResponse:
        if not self._files_known:
            self._files, self._files_known = self._file_root(), True
        if self._files is not None:
            body = self._open_file(chunk_id)
            if body is not None:
                return body
        try:
            payload = self._load(chunk_id) if self._inline() else await self._fetch(chunk_id)
        except ChunkMissing:
            return text(404, f"chunk {chunk_id.hex()} not found")
        except (DesyncRefError, OSError) as exc:
            warn(PROG, f"failed to retrieve chunk {chunk_id.hex()}: {exc}")
            return text(500, "internal server error")
        return web.Response(body=payload, headers=_OCTETS)

    # -- HEAD --------------------------------------------------------------------------
    async def head(self, chunk_id: bytes) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        try:
            if self._inline():  # a stat of a local file: no thread hop
                found = self.store.has_chunk(chunk_id)
            else:
                found = await loop.run_in_executor(None, self.store.has_chunk, chunk_id)
        except (DesyncRefError, OSError) as exc:
            warn(PROG, f"failed to check chunk {chunk_id.hex()}: {exc}")
            return text(500, "internal server error")
        return web.Response(status=200 if found else 404)

    # -- PUT ---------------------------------------------------------------------------
    def _holds_valid(self, store: Store, chunk_id: bytes) -> bool:
        """The store has this chunk and it decompresses and hashes to its id."""
        if not store.has_chunk(chunk_id):
            return False
        try:
            store.get_chunk(chunk_id, self.digest)
        except (ChunkInvalid, ChunkMissing):
            return False
        return True

    def _store(self, chunk_id: bytes, body: bytes) -> web.Response:
        try:
            chunk = self.form.from_storage(chunk_id, body, self.write_digest)
        except ChunkInvalid as exc:
            return text(400, str(exc))
        store = self.store
        if not isinstance(store, WriteStore):
            return text(400, "upstream chunk store does not support writing")
        try:
            if not self._holds_valid(store, chunk_id):
                store.store_chunk(chunk)
        except (DesyncRefError, OSError) as exc:
            warn(PROG, f"failed to store chunk {chunk_id.hex()}: {exc}")
            return text(500, "internal server error")
        return web.Response(status=200)

    async def put(self, chunk_id: bytes, request: web.BaseRequest) -> web.StreamResponse:
        if not self.writable:
            return text(400, "writing to upstream chunk store is not enabled")
        body = await read_body(request, MAX_BODY)
        if body is None:
            return text(413, "chunk too large")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._store, chunk_id, body)
