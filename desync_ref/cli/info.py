"""``info [-s STORE]... [-c CACHE] [--seed INDEX]... [--chunks-info FILE] [-f json|plain]
[-j] INDEX`` (desync ``cmd/desync/info.go``). Spec: ``spec/index.md``, ``spec/store.md``,
``spec/cli.md`` ("Old spellings"): ``-j`` is the earliest README's ``info -j``.
"""

from __future__ import annotations

import argparse
import sys

from desync_ref.cli.common import (
    AppendSlice,
    add_command,
    add_store_options,
    load_index,
    print_json,
    store_options,
    workers,
)
from desync_ref.cli.usage import UsageError
from desync_ref.operations.info import index_info, read_chunks_info
from desync_ref.stores import Store
from desync_ref.stores.location import open_store, open_write_store
from desync_ref.stores.router import StoreRouter

FORMATS = ("json", "plain")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "info", "Show information about an index")
    parser.add_argument("-s", "--store", action=AppendSlice, default=[], help="source store(s)")
    parser.add_argument("--seed", action=AppendSlice, default=[], help="seed indexes")
    parser.add_argument("-c", "--cache", default="", help="store to be used as cache")
    parser.add_argument("-f", "--format", default="json", help="output format, plain or json")
    # The first desync README's spelling (``desync info -j ...``), from before -f existed.
    parser.add_argument("-j", "--json", dest="format", action="store_const", const="json",
                        help="same as -f json (old spelling)")
    parser.add_argument("--chunks-info", default="", help="json file with additional chunks info")
    add_store_options(parser)
    parser.add_argument("index", help="index file ('-' for stdin)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.format not in FORMATS:
        raise UsageError(f'unsupported output format "{args.format}"')
    index = load_index(args, args.index)
    chunks_info = read_chunks_info(args.chunks_info) if args.chunks_info else None
    seeds = [load_index(args, seed) for seed in args.seed]
    options = store_options(args)
    cache = open_write_store(args.cache, options, create=False) if args.cache else None
    store: Store | None = None
    if args.store:
        store = StoreRouter([open_store(location, options) for location in args.store])
    try:
        results = index_info(index, seeds=seeds, cache=cache, store=store,
                             chunks_info=chunks_info, workers=workers(args))
    finally:
        for opened in (cache, store):
            if opened is not None:
                opened.close()
    if args.format == "json":
        print_json(results.to_json(), sys.stdout)
    else:
        sys.stdout.write("".join(f"{line}\n" for line in results.plain_lines()))
    sys.stdout.flush()
    return 0
