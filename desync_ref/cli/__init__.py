"""The ``desync-ref`` command line: desync's commands and flags.

Each command lives in its own module exposing ``register(subparsers)``; errors from the
library become one line on stderr and an exit code here, and nowhere else.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from desync_ref import __version__, kernels
from desync_ref.cli.usage import Terminated, UsageError
from desync_ref.errors import (
    ChunkInvalid,
    ChunkMissing,
    DesyncRefError,
    InvalidFormat,
    InvalidParameter,
    ServerSetupError,
    UnsupportedEntry,
)

if TYPE_CHECKING:
    import logging
    from types import FrameType

PROG = "desync-ref"
# Command name → module. Only the module of the command being run is imported, so a run
# does not pay for the HTTP client, the catar code and the servers it does not use.
COMMANDS: dict[str, str] = {
    "make": "make",
    "extract": "extract",
    "cat": "cat",
    "cache": "cache",
    "chop": "chop",
    "chunk": "chunk",
    "chunk-server": "chunk_server",
    "config": "config_cmd",
    "dump": "dump",
    "index-server": "index_server",
    "info": "info",
    "inspect-chunks": "inspect_chunks",
    "list-chunks": "list_chunks",
    "prune": "prune",
    "pull": "pull",
    "verify": "verify",
    "verify-index": "verify_index",
    "tar": "tar",
    "untar": "untar",
    "mtree": "mtree",
    "mount-index": "mount_index",
    "mount-archive": "mount_archive",
    "diff": "diff",
    "digest": "digest",
    "upgrade-s3": "upgrade_s3",
    "manpage": "manpage",
    "completion": "completion",
}
# Global options that take a value (the value is not the command name).
_GLOBAL_WITH_VALUE = ("--config", "--digest")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell shows for a filter cut short


def version_text() -> str:
    return f"{PROG} {__version__} ({kernels.backend()})"


class _Version(argparse._VersionAction):
    """``--version``, its text made when asked for: naming the kernels' backend loads them,
    which a run that does not use them (cat, verify, ...) need not pay for."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        self.version = version_text()
        super().__call__(parser, namespace, values, option_string)


class _Formatter(argparse.HelpFormatter):
    """argparse's help layout, its width found without ``shutil``: argparse makes a
    formatter for every argument added, and the default one imports ``shutil`` (with the
    compression modules) for ``get_terminal_size``, ~3 ms of every start (issue 14). The
    width is the one ``shutil.get_terminal_size`` gives: ``COLUMNS``, else the terminal of
    stdout, else 80; less 2, as argparse takes it."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _terminal_columns() -> int:
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _Parser(argparse.ArgumentParser):
    """Bad arguments raise UsageError, so they too end as one line on stderr."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        raise UsageError(f"{command}: {message}" if command else message)


def _command_in(argv: Sequence[str]) -> str | None:
    """The command word of ``argv``, skipping global options placed before it."""
    words = iter(argv)
    for word in words:
        if word in _GLOBAL_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _version_first(argv: Sequence[str]) -> bool:
    """Whether argparse meets ``--version`` (or an abbreviation only it has) before a command
    word and before any ``-h``/``--help``: then it prints the version and exits, and the
    commands' parsers would never be used. Anything unusual answers False (build them all)."""
    words = iter(argv)
    for word in words:
        if word in _GLOBAL_WITH_VALUE:
            next(words, None)
        elif word.startswith("-h") or (len(word) >= 3 and "--help".startswith(word)):
            return False
        elif len(word) >= len("--vers") and "--version".startswith(word):
            return True
        elif word == "--" or not word.startswith("--"):
            return False
    return False


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    # Imported here, not at the top: importing the cli package (cli.usage) stays cheap.
    from desync_ref.cli.common import add_global_options

    parser = _Parser(prog=PROG, description="casync/desync reference tool")
    parser.add_argument("--version", action=_Version)
    add_global_options(parser, top_level=True)
    # prog given: argparse would otherwise build a help formatter (and import shutil) to
    # compute this same "desync-ref" on every start.
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", prog=PROG)
    subparsers.required = True
    words = sys.argv[1:] if argv is None else argv
    wanted = _command_in(words)
    # Help, or an unknown command whose error lists the choices, needs every command;
    # ``--version`` needs none (argparse prints it and exits as soon as it meets the flag).
    if _version_first(words):
        names = []
    elif wanted in COMMANDS:
        names = [wanted]
    else:
        names = list(COMMANDS)
    for name in names:
        importlib.import_module(f"desync_ref.cli.{COMMANDS[name]}").register(subparsers)
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


def setup_logging(verbose: bool) -> None:
    """``--verbose``: the library's log records (loggers under ``desync_ref``), one line each
    on stderr (desync turns its logrus logger on at debug level the same way, ``setVerbose``
    in ``cmd/desync/config.go``). Without it nothing is logged: stderr stays as it was."""
    from desync_ref import log as library_log

    if not verbose:
        # Without --verbose, logging is not even imported (desync_ref/log.py): the library's
        # loggers are silenced before their first record, if something else loads it.
        library_log.before_first_record(_silence_library)
        return
    library_log.before_first_record(None)
    import logging

    logger = _library_logger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False


def _silence_library() -> None:
    """The library's records go nowhere (and not to logging's last-resort stderr handler)."""
    import logging

    logger = _library_logger()
    logger.addHandler(logging.NullHandler())
    logger.propagate = False


def _library_logger() -> logging.Logger:
    """The library's logger (``desync_ref``), without the handlers an earlier ``main()`` in
    this process gave it."""
    import logging

    logger = logging.getLogger("desync_ref")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    return logger


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds the run as SIGINT does (KeyboardInterrupt): temp files go, outputs
    never appear under their final name. A second SIGTERM while unwinding is ignored, so the
    cleanup itself is not cut short (SIGKILL remains for a run that will not end)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


def _install_signal_handlers() -> None:
    # A closed pipe (``| head``) ends the run quietly, as in any Unix filter. SIGPIPE itself
    # stays ignored: a server that closes a socket (a refused TLS client certificate, say)
    # must be an error the HTTP client reports, not a silent death.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():  # handlers live there only
        _install_signal_handlers()
    try:
        from desync_ref.cli.common import command_config

        if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (cli/completion.py)
            from desync_ref.cli.completion import complete_if_asked

            complete_if_asked(build_parser)
        args = build_parser(argv).parse_args(argv)
        setup_logging(bool(getattr(args, "verbose", False)))
        command_config(args)  # a bad config file stops every command, as in desync
        result: int = args.run(args)
        return result
    except (UsageError, InvalidParameter, UnsupportedEntry, ServerSetupError) as exc:
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
    except Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return EXIT_TERMINATED


def entry() -> NoReturn:
    """The ``desync-ref`` command and ``python -m desync_ref``: :func:`main`, then the end of
    the process without the interpreter's teardown when nothing is left to it.

    Tearing down the modules and objects of a finished run takes 15-20 ms (measured on an
    extract of 512 MiB, a tenth of its start-up), and nothing in it is work: every file is
    closed, every temp file gone and every worker reaped by the time ``main`` returns. So
    the streams are flushed here and the process ends with ``os._exit``. A thread still
    running (a library's non-daemon thread) keeps the regular exit, which waits for it.
    mypy ends its runs the same way (``mypy.util.hard_exit``)."""
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # a reader that went away: the quiet end of a filter
        _quiet_stdout()
        code = EXIT_BROKEN_PIPE
    except (OSError, ValueError):
        code = code or EXIT_ERROR
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    if threading.active_count() == 1:
        os._exit(code)
    sys.exit(code)

