"""Records as a parser sees them: where each one lies and what its fields hold; damage as a
value. The parsers' tolerant modes (``formats/index.py`` ``scan_index``, the catar decoder's
``on_record`` observer) hand these out; ``desync_ref.audit`` renders them.

Spec: ``spec/dump.md`` (the dump's records model). No I/O, bytes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# How a field's value is to be read (audit renders each kind its own way).
U64: Final = "u64"
MAGIC: Final = "magic"  # a type or marker constant
FLAGS: Final = "feature-flags"  # casync CA_FORMAT_* feature flags
MODE: Final = "mode"  # st_mode
TIME: Final = "time"  # nanoseconds since the epoch (signed)
ID: Final = "id"  # a chunk id, hex
TEXT: Final = "text"  # a NUL-terminated string, NUL dropped
BYTES: Final = "bytes"  # opaque bytes (shown as hex, cut short)

FieldValue = int | bytes


@dataclass(frozen=True, slots=True)
class Field:
    """One field: its absolute offset and size in the file, its name and raw value."""

    name: str
    offset: int
    size: int
    value: FieldValue
    kind: str = U64


@dataclass(frozen=True, slots=True)
class Record:
    """One record (header, table item, catar record, protocol frame, ...) of ``size``
    bytes at ``offset``; ``type`` is the name the spec gives it."""

    offset: int
    size: int
    type: str
    fields: tuple[Field, ...] = ()


@dataclass(frozen=True, slots=True)
class Damage:
    """Where a parser stopped making sense of the bytes: the offset of the damage, the
    message the strict parser raises there, and (when the parser knows them) what it
    expected and what it found."""

    offset: int
    message: str
    expected: str = ""
    found: str = ""


def u64_fields(data: bytes, offset: int, names: tuple[str, ...],
               kinds: dict[str, str] | None = None) -> tuple[Field, ...]:
    """Consecutive little-endian u64 fields starting at ``offset``."""
    kinds = kinds or {}
    return tuple(
        Field(name, offset + 8 * n, 8, int.from_bytes(data[offset + 8 * n:offset + 8 * n + 8], "little"),
              kinds.get(name, U64))
        for n, name in enumerate(names)
    )
