"""``chunk-server -s STORE... [-c CACHE] [--store-file FILE] [-l ADDR]... [-w] [-u] [--encryption] ...``.

desync ``cmd/desync/chunkserver.go``: serves a store chain over HTTP(S); ``--store-file``
holds ``{"stores": [...], "cache": "..."}`` and is read again on SIGHUP (an invalid file
keeps the old stores). Writing (``-w``) needs exactly one upstream store and no cache.
``-u`` and the encryption flags set the form chunks take on the wire; upstream stores keep
their own (config file) form.

Spec: spec/http.md.
"""

from __future__ import annotations

import argparse
import json
import threading
from typing import Final

from desync_ref.cli.common import AppendSlice, _bool_flag, add_command, make_digest, store_options
from desync_ref.cli.server_options import (
    add_server_options,
    server_options,
    validate_server_options,
)
from desync_ref.cli.usage import UsageError
from desync_ref.errors import DesyncRefError, StoreError
from desync_ref.formats.chunk import digest_function
from desync_ref.stores import Store, WriteStore
from desync_ref.stores.location import open_chain, open_writable
from desync_ref.stores.options import StoreOptions
from desync_ref.stores.storage_form import storage_form
from desync_ref.stores.swap import SwapStore, SwapWriteStore

# Requests still running on a replaced chain get this long before it is closed.
OLD_STORE_GRACE: Final = 30.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "chunk-server", "Server for chunks over HTTP(S)")
    parser.add_argument("-s", "--store", action=AppendSlice, default=[], help="upstream source store(s)")
    parser.add_argument("-c", "--cache", default="", help="store to be used as cache")
    parser.add_argument("--store-file", default="",
                        help="read store arguments from a file, supports reload on SIGHUP")
    parser.add_argument("-w", "--writable", "--writeable", action="store_true", help="support writing")
    parser.add_argument("--skip-verify-read", type=_bool_flag, nargs="?", const=True, default=True,
                        help="don't verify chunk data read from upstream stores (default true)")
    # desync's default is true; desync_ref verifies PUTs unless told not to (spec/http.md).
    parser.add_argument("--skip-verify-write", type=_bool_flag, nargs="?", const=True, default=False,
                        help="don't verify chunk data written to this server (default false)")
    parser.add_argument("-u", "--uncompressed", action="store_true", help="serve uncompressed chunks")
    parser.add_argument("--encryption", action="store_true",
                        help="serve chunks encrypted, expects the key in $DESYNC_ENCRYPTION_KEY "
                             "unless --encryption-key is given")
    parser.add_argument("--encryption-key", default="",
                        help="serve chunks encrypted with this hex-encoded 256-bit key, implies --encryption")
    parser.add_argument("--encryption-algorithm", default="",
                        help="encryption algorithm, xchacha20-poly1305 (default) or aes-256-gcm, "
                             "implies --encryption")
    parser.add_argument("-r", "--cache-repair", type=_bool_flag, nargs="?", const=True, default=True,
                        help="replace invalid chunks in the cache from source")
    add_server_options(parser)
    parser.set_defaults(run=run)


def read_store_file(path: str) -> tuple[list[str], str]:
    """desync ``readStoreFile``: ``{"stores": [...], "cache": "..."}``."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise StoreError(f"failed to read store-file '{path}': {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise StoreError(f"failed to read store-file '{path}': {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise StoreError(f"failed to read store-file '{path}': expected a JSON object")
    stores, cache = data.get("stores") or [], data.get("cache") or ""
    if not isinstance(stores, list) or not all(isinstance(s, str) for s in stores) or not isinstance(cache, str):
        raise StoreError(f"failed to read store-file '{path}': \"stores\" must be a list of strings, "
                         "\"cache\" a string")
    unknown = set(data) - {"stores", "cache"}
    if unknown:
        raise StoreError(f"failed to read store-file '{path}': unknown key \"{sorted(unknown)[0]}\"")
    return stores, cache


def build_store(args: argparse.Namespace, options: StoreOptions) -> Store:
    """desync ``chunkServerStore``: the chain from the flags or the store file."""
    stores: list[str] = list(args.store)
    cache: str = args.cache
    if args.store_file:
        if stores:
            raise UsageError("--store and --store-file can't be used together")
        if cache:
            raise UsageError("--cache and --store-file can't be used together")
        stores, cache = read_store_file(args.store_file)
    if not stores:
        raise UsageError("no store provided")
    if args.writable:
        if len(stores) > 1 or cache:
            raise UsageError("only one upstream store supported for writing and no cache")
        return open_writable(stores[0], options, create=False)
    return open_chain(stores, cache or None, digest_function(make_digest(args)), options)


def run(args: argparse.Namespace) -> int:
    from desync_ref.server.base import run_server, warn  # aiohttp: loaded only to serve
    from desync_ref.server.chunks import PROG, ChunkHandler

    serving = server_options(args)
    validate_server_options(serving)
    # The wire form, checked before any store is opened (desync runChunkServer). Either
    # encryption flag turns encryption on; the environment's key alone never does.
    encrypt = bool(args.encryption or args.encryption_key or args.encryption_algorithm)
    wire = storage_form(StoreOptions(uncompressed=args.uncompressed, encryption=encrypt,
                                     encryption_key=args.encryption_key or None,
                                     encryption_algorithm=args.encryption_algorithm or None))
    # -u is the format on the wire; upstream stores keep their own (config file) setting.
    options = store_options(argparse.Namespace(**{**vars(args), "uncompressed": False}))
    store: Store = build_store(args, options)
    swap: SwapStore | None = None
    if args.store_file:
        # What the chain can do is the swap store's type: a writable one only with -w.
        swap = SwapWriteStore(store) if isinstance(store, WriteStore) and args.writable else SwapStore(store)
        store = swap
    handler = ChunkHandler(store, digest_function(make_digest(args)), writable=args.writable,
                           skip_verify_read=args.skip_verify_read,
                           skip_verify_write=args.skip_verify_write,
                           authorization=serving.authorization, form=wire)

    def reload() -> None:
        assert swap is not None
        try:
            new = build_store(args, options)
        except (DesyncRefError, OSError) as exc:
            warn(PROG, f"failed to reload configuration: {exc}")
            return
        try:
            old = swap.swap(new)
        except DesyncRefError as exc:
            new.close()
            warn(PROG, f"failed to reload configuration: {exc}")
            return
        timer = threading.Timer(OLD_STORE_GRACE, old.close)
        timer.daemon = True
        timer.start()
        warn(PROG, f"reloaded stores from {args.store_file}: {new}")

    try:
        return run_server(handler, serving, PROG, on_hup=reload if swap is not None else None)
    finally:
        store.close()
