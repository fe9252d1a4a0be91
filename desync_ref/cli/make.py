"""``make [-s STORE] [-m MIN:AVG:MAX] [-n N] [--print-stats] INDEX BLOB``.

Spec: spec/index.md, spec/chunker.md.
"""

from __future__ import annotations

import argparse
import sys

from desync_ref.cli.common import (
    add_chunk_size_option,
    add_command,
    add_store_options,
    chunk_sizes,
    make_digest,
    make_workers,
    print_json,
    store_options,
)
from desync_ref.errors import DesyncRefError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "make", "Chunk input file and create index")
    parser.add_argument("-s", "--store", help="target store")
    add_chunk_size_option(parser)
    parser.add_argument("--print-stats", action="store_true",
                        help="print chunking statistics to stderr when done")
    add_store_options(parser, default_concurrency=None)
    parser.add_argument("index", help="index to write ('-' for stdout, or an index store URL)")
    parser.add_argument("file", help="input file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: parsing the command line does not load what chunking needs.
    from desync_ref.operations.files import write_index_file
    from desync_ref.operations.make import make_index
    from desync_ref.progress import progress
    from desync_ref.stores.location import open_writable

    options = store_options(args)
    store = open_writable(args.store, options) if args.store else None
    try:
        index, stats = make_index(args.file, chunk_sizes(args), digest=make_digest(args),
                                  store=store, workers=make_workers(args), progress=progress)
    except IsADirectoryError:
        raise DesyncRefError(f"{args.file} is a directory (use tar for directories)") from None
    finally:
        if store is not None:
            store.close()
    if args.print_stats:
        # desync prints its ChunkingStats (make.go; no JSON tags, so the Go field names)
        # to stderr, stdout being free for the index. Every chunk cut here is accepted.
        print_json({"ChunksAccepted": stats.chunks, "ChunksProduced": stats.chunks}, sys.stderr)
    write_index_file(index, args.index, options)
    return 0
