"""The library's one error hierarchy; the CLI maps it to messages and exit codes."""

from __future__ import annotations


class DesyncRefError(Exception):
    """Base of every error the library raises on purpose."""


class UsageError(DesyncRefError):
    """Arguments that make no sense (bad chunk sizes, conflicting options)."""


class InvalidFormat(DesyncRefError):
    """Bytes that do not follow the format: wrong magic, truncation, bad tail."""


class DigestMismatch(InvalidFormat):
    """An index's digest flag disagrees with the digest the user asked for."""


class ChunkMissing(DesyncRefError):
    """No store in the chain holds the chunk."""

    def __init__(self, chunk_id_hex: str, where: str = "") -> None:
        self.chunk_id = chunk_id_hex
        suffix = f" in {where}" if where else ""
        super().__init__(f"chunk {chunk_id_hex} not found{suffix}")


class ChunkInvalid(DesyncRefError):
    """A chunk whose bytes do not decompress or do not hash to its id."""


class StoreError(DesyncRefError):
    """A store that cannot be used: not a directory, unreachable, unwritable."""


class IndexMissing(DesyncRefError):
    """An index store has no index under that name (HTTP 404, or no such file)."""


class ProtocolError(DesyncRefError):
    """A peer broke the casync protocol or an HTTP exchange."""
