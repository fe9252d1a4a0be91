"""The ``desync-ref`` command line: desync's commands and flags.

Each command lives in its own module exposing ``register(subparsers)``; errors from the
library become one line on stderr and an exit code here, and nowhere else.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from desync_ref import __version__, kernels
from desync_ref.cli import cache as cache_cmd
from desync_ref.cli import cat as cat_cmd
from desync_ref.cli import chop as chop_cmd
from desync_ref.cli import chunk as chunk_cmd
from desync_ref.cli import chunk_server as chunk_server_cmd
from desync_ref.cli import config_cmd as config_command
from desync_ref.cli import extract as extract_cmd
from desync_ref.cli import index_server as index_server_cmd
from desync_ref.cli import info as info_cmd
from desync_ref.cli import inspect_chunks as inspect_chunks_cmd
from desync_ref.cli import list_chunks as list_chunks_cmd
from desync_ref.cli import make
from desync_ref.cli import mtree as mtree_cmd
from desync_ref.cli import prune as prune_cmd
from desync_ref.cli import tar as tar_cmd
from desync_ref.cli import untar as untar_cmd
from desync_ref.cli import verify as verify_cmd
from desync_ref.cli import verify_index as verify_index_cmd
from desync_ref.cli.common import add_global_options, command_config
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
    chunk_server_cmd,
    config_command,
    index_server_cmd,
    info_cmd,
    inspect_chunks_cmd,
    list_chunks_cmd,
    prune_cmd,
    verify_cmd,
    verify_index_cmd,
    tar_cmd,
    untar_cmd,
    mtree_cmd,
)

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell shows for a filter cut short


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


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    # A closed pipe (``| head``) ends the run quietly, as in any Unix filter. SIGPIPE itself
    # stays ignored: a server that closes a socket (a refused TLS client certificate, say)
    # must be an error the HTTP client reports, not a silent death.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        args = build_parser().parse_args(argv)
        command_config(args)  # a bad config file stops every command, as in desync
        result: int = args.run(args)
        return result
    except UsageError as exc:
        print(f"{PROG}: {_message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except (ChunkMissing, ChunkInvalid, InvalidFormat, DesyncRefError) as exc:
        print(f"{PROG}: {_message(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{PROG}: {exc.strerror or _message(exc)}{where}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
