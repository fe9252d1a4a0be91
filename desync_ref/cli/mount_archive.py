"""``mount-archive [-s STORE]... [-c CACHE] ARCHIVE|CAIDX MOUNTPOINT``: a catar's tree,
read-only, over FUSE (casync's ``casync mount``, ``src/casync-tool.c`` verb ``mount``).
Spec: ``spec/mount-tree.md``.

A ``.caidx`` needs ``-s``: its archive stream comes chunk by chunk from the stores; any
other ARCHIVE is a local catar file read in place.
"""

from __future__ import annotations

import argparse

from desync_ref.cli.common import (
    AppendSlice,
    add_command,
    add_store_options,
    load_index,
    source_store,
    workers,
)
from desync_ref.cli.usage import UsageError, raise_for_signal


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "mount-archive",
                         "Mount a catar or caidx as a read-only directory tree (FUSE)")
    parser.add_argument("-s", "--store", action=AppendSlice, default=[],
                        help="source store(s), for a caidx")
    parser.add_argument("-c", "--cache", default="", help="store to be used as cache")
    add_store_options(parser)
    parser.add_argument("archive", help="catar file, or caidx with -s")
    parser.add_argument("mountpoint", help="directory to mount the tree on")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from desync_ref.mount.runner import serve
    from desync_ref.mount.tree import tree_operations_for_caidx, tree_operations_for_catar

    if args.archive.endswith(".caidx"):
        if not args.store:
            raise UsageError("a caidx needs at least one store (-s <location>)")
        index = load_index(args, args.archive)
        operations = tree_operations_for_caidx(index, source_store(args, index),
                                               workers=workers(args))
    else:
        operations = tree_operations_for_catar(args.archive)
    raise_for_signal(serve(operations, args.mountpoint))  # SIGINT/SIGTERM: exit 130/143
    return 0
