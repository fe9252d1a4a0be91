"""Seeds for extract: files already on disk that hold some of the target's chunks.

An index seed is an index with its data file (desync's ``FileSeed``, ``fileseed.go``; the
data is the index path without ``.caibx``, or given explicitly, ``cmd/desync/extract.go``
``readSeeds``); a seed directory contributes every ``*.caibx`` in it that has its data file
beside it, except the target's own index (``readSeedDirs``). Beyond desync, a plain file
without an index is chunked on the fly with the target's chunk sizes (casync's ``--seed``;
desync #178). A seed's data is checked against its index only where the plan takes chunks
from it (desync's ``Plan.Validate``, ``sequencer.go``); a seed that does not match is
refused, skipped or re-chunked in memory (``InvalidSeedAction``, ``assemble.go``).

Spec: spec/extract.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import cast

from desync_ref.errors import DesyncRefError, InvalidParameter
from desync_ref.formats.chunk import digest_function
from desync_ref.formats.index import Index
from desync_ref.log import get_logger
from desync_ref.operations.files import read_index
from desync_ref.stores.options import StoreOptions

INDEX_SUFFIX = ".caibx"

log = get_logger(__name__)  # --verbose: the seeds given and what they hold


class InvalidSeed(DesyncRefError):
    """A seed's data does not match its index (or cannot be read)."""

    def __init__(self, message: str, seed: Seed) -> None:
        super().__init__(message)
        self.seed = seed


@dataclass(frozen=True)
class SeedSpec:
    """What the command line names: an index (None for a plain file) and the data file."""

    index: str | None
    data: str


@dataclass(eq=False)
class Seed:
    """One seed: its data file and the index that describes it (made here for a plain file)."""

    spec: SeedSpec
    index: Index
    regenerated: bool = False
    ids: list[bytes] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._refresh()

    @property
    def data(self) -> str:
        return self.spec.data

    @property
    def name(self) -> str:
        return self.spec.index or self.spec.data

    def _refresh(self) -> None:
        self.ids = [c.id for c in self.index.chunks]
        self.sizes = [c.size for c in self.index.chunks]

    def check(self, fd: int, first: int, count: int) -> None:
        """The seed's chunks ``first..first+count-1`` hold what their ids say."""
        digest = digest_function(self.index.digest)
        chunks = self.index.chunks[first:first + count]
        if not chunks:
            return
        start = chunks[0].start
        data = os.pread(fd, chunks[-1].end - start, start)
        view = memoryview(data)
        for chunk in chunks:
            piece = view[chunk.start - start:chunk.end - start]
            if len(piece) != chunk.size or digest(cast(bytes, piece)) != chunk.id:
                raise InvalidSeed(f"seed index for {self.data} doesn't match its data", self)

    def regenerate(self, workers: int) -> None:
        """Re-chunk the data with the index's chunk sizes; nothing is written to disk."""
        from desync_ref.chunking import ChunkSizes
        from desync_ref.operations.make import make_index

        sizes = ChunkSizes(self.index.chunk_size_min, self.index.chunk_size_avg,
                           self.index.chunk_size_max)
        try:
            self.index, _ = make_index(self.data, sizes, digest=self.index.digest,
                                       workers=workers)
        except OSError as exc:
            raise DesyncRefError(f"cannot read seed {self.data}: {exc.strerror or exc}") from None
        self.regenerated = True
        self._refresh()


def seed_dir_specs(directory: str, target_index: str) -> list[SeedSpec]:
    """Every ``*.caibx`` under ``directory`` with its data beside it, except the target's
    own index (desync walks the tree, ``readSeedDirs``)."""
    if not os.path.isdir(directory):
        raise InvalidParameter(f"seed directory {directory} is not a directory", parameter="seed-dir")
    own = os.path.abspath(target_index)
    specs: list[SeedSpec] = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            if not name.endswith(INDEX_SUFFIX):
                continue
            path = os.path.join(root, name)
            if os.path.abspath(path) == own:
                continue
            data = path[:-len(INDEX_SUFFIX)]
            if os.path.exists(data):
                specs.append(SeedSpec(path, data))
    return specs


def open_seeds(specs: list[SeedSpec], target: Index, output: str,
               options: StoreOptions | None = None, workers: int = 1) -> list[Seed]:
    """Read each seed's index (or chunk a plain file), refusing a seed that is the output."""
    seeds: list[Seed] = []
    for spec in specs:
        _refuse_output(spec, output)
        if spec.index is not None:
            seeds.append(Seed(spec, read_index(spec.index, None, options)))
            log.info("seed %s: data %s, %d chunks", spec.index, spec.data,
                     len(seeds[-1].index.chunks))
            continue
        # A plain seed is chunked here: only then are the chunker and make loaded.
        from desync_ref.chunking import ChunkSizes
        from desync_ref.operations.make import make_index

        sizes = ChunkSizes(target.chunk_size_min, target.chunk_size_avg, target.chunk_size_max)
        try:
            index, _ = make_index(spec.data, sizes, digest=target.digest, workers=workers)
        except IsADirectoryError:
            raise InvalidParameter(f"seed {spec.data} is a directory", parameter="seed") from None
        except OSError as exc:
            raise DesyncRefError(f"cannot read seed {spec.data}: {exc.strerror or exc}") from None
        seeds.append(Seed(spec, index))
        log.info("seed %s: plain file, chunked here into %d chunks", spec.data, len(index.chunks))
    return seeds


def _refuse_output(spec: SeedSpec, output: str) -> None:
    """Extracting onto a seed's own data would read what is being overwritten."""
    same = os.path.abspath(spec.data) == os.path.abspath(output)
    if not same:
        try:
            same = os.path.samefile(spec.data, output)
        except OSError:
            same = False
    if same:
        raise InvalidParameter(f"seed {spec.data} is the output file", parameter="seed")
