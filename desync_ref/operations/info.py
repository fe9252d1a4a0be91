"""info: counts and sizes of an index against stores, a cache, seeds and a chunks-info file.

Spec: ``spec/index.md``. The fields, their order and the counting rules (a chunk counts
once; compressed sizes are summed only while the chunks-info file has a non-zero
compressed size for every chunk needed) follow desync ``cmd/desync/info.go``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desync_ref.errors import DesyncRefError, InvalidFormat, InvalidParameter
from desync_ref.formats.chunk import parse_id
from desync_ref.formats.index import Index
from desync_ref.operations.parallel import ordered_map
from desync_ref.stores import Store


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """One entry of ``inspect-chunks`` output (desync ``chunkadditionalinfo.go``)."""

    id: bytes
    uncompressed_size: int
    compressed_size: int = 0

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": self.id.hex(), "uncompressed_size": self.uncompressed_size}
        if self.compressed_size:  # omitempty
            entry["compressed_size"] = self.compressed_size
        return entry


def read_chunks_info(location: str) -> dict[bytes, ChunkInfo]:
    """A JSON list as written by ``inspect-chunks``, keyed by id (the last entry wins)."""
    try:
        document = json.loads(Path(location).read_bytes())
    except OSError as exc:
        raise DesyncRefError(f"cannot read chunks info {location}: {exc.strerror}") from None
    except ValueError as exc:
        raise InvalidFormat(f"{location}: not valid JSON: {exc}") from None
    if document is None:
        return {}
    if not isinstance(document, list):
        raise InvalidFormat(f"{location}: expected a JSON list of chunk entries")
    infos: dict[bytes, ChunkInfo] = {}
    for n, entry in enumerate(document):
        info = _chunk_info(entry)
        if info is None:
            raise InvalidFormat(f"{location}: entry {n} is not a valid chunk entry")
        infos[info.id] = info
    return infos


def _chunk_info(entry: object) -> ChunkInfo | None:
    if not isinstance(entry, dict):
        return None
    sizes = [entry.get("uncompressed_size", 0), entry.get("compressed_size", 0)]
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in sizes):
        return None
    text = entry.get("id")
    try:
        chunk_id = parse_id(text) if isinstance(text, str) else None
    except InvalidParameter:
        return None
    return None if chunk_id is None else ChunkInfo(chunk_id, sizes[0], sizes[1])


@dataclass
class InfoResults:
    total: int = 0
    unique: int = 0
    in_store: int = 0
    in_seed: int = 0
    in_cache: int = 0
    not_in_seed_nor_cache: int = 0
    size: int = 0
    size_not_in_seed: int = 0
    size_not_in_seed_nor_cache: int = 0
    size_not_in_seed_nor_cache_compressed: int = 0
    chunk_size_min: int = 0
    chunk_size_avg: int = 0
    chunk_size_max: int = 0

    def to_json(self) -> dict[str, int]:
        """desync's JSON keys, in desync's order."""
        return {
            "total": self.total,
            "unique": self.unique,
            "in-store": self.in_store,
            "in-seed": self.in_seed,
            "in-cache": self.in_cache,
            "not-in-seed-nor-cache": self.not_in_seed_nor_cache,
            "size": self.size,
            "dedup-size-not-in-seed": self.size_not_in_seed,
            "dedup-size-not-in-seed-nor-cache": self.size_not_in_seed_nor_cache,
            "dedup-size-not-in-seed-nor-cache-compressed": self.size_not_in_seed_nor_cache_compressed,
            "chunk-size-min": self.chunk_size_min,
            "chunk-size-avg": self.chunk_size_avg,
            "chunk-size-max": self.chunk_size_max,
        }

    def plain_lines(self) -> list[str]:
        """desync's ``--format plain`` lines, in desync's order."""
        return [
            f"Blob size: {self.size}",
            f"Size of deduplicated chunks not in seed: {self.size_not_in_seed}",
            f"Size of deduplicated chunks not in seed nor cache: {self.size_not_in_seed_nor_cache}",
            f"Total chunks: {self.total}",
            f"Unique chunks: {self.unique}",
            f"Chunks in store: {self.in_store}",
            f"Chunks in seed: {self.in_seed}",
            f"Chunks in cache: {self.in_cache}",
            f"Chunks not in seed nor cache: {self.not_in_seed_nor_cache}",
            f"Compressed chunks not in seed nor cache: {self.size_not_in_seed_nor_cache_compressed}",
            f"Chunk size min: {self.chunk_size_min}",
            f"Chunk size avg: {self.chunk_size_avg}",
            f"Chunk size max: {self.chunk_size_max}",
        ]


def index_info(index: Index, *, seeds: Iterable[Index] = (), cache: Store | None = None,
               store: Store | None = None, chunks_info: dict[bytes, ChunkInfo] | None = None,
               workers: int = 1) -> InfoResults:
    results = InfoResults(size=index.length, chunk_size_min=index.chunk_size_min,
                          chunk_size_avg=index.chunk_size_avg, chunk_size_max=index.chunk_size_max)
    seed_ids = {chunk.id for seed in seeds for chunk in seed.chunks}
    estimate = chunks_info is not None
    seen: dict[bytes, None] = {}
    for chunk in index.chunks:
        results.total += 1
        if chunk.id in seen:
            continue
        seen[chunk.id] = None
        in_seed = chunk.id in seed_ids
        in_cache = cache is not None and cache.has_chunk(chunk.id)
        results.in_seed += in_seed
        results.in_cache += in_cache
        if in_seed:
            continue
        results.size_not_in_seed += chunk.size
        if in_cache:
            continue
        results.not_in_seed_nor_cache += 1
        results.size_not_in_seed_nor_cache += chunk.size
        if estimate and chunks_info is not None:
            info = chunks_info.get(chunk.id)
            # One chunk without a compressed size makes the estimate meaningless.
            if info is None or info.compressed_size == 0:
                estimate = False
                results.size_not_in_seed_nor_cache_compressed = 0
            else:
                results.size_not_in_seed_nor_cache_compressed += info.compressed_size
            if info is not None and info.uncompressed_size != chunk.size:
                raise InvalidFormat(
                    f"the chunks info file has an unexpected size for the chunk {chunk.id.hex()}: "
                    f"{info.uncompressed_size} instead of {chunk.size}"
                )
    results.unique = len(seen)
    if store is not None:
        results.in_store = sum(ordered_map(store.has_chunk, seen, workers))
    return results
