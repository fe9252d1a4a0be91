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
import os

from desync_ref.cli.common import AppendSlice, _bool_flag, add_command, make_digest, store_options
from desync_ref.cli.server_options import (
    add_server_options,
    server_options,
    validate_server_options,
)
from desync_ref.cli.store_file import reload_stores, store_locations
from desync_ref.cli.usage import UsageError
from desync_ref.formats.chunk import digest_function
from desync_ref.stores import InlineRead, Store, WriteStore
from desync_ref.stores.location import open_chain, open_writable
from desync_ref.stores.options import StoreOptions
from desync_ref.stores.storage_form import StorageForm, storage_form
from desync_ref.stores.swap import SwapStore, SwapWriteStore


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
    parser.add_argument("--workers", type=int, default=None,
                        help="processes serving requests (default: one per core for a local store "
                             "in the served form, else 1)")
    add_server_options(parser)
    parser.set_defaults(run=run)


def build_store(args: argparse.Namespace, options: StoreOptions) -> Store:
    """desync ``chunkServerStore``: the chain from the flags or the store file."""
    stores, cache = store_locations(args)
    if args.writable:
        if len(stores) > 1 or cache:
            raise UsageError("only one upstream store supported for writing and no cache")
        return open_writable(stores[0], options, create=False)
    return open_chain(stores, cache or None, digest_function(make_digest(args)), options)


def default_workers(store: Store, wire: StorageForm) -> int:
    """One worker per usable core for a local store that holds chunks in the wire form (the
    requests a process serves from the page cache are bound by the interpreter); one
    process otherwise, where requests wait on upstream stores and concurrent requests for
    a chunk share one upstream fetch only within a process."""
    if not wire.encrypted and isinstance(store, InlineRead) and store.reads_inline(not wire.compressed):
        affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core
        return len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    return 1


def run(args: argparse.Namespace) -> int:
    from desync_ref.server.base import Service, run_server, warn  # aiohttp: loaded only to serve
    from desync_ref.server.chunks import PROG, ChunkHandler

    serving = server_options(args)
    validate_server_options(serving)
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    # The wire form, checked before any store is opened (desync runChunkServer). Either
    # encryption flag turns encryption on; the environment's key alone never does.
    encrypt = bool(args.encryption or args.encryption_key or args.encryption_algorithm)
    wire = storage_form(StoreOptions(uncompressed=args.uncompressed, encryption=encrypt,
                                     encryption_key=args.encryption_key or None,
                                     encryption_algorithm=args.encryption_algorithm or None))
    # -u is the format on the wire; upstream stores keep their own (config file) setting.
    options = store_options(argparse.Namespace(**{**vars(args), "uncompressed": False}))
    # Opened here whatever the number of workers, so that a store that cannot be used is
    # reported before the server starts; worker processes open their own.
    first: list[Store] = [build_store(args, options)]
    workers: int = args.workers or default_workers(first[0], wire)
    if workers > 1:
        first.pop().close()

    def open_service() -> Service:
        store = first.pop() if first else build_store(args, options)
        swap: SwapStore | None = None
        if args.store_file:
            # What the chain can do is the swap store's type: a writable one only with -w.
            swap = SwapWriteStore(store) if isinstance(store, WriteStore) and args.writable else SwapStore(store)
            store = swap
        handler = ChunkHandler(store, digest_function(make_digest(args)), writable=args.writable,
                               skip_verify_read=args.skip_verify_read,
                               skip_verify_write=args.skip_verify_write,
                               authorization=serving.authorization, form=wire)
        if swap is None:
            return Service(handler, None, store.close)
        chain = swap

        def reload() -> None:
            reload_stores(chain, lambda: build_store(args, options), lambda message: warn(PROG, message),
                          args.store_file)

        return Service(handler, reload, chain.close)

    try:
        return run_server(open_service, serving, PROG, workers=workers, reloads=bool(args.store_file))
    finally:
        for unused in first:  # the server did not start
            unused.close()
