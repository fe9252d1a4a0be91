"""``config [-w]``: print the effective configuration, or write it to the config file.

desync ``cmd/desync/config.go`` (``runConfig``): JSON with two-space indent; ``-w`` writes it
to ``--config FILE`` or ``$HOME/.config/desync/config.json`` and says so on stdout.

Spec: spec/http.md (config file).
"""

from __future__ import annotations

import argparse
import sys

from desync_ref.cli.common import add_command, command_config
from desync_ref.config import write_config


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(subparsers, "config", "Show or write config file")
    parser.add_argument("-w", "--write", action="store_true", help="write current configuration to file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = command_config(args)
    if args.write:
        try:
            write_config(config)
        except OSError as exc:
            where = exc.filename or config.path
            raise OSError(exc.errno, f"cannot write config file: {exc.strerror}", str(where)) from None
        print(f"Writing config to {config.path}")
        return 0
    sys.stdout.write(config.to_json(shown=True))
    sys.stdout.write("\n")
    return 0
