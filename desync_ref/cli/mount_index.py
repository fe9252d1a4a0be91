"""``mount-index [-s STORE]... [-c CACHE] [--store-file FILE] [--cor-file FILE]
[--cor-state-save FILE] [--cor-state-init FILE] [--cor-init-n N] [--seed INDEX[:DATA]]...
[--seed-dir DIR]... [-n N] INDEX MOUNTPOINT``.

desync ``cmd/desync/mount-index.go``: the blob of INDEX appears read-only as one file under
MOUNTPOINT until SIGINT/SIGTERM unmounts it (exit 0). ``--store-file`` holds the stores as
``{"stores": [...], "cache": "..."}`` (``readStoreFile``) and is read again on SIGHUP; a
SIGHUP also saves the copy-on-read state. Seeds are beyond desync. A ``.caidx`` is mounted
as its file tree (``desync_ref.mount.tree``).

Spec: spec/mount.md.
"""

from __future__ import annotations

import argparse
import logging
import sys

from desync_ref.cli.common import (
    AppendSlice,
    add_command,
    add_store_options,
    load_index,
    store_options,
    workers,
)
from desync_ref.cli.seed_options import add_seed_options, seed_specs
from desync_ref.cli.store_file import reload_stores, store_locations
from desync_ref.cli.usage import UsageError, raise_for_signal
from desync_ref.errors import DesyncRefError
from desync_ref.formats.chunk import digest_function
from desync_ref.formats.index import Index
from desync_ref.stores import Store
from desync_ref.stores.location import open_chain
from desync_ref.stores.swap import SwapStore

PROG = "desync-ref mount-index"
ARCHIVE_SUFFIX = ".caidx"

SEED_HELP = ("seed: an index (its data is the index path without .caibx, or INDEX:DATA), or a "
             "plain file, chunked first with the index's chunk sizes; chunks found in a seed "
             "are read from it, not fetched")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "mount-index", "FUSE mount an index file")
    parser.add_argument("-s", "--store", action=AppendSlice, default=[], help="source store(s)")
    parser.add_argument("-c", "--cache", default="", help="store to be used as cache")
    parser.add_argument("--store-file", default="",
                        help="read store arguments from a file, supports reload on SIGHUP")
    parser.add_argument("--cor-file", default="", help="use a copy-on-read sparse file as cache")
    parser.add_argument("--cor-state-save", default="",
                        help="file to store the copy-on-read state in on exit or SIGHUP")
    parser.add_argument("--cor-state-init", default="",
                        help="state file to initialize the copy-on-read cache from")
    parser.add_argument("--cor-init-n", type=int, default=10,
                        help="number of threads to use for initialization (with --cor-state-init)")
    add_seed_options(parser, SEED_HELP)
    add_store_options(parser)
    parser.add_argument("index", help="index file ('-' for stdin)")
    parser.add_argument("mountpoint", help="directory to mount on")
    parser.set_defaults(run=run)


def build_store(args: argparse.Namespace, index: Index) -> Store:
    """desync ``mountIndexStore``: the chain from the flags or from the store file."""
    stores, cache = store_locations(args)
    return open_chain(stores, cache or None, digest_function(index.digest), store_options(args))


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _show_errors(verbose: bool) -> None:
    """A failed read is reported on stderr even without --verbose (desync prints it); with
    --verbose the CLI's handler already shows every record."""
    if verbose:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    logging.getLogger("desync_ref.mount").addHandler(handler)


def run(args: argparse.Namespace) -> int:
    if args.cor_init_n < 1:
        raise UsageError("--cor-init-n must be at least 1")
    from desync_ref.mount.runner import check_mountpoint

    check_mountpoint(args.mountpoint)
    index = load_index(args, args.index)
    store = build_store(args, index)
    swap: SwapStore | None = None
    if args.store_file:
        swap = SwapStore(store)
        store = swap
    try:
        if args.index.endswith(ARCHIVE_SUFFIX):
            stopped_by = _mount_archive(args, index, store)
        else:
            stopped_by = _mount_blob(args, index, store, swap)
    finally:
        store.close()
    raise_for_signal(stopped_by)  # unmounted by SIGINT/SIGTERM: exit 130/143
    return 0


def _mount_archive(args: argparse.Namespace, index: Index, store: Store) -> int | None:
    from desync_ref.mount.runner import serve
    from desync_ref.mount.tree import tree_operations_for_caidx

    return serve(tree_operations_for_caidx(index, store, workers=workers(args)), args.mountpoint)


def _mount_blob(args: argparse.Namespace, index: Index, store: Store,
                swap: SwapStore | None) -> int | None:
    from desync_ref.mount.blob import BlobOperations, ChunkLoader, file_name
    from desync_ref.mount.cor import SparseFile
    from desync_ref.mount.runner import serve
    from desync_ref.operations.chunk_source import ChunkSource
    from desync_ref.operations.seeds import open_seeds

    _show_errors(bool(getattr(args, "verbose", False)))
    name = file_name(args.index)
    seeds = open_seeds(seed_specs(args, args.index), index, f"{args.mountpoint}/{name}",
                       store_options(args), workers(args))
    loader = ChunkLoader(index, ChunkSource(store, index), seeds)
    sparse: SparseFile | None = None
    if args.cor_file:
        sparse = SparseFile.open(args.cor_file, index.length, len(index.chunks), loader.load,
                                 [c.start for c in index.chunks], loader.is_zero,
                                 state_save=args.cor_state_save or None,
                                 state_init=args.cor_state_init or None, init_n=args.cor_init_n)

    def reload() -> None:
        if swap is not None:
            _reload_stores(args, index, swap)
        if sparse is not None:
            try:
                sparse.save_state()
            except DesyncRefError as exc:
                _say(f"failed to save state: {exc}")

    try:
        return serve(BlobOperations(name, index, loader, sparse=sparse), args.mountpoint, reload=reload)
    finally:
        loader.close()
        if sparse is not None:
            sparse.close()


def _reload_stores(args: argparse.Namespace, index: Index, swap: SwapStore) -> None:
    reload_stores(swap, lambda: build_store(args, index), _say, args.store_file)
