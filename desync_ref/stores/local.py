"""A chunk store in a local directory: ``<dir>/<xxxx>/<id>.cacnk``.

Spec: ``spec/store.md``. Layout from casync ``src/castore.c``; the temp-file prefix
``.tmp-cacnk`` is desync's (``local.go``, ``tmpChunkPrefix``) so either tool's prune
recognises the other's leftovers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from desync_ref.errors import ChunkMissing, StoreError
from desync_ref.formats.chunk import (
    COMPRESSED_CHUNK_SUFFIX,
    UNCOMPRESSED_CHUNK_SUFFIX,
    chunk_file_name,
)
from desync_ref.stores import Chunk

TMP_CHUNK_PREFIX: Final = ".tmp-cacnk"
# casync writes a chunk as "<id>.<random hex>.tmp" beside its final name (castore.c,
# ca_store_put); see spec/store.md "Temporary files".
CASYNC_TMP_NAME: Final = re.compile(r"[0-9a-f]{64}\.[0-9a-f]{1,16}\.tmp")


class LocalStore:
    def __init__(self, path: str | os.PathLike[str], *, create: bool = False, uncompressed: bool = False) -> None:
        self.path = Path(path)
        self.uncompressed = uncompressed
        self.suffix = UNCOMPRESSED_CHUNK_SUFFIX if uncompressed else COMPRESSED_CHUNK_SUFFIX
        if create and not self.path.exists():
            try:
                self.path.mkdir(parents=True)
            except OSError as exc:
                raise StoreError(f"cannot create store {self.path}: {exc.strerror}") from None
        if not self.path.exists():
            raise StoreError(f"store {self.path} does not exist")
        if not self.path.is_dir():
            raise StoreError(f"store {self.path} is not a directory")
        self._root = os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def chunk_path(self, chunk_id: bytes) -> Path:
        return self.path / chunk_file_name(chunk_id, self.suffix)

    def _forms(self, chunk_id: bytes) -> tuple[tuple[str, bool], tuple[str, bool]]:
        """(path, is compressed) for the store's own form first, then the other one."""
        # Plain strings, not Paths: this runs once per chunk on the extract hot path.
        base = f"{self._root}/{chunk_file_name(chunk_id, '')}"
        compressed = (base + COMPRESSED_CHUNK_SUFFIX, True)
        plain = (base + UNCOMPRESSED_CHUNK_SUFFIX, False)
        return (plain, compressed) if self.uncompressed else (compressed, plain)

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        for path, compressed in self._forms(chunk_id):
            try:
                # O_NOFOLLOW: casync marks known-missing chunks with a symlink
                # (ca_chunk_file_mark_missing), which must read as missing.
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    continue
                raise StoreError(f"cannot read chunk {chunk_id.hex()} from {self}: {exc.strerror}") from None
            try:
                with open(fd, "rb", buffering=0) as f:
                    blob = f.readall()
            except OSError as exc:
                raise StoreError(f"cannot read chunk {chunk_id.hex()} from {self}: {exc.strerror}") from None
            return Chunk(chunk_id, compressed=blob) if compressed else Chunk(chunk_id, data=blob)
        raise ChunkMissing(chunk_id.hex(), str(self))

    def has_chunk(self, chunk_id: bytes) -> bool:
        for path, _ in self._forms(chunk_id):
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    return True
            except (FileNotFoundError, NotADirectoryError):
                continue
        return False

    def store_chunk(self, chunk: Chunk) -> None:
        target = self.chunk_path(chunk.id)
        payload = chunk.data() if self.uncompressed else chunk.compressed()
        try:
            target.parent.mkdir(exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=TMP_CHUNK_PREFIX, dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as tmp:
                    tmp.write(payload)
                os.chmod(tmp_name, 0o644)
                os.replace(tmp_name, target)
            except BaseException:
                os.unlink(tmp_name)
                raise
        except OSError as exc:
            raise StoreError(f"cannot write chunk {chunk.id.hex()} to {self}: {exc.strerror}") from None

    def remove_chunk(self, chunk_id: bytes) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.chunk_path(chunk_id).unlink()

    def chunk_ids(self) -> Iterator[bytes]:
        for _, chunk_id in self._chunk_files():
            yield chunk_id

    def _chunk_files(self) -> Iterator[tuple[Path, bytes]]:
        """Every file that is named like one of this store's chunks."""
        for sub in sorted(self.path.iterdir()):
            if len(sub.name) != 4 or not sub.is_dir():
                continue
            for entry in sorted(sub.iterdir()):
                name = entry.name
                if not name.endswith(self.suffix) or not name.startswith(sub.name):
                    continue
                hex_id = name[: len(name) - len(self.suffix)] if self.suffix else name
                if len(hex_id) != 64:
                    continue
                try:
                    yield entry, bytes.fromhex(hex_id)
                except ValueError:
                    continue

    def stale_temp_files(self) -> Iterator[Path]:
        for sub in self.path.iterdir():
            if len(sub.name) != 4 or not sub.is_dir():
                continue
            for entry in sub.iterdir():
                name = entry.name
                if (name.startswith(TMP_CHUNK_PREFIX) or CASYNC_TMP_NAME.fullmatch(name)) and entry.is_file():
                    yield entry

    def prune(self, keep: set[bytes]) -> int:
        """Remove chunk files not in ``keep`` and stale temp files; nothing else is touched."""
        removed = 0
        for path, chunk_id in list(self._chunk_files()):
            if chunk_id not in keep:
                path.unlink(missing_ok=True)
                removed += 1
        for path in list(self.stale_temp_files()):
            path.unlink(missing_ok=True)
        for sub in self.path.iterdir():
            if len(sub.name) == 4 and sub.is_dir() and not any(sub.iterdir()):
                sub.rmdir()
        return removed

    def close(self) -> None:
        pass
