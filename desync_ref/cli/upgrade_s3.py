"""``upgrade-s3 -s s3+http(s)://HOST/BUCKET[/PREFIX]``: convert an S3 store from the flat
layout of desync before April 2018 to the nested one (desync ``cmd/desync/upgrade-s3.go``,
in desync until 2018; the first desync README: "To convert an existing s3 store from the
old format, a command ``upgrade-s3`` is available"). Spec: ``spec/s3.md`` ("upgrade-s3").

Each move is printed as ``<old key> -> <new key>`` on stdout as it is made, then a summary
line; desync printed nothing. Rerunning is safe (``stores/s3_upgrade.py``).
"""

from __future__ import annotations

import argparse
import sys

from desync_ref.cli.common import add_command, add_remote_options, store_options
from desync_ref.cli.usage import UsageError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "upgrade-s3",
                         "Convert an S3 store from the flat layout (before 2018) to <xxxx>/<id>.cacnk")
    parser.add_argument("-s", "--store", default="", help="S3 store (s3+http:// or s3+https://)")
    add_remote_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.store:
        raise UsageError("no store provided")
    if not args.store.lower().startswith(("s3+http://", "s3+https://")):
        raise UsageError(f"upgrade-s3 works on S3 stores (s3+http:// or s3+https://), not '{args.store}'")
    # Imported here: botocore is loaded only by the commands that use S3.
    from desync_ref.stores.s3 import open_chunk_store
    from desync_ref.stores.s3_upgrade import upgrade_flat_layout

    store = open_chunk_store(args.store, store_options(args))

    def say(old: str, new: str) -> None:
        sys.stdout.write(f"{old} -> {new}\n")
        sys.stdout.flush()

    try:
        report = upgrade_flat_layout(store, on_move=say)
    finally:
        store.close()
    print(f"moved {len(report.moved)} chunk(s) to the nested layout")
    return 0
