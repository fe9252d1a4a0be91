"""index-server's request handler: ``GET/HEAD/PUT /<name>`` over an index store.

Spec: ``spec/http.md``. Status codes of desync ``httpindexhandler.go``: 401 for a wrong
Authorization header, 400 for an invalid name (``validIndexName``; unlike desync, which
takes ``path.Base`` of any path, a path of more than one element is refused too), 404
"index not found", 400 for a PUT when not writable, 415 for a PUT body that is not an
index, 500 when the store fails, 405 for other methods.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from desync_ref.errors import DesyncRefError, IndexMissing, InvalidFormat
from desync_ref.formats.index import encode_index, parse_index
from desync_ref.server.base import authorized, read_body, text, warn
from desync_ref.server.chunks import ONLY
from desync_ref.stores import IndexStore, IndexWriteStore
from desync_ref.stores.index_stores import MAX_INDEX_BYTES, valid_index_name

PROG: Final = "index-server"


class IndexHandler:
    def __init__(self, store: IndexStore, *, writable: bool = False, authorization: str = "") -> None:
        self.store = store
        self.writable = writable
        self.authorization = authorization.encode("utf-8", "surrogateescape")

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        if not authorized(request, self.authorization):
            return text(401, "Unauthorized")
        name = request.path.removeprefix("/")
        if not valid_index_name(name):
            return text(400, "invalid index name")
        loop = asyncio.get_running_loop()
        if request.method in ("GET", "HEAD"):
            return await loop.run_in_executor(None, self._get, name, request.method == "HEAD")
        if request.method == "PUT":
            if not self.writable:
                return text(400, "writing to upstream index store is not enabled")
            body = await read_body(request, MAX_INDEX_BYTES)
            if body is None:
                return text(413, "index too large")
            return await loop.run_in_executor(None, self._put, name, body)
        return text(405, ONLY)

    def _get(self, name: str, head: bool) -> web.Response:
        try:
            index = self.store.get_index(name)
        except IndexMissing:
            return text(404, "index not found")
        except (DesyncRefError, OSError) as exc:
            warn(PROG, f"failed to retrieve index {name}: {exc}")
            return text(400, "failed to retrieve index")
        if head:
            return web.Response(status=200)
        return web.Response(body=encode_index(index), content_type="application/octet-stream")

    def _put(self, name: str, body: bytes) -> web.Response:
        try:
            index = parse_index(body)
        except InvalidFormat as exc:
            return text(415, f"invalid index: {exc}")
        store = self.store
        if not isinstance(store, IndexWriteStore):
            return text(400, "upstream index store does not support writing")
        try:
            store.store_index(name, index)
        except (DesyncRefError, OSError) as exc:
            warn(PROG, f"failed to store index {name}: {exc}")
            return text(500, "internal server error")
        return web.Response(status=200)
