"""Local directories: a chunk store ``<dir>/<xxxx>/<id>.cacnk`` and an index store of files.

Spec: ``spec/store.md``. Layout from casync ``src/castore.c``; names from the one grammar in
``formats/chunk.py``; the temp-file prefix ``.tmp-cacnk`` is desync's (``local.go``,
``tmpChunkPrefix``) so either tool's prune recognises the other's leftovers. The name
extension and stored bytes come from the store's :class:`StorageForm` (``.cacnk``, none, or
with encryption ``.cacnk.<algorithm>-<key id>``, spec/store.md "Chunk encryption"). The index store
follows desync ``localindex.go``.

This is also the backend module for plain paths in the scheme registry
(``stores/registry.py``): :func:`open_chunk_store`, :func:`open_index_store` and
:func:`open_index_location` at the end.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path

from desync_ref.errors import ChunkMissing, IndexMissing, InvalidFormat, StoreError
from desync_ref.formats.chunk import (
    COMPRESSED_CHUNK_SUFFIX,
    TMP_CHUNK_PREFIX,
    UNCOMPRESSED_CHUNK_SUFFIX,
    Digest,
    chunk_file_name,
    decompress_exact,
    is_temp_chunk_name,
    parse_chunk_path,
    raw_frame_content,
)
from desync_ref.formats.index import Index, encode_index, parse_index
from desync_ref.fs.atomic import make_temp
from desync_ref.stores import Chunk
from desync_ref.stores.index_stores import valid_index_name
from desync_ref.stores.options import DEFAULT_OPTIONS, StoreOptions
from desync_ref.stores.storage_form import StorageForm, storage_form

# The two forms an unencrypted store reads.
_COMPRESSED = StorageForm(compressed=True)
_PLAIN = StorageForm(compressed=False)
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _create_dir(path: Path, what: str) -> None:
    """Make a new store's directory unless it exists (then its checks follow)."""
    if path.exists():
        return
    try:
        # exist_ok: another writer may create the same new store at the same moment
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {what} {path}: {exc.strerror}") from None


def _create_temp_beside(directory: str, mkdir_first: bool) -> tuple[int, str, bool]:
    """A new temp file in a chunk's prefix directory, creating the directory when the open
    says it is missing, or before the open with ``mkdir_first`` (the caller's guess that it
    is missing); also whether this call created the directory. Another writer's
    remove_chunk or prune may remove an empty prefix directory between our mkdir and our
    open; then it is made again (once the temp file exists the directory is not empty and
    stays). The name carries the pid and random bits; O_EXCL makes a clash (another host on
    a shared store) pick another name, not share a file."""
    created = False
    if mkdir_first:
        try:
            os.mkdir(directory)
            created = True
        except FileExistsError:
            pass
    attempts = 8
    for attempt in range(1, attempts + 1):
        tmp_name = f"{directory}/{TMP_CHUNK_PREFIX}{os.getpid():x}-{random.getrandbits(48):012x}"
        try:
            return os.open(tmp_name, _TEMP_FLAGS, 0o600), tmp_name, created
        except FileNotFoundError:
            if attempt == attempts:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(directory)
                created = True
        except FileExistsError:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


class LocalStore:
    """A PruneStore and InlineRead: reads, writes, lists, prunes."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False, uncompressed: bool = False,
                 form: StorageForm | None = None, skip_verify: bool = False) -> None:
        """``form`` (from :func:`storage_form`) wins over ``uncompressed``. ``skip_verify``
        (the store option ``skip-verify``, desync ``local.go`` ``GetChunk``): chunks read are
        not hashed against their id (encrypted ones are still authenticated)."""
        self.path = Path(path)
        self.skip_verify = skip_verify
        self.form = form if form is not None else StorageForm(compressed=not uncompressed)
        self.uncompressed = not self.form.compressed
        self.suffix = self.form.extension
        if create:
            _create_dir(self.path, "store")
        if not self.path.exists():
            raise StoreError(f"store {self.path} does not exist")
        if not self.path.is_dir():
            raise StoreError(f"store {self.path} is not a directory")
        self._root = os.fspath(self.path)
        # Whether the last chunk written needed its prefix directory created: then the next
        # one most likely does too (a new or sparse store: 65536 prefixes), and making the
        # directory before opening the temp file saves a failed open and its exception.
        # Once a directory turns out to exist, writes go back to opening first.
        self._dirs_missing = False

    def __str__(self) -> str:
        return str(self.path)

    def chunk_path(self, chunk_id: bytes) -> Path:
        return self.path / chunk_file_name(chunk_id, self.suffix)

    def _forms(self, chunk_id: bytes) -> tuple[tuple[str, StorageForm], ...]:
        """(path, form) for the store's own form first, then the other one when the store is
        not encrypted (an unencrypted store reads compressed and plain chunks alike; an
        encrypted one only its own form, as desync's, whose name says the key)."""
        # Plain strings, not Paths: this runs once per chunk on the extract hot path.
        base = f"{self._root}/{chunk_file_name(chunk_id, '')}"
        if self.form.encrypted:
            return ((base + self.suffix, self.form),)
        compressed = (base + COMPRESSED_CHUNK_SUFFIX, _COMPRESSED)
        plain = (base + UNCOMPRESSED_CHUNK_SUFFIX, _PLAIN)
        return (plain, compressed) if self.uncompressed else (compressed, plain)

    def get_chunk(self, chunk_id: bytes, digest: Digest | None) -> Chunk:
        if self.skip_verify:
            digest = None
        for path, form in self._forms(chunk_id):
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
            return form.from_storage(chunk_id, blob, digest, where=str(self))
        if self.form.encrypted:
            raise ChunkMissing(chunk_id.hex(), self._other_forms_hint(chunk_id))
        raise ChunkMissing(chunk_id.hex(), str(self))

    def _other_forms_hint(self, chunk_id: bytes) -> str:
        """The store, and what other forms of the chunk it holds: an encrypted store's chunk
        under another key or algorithm has another name, so a wrong key reads as missing."""
        hex_id = chunk_id.hex()
        try:
            others = sorted(name for name in os.listdir(os.path.join(self._root, hex_id[:4]))
                            if name.startswith(hex_id) and name != hex_id + self.suffix)
        except OSError:
            others = []
        if not others:
            return str(self)
        found = others[0][len(hex_id):] or "no extension"
        return f"{self} (it holds the chunk as {found}: wrong encryption key or algorithm?)"

    def file_reader(self, digest: Digest, limit: int) -> ChunkFileReader | None:
        """A reader of this store's chunk files for a worker that reads many in a row, or
        None where it does not apply (an encrypted store, or skip-verify: get_chunk then)."""
        if self.form.encrypted or self.skip_verify:
            return None
        return ChunkFileReader(self._root, self.suffix, self.form.compressed, digest, limit)

    def reads_inline(self, uncompressed: bool) -> bool:
        # A page-cache read is cheaper than a thread hop when no conversion follows.
        return not self.form.encrypted and uncompressed == self.uncompressed

    def has_chunk(self, chunk_id: bytes) -> bool:
        """A regular file of either form that is not empty. Chunks are never empty, and an
        empty file is what a write cut short by a power loss leaves (chunks are not fsynced,
        spec/store.md "Durability"): saying no lets make and cache write it again."""
        for path, _ in self._forms(chunk_id):
            try:
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode) and info.st_size > 0:
                    return True
            except (FileNotFoundError, NotADirectoryError):
                continue
        return False

    def store_chunk(self, chunk: Chunk) -> None:
        """Written under a temp name beside the target and renamed, so a reader never sees a
        partial chunk. This is make's hot path into an empty store (one call per new chunk),
        so it is plain ``os`` calls on string paths: no file object, and the prefix
        directory is created only when opening the temp file says it is missing (no
        ``mkdir`` per chunk, no stat)."""
        name = chunk_file_name(chunk.id, self.suffix)
        target = f"{self._root}/{name}"
        payload = self.form.to_storage(chunk)
        try:
            fd, tmp_name, self._dirs_missing = _create_temp_beside(
                f"{self._root}/{name[:name.index('/')]}", self._dirs_missing)
            try:
                try:
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(fd, view):]
                    # temp files are created 0600 (not readable by others while written); the
                    # chunk is 0644 whatever the umask, as desync's
                    os.fchmod(fd, 0o644)
                finally:
                    os.close(fd)
                os.rename(tmp_name, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_name)
                raise
        except OSError as exc:
            raise StoreError(f"cannot write chunk {chunk.id.hex()} to {self}: {exc.strerror}") from None

    def remove_chunk(self, chunk_id: bytes) -> None:
        path = self.chunk_path(chunk_id)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        # A prefix directory emptied by this removal (verify -r) goes too, as prune leaves
        # none: the store keeps casync's layout.
        with contextlib.suppress(OSError):  # not empty, already gone, or raced by a writer
            path.parent.rmdir()

    def chunk_ids(self) -> Iterator[bytes]:
        for _, chunk_id in self._chunk_files():
            yield chunk_id

    def _prefix_dirs(self) -> Iterator[Path]:
        for sub in self.path.iterdir():
            if len(sub.name) == 4 and sub.is_dir():
                yield sub

    def _chunk_files(self) -> Iterator[tuple[Path, bytes]]:
        """Every file that is named like one of this store's chunks."""
        for sub in sorted(self._prefix_dirs()):
            for entry in sorted(sub.iterdir()):
                chunk_id = parse_chunk_path(f"{sub.name}/{entry.name}", self.suffix)
                if isinstance(chunk_id, bytes):
                    yield entry, chunk_id

    def stale_temp_files(self) -> Iterator[Path]:
        for sub in self._prefix_dirs():
            for entry in sub.iterdir():
                if is_temp_chunk_name(entry.name) and entry.is_file():
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
        for sub in list(self._prefix_dirs()):
            if not any(sub.iterdir()):
                sub.rmdir()
        return removed

    def close(self) -> None:
        pass


class ChunkFileReader:
    """Extract's read path for many chunks in a row (operations/extract_workers.py): chunk
    files of the store's own form read into one buffer kept for every read, decoded and
    checked against the id and the index's size. Only the common case: a file missing
    (or in the other form), a read error, a file too big, or bytes that do not decode
    cleanly or check give None, and the caller asks :meth:`LocalStore.get_chunk`, whose
    verdict and message are the reference. What it accepts, get_chunk accepts too.

    Fewer system calls than get_chunk (open, one read, close: no fstat) and no fresh memory
    for the stored bytes: a new 64 KiB ``bytes`` per chunk is memory the kernel must fault
    in again and again. A frame of stored (raw) zstd blocks, which is what incompressible
    data makes, is not decoded at all: its content is checked and written from the buffer
    (formats/chunk.py ``raw_frame_content``)."""

    def __init__(self, root: str, suffix: str, compressed: bool, digest: Digest, limit: int) -> None:
        self._root, self._suffix, self._compressed, self._digest = root, suffix, compressed, digest
        # A file that fills the buffer is handed to get_chunk (room for zstd's worst case).
        size = limit + (limit >> 8) + 4096 if compressed else limit + 1
        self._buffer = bytearray(size)
        self._view = memoryview(self._buffer)

    def read(self, chunk_id: bytes, size: int) -> bytes | memoryview | None:
        """The checked bytes of the chunk (a plain chunk or raw blocks: a view into the kept
        buffer, good until the next read), or None."""
        try:
            fd = os.open(f"{self._root}/{chunk_file_name(chunk_id, self._suffix)}",
                         os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        view = self._view
        try:
            # One read: a regular file hands over all it has up to the buffer's size. A
            # short read could only make the bytes fail their checks below, and then
            # get_chunk reads the file again and gives the verdict.
            filled = os.readv(fd, (view,))
        except OSError:
            return None
        finally:
            os.close(fd)
        if filled == len(view):
            return None
        data: memoryview | bytes | None
        if not self._compressed:
            data = view[:filled] if filled == size else None
        else:
            start = raw_frame_content(self._buffer, filled, size)
            data = view[start:start + size] if start >= 0 else decompress_exact(view[:filled], size)
        # (hashlib takes any buffer: the content is hashed where it was read)
        if data is None or self._digest(data) != chunk_id:  # type: ignore[arg-type]
            return None
        return data


class LocalIndexStore:
    """An IndexWriteStore over a directory of index files."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False) -> None:
        self.path = Path(path)
        if create:
            _create_dir(self.path, "index store")
        if not self.path.is_dir():
            raise StoreError(f"index store {self.path} is not a directory")

    def __str__(self) -> str:
        return str(self.path)

    def _file(self, name: str) -> Path:
        if not valid_index_name(name):
            raise StoreError(f"invalid index name '{name}'")
        return self.path / name

    def get_index_bytes(self, name: str) -> bytes:
        path = self._file(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise IndexMissing(f"index {path} not found") from None
        except OSError as exc:
            raise StoreError(f"cannot read index {path}: {exc.strerror}") from None

    def has_index(self, name: str) -> bool:
        return self._file(name).is_file()

    def get_index(self, name: str) -> Index:
        data = self.get_index_bytes(name)
        try:
            return parse_index(data)
        except InvalidFormat as exc:
            raise InvalidFormat(f"{self._file(name)}: {exc}") from None

    def store_index(self, name: str, index: Index) -> None:
        self.store_index_bytes(name, encode_index(index))

    def store_index_bytes(self, name: str, data: bytes) -> None:
        """Written under a temp name, fsynced and renamed: a reader never sees a partial
        index, not even after a power loss (spec/store.md "Durability")."""
        target = self._file(name)
        try:
            fd, tmp = make_temp(self.path, f".{name}.", ".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise StoreError(f"cannot write index {target}: {exc.strerror}") from None

    def close(self) -> None:
        pass


# --- backend entry points (stores/registry.py) ----------------------------------------------

def open_chunk_store(location: str, options: StoreOptions = DEFAULT_OPTIONS, *, create: bool = False) -> LocalStore:
    options = options.for_location(location)
    return LocalStore(location, create=create, form=storage_form(options, location),
                      skip_verify=options.skip_verify)


def open_index_store(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                     create: bool = False) -> LocalIndexStore:
    return LocalIndexStore(location, create=create)


def open_index_location(location: str, options: StoreOptions = DEFAULT_OPTIONS, *,
                        create: bool = False) -> tuple[LocalIndexStore, str]:
    """desync ``indexStoreFromLocation``: the directory and the file name."""
    path = Path(location)
    return LocalIndexStore(path.parent, create=create), path.name
