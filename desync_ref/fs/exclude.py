"""``.caexclude`` files: which children of a directory the encoder leaves out.

Spec: ``spec/catar.md`` § "Exclusion files". Follows casync ``src/camatch.c``
(``parse_line``, ``ca_match_new_from_file``, ``ca_match_test``) as driven by
``src/caencoder.c`` (``ca_encoder_node_load_exclude_file``,
``ca_encoder_shall_store_child_node``); lines are read as ``read_line``/``strstrip`` in
``src/util.c`` read them.

The rules of a directory are a flat list of patterns: the ones it inherits from its
parent (unanchored patterns, and the rest of multi-component patterns whose first component
named it) followed by the lines of its own ``.caexclude``. A child is left out when a
positive pattern matches it and no negative one does; the order of the lines does not
matter. casync keeps the same patterns as a tree and sometimes sorts and merges it
(``ca_match_normalize``), which changes neither outcome.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from desync_ref.errors import InvalidFormat
from desync_ref.fs.libc import libc

EXCLUDE_FILE_NAME: Final = b".caexclude"
# util.h LARGE_LINE_MAX: a line this long (without its delimiter) is an error (ENOBUFS).
LINE_LIMIT: Final = 64 * 1024
_WHITESPACE: Final = b" \t"  # util.h WHITESPACE: what strstrip removes (not \r)
_FNM_PERIOD: Final = 1 << 2  # <fnmatch.h>
_FNM_NOMATCH: Final = 1
_READ_BLOCK: Final = 64 * 1024


class Kind(enum.Enum):
    POSITIVE = "exclude"
    NEGATIVE = "include"
    INNER = "inner"  # a leading component of a pattern with several components


@dataclass(frozen=True)
class Pattern:
    """One component of a line (casync's ``CaMatch``); INNER ones carry the rest of the
    line as ``children``, to be tried in the subdirectories they match."""

    kind: Kind
    name: bytes
    anchored: bool
    directory_only: bool
    children: tuple[Pattern, ...] = ()


Rules = tuple[Pattern, ...]


@functools.cache
def _libc_fnmatch() -> ctypes._NamedFuncPointer:
    # glibc's fnmatch, as casync calls it: Python's fnmatch module has other rules
    # (no FNM_PERIOD, no backslash escapes, no [[:class:]]). Looked up on first use.
    function = libc().fnmatch
    function.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int)
    function.restype = ctypes.c_int
    return function


def fnmatch(pattern: bytes, name: bytes) -> bool:
    """``fnmatch(pattern, name, FNM_PERIOD)``: a leading dot must be matched literally."""
    result = _libc_fnmatch()(pattern, name, _FNM_PERIOD)
    if result == 0:
        return True
    if result == _FNM_NOMATCH:
        return False
    raise InvalidFormat(f"pattern '{os.fsdecode(pattern)}' cannot be matched")


def parse_line(line: bytes) -> Pattern:
    """casync ``parse_line``: ``!`` negates; any ``/`` anchors the pattern to the directory
    of the file (leading slashes are dropped); a trailing ``/`` matches directories only;
    ``a/b`` matches ``b`` inside the directories matching ``a``."""
    kind = Kind.POSITIVE
    if line.startswith(b"!"):
        kind, line = Kind.NEGATIVE, line[1:]
    anchored = b"/" in line
    components = line.lstrip(b"/").split(b"/")
    # "a//b/" splits into a, '', b, '': runs of slashes count as one, and a trailing run
    # makes the component before it directory-only.
    parts: list[tuple[bytes, bool]] = []
    for component in components:
        if component:
            parts.append((component, False))
        elif parts:
            parts[-1] = (parts[-1][0], True)
        else:
            raise InvalidFormat("empty pattern")
    for name, _ in parts:
        if name in (b".", b".."):
            raise InvalidFormat(f"'{os.fsdecode(name)}' is not allowed as a path component")
    # Built from the last component up: each INNER component holds the next one.
    name, directory_only = parts[-1]
    pattern = Pattern(kind, name, anchored or len(parts) > 1, directory_only)
    for i in range(len(parts) - 2, -1, -1):
        pattern = Pattern(Kind.INNER, parts[i][0], anchored or i > 0, True, (pattern,))
    return pattern


def _lines(read: Iterator[bytes]) -> Iterator[bytes]:
    """casync ``read_line``: ``\\n`` and NUL end a line; a line of LINE_LIMIT bytes or more
    is an error."""
    pending, number = b"", 1
    too_long = f"longer than {LINE_LIMIT - 1} bytes"
    for block in read:
        *complete, pending = (pending + block.replace(b"\0", b"\n")).split(b"\n")
        for line in complete:
            if len(line) >= LINE_LIMIT:
                raise InvalidFormat(f"line {number}: {too_long}")
            yield line
            number += 1
        if len(pending) >= LINE_LIMIT:
            raise InvalidFormat(f"line {number}: {too_long}")
    if pending:
        yield pending


def parse_rules(blocks: Iterator[bytes]) -> Rules:
    """The patterns of a ``.caexclude`` given as blocks of bytes (casync
    ``ca_match_new_from_file``): blank lines and lines starting with ``#`` are skipped,
    spaces and tabs around a line are not part of it."""
    rules: list[Pattern] = []
    for number, raw in enumerate(_lines(blocks), 1):
        line = raw.strip(_WHITESPACE)
        if not line or line.startswith(b"#"):
            continue
        try:
            rules.append(parse_line(line))
        except InvalidFormat as exc:
            raise InvalidFormat(f"line {number}: {exc}: '{os.fsdecode(line)}'") from None
    return tuple(rules)


def read_rules(dir_fd: int) -> Rules:
    """The ``.caexclude`` in the directory ``dir_fd`` (followed if it is a symlink, as
    casync's ``openat`` without ``O_NOFOLLOW`` does; ``O_NONBLOCK`` so a fifo cannot hang)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(EXCLUDE_FILE_NAME, flags, dir_fd=dir_fd)
    except OSError as exc:
        raise InvalidFormat(os.strerror(exc.errno or errno.EIO)) from None

    def blocks() -> Iterator[bytes]:
        while True:
            try:
                block = os.read(fd, _READ_BLOCK)
            except BlockingIOError:
                return  # an empty fifo: casync's stdio sees EOF-with-error after no data
            if not block:
                return
            yield block

    try:
        return parse_rules(blocks())
    except OSError as exc:
        raise InvalidFormat(os.strerror(exc.errno or errno.EIO)) from None
    finally:
        os.close(fd)


def test(rules: Rules, name: bytes, is_directory: bool) -> tuple[bool, Rules]:
    """casync ``ca_match_test``: whether ``name`` is excluded, and the rules its subtree
    inherits (meaningful for a directory only)."""
    positive = negative = False
    subtree: list[Pattern] = []
    for pattern in rules:
        if not pattern.anchored and is_directory:
            subtree.append(pattern)  # unanchored patterns apply at every depth
        if pattern.directory_only and not is_directory:
            continue
        if not fnmatch(pattern.name, name):
            continue
        if pattern.kind is Kind.NEGATIVE:
            negative = True
        elif pattern.kind is Kind.POSITIVE:
            positive = True
        else:
            subtree.extend(pattern.children)
    return positive and not negative, tuple(subtree)
