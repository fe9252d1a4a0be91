"""digest: the hash casync's ``digest`` prints for a blob, a catar, an index or a directory.

Spec: ``spec/cli.md`` § "digest". Follows casync ``verb_digest`` (``src/casync-tool.c``)
and the archive digest of its encoder and decoder (``ca_encoder_get_archive_digest``,
``ca_decoder_get_archive_digest``): the hash of the byte stream itself, never of an index
file's bytes.

* a blob: its bytes, with the digest asked for (casync ``--digest``, sha512-256 by default);
* a blob index (``.caibx``): the blob it describes, assembled from the store, always with
  SHA512/256, whatever the index's or the user's digest: casync's decoder never sees an
  ENTRY, so its ``feature_flags`` keep the "unknown" value (all bits set), which includes
  the SHA512/256 bit (``ca_feature_flags_to_digest_type``);
* a catar, or an archive index (``.caidx``, the catar assembled from the store): the
  archive's bytes, with the digest its first ENTRY names; the archive is decoded on the
  way, so a damaged one fails as it fails in casync;
* a directory: the catar ``tar`` would write for it with the given flags, hashed as it is
  written, never stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from desync_ref.errors import InvalidFormat
from desync_ref.formats.catar_decoder import CatarDecoder, EndOfArchive, EntryEvent, NeedData
from desync_ref.formats.chunk import DIGEST_SHA512_256, digest_from_flags
from desync_ref.formats.index import Index
from desync_ref.operations.cat import iter_range
from desync_ref.operations.tar import write_catar
from desync_ref.stores import Store

READ_BLOCK = 1024 * 1024


def new_hash(digest: str) -> hashlib._Hash:
    return hashlib.new("sha512_256" if digest == DIGEST_SHA512_256 else "sha256")


def digest_stream(blocks: Iterable[bytes], digest: str) -> bytes:
    """The hash of a blob given as blocks of bytes."""
    hasher = new_hash(digest)
    for block in blocks:
        hasher.update(block)
    return hasher.digest()


def read_blocks(read: Callable[[int], bytes]) -> Iterable[bytes]:
    while block := read(READ_BLOCK):
        yield block


class ArchiveDigest:
    """Hashes a catar pushed in pieces while a decoder checks it; the hash is chosen when
    the first ENTRY is decoded (casync's decoder takes the archive's flags from it)."""

    def __init__(self, expected_flags: int | None = None) -> None:
        self.decoder = CatarDecoder()
        self.expected_flags = expected_flags
        self.pending: list[bytes] = []
        self.hasher: hashlib._Hash | None = None
        self.ended = False

    def feed(self, data: bytes) -> None:
        if self.hasher is None:
            self.pending.append(data)
        else:
            self.hasher.update(data)
        self.decoder.receive_data(data)
        while not self.ended:
            event = self.decoder.next_event()
            if isinstance(event, NeedData):
                return
            if isinstance(event, EntryEvent) and self.hasher is None:
                self._choose(event.entry.feature_flags)
            self.ended = isinstance(event, EndOfArchive)

    def _choose(self, flags: int) -> None:
        # casync's decoder insists that the archive's flags are the index's
        # (ca_sync_propagate_flags_to_decoder, validate_feature_flags in cadecoder.c).
        if self.expected_flags is not None and flags != self.expected_flags:
            raise InvalidFormat(f"the archive's feature flags {flags:#x} are not the index's "
                                f"{self.expected_flags:#x}")
        self.hasher = new_hash(digest_from_flags(flags))
        for piece in self.pending:
            self.hasher.update(piece)
        self.pending = []

    def finish(self) -> bytes:
        self.feed(b"")  # b"" tells the decoder the input has ended
        if not self.ended or self.hasher is None:
            raise InvalidFormat("archive has no end")  # the decoder raises first
        return self.hasher.digest()


def digest_archive(blocks: Iterable[bytes], expected_flags: int | None = None) -> bytes:
    archive = ArchiveDigest(expected_flags)
    for block in blocks:
        archive.feed(block)
    return archive.finish()


def digest_index(index: Index, store: Store, *, archive: bool, workers: int = 1) -> bytes:
    """The hash of what an index describes, its chunks fetched (and verified) from
    ``store``."""
    blocks = iter_range(index, store, 0, index.length, workers=workers)
    if archive:
        return digest_archive(blocks, index.feature_flags)
    return digest_stream(blocks, DIGEST_SHA512_256)


def digest_directory(path: str, flags: int) -> bytes:
    """The hash of the catar of the directory ``path`` with the feature flags ``flags``."""
    hasher = new_hash(digest_from_flags(flags))
    write_catar(path, hasher.update, flags)
    return hasher.digest()
