"""``extract [-s STORE]... [-c CACHE] [-n N] [-k] [--print-stats] INDEX OUT``.

Spec: spec/index.md, spec/store.md.
"""

from __future__ import annotations

import argparse
import json
import sys

from desync_ref.cli.common import (
    AppendSlice,
    add_command,
    add_store_options,
    load_index,
    source_store,
    workers,
)
from desync_ref.operations.extract import extract


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "extract", "Read an index and build a blob from it")
    parser.add_argument("-s", "--store", action=AppendSlice, help="source store(s)")
    parser.add_argument("-c", "--cache", help="store to be used as cache")
    parser.add_argument("-k", "--in-place", action="store_true",
                        help="extract the file in place and keep chunks that are already correct")
    parser.add_argument("--print-stats", action="store_true",
                        help="print statistics to stderr when done")
    add_store_options(parser)
    parser.add_argument("index", help="index file ('-' for stdin)")
    parser.add_argument("output", help="output file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    index = load_index(args, args.index)
    store = source_store(args, index)
    try:
        stats = extract(index, store, args.output, in_place=args.in_place, workers=workers(args))
    finally:
        store.close()
    if args.print_stats:
        json.dump({"chunks-total": stats.chunks, "chunks-from-store": stats.fetched,
                   "chunks-in-place": stats.skipped_in_place, "chunks-zero": stats.skipped_zero,
                   "size": stats.bytes}, sys.stderr, indent=2)
        sys.stderr.write("\n")
    return 0
