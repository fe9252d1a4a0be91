"""``list-chunks INDEX``: every chunk id, in index order (desync ``cmd/desync/list.go``).

Spec: ``spec/index.md``.
"""

from __future__ import annotations

import argparse
import sys

from desync_ref.cli.common import add_command, add_store_options, load_index


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "list-chunks", "List chunk IDs from an index")
    add_store_options(parser)
    parser.add_argument("index", help="index file ('-' for stdin)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    index = load_index(args, args.index)
    sys.stdout.write("".join(f"{chunk.id.hex()}\n" for chunk in index.chunks))
    sys.stdout.flush()
    return 0
