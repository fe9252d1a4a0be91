"""The ``desync-ref`` command line: desync's commands and flags.

Each command lives in its own module exposing ``register(subparsers)``; errors from the
library become one line on stderr and an exit code here, and nowhere else.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from desync_ref import __version__, kernels
from desync_ref.cli import cache as cache_cmd
from desync_ref.cli import cat as cat_cmd
from desync_ref.cli import chop as chop_cmd
from desync_ref.cli import chunk as chunk_cmd
from desync_ref.cli import extract as extract_cmd
from desync_ref.cli import info as info_cmd
from desync_ref.cli import inspect_chunks as inspect_chunks_cmd
from desync_ref.cli import list_chunks as list_chunks_cmd
from desync_ref.cli import make
from desync_ref.cli import prune as prune_cmd
from desync_ref.cli import verify as verify_cmd
from desync_ref.cli import verify_index as verify_index_cmd
from desync_ref.cli.common import add_global_options
from desync_ref.errors import (
    ChunkInvalid,
    ChunkMissing,
    DesyncRefError,
    InvalidFormat,
    UsageError,
)

PROG = "desync-ref"
COMMANDS = (
    make,
    extract_cmd,
    cat_cmd,
    cache_cmd,
    chop_cmd,
    chunk_cmd,
    info_cmd,
    inspect_chunks_cmd,
    list_chunks_cmd,
    prune_cmd,
    verify_cmd,
    verify_index_cmd,
)

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def version_text() -> str:
    return f"{PROG} {__version__} ({kernels.backend()})"


class _Parser(argparse.ArgumentParser):
    """Bad arguments raise UsageError, so they too end as one line on stderr."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        raise UsageError(f"{command}: {message}" if command else message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="casync/desync reference tool")
    parser.add_argument("--version", action="version", version=version_text())
    add_global_options(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def _message(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return " ".join(text.split())  # one line, always


def main(argv: Sequence[str] | None = None) -> int:
    # A closed pipe (``| head``) ends the run quietly, as in any Unix filter.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        args = build_parser().parse_args(argv)
        result: int = args.run(args)
        return result
    except UsageError as exc:
        print(f"{PROG}: {_message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except (ChunkMissing, ChunkInvalid, InvalidFormat, DesyncRefError) as exc:
        print(f"{PROG}: {_message(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{PROG}: {exc.strerror or _message(exc)}{where}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
