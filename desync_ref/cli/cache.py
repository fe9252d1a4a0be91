"""``cache -s STORE... -c TARGET [--ignore INDEX]... [--ignore-chunks FILE]... INDEX...``
(desync ``cmd/desync/cache.go``). Spec: ``spec/store.md``.
"""

from __future__ import annotations

import argparse

from desync_ref.cli.chop import add_ignore_options, ignored_ids
from desync_ref.cli.common import (
    AppendSlice,
    add_command,
    add_store_options,
    load_index,
    store_options,
    workers,
)
from desync_ref.cli.usage import UsageError
from desync_ref.operations.chunk_ids import exclude, unique_ids
from desync_ref.operations.copy import copy_chunks
from desync_ref.progress import progress
from desync_ref.stores.location import open_store, open_writable
from desync_ref.stores.router import StoreRouter


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "cache", "Read indexes and copy the referenced chunks")
    parser.add_argument("-s", "--store", action=AppendSlice, default=[], help="source store(s)")
    parser.add_argument("-c", "--cache", default="",
                        help="target store the chunks are copied to")
    add_ignore_options(parser)
    add_store_options(parser)
    parser.add_argument("indexes", nargs="+", metavar="index",
                        help="index file(s) ('-' for stdin)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.store:
        raise UsageError("no source store provided")
    if not args.cache:
        raise UsageError("no target cache store provided")
    ids = unique_ids(load_index(args, location) for location in args.indexes)
    ids = exclude(ids, ignored_ids(args))
    options = store_options(args)
    source = StoreRouter([open_store(location, options) for location in args.store])
    try:
        target = open_writable(args.cache, options, create=False)
        try:
            copy_chunks(ids, source, target, workers=workers(args), progress=progress)
        finally:
            target.close()
    finally:
        source.close()
    return 0
