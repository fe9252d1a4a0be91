"""The library's loggers, with ``logging`` imported only where it is in use.

``logging`` brings ``traceback``, ``linecache``, ``tokenize`` and ``textwrap`` with it: about
8 ms of every command's start-up (issue 14), for records that a run without ``--verbose``
drops anyway. A :class:`Logger` stands in for ``logging.getLogger(name)``: it hands a record
to that logger when the ``logging`` module is loaded (someone may have set it up: the
command line's ``--verbose``, an application, pytest), and drops it otherwise (nobody can
have asked for it then; where ``logging`` would have printed a warning to stderr through its
last-resort handler, nothing is printed).

The command line without ``--verbose`` does not import ``logging`` but registers, with
:func:`before_first_record`, how the library's loggers are silenced; that runs once, if a
record is emitted after something else (a store's client library) loaded ``logging``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging

_before_first: Callable[[], None] | None = None


def before_first_record(configure: Callable[[], None] | None) -> None:
    """Run ``configure`` (once) before the first record reaches ``logging``; None: nothing."""
    global _before_first
    _before_first = configure


def get_logger(name: str) -> Logger:
    return Logger(name)


class Logger:
    """``logging.getLogger(name)``, looked up at each record (see the module's docstring)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def _target(self) -> logging.Logger | None:
        global _before_first
        module = sys.modules.get("logging")
        if module is None:
            return None
        if _before_first is not None:
            configure, _before_first = _before_first, None
            configure()
        return module.getLogger(self.name)  # type: ignore[no-any-return]

    def _emit(self, level: str, message: str, args: tuple[object, ...]) -> None:
        if (target := self._target()) is not None:
            # stacklevel 3: the record names the caller of debug/info/..., not this module.
            getattr(target, level)(message, *args, stacklevel=3)

    def debug(self, message: str, *args: object) -> None:
        self._emit("debug", message, args)

    def info(self, message: str, *args: object) -> None:
        self._emit("info", message, args)

    def warning(self, message: str, *args: object) -> None:
        self._emit("warning", message, args)

    def error(self, message: str, *args: object) -> None:
        self._emit("error", message, args)
