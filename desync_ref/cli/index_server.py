"""``index-server -s INDEX_STORE [-l ADDR]... [-w] [--cert F --key F] [--authorization V] ...``.

desync ``cmd/desync/indexserver.go``: serves the indexes of a local directory or of an
http(s) index store over HTTP(S).

Spec: spec/http.md.
"""

from __future__ import annotations

import argparse

from desync_ref.cli.common import add_command, store_options
from desync_ref.cli.server_options import (
    add_server_options,
    server_options,
    validate_server_options,
)
from desync_ref.cli.usage import UsageError
from desync_ref.stores.index_stores import open_index_store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "index-server", "Server for indexes over HTTP(S)")
    parser.add_argument("-s", "--store", default="", help="upstream index store (directory or URL)")
    parser.add_argument("-w", "--writable", "--writeable", action="store_true", help="support writing")
    add_server_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from desync_ref.server.base import Service, run_server  # aiohttp: loaded only to serve
    from desync_ref.server.indexes import PROG, IndexHandler

    serving = server_options(args)
    validate_server_options(serving)
    if not args.store:
        raise UsageError("no store provided")
    store = open_index_store(args.store, store_options(args))
    handler = IndexHandler(store, writable=args.writable, authorization=serving.authorization)
    try:
        return run_server(lambda: Service(handler), serving, PROG)
    finally:
        store.close()
