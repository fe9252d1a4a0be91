"""``chop -s STORE [--ignore INDEX]... [--ignore-chunks FILE]... [-n N] INDEX FILE`` (desync
``cmd/desync/chop.go``). Spec: ``spec/index.md``, ``spec/store.md``.
"""

from __future__ import annotations

import argparse

from desync_ref.cli.common import (
    AppendSlice,
    add_command,
    add_store_options,
    load_index,
    store_options,
    workers,
)
from desync_ref.cli.usage import UsageError


def add_ignore_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ignore", action=AppendSlice, default=[],
                        help="index(es) with chunks to be excluded")
    parser.add_argument("--ignore-chunks", action=AppendSlice, default=[],
                        help="text file with chunk IDs to be excluded")


def ignored_ids(args: argparse.Namespace) -> set[bytes]:
    """The ids of every ``--ignore`` index and ``--ignore-chunks`` file."""
    from desync_ref.operations.chunk_ids import read_chunk_id_file

    ids: set[bytes] = set()
    for location in args.ignore:
        ids.update(chunk.id for chunk in load_index(args, location).chunks)
    for location in args.ignore_chunks:
        ids.update(read_chunk_id_file(location))
    return ids


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "chop", "Read chunks from a file according to an index")
    parser.add_argument("-s", "--store", default="", help="target store")
    add_ignore_options(parser)
    add_store_options(parser)
    parser.add_argument("index", help="index file ('-' for stdin)")
    parser.add_argument("file", help="file holding the data the index describes")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.store:
        raise UsageError("no target store provided")
    # Imported here: parsing the command line does not load what chopping needs.
    from desync_ref.operations.chop import chop
    from desync_ref.progress import progress
    from desync_ref.stores.location import open_writable

    store = open_writable(args.store, store_options(args), create=False)
    try:
        index = load_index(args, args.index)
        ignore = ignored_ids(args)
        chunks = [chunk for chunk in index.chunks if chunk.id not in ignore]
        chop(args.file, chunks, index.digest, store, workers=workers(args), progress=progress)
    finally:
        store.close()
    return 0
