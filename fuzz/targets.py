"""Fuzz targets: one function per parser of untrusted bytes, each taking the raw input.

Every target takes ``bytes`` and returns normally when the input ends in a result or in one
of the library's own errors (``DesyncRefError``; ``OSError`` too where a real file system is
touched). Anything else escaping a target (another exception, an ``AssertionError`` of one
of the properties checked here, a hang, a memory blow-up) is a finding.

The input is the file as it would be met (an index, a catar, a chunk file, a tar stream, a
config file, a request path), so the committed seed corpus holds real files. Where a target
needs more choices (how to split a stream, which flags), they are derived from a hash of the
input, so a file replays the same way every time.

The targets are plain functions: ``fuzz/run.py`` drives them with atheris (coverage
guided), ``tests/test_fuzz_corpus.py`` replays the corpus and a fixed-seed mutator through
them in-process.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import io
import os
import random
import shutil
import stat
import tempfile
import zlib
from collections.abc import Callable
from typing import Any

from desync_ref.config import apply_entry, load_config, location_match
from desync_ref.errors import ChunkInvalid, DesyncRefError
from desync_ref.formats import constants as c
from desync_ref.formats.catar_decoder import (
    CatarDecoder,
    EndOfArchive,
    EntryEvent,
    FileEndEvent,
    GoodbyeEvent,
    NeedData,
    PayloadEvent,
)
from desync_ref.formats.chunk import (
    COMPRESSED_CHUNK_SUFFIX,
    UNCOMPRESSED_CHUNK_SUFFIX,
    chunk_file_name,
    decompress,
    digest_function,
    parse_chunk_path,
)
from desync_ref.formats.gnutar import GnuTarSink
from desync_ref.formats.index import encode_index, parse_index
from desync_ref.formats.mtree import MtreeSink
from desync_ref.formats.tarstream import write_catar_from_tar
from desync_ref.fs.write import DiskSink
from desync_ref.operations.untar import TreeWalker
from desync_ref.server.chunks import ChunkHandler
from desync_ref.server.options import parse_listen
from desync_ref.stores import Chunk
from desync_ref.stores.index_stores import valid_index_name
from desync_ref.stores.options import DEFAULT_OPTIONS

Target = Callable[[bytes], None]


def _rng(data: bytes) -> random.Random:
    return random.Random(zlib.crc32(data))


def _splits(data: bytes) -> list[bytes]:
    """``data`` cut into pieces of random sizes, chosen from its hash: some of 1 to 7 bytes
    (record headers split anywhere), most larger (a stream of 1-byte pieces is slow to fuzz)."""
    rng = _rng(data)
    pieces, pos = [], 0
    while pos < len(data):
        n = rng.choice((1, 2, 7, 64, 64, 511, 511, 4096, 1 << 20))
        pieces.append(data[pos:pos + n])
        pos += n
    return pieces


# --- index ------------------------------------------------------------------------------------

def target_index(data: bytes) -> None:
    """``parse_index``; what it accepts must encode back to the very same bytes (the format
    has one encoding of each index)."""
    index = parse_index(data)
    assert encode_index(index) == data, "parse_index accepted a non-canonical encoding"


# --- catar ------------------------------------------------------------------------------------

def _decode(pieces: list[bytes]) -> tuple[list[Any], str | None]:
    """Events (consecutive payload blocks merged, as block sizes follow the input splits)
    and the error that ended the decoding, if any."""
    decoder = CatarDecoder()
    events: list[Any] = []
    feed = iter([*pieces, b""])
    try:
        while True:
            event = decoder.next_event()
            if isinstance(event, NeedData):
                decoder.receive_data(next(feed))
                continue
            if isinstance(event, PayloadEvent):
                if events and isinstance(events[-1], bytes):
                    events[-1] += event.data
                else:
                    events.append(event.data)
                continue
            events.append(event)
            if isinstance(event, EndOfArchive):
                return events, None
    except DesyncRefError as exc:
        return events, f"{type(exc).__name__}: {exc}"


def target_catar_decoder(data: bytes) -> None:
    """The push decoder fed the archive whole and in random splits: the same events and the
    same error either way (only payload block sizes may differ)."""
    whole = _decode([data])
    split = _decode(_splits(data))
    assert whole == split, f"decoder output depends on how the input is split: {whole[1]} / {split[1]}"
    if whole[1] is None:
        events = whole[0]
        assert isinstance(events[-1], EndOfArchive)
        opened = sum(isinstance(e, EntryEvent) and stat.S_ISDIR(e.entry.mode) for e in events)
        closed = sum(isinstance(e, GoodbyeEvent) for e in events)
        assert opened == closed, "a directory was opened and never closed (or the reverse)"
        files = sum(isinstance(e, EntryEvent) and stat.S_ISREG(e.entry.mode) for e in events)
        ends = sum(isinstance(e, FileEndEvent) for e in events)
        assert files == ends, "a regular file without its end (or the reverse)"


def _walk(data: bytes, sink: Any) -> None:
    decoder, walker = CatarDecoder(), TreeWalker(sink)
    for piece in [*_splits(data), b""]:
        if walker.done:
            break
        walker.feed(decoder, piece)


def target_catar_sinks(data: bytes) -> None:
    """A whole archive through the tree walker into desync's mtree printer and GNU tar
    writer (``untar --output-format``-like sinks, all in memory)."""
    _walk(data, MtreeSink(io.StringIO()))
    _walk(data, GnuTarSink(io.BytesIO()))


_SCRATCH: str | None = None


def _scratch() -> str:
    global _SCRATCH
    if _SCRATCH is None or not os.path.isdir(_SCRATCH):
        _SCRATCH = tempfile.mkdtemp(prefix="desync-fuzz-untar-")
        atexit.register(shutil.rmtree, _SCRATCH, True)
    return _SCRATCH


def target_untar(data: bytes) -> None:
    """A whole archive restored to a scratch directory with the safe disk writer (what
    ``untar`` does, in-process): nothing may appear outside the target directory, and no
    descriptor may stay open afterwards, whether the restore succeeds or fails."""
    scratch = _scratch()
    target = os.path.join(scratch, "target")
    fds = open_fds()
    error: BaseException | None = None
    try:
        sink = DiskSink(target, same_owner=data[-1:] != b"\0", same_permissions=True)
        _walk(data, sink)
    except (DesyncRefError, OSError) as exc:
        error = exc
    finally:
        # Descriptors left open are closed here so fuzzing goes on, and reported below.
        leaked = sorted(open_fds() - fds)
        for fd in leaked:
            os.close(fd)
        outside = sorted(set(os.listdir(scratch)) - {"target"})
        for name in os.listdir(scratch):
            path = os.path.join(scratch, name)
            _make_removable(path)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
    assert not outside, f"untar wrote outside its target: {outside}"
    if leaked:
        raise FdLeak(f"{len(leaked)} descriptors left open after the restore ended with {error!r}")
    if error is not None:
        raise error


class FdLeak(AssertionError):
    """A restore left file descriptors open (a long-lived process would run out)."""


def open_fds() -> set[int]:
    """This process's open descriptors (not counting the one the listing itself used)."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(name))
            found.add(int(name))
        except OSError:
            pass
    return found


def _make_removable(path: str) -> None:
    # Restored modes may leave directories unwritable; chattr flags are not restored on
    # tmpfs-like scratch space in a way that blocks rmtree as root.
    for root, dirs, _files in os.walk(path):
        for d in dirs:
            p = os.path.join(root, d)
            if not os.path.islink(p):
                os.chmod(p, 0o700)
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o700)


# --- chunk files --------------------------------------------------------------------------

_SHA512_256 = digest_function("sha512-256")
_SHA256 = digest_function("sha256")


def target_chunk(data: bytes) -> None:
    """A chunk file: ``decompress`` (also under a small limit), then ``Chunk.with_id``
    against the right id (must pass) and a wrong one (must raise ChunkInvalid)."""
    with contextlib.suppress(ChunkInvalid):
        decompress(data, limit=4096)
    plain = decompress(data)
    for digest in (_SHA512_256, _SHA256):
        right = digest(plain)
        assert Chunk.with_id(right, digest, compressed=data).data() == plain
        wrong = bytes(b ^ 0xFF for b in right)
        try:
            Chunk.with_id(wrong, digest, compressed=data)
        except ChunkInvalid:
            pass
        else:
            raise AssertionError("a chunk verified against an id that is not its hash")


# --- tar streams --------------------------------------------------------------------------

_TAR_FLAGS = (
    c.CA_FORMAT_DEFAULT,
    c.CA_FORMAT_WITH_BEST | c.CA_FORMAT_SHA512_256,
    c.CA_FORMAT_WITH_16BIT_UIDS | c.CA_FORMAT_WITH_2SEC_TIME | c.CA_FORMAT_WITH_READ_ONLY,
)


def target_tarstream(data: bytes) -> None:
    """``tar --input-format tar``: a tar stream to a catar, which must then decode cleanly
    (whatever we write ourselves must be a valid archive)."""
    rng = _rng(data)
    out = io.BytesIO()
    write_catar_from_tar("-", out.write, rng.choice(_TAR_FLAGS), stream=io.BytesIO(data),
                         no_time=rng.random() < 0.2, add_root=rng.random() < 0.3)
    _events, error = _decode([out.getvalue()])
    assert error is None, f"our own catar from a tar stream does not decode: {error}"


# --- HTTP request paths ---------------------------------------------------------------------

class _NoStore:
    def get_chunk(self, chunk_id: bytes, digest: object) -> Chunk:
        raise AssertionError("path parsing must not touch the store")

    def has_chunk(self, chunk_id: bytes) -> bool:
        raise AssertionError("path parsing must not touch the store")

    def close(self) -> None:
        pass


_HANDLERS = (ChunkHandler(_NoStore(), _SHA256),  # type: ignore[arg-type]
             ChunkHandler(_NoStore(), _SHA256, uncompressed=True))  # type: ignore[arg-type]


def target_http_paths(data: bytes) -> None:
    """The request-path grammar of chunk-server (``parse_chunk_path``, ``id_from_path``)
    and index-server (``valid_index_name``), on the input read as a (surrogate-escaped) string."""
    text = data.decode("utf-8", "surrogateescape")
    for suffix in (COMPRESSED_CHUNK_SUFFIX, UNCOMPRESSED_CHUNK_SUFFIX, ""):
        for root in ("/", ""):
            parsed = parse_chunk_path(text, suffix, root)
            if isinstance(parsed, bytes):
                assert len(parsed) == 32
                assert text.lower() == root + chunk_file_name(parsed, suffix), text
    for handler in _HANDLERS:
        answer = handler.id_from_path(text)
        assert isinstance(answer, bytes | str)
        if isinstance(answer, str):
            assert "\n" not in answer or "\n" in text
    if valid_index_name(text):
        assert "/" not in text and text not in ("", ".", "..") and "\0" not in text


def target_location_glob(data: bytes) -> None:
    """The config's ``store-options`` keys are globs matched against store locations
    (``location_match``): pattern and location are the input's first line and the rest."""
    pattern, _, location = data.decode("utf-8", "surrogateescape").partition("\n")
    # While the known exponential backtracking (fuzz/crashes/location_glob/many-stars) is
    # open, patterns keep at most KNOWN_HANG_STARS stars and locations 64 characters, so
    # the rest of the glob grammar gets fuzzed instead of that one hang every run.
    if KNOWN_HANG_STARS is not None:
        head, *stars = pattern.split("*")
        pattern = head + "".join(("*" if i < KNOWN_HANG_STARS else "") + part for i, part in enumerate(stars))
        location = location[:64]
    location_match(pattern, location or pattern)


KNOWN_HANG_STARS: int | None = 3


def target_listen_address(data: bytes) -> None:
    """``--listen`` of both servers: ``parse_listen`` on the (surrogate-escaped) text, as
    argv gives it."""
    _host, port = parse_listen(data.decode("utf-8", "surrogateescape"))
    assert 0 <= port <= 65535


# --- casync protocol streams (fuzz/casync_protocol.py) ------------------------------------

def target_casync_protocol(data: bytes) -> None:
    from fuzz.casync_protocol import target_casync_protocol as target

    target(data, _splits(data))


# --- config file ----------------------------------------------------------------------------

_CONFIG_DIR: str | None = None


def target_config(data: bytes) -> None:
    """``load_config`` on the bytes as a file; a loaded config must print (``config``),
    match locations and convert each entry to store options."""
    global _CONFIG_DIR
    if _CONFIG_DIR is None or not os.path.isdir(_CONFIG_DIR):
        _CONFIG_DIR = tempfile.mkdtemp(prefix="desync-fuzz-config-")
        atexit.register(shutil.rmtree, _CONFIG_DIR, True)
    path = os.path.join(_CONFIG_DIR, "config.json")
    with open(path, "wb") as f:
        f.write(data)
    config = load_config(path)
    config.to_json()
    for key in [*(config.store_options or {}), "http://example.invalid/store", "/var/store"]:
        apply_entry(DEFAULT_OPTIONS, config.options_for(key))


TARGETS: dict[str, Target] = {
    "index": target_index,
    "catar_decoder": target_catar_decoder,
    "catar_sinks": target_catar_sinks,
    "untar": target_untar,
    "chunk": target_chunk,
    "tarstream": target_tarstream,
    "http_paths": target_http_paths,
    "listen_address": target_listen_address,
    "location_glob": target_location_glob,
    "config": target_config,
    "casync_protocol": target_casync_protocol,
}

# Targets that touch a real file system, where an OSError can be a real OS refusal.
TOUCHES_FS = frozenset({"untar", "config"})


def run_one(name: str, data: bytes) -> None:
    """Run target ``name`` on ``data``; the library's own errors are an expected end."""
    allowed: tuple[type[BaseException], ...] = (DesyncRefError,)
    if name in TOUCHES_FS:
        allowed = (DesyncRefError, OSError)
    try:
        TARGETS[name](data)
    except allowed as exc:
        # Running out of descriptors is a leak in the code under test, not a refusal.
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            raise
