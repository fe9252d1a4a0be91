"""The C library this process already runs on, for the few calls Python's ``os`` lacks:
``fallocate`` (fs/holes.py), ``fnmatch`` (fs/exclude.py), ``prctl``, ``mallopt`` and
``sync_file_range`` (operations/parallel.py).

It is opened by ``dlopen(NULL)``, never found by name: ``ctypes.util.find_library("c")``
runs ldconfig in a child process. It is opened on first use, once, so a run that calls
none of them does not load ctypes. Spec: spec/store.md (what the workers ask of glibc),
spec/extract.md § Holes.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ctypes


@functools.cache
def libc() -> ctypes.CDLL:
    """The process's C library, errno kept for ``ctypes.get_errno()``."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True)
