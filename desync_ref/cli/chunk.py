"""``chunk [-S START] [-m MIN:AVG:MAX] FILE``: print ``start<TAB>length<TAB>id`` for each
chunk the file would be cut into, from byte START on (desync ``cmd/desync/chunk.go``).
Spec: ``spec/chunker.md``.
"""

from __future__ import annotations

import argparse
import sys

from desync_ref.chunking import iter_chunks
from desync_ref.cli.common import add_chunk_size_option, add_command, chunk_sizes, make_digest
from desync_ref.cli.usage import UsageError
from desync_ref.errors import DesyncRefError
from desync_ref.formats.chunk import digest_function


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "chunk",
                         "Chunk input file and print chunk boundaries and IDs")
    parser.add_argument("-S", "--start", type=int, default=0,
                        help="starting position in bytes")
    add_chunk_size_option(parser)
    parser.add_argument("file", help="file to chunk")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.start < 0:
        raise UsageError(f"invalid start position {args.start}")
    sizes = chunk_sizes(args)
    digest = digest_function(make_digest(args))
    out = sys.stdout
    try:
        with open(args.file, "rb") as stream:
            stream.seek(args.start)
            for start, data in iter_chunks(stream, sizes):
                out.write(f"{start + args.start}\t{len(data)}\t{digest(data).hex()}\n")
    except IsADirectoryError:
        raise DesyncRefError(f"{args.file} is a directory") from None
    out.flush()
    return 0
