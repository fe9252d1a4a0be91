"""``inspect-chunks [-s STORE] INDEX [OUTFILE]``: JSON list of every chunk's id, size and
stored size (desync ``cmd/desync/inspectchunks.go``). Spec: ``spec/index.md``,
``spec/store.md``.
"""

from __future__ import annotations

import argparse
import io
import sys

from desync_ref.cli.common import (
    add_command,
    add_store_options,
    load_index,
    print_json,
    store_options,
)
from desync_ref.fs.atomic import atomic_output
from desync_ref.operations.inspect import inspect_chunks
from desync_ref.stores.location import open_write_store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "inspect-chunks",
                         "Inspect chunks from an index and an optional local store")
    parser.add_argument("-s", "--store", default="", help="local source store")
    add_store_options(parser)
    parser.add_argument("index", help="index file ('-' for stdin)")
    parser.add_argument("output", nargs="?", help="output file (default stdout)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    index = load_index(args, args.index)
    store = open_write_store(args.store, store_options(args), create=False) if args.store else None
    infos = inspect_chunks(index, store)
    # desync marshals a nil slice, the result for an index without chunks, as null.
    document = [info.to_json() for info in infos] if infos else None
    text = io.StringIO()
    print_json(document, text)
    if args.output:
        with atomic_output(args.output) as out:
            out.write(text.getvalue().encode())
    else:
        sys.stdout.write(text.getvalue())
        sys.stdout.flush()
    return 0
