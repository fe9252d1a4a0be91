"""The command line's own error: arguments that make no sense together, or are missing;
and the unwinding of a run stopped by a signal.

Only ``cli/`` raises them; the library raises ``InvalidParameter`` and friends with the facts,
and the command line names the flag. Exit code 2 (``cli/__init__.py``); a run ended by
SIGINT exits 130, by SIGTERM 143 (spec/cli.md "Signals").
"""

from __future__ import annotations

import signal

from desync_ref.errors import DesyncRefError


class UsageError(DesyncRefError):
    """Arguments that make no sense on the command line (raised by cli/ only)."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread by the handler ``main()`` installs. A BaseException,
    as KeyboardInterrupt is for SIGINT: no ``except Exception`` on the way swallows it, and
    every ``finally`` and temp-file cleanup (``fs/atomic.py``) runs on the way out."""


def raise_for_signal(signum: int | None) -> None:
    """After a command that handles the signals itself (a mount) has unwound: end the run as
    if the signal had interrupted it (KeyboardInterrupt or Terminated); None does nothing."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    if signum == signal.SIGTERM:
        raise Terminated
