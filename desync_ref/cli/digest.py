"""``digest [-s STORE]... [-c CACHE] [--with FLAG]... [--without FLAG]... [-x] [INPUT]``:
print casync's digest of a blob, a catar, a caibx/caidx (of what it describes) or a
directory (of its catar), as casync's ``digest`` prints it (``verb_digest``,
``src/casync-tool.c``). Spec: ``spec/cli.md`` § "digest".
"""

from __future__ import annotations

import argparse
import os
import stat
import sys

from desync_ref.cli.common import (
    AppendSlice,
    add_command,
    add_store_options,
    make_digest,
    source_store,
    store_options,
    workers,
)
from desync_ref.cli.tar import parse_flag_names
from desync_ref.cli.usage import UsageError
from desync_ref.errors import DesyncRefError
from desync_ref.operations import digest as op
from desync_ref.operations.files import STDIO, read_index
from desync_ref.operations.tar import archive_flags
from desync_ref.stores.index_stores import is_index_url

# casync picks the kind of input from the name's suffix (ca_locator_has_suffix), then from
# the file type: a directory, or a blob (regular file or block device).
ARCHIVE, ARCHIVE_INDEX, BLOB_INDEX = ".catar", ".caidx", ".caibx"
# casync's store when none is given: $CASYNC_STORE, else default.castr beside the index
# (set_default_store).
DEFAULT_STORE_ENV, DEFAULT_STORE_NAME = "CASYNC_STORE", "default.castr"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "digest",
                         "Print casync's digest of a blob, archive, index or directory")
    parser.add_argument("-s", "--store", action=AppendSlice, default=[],
                        help="source store(s) for an index (default: $CASYNC_STORE, else "
                        "default.castr beside the index, as casync)")
    parser.add_argument("-c", "--cache", default="", help="store to be used as cache")
    parser.add_argument("-x", "--one-file-system", action="store_true",
                        help="don't cross filesystem boundaries (directory)")
    parser.add_argument("--with", dest="with_flags", action="append", default=[],
                        metavar="FLAG", help="casync feature flag to use (directory; replaces "
                        "the default set of tar)")
    parser.add_argument("--without", dest="without_flags", action="append", default=[],
                        metavar="FLAG", help="casync feature flag to leave out (directory)")
    add_store_options(parser)
    parser.add_argument("input", nargs="?", default=".",
                        help="blob, .catar, .caibx, .caidx or directory ('-' for stdin, a blob; "
                        "default: the current directory)")
    parser.set_defaults(run=run)


def _index_digest(args: argparse.Namespace, archive: bool) -> bytes:
    index = read_index(args.input, None, store_options(args))  # casync ignores --digest here
    if not args.store:
        if args.input == STDIO or is_index_url(args.input):
            raise UsageError("no store given (use -s)")
        args.store = [os.environ.get(DEFAULT_STORE_ENV)
                      or os.path.join(os.path.dirname(args.input), DEFAULT_STORE_NAME)]
    store = source_store(args, index)
    try:
        return op.digest_index(index, store, archive=archive, workers=workers(args))
    finally:
        store.close()


def _digest(args: argparse.Namespace) -> bytes:
    name: str = args.input
    if name == STDIO:
        return op.digest_stream(op.read_blocks(sys.stdin.buffer.read), make_digest(args))
    if name.endswith(ARCHIVE_INDEX) or name.endswith(BLOB_INDEX):
        return _index_digest(args, archive=name.endswith(ARCHIVE_INDEX))
    mode = os.stat(name).st_mode
    if stat.S_ISDIR(mode):
        if name.endswith(ARCHIVE):
            raise DesyncRefError(f"{name} is a directory, not an archive")
        flags = archive_flags(parse_flag_names(args.with_flags),
                              parse_flag_names(args.without_flags), digest=make_digest(args),
                              one_file_system=args.one_file_system)
        return op.digest_directory(name, flags)
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        raise DesyncRefError(f"{name} is neither a directory, a regular file, nor a block device")
    with open(name, "rb") as stream:
        blocks = op.read_blocks(stream.read)
        if name.endswith(ARCHIVE):
            return op.digest_archive(blocks)
        return op.digest_stream(blocks, make_digest(args))


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(_digest(args).hex() + "\n")
    sys.stdout.flush()
    return 0
