"""``cat -s STORE... [-c CACHE] [-o OFFSET] [-l LENGTH] INDEX [OUTFILE]`` (desync
``cmd/desync/cat.go``). Spec: ``spec/index.md``, ``spec/store.md``.

OUTFILE is written under a temp name and renamed once complete; a FIFO, a pipe
(``/dev/stdout``) or a device is written straight into (spec/cli.md "cat into a FIFO");
without OUTFILE the bytes go to stdout.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, BinaryIO

from desync_ref.cli.common import (
    AppendSlice,
    add_command,
    add_store_options,
    load_index,
    source_store,
    workers,
)
from desync_ref.cli.usage import UsageError

if TYPE_CHECKING:
    from desync_ref.formats.index import Index
    from desync_ref.stores import Store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "cat", "Stream a blob to stdout or a file-like object")
    parser.add_argument("-s", "--store", action=AppendSlice, default=[], help="source store(s)")
    parser.add_argument("-c", "--cache", default="", help="store to be used as cache")
    parser.add_argument("-o", "--offset", type=int, default=0,
                        help="offset in bytes to seek to before reading")
    parser.add_argument("-l", "--length", type=int, default=0,
                        help="number of bytes to read (0 reads to the end)")
    add_store_options(parser)
    parser.add_argument("index", help="index file ('-' for stdin)")
    parser.add_argument("output", nargs="?", help="output file (default stdout)")
    parser.set_defaults(run=run)


def _write(out: BinaryIO, index: Index, store: Store, start: int, end: int, n: int) -> None:
    from desync_ref.operations.cat import iter_range

    for piece in iter_range(index, store, start, end, workers=n):
        out.write(piece)
    out.flush()


def run(args: argparse.Namespace) -> int:
    if not args.store:
        raise UsageError("no store provided")
    # Imported here: parsing the command line does not load what reading needs.
    from desync_ref.fs.atomic import stream_output
    from desync_ref.operations.cat import byte_range

    index = load_index(args, args.index)
    start, end = byte_range(index, args.offset, args.length)
    store = source_store(args, index)
    try:
        if args.output:
            with stream_output(args.output) as out:
                _write(out, index, store, start, end, workers(args))
        else:
            _write(sys.stdout.buffer, index, store, start, end, workers(args))
    finally:
        store.close()
    return 0
