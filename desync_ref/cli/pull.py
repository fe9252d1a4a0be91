"""``pull - - - STORE [STORE...]``: serve chunks over stdin/stdout with the casync protocol.

desync ``cmd/desync/pull.go`` (exactly ``- - - <store>``, a local store) and casync's
``verb_pull`` (``src/casync-tool.c``: ``pull BASE ARCHIVE INDEX WSTORE [RSTORE...]``, the
shape casync's client sends as the remote command). Any store location works (a directory,
``http(s)://``, a failover group ``a|b``); several are tried in order, as casync does.
Serving an index or an archive (the first three words) is not supported: they must be
``-``. Spec: ``spec/protocol.md``.
"""

from __future__ import annotations

import argparse
import sys

from desync_ref.cli.common import add_command, add_store_options, store_options, workers
from desync_ref.cli.usage import UsageError
from desync_ref.server.pull import serve
from desync_ref.stores.location import open_store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "pull", "Serve chunks via casync protocol over SSH")
    add_store_options(parser)
    parser.add_argument("base", help="'-' (serving a base directory is not supported)")
    parser.add_argument("archive", help="'-' (serving an archive is not supported)")
    parser.add_argument("index", help="'-' (serving an index is not supported)")
    parser.add_argument("stores", nargs="+", metavar="store", help="store(s) to serve chunks from")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for what in ("base", "archive", "index"):
        if getattr(args, what) not in ("-", ""):
            raise UsageError(f"pull: serving an {what} is not supported, expected '-'")
    options = store_options(args)
    args.store = args.stores  # workers() looks at the locations to pick a default
    stores = [open_store(location, options) for location in args.stores]
    try:
        serve(stores, sys.stdin.fileno(), sys.stdout.fileno(), workers=workers(args))
    finally:
        for store in stores:
            store.close()
    return 0
