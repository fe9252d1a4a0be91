"""``--seed INDEX[:DATA]`` and ``--seed-dir DIR``, shared by extract and mount-index.

desync ``cmd/desync/extract.go`` (``readSeeds``, ``readSeedDirs``). Spec: spec/extract.md
(seed arguments).
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from desync_ref.cli.common import AppendSlice
from desync_ref.cli.usage import UsageError

if TYPE_CHECKING:  # the seeds code is imported when a run reads the seeds, not to parse
    from desync_ref.operations.seeds import SeedSpec

SEED_HELP = (
    "seed: an index (its data is the index path without .caibx, or give it as INDEX:DATA), "
    "or a plain file without an index, which is chunked first with the target index's chunk "
    "sizes (this reads and hashes the whole file once before extracting)")


def add_seed_options(parser: argparse.ArgumentParser, seed_help: str = SEED_HELP) -> None:
    parser.add_argument("--seed", action=AppendSlice, default=[], help=seed_help)
    parser.add_argument("--seed-dir", action=AppendSlice, default=[],
                        help="directory with seed index files (every *.caibx with its data)")


def seed_spec(text: str) -> SeedSpec:
    """desync's ``readSeeds``: ``INDEX.caibx`` (data beside it) or ``INDEX:DATA[:options]``;
    beyond desync, any other existing file is a plain seed, chunked on the fly."""
    from desync_ref.operations.seeds import INDEX_SUFFIX, SeedSpec

    if text.endswith(INDEX_SUFFIX):
        return SeedSpec(text, text[:-len(INDEX_SUFFIX)])
    parts = text.split(":")
    if len(parts) >= 2 and parts[0] and parts[1]:
        return SeedSpec(parts[0], parts[1])
    if os.path.exists(text):
        return SeedSpec(None, text)
    raise UsageError(f"the provided seed argument {text!r} seems to be malformed")


def seed_specs(args: argparse.Namespace, target_index: str) -> list[SeedSpec]:
    """The seeds named by ``--seed`` and found in each ``--seed-dir``, in that order."""
    from desync_ref.operations.seeds import seed_dir_specs

    specs = [seed_spec(text) for text in args.seed]
    for directory in args.seed_dir:
        specs.extend(seed_dir_specs(directory, target_index))
    return specs
