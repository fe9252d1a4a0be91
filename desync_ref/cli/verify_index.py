"""``verify-index [-n N] INDEX FILE``: check that FILE is what INDEX describes (desync
``cmd/desync/verifyindex.go``, ``verifyindex.go``). Spec: ``spec/index.md``.
"""

from __future__ import annotations

import argparse

from desync_ref.cli.common import add_command, add_store_options, load_index, workers
from desync_ref.operations.verify import verify_index
from desync_ref.progress import progress


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "verify-index", "Verify an index matches a file")
    add_store_options(parser)
    parser.add_argument("index", help="index file ('-' for stdin)")
    parser.add_argument("file", help="file to check against the index")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    index = load_index(args, args.index)
    verify_index(index, args.file, workers=workers(args), progress=progress)
    return 0
