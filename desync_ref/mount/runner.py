"""Stand-in for the mount runner (spec/mount.md): mounts a fusepy ``Operations`` read-only
and serves it until unmounted. The full runner (reload, signals, messages) is the blob-mount
work's; this minimal version only keeps the tree mount usable on its own branch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def serve(operations: Any, mountpoint: str, *, reload: Callable[[], None] | None = None,
          foreground: bool = True, nothreads: bool = False) -> None:
    """Mount ``operations`` at ``mountpoint`` and serve requests until it is unmounted.
    ``reload`` is accepted for the full runner's signature and not used here."""
    from fuse import FUSE  # type: ignore[import-untyped]

    FUSE(operations, mountpoint, foreground=foreground, nothreads=nothreads, ro=True,
         default_permissions=True, fsname="desync-ref", subtype="desync-ref")
