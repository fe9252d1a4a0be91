"""``manpage [DIR]``: a man page for the tool and one for each command, made from the
command-line parser itself (desync ``cmd/desync/manpage.go`` does the same from its cobra
commands with ``cobra/doc``). Spec: ``spec/cli.md`` ("manpage and completion").

The pages are formatted by argparse-manpage (``argparse_manpage.manpage.Manpage``, a
maintained library that turns an ``ArgumentParser`` into roff), so they follow the flags as
they are: ``desync-ref.1`` and ``desync-ref-<command>.1``, written under temp names and
renamed. Without DIR they go to the current directory (desync's default is also ".").
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from desync_ref.cli.common import add_command
from desync_ref.errors import DesyncRefError
from desync_ref.fs.atomic import atomic_output

SECTION = "1"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "manpage", "Generate man pages for every command")
    parser.add_argument("directory", nargs="?", default=".", help="directory to write the pages to")
    parser.set_defaults(run=run)


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            choices: dict[str, argparse.ArgumentParser] = action.choices
            return choices
    return {}


def _page(parser: argparse.ArgumentParser, name: str, usage_prog: str, version: str) -> str:
    """The roff page ``name`` for ``parser``; its synopsis reads ``usage_prog ...``."""
    try:
        from argparse_manpage.manpage import Manpage  # type: ignore[import-untyped]
    except ImportError:
        raise DesyncRefError("manpage needs argparse-manpage (Python package 'argparse-manpage')") from None
    # The date comes from SOURCE_DATE_EPOCH when set (argparse-manpage), for reproducible pages.
    data: dict[str, Any] = {"project_name": "desync-ref", "version": version,
                            "manual_title": "desync-ref manual", "manual_section": SECTION,
                            "description": parser.description or ""}
    saved = parser.prog
    parser.prog = usage_prog
    try:
        page = Manpage(parser, _data=data)
    finally:
        parser.prog = saved
    page.prog = name  # title and NAME: one word, as git-commit(1)
    # argparse-manpage leaves a help line starting with "'" (a roff control character, e.g.
    # pull's "'-' (serving ... not supported)") unescaped: \& makes it text.
    return "".join("\\&" + line if line.startswith("'") else line
                   for line in str(page).splitlines(keepends=True))


def run(args: argparse.Namespace) -> int:
    from desync_ref import __version__
    from desync_ref.cli import PROG, build_parser

    if not os.path.isdir(args.directory):
        raise DesyncRefError(f"{args.directory} is not a directory")
    top = build_parser([])  # every command
    pages = {PROG: top, **{f"{PROG}-{name}": sub for name, sub in _commands(top).items()}}
    for name, parser in pages.items():
        usage_prog = PROG if name == PROG else f"{PROG} {name.removeprefix(PROG + '-')}"
        text = _page(parser, name, usage_prog, __version__)
        with atomic_output(os.path.join(args.directory, f"{name}.{SECTION}")) as out:
            out.write(text.encode())
    return 0
