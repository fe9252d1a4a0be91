"""``completion bash|zsh|fish``: the shell code that completes desync-ref's commands and
flags (desync's cobra gives the same command). Spec: ``spec/cli.md`` ("manpage and
completion").

Made by argcomplete (maintained, covers bash, zsh and fish): the script it prints calls
``desync-ref`` back with ``_ARGCOMPLETE`` set, and :func:`complete_if_asked` (run first
thing by ``main()``) answers from the full parser and exits. Load it with
``source <(desync-ref completion bash)``, or ``desync-ref completion fish | source``.
"""

from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType

from desync_ref.cli.common import add_command
from desync_ref.errors import DesyncRefError

SHELLS = ("bash", "zsh", "fish")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "completion", "Generate the shell completion script (bash, zsh, fish)")
    parser.add_argument("shell", choices=SHELLS, help="shell to complete in")
    parser.set_defaults(run=run)


def _argcomplete() -> ModuleType:
    try:
        import argcomplete
    except ImportError:
        raise DesyncRefError("completion needs argcomplete (Python package 'argcomplete')") from None
    return argcomplete


def run(args: argparse.Namespace) -> int:
    from desync_ref.cli import PROG

    script: str = _argcomplete().shellcode([PROG], shell=args.shell)
    sys.stdout.write(script)
    sys.stdout.flush()
    return 0


def complete_if_asked(parser_factory: object) -> None:
    """When the shell asks for completions (argcomplete's ``_ARGCOMPLETE``), answer from the
    parser with every command and exit; otherwise do nothing (and import nothing)."""
    if "_ARGCOMPLETE" not in os.environ or not callable(parser_factory):
        return
    _argcomplete().autocomplete(parser_factory([]))
