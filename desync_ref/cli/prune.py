"""``prune -s STORE [-y] INDEX...``: delete the chunks no index references (desync
``cmd/desync/prune.go``, ``local.go`` ``Prune``). Spec: ``spec/store.md``.

Only the store's own chunk files and stale temp files are removed. Without ``-y`` desync's
question is asked on stdout and answered on stdin: ``y`` prunes, ``n`` or an empty answer
leaves the store alone, anything else asks again.
"""

from __future__ import annotations

import argparse
import sys

from desync_ref.cli.common import add_command, add_store_options, load_index, store_options
from desync_ref.cli.usage import UsageError
from desync_ref.errors import DesyncRefError
from desync_ref.formats.index import Index
from desync_ref.operations.chunk_ids import unique_ids
from desync_ref.progress import Bar, progress
from desync_ref.stores.location import open_prune_store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "prune", "Remove unreferenced chunks from a store")
    parser.add_argument("-s", "--store", default="", help="store to prune")
    parser.add_argument("-y", "--yes", action="store_true",
                        help="do not ask for confirmation before deleting chunks")
    add_store_options(parser)
    parser.add_argument("indexes", nargs="+", metavar="index",
                        help="index file(s) ('-' for stdin)")
    parser.set_defaults(run=run)


def confirmed(unique: int, store: str) -> bool:
    """desync's prompt; True only for an explicit yes."""
    sys.stdout.write(
        f"Warning: The provided index files reference {unique} unique chunks. Are you sure\n"
        f"you want to delete all other chunks from '{store}'?\n"
    )
    while True:
        sys.stdout.write("[y/N]: ")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            raise DesyncRefError("no answer on stdin, nothing was deleted")
        answer = line.strip()
        if answer in ("y", "Y"):
            return True
        if answer in ("n", "N", ""):
            return False


def _read(args: argparse.Namespace, location: str, bar: Bar) -> Index:
    index = load_index(args, location)
    bar.update(1)
    return index


def run(args: argparse.Namespace) -> int:
    if not args.store:
        raise UsageError("no store provided")
    store = open_prune_store(args.store, store_options(args))
    try:
        bar = progress("Reading indexes", len(args.indexes))
        try:
            keep = unique_ids(_read(args, location, bar) for location in args.indexes)
        finally:
            bar.close()
        if args.yes or confirmed(len(keep), args.store):
            store.prune(set(keep))
    finally:
        store.close()
    return 0
