"""``untar [-i -s STORE [-c CACHE]] [--no-same-owner] [--no-same-permissions]
[--punch-holes=BOOL] [--output-format disk|gnu-tar] CATAR|CAIDX TARGET|-`` (spec/catar.md).

``--punch-holes`` is casync's (``casync --help``: ``--punch-holes=no``): zero blocks of
payloads become holes, on by default."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from desync_ref.cli.common import (
    AppendSlice,
    _bool_flag,
    add_command,
    add_store_options,
    load_index,
    source_store,
    workers,
)
from desync_ref.cli.usage import UsageError

if TYPE_CHECKING:
    from desync_ref.operations.untar import Sink


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "untar", "Extract a directory tree from a catar or caidx")
    parser.add_argument("-s", "--store", action=AppendSlice, help="source store(s), used with -i")
    parser.add_argument("-c", "--cache", help="store to be used as cache")
    parser.add_argument("-i", "--index", action="store_true",
                        help="read index file (caidx), not catar")
    parser.add_argument("--no-same-owner", action="store_true",
                        help="extract files as current user")
    parser.add_argument("--no-same-permissions", action="store_true",
                        help="use current user's umask instead of what is in the archive")
    parser.add_argument("--punch-holes", type=_bool_flag, default=True, metavar="BOOL",
                        help="write runs of zeros as holes (sparse files), as casync does; "
                             "'no' writes every byte (default yes)")
    parser.add_argument("--output-format", choices=("disk", "gnu-tar"), default="disk",
                        help="output format, 'disk' or 'gnu-tar'")
    add_store_options(parser)
    parser.add_argument("archive", help="catar, or caidx with -i ('-' for stdin)")
    parser.add_argument("target", help="target directory, or '-' for stdout with gnu-tar")
    parser.set_defaults(run=run)


def _untar(args: argparse.Namespace, sink: Sink) -> None:
    from desync_ref.operations.untar import walk_file, walk_index
    from desync_ref.progress import progress

    if not args.index:
        walk_file(args.archive, sink, progress=progress)
        return
    index = load_index(args, args.archive)
    store = source_store(args, index)
    try:
        walk_index(index, store, sink, workers=workers(args), progress=progress)
    finally:
        store.close()


def run(args: argparse.Namespace) -> int:
    if args.index and not args.store:
        raise UsageError("-i requires at least one store (-s <location>)")
    # Imported here: parsing the command line does not load the catar reader and writers.
    from desync_ref.formats.gnutar import GnuTarSink
    from desync_ref.fs.atomic import atomic_output
    from desync_ref.fs.write import DiskSink

    if args.output_format == "gnu-tar":
        if args.target == "-":
            _untar(args, GnuTarSink(sys.stdout.buffer))
        else:
            with atomic_output(args.target) as out:
                _untar(args, GnuTarSink(out))
        return 0
    if args.target == "-":
        raise UsageError("'-' as target needs --output-format gnu-tar")
    # A target this run creates is removed again if the run fails, so a refused archive
    # leaves nothing behind; an existing target is never deleted.
    created = not os.path.lexists(args.target)
    try:
        _untar(args, DiskSink(args.target, same_owner=not args.no_same_owner,
                              same_permissions=not args.no_same_permissions,
                              punch_holes=args.punch_holes))
    except BaseException:
        if created:
            import shutil

            shutil.rmtree(args.target, ignore_errors=True)
        raise
    return 0
