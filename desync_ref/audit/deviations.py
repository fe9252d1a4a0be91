"""The known casync <-> desync divergences, as data: what ``diff`` names when it sees one.

Spec: ``spec/diff.md`` § "Known differences", which points at the rows of
``spec/deviations.md`` listed here. Each ``Deviation`` carries the section and the row's
topic (so a reader finds the facts and their source pointers there) and the sentence
``diff`` prints; the detectors below decide, from what the two sides hold, whether a
difference is one of them and which side shows desync's behaviour. A detector answers
"A", "B" or None; it never decides that two sides are equal, only why they are not.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from desync_ref.formats.constants import (
    CA_FORMAT_BLOB_INDEX_FLAGS,
    CA_FORMAT_EXCLUDE_FILE,
    CA_FORMAT_EXCLUDE_NODUMP,
    CA_FORMAT_SHA512_256,
    CA_FORMAT_WITH_MASK,
)

Side = Literal["A", "B"]

# desync's TarFeatureFlags (desync tar.go): the ENTRY flags of every catar desync writes.
DESYNC_TAR_FLAGS: Final = 0xB000000010001F22
# desync's blob index flags: EXCLUDE_NODUMP | SHA512_256, no EXCLUDE_FILE (make.go,
# index.go); with --digest sha256 the digest bit goes (spec/deviations.md § Index files).
DESYNC_BLOB_FLAGS: Final = CA_FORMAT_EXCLUDE_NODUMP | CA_FORMAT_SHA512_256


@dataclass(frozen=True, slots=True)
class Deviation:
    key: str
    section: str  # heading of spec/deviations.md
    topic: str  # the row's "Topic" cell, verbatim
    sentence: str  # what diff prints; "{side}" is the side that behaves as desync

    def describe(self, side: Side) -> str:
        return f"{self.sentence.format(side=side)} (spec/deviations.md § {self.section}: {self.topic})"


BLOB_FLAGS: Final = Deviation(
    "blob-index-flags", "Index files", "Flags of a blob index (SHA-512/256)",
    "{side} lacks EXCLUDE_FILE as desync's blob indexes do: desync's known index-flags difference")
BLOB_FLAGS_SHA256: Final = Deviation(
    "blob-index-flags-sha256", "Index files", "Flags of a blob index (SHA-256)",
    "{side} lacks EXCLUDE_FILE as desync's SHA-256 blob indexes do: desync's known "
    "index-flags difference")
CATAR_IN_BLOB: Final = Deviation(
    "catar-in-blob", "Index files", "Blob that starts with a catar ENTRY",
    "{side} has archive flags over the same chunks: desync's make ORs the flags of a blob "
    "that starts with a catar ENTRY into the index")
TAR_INDEX_FLAGS: Final = Deviation(
    "tar-index-flags", "Index files", "Flags of an archive index made from a directory",
    "{side} has desync tar -i's flags (TarFeatureFlags 0xb000000010001f22)")
CUT_AT_MIN: Final = Deviation(
    "cut-at-min", "Chunker", "Cut at exactly `L = min`",
    "{side} never cuts at exactly min: desync's known chunker difference")
DISCRIMINATOR_CLAMP: Final = Deviation(
    "discriminator-clamp", "Chunker", "Discriminator clamp",
    "{side} cuts with the unclamped discriminator: desync's known chunker difference")
XATTR_NUL: Final = Deviation(
    "xattr-nul", "catar archives", "XATTR object payload",
    "{side}'s value has one more NUL at the end: desync writes a NUL after XATTR values")
FIFOS_SOCKETS: Final = Deviation(
    "fifos-sockets", "catar archives", "FIFOs and sockets",
    "{side} lacks a FIFO or socket: desync tar skips them")
ENTRY_FLAGS: Final = Deviation(
    "entry-flags", "catar archives", "Feature flags in ENTRY objects",
    "{side} has desync tar's fixed TarFeatureFlags 0xb000000010001f22")
CAEXCLUDE: Final = Deviation(
    "caexclude", "catar archives", "`.caexclude` (`EXCLUDE_FILE`)",
    "{side} holds a path a .caexclude excludes: desync ignores .caexclude files")

DEVIATIONS: Final = (BLOB_FLAGS, BLOB_FLAGS_SHA256, CATAR_IN_BLOB, TAR_INDEX_FLAGS, CUT_AT_MIN,
                     DISCRIMINATOR_CLAMP, XATTR_NUL, FIFOS_SOCKETS, ENTRY_FLAGS, CAEXCLUDE)

_OTHER: Final[dict[Side, Side]] = {"A": "B", "B": "A"}


def _sides(a: int, b: int, test: Callable[[int, int], bool]) -> Side | None:
    """The side for which ``test(this, other)`` holds, if exactly one."""
    hit_a, hit_b = bool(test(a, b)), bool(test(b, a))
    if hit_a == hit_b:
        return None
    return "A" if hit_a else "B"


# --- index headers --------------------------------------------------------------------------

def index_flags(a: int, b: int, same_chunks: bool) -> list[tuple[Deviation, Side]]:
    """Known reasons for two index headers' feature flags to differ."""
    if a == b:
        return []
    found: list[tuple[Deviation, Side]] = []
    with_a, with_b = a & CA_FORMAT_WITH_MASK, b & CA_FORMAT_WITH_MASK
    if not with_a and not with_b and a ^ b == CA_FORMAT_EXCLUDE_FILE:
        # A blob index each: casync's has EXCLUDE_FILE, desync's not.
        desync: Side = "A" if b & CA_FORMAT_EXCLUDE_FILE else "B"
        sha = (a | b) & CA_FORMAT_SHA512_256
        if (a | b) & ~CA_FORMAT_SHA512_256 == CA_FORMAT_BLOB_INDEX_FLAGS & ~CA_FORMAT_SHA512_256:
            found.append((BLOB_FLAGS if sha else BLOB_FLAGS_SHA256, desync))
        return found
    side = _sides(a, b, lambda this, other: this == DESYNC_TAR_FLAGS)
    if side is not None:
        found.append((TAR_INDEX_FLAGS, side))
    elif same_chunks and (not with_a) != (not with_b):
        # Same bytes indexed, one header with archive flags: desync's make of a catar blob
        # (desync's flags 0xA0... ORed with the archive's ENTRY flags).
        withs: Side = "A" if with_a else "B"
        plain = b if withs == "A" else a
        if plain & ~CA_FORMAT_SHA512_256 & ~CA_FORMAT_EXCLUDE_NODUMP & ~CA_FORMAT_EXCLUDE_FILE == 0:
            found.append((CATAR_IN_BLOB, withs))
    return found


# --- catar entries --------------------------------------------------------------------------

def entry_flags(a: int, b: int) -> Side | None:
    """The side carrying desync tar's fixed ENTRY flags when the other does not."""
    return _sides(a, b, lambda this, other: this == DESYNC_TAR_FLAGS)


def xattr_value(a: bytes, b: bytes) -> Side | None:
    """The side whose value is the other's plus one NUL: desync's XATTR encoding, read with
    casync's meaning (catar_decoder keeps every byte after the name's NUL)."""
    if b == a + b"\0":
        return "B"
    if a == b + b"\0":
        return "A"
    return None


def skipped_node(mode: int, present: Side) -> Side | None:
    """A FIFO or socket present on one side only: the other side is desync's tar."""
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return _OTHER[present]
    return None


def not_excluded(path: tuple[bytes, ...], present: Side, caexclude_dirs: set[tuple[bytes, ...]],
                 other_flags: int) -> Side | None:
    """A path on one side only, below a directory holding a ``.caexclude`` on that side, the
    other side made with EXCLUDE_FILE honoured (casync): the present side ignored it."""
    if not other_flags & CA_FORMAT_EXCLUDE_FILE:
        return None
    if any(path[:n] in caexclude_dirs for n in range(len(path))):
        return present
    return None
