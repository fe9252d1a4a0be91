"""The library's one error hierarchy; the CLI maps it to messages and exit codes.

Library code raises these with the facts (which store, chunk, entry, value); it never
names a command-line flag and never picks an exit code. ``cli/`` does both, and is the only
place that raises ``cli.usage.UsageError``.
"""

from __future__ import annotations


class DesyncRefError(Exception):
    """Base of every error the library raises on purpose."""


class InvalidParameter(DesyncRefError):
    """A value handed to the library that it cannot use: chunk sizes out of range, an
    unknown digest or feature-flag name, a malformed chunk id, a byte range past the end,
    an empty store location, a listen address that does not parse.

    ``parameter`` says which value (``"chunk sizes"``, ``"digest"``, ``"offset"``,
    ``"store location"``, ...), so the CLI can name the flag that carried it.
    """

    def __init__(self, message: str, *, parameter: str = "") -> None:
        super().__init__(message)
        self.parameter = parameter


class UnsupportedEntry(DesyncRefError):
    """A file-system node the chosen feature flags cannot archive (a node type left out,
    an owner wider than 16 bits)."""


class ServerSetupError(DesyncRefError):
    """A server that cannot start: a certificate that does not load, an address it cannot
    listen on, a log file it cannot open."""


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
