"""Running a FUSE mount until it is unmounted: fusepy's ``FUSE`` in a worker thread, the
signals in the main thread.

libfuse's ``fuse_main`` blocks in C for as long as the mount lives, so a Python signal
handler would not run before it returns; it runs in a worker thread instead, and the main
thread waits, handling SIGHUP (``reload``) and SIGINT/SIGTERM (unmount with ``fusermount
-u``, which ends ``fuse_main``). libfuse installs its own handlers only on signals left at
their default (``fuse_set_signal_handlers``), so the ones installed here stay in charge.
desync does the same with go-fuse: SIGINT/SIGTERM cancel the context, which unmounts
(``MountIndex`` in ``mount-index.go``), and the command returns without error. Here
:func:`serve` returns the signal that ended the mount, and the command line exits with
128 + that signal once everything is closed (130/143, as every other command).

Spec: spec/mount.md (signals, mount options).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from desync_ref.errors import DesyncRefError, InvalidParameter
from desync_ref.log import get_logger

log = get_logger(__name__)

# After an unmount, the FUSE loop ends within this many seconds, else the unmount is made
# lazy (a reader keeps the mount busy: it is detached and ends when the reader lets go).
UNMOUNT_WAIT = 5.0

FUSEPY_MISSING = ("mounting needs fusepy (the 'fuse' extra: pip install 'desync-ref[fuse]') "
                  "and libfuse2 (Debian package libfuse2)")


def load_fusepy() -> Any:
    """fusepy's module; it loads libfuse2 as it is imported."""
    try:
        import fuse  # type: ignore[import-untyped]
    except (ImportError, OSError) as exc:  # no fusepy, or no libfuse2 for it
        raise DesyncRefError(f"{FUSEPY_MISSING}: {exc}") from None
    return fuse


def _fusermount() -> str:
    for name in ("fusermount", "fusermount3"):
        path = shutil.which(name)
        if path is not None:
            return path
    raise DesyncRefError("fusermount is not installed (Debian package fuse3)")


def unmount(mountpoint: str, *, lazy: bool = False) -> bool:
    """``fusermount -u [-z]``; whether it succeeded."""
    command = [_fusermount(), "-u", *(["-z"] if lazy else []), mountpoint]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        log.info("%s: %s", " ".join(command), result.stderr.strip())
    return result.returncode == 0


def check_mountpoint(mountpoint: str) -> None:
    """An empty directory (callers check before they set anything up)."""
    if not os.path.isdir(mountpoint):
        raise InvalidParameter(f"mount point {mountpoint} is not a directory", parameter="mountpoint")
    if os.listdir(mountpoint):  # libfuse2 refuses it too, in several lines of its own
        raise InvalidParameter(f"mount point {mountpoint} is not empty", parameter="mountpoint")


def serve(operations: object, mountpoint: str, *, reload: Callable[[], None] | None = None,
          foreground: bool = True, nothreads: bool = False) -> int | None:
    """Mount ``operations`` (fusepy operations) read-only on ``mountpoint``; return once it
    is unmounted: the signal that unmounted it (SIGINT/SIGTERM), or None when it was
    ``fusermount -u`` from outside. SIGHUP calls ``reload``. Must be called from the main
    thread."""
    if not foreground:
        raise InvalidParameter("mounting in the background is not supported", parameter="foreground")
    check_mountpoint(mountpoint)
    fuse = load_fusepy()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fuse.FUSE(operations, mountpoint, foreground=True, nothreads=nothreads, ro=True,
                      fsname=f"desync-ref:{type(operations).__name__}", subtype="desync-ref",
                      default_permissions=True)
        except BaseException as exc:  # handed to the main thread
            failure.append(exc)

    wake = threading.Event()
    pending: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)
        wake.set()

    watched = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, on_signal) for sig in watched}
    worker = threading.Thread(target=run, name="fuse-loop", daemon=True)
    try:
        worker.start()
        stopping: int | None = None
        while worker.is_alive():
            wake.wait(0.25)
            wake.clear()
            while pending:
                signum = pending.pop(0)
                if signum == signal.SIGHUP:
                    if reload is not None:
                        reload()
                elif stopping is None:
                    log.info("signal %d: unmounting %s", signum, mountpoint)
                    stopping = signum
                    if not unmount(mountpoint):
                        unmount(mountpoint, lazy=True)
            if stopping is not None:
                worker.join(UNMOUNT_WAIT)
                if worker.is_alive():
                    unmount(mountpoint, lazy=True)
                    worker.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure:
        exc = failure[0]
        if isinstance(exc, RuntimeError):  # fuse_main's non-zero status: libfuse said why
            raise DesyncRefError(f"cannot mount {mountpoint} (libfuse status {exc})") from None
        raise exc
    return stopping
