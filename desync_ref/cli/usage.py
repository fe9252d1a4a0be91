"""The command line's own error: arguments that make no sense together, or are missing.

Only ``cli/`` raises it; the library raises ``InvalidParameter`` and friends with the facts,
and the command line names the flag. Exit code 2 (``cli/__init__.py``).
"""

from __future__ import annotations

from desync_ref.errors import DesyncRefError


class UsageError(DesyncRefError):
    """Arguments that make no sense on the command line (raised by cli/ only)."""
