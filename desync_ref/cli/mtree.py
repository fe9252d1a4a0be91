"""``mtree [-i -s STORE [-c CACHE]] CATAR|CAIDX|DIR``: desync's mtree listing (spec/catar.md)."""

from __future__ import annotations

import argparse
import os
import sys

from desync_ref.cli.common import (
    AppendSlice,
    add_command,
    add_store_options,
    load_index,
    make_digest,
    source_store,
    workers,
)
from desync_ref.cli.usage import UsageError
from desync_ref.formats.mtree import MtreeSink
from desync_ref.operations.tar import archive_flags
from desync_ref.operations.untar import walk_directory, walk_file, walk_index


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "mtree",
                         "Print the content of a catar, caidx or local directory in mtree format")
    parser.add_argument("-s", "--store", action=AppendSlice, help="source store(s), used with -i")
    parser.add_argument("-c", "--cache", help="store to be used as cache")
    parser.add_argument("-i", "--index", action="store_true",
                        help="read index file (caidx), not catar")
    add_store_options(parser)
    parser.add_argument("input", help="catar, caidx (with -i) or directory")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.index and not args.store:
        raise UsageError("-i requires at least one store (-s <location>)")
    is_dir = os.path.isdir(args.input)
    if args.index and is_dir:
        raise UsageError("-i can't be used with input directory")
    sink = MtreeSink(sys.stdout, make_digest(args))
    if is_dir:
        walk_directory(args.input, archive_flags(digest=make_digest(args)), sink)
    elif args.index:
        index = load_index(args, args.input)
        store = source_store(args, index)
        try:
            walk_index(index, store, sink, workers=workers(args))
        finally:
            store.close()
    else:
        if not os.path.exists(args.input):
            raise UsageError(f"{args.input}: no such file or directory")
        walk_file(args.input, sink)
    return 0
