"""A hand-made mutation pass: put one deliberate bug at a time into the library and check
that the suite catches it.

Usage: ``python scripts/mutation_pass.py [--only N ...] [--timeout S]``. Each mutation is
applied to a detached worktree of HEAD (the checkout itself is never modified), then the
tests named as its likely catchers run first with ``-x``; if they all pass, the whole of
``tests`` and ``conformance`` runs. A mutation is *caught* when some test fails; the first
failing test is reported. Mutations in ``desync_ref/kernels/`` run with
``DESYNC_REF_PURE=1``, because the compiled kernels are built from the unmutated source.

The list below is the one reported in the note of the "every check can fail" issue; keep
each ``old`` snippet unique in its file, so a refactor that moves the code makes this
script say so instead of mutating something else.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    what: str
    path: str
    old: str
    new: str
    first: tuple[str, ...]  # test paths that should catch it; run before the whole suite


CHUNKER = ("tests/test_core_chunker.py",)
MAKE = ("tests/test_core_make_extract.py",)
INDEX = ("tests/test_formats_malformed.py", "tests/test_core_index.py")
STORES = ("tests/test_stores_compose.py", "tests/test_core_make_extract.py")
TAR = ("tests/test_tar_casync.py",)
UNTAR = ("tests/test_tar_casync.py", "tests/test_tar_golden.py")

MUTATIONS: tuple[Mutation, ...] = (
    Mutation("chunker: first cut possible one byte after min", "desync_ref/kernels/chunker.py",
             "length: i64 = min_size if min_size > WINDOW_SIZE else WINDOW_SIZE",
             "length: i64 = min_size + 1 if min_size > WINDOW_SIZE else WINDOW_SIZE", CHUNKER),
    Mutation("chunker: forced cut one byte after max", "desync_ref/kernels/chunker.py",
             "stop: i64 = pos + max_size\n", "stop: i64 = pos + max_size + 1\n", CHUNKER),
    Mutation("chunker: rolling hash drops the wrong byte", "desync_ref/kernels/chunker.py",
             "leave[data[i - WINDOW_SIZE]] ^ enter[data[i]]",
             "leave[data[i - WINDOW_SIZE + 1]] ^ enter[data[i]]", CHUNKER),
    Mutation("chunker: discriminator one above casync's", "desync_ref/chunking.py",
             "return min(max(raw, self.min), self.max)",
             "return min(max(raw + 1, self.min), self.max)", CHUNKER),
    Mutation("blob index flags: EXCLUDE_FILE bit dropped (desync's 0xA0)",
             "desync_ref/formats/constants.py",
             "CA_FORMAT_EXCLUDE_NODUMP | CA_FORMAT_EXCLUDE_FILE | CA_FORMAT_SHA512_256\n)",
             "CA_FORMAT_EXCLUDE_NODUMP | CA_FORMAT_SHA512_256\n)", MAKE),
    Mutation("index writer: table size 0 instead of UINT64_MAX", "desync_ref/formats/index.py",
             "yield _TABLE_HEADER.pack(UINT64_MAX, CA_FORMAT_TABLE)",
             "yield _TABLE_HEADER.pack(0, CA_FORMAT_TABLE)", MAKE),
    Mutation("index reader: accepts an empty chunk (offset not increasing)",
             "desync_ref/formats/index.py", "if end <= start:", "if end < start:", INDEX),
    Mutation("index reader: accepts chunks up to twice max", "desync_ref/formats/index.py",
             "if end - start > cmax:", "if end - start > 2 * cmax:", INDEX),
    Mutation("GOODBYE table written in reversed order", "desync_ref/formats/goodbye.py",
             "return [item for item in out if item is not None]",
             "return [item for item in out if item is not None][::-1]",
             ("tests/test_catar_format.py", "tests/test_tar_casync.py")),
    Mutation("GOODBYE SipHash finalisation constant", "desync_ref/formats/goodbye.py",
             "v2 ^= 0xFF", "v2 ^= 0xFE", ("tests/test_catar_format.py", "tests/test_tar_casync.py")),
    Mutation("a chunk from a store is not verified", "desync_ref/stores/__init__.py",
             "verify(chunk_id, chunk.data(), digest)", "chunk.data()", STORES),
    Mutation("the cache is never filled", "desync_ref/stores/cache.py",
             "self.cache.store_chunk(chunk)\n", "pass\n", STORES),
    Mutation("the router stops at the first store that lacks a chunk",
             "desync_ref/stores/router.py", "            except ChunkMissing:\n                continue\n",
             "            except ChunkMissing:\n                break\n", STORES),
    Mutation("failover gives up after the first failing member", "desync_ref/stores/failover.py",
             "for _ in range(len(self.stores)):", "for _ in range(1):",
             ("tests/test_stores_compose.py", "tests/test_servers_chunk.py")),
    Mutation("chunk-server stores a PUT body without verifying it", "desync_ref/server/chunks.py",
             "self.write_digest: Digest | None = None if skip_verify_write else digest",
             "self.write_digest: Digest | None = None",
             ("tests/test_servers_chunk.py", "tests/test_stores_compose.py")),
    Mutation("chunk-server -u stores an uncompressed PUT body without verifying it",
             "desync_ref/server/chunks.py",
             "chunk = Chunk.with_id(chunk_id, self.write_digest, data=body)",
             "chunk = Chunk.with_id(chunk_id, None, data=body)",
             ("tests/test_servers_chunk.py", "tests/test_hardening_http.py")),
    Mutation("extract: any chunk of a zero chunk's size counts as zeros",
             "desync_ref/operations/chunk_source.py",
             "return self._zero_ids.get(chunk.id) == chunk.size",
             "return chunk.size in self._zero_ids.values()", MAKE),
    Mutation("zstd: decompression limit not enforced", "desync_ref/formats/chunk.py",
             "if len(out) > limit:", "if len(out) > 4 * limit:", INDEX),
    Mutation("mtime not rounded to the flag set's granularity", "desync_ref/formats/flag_rules.py",
             "return mtime_from_u64(mtime_to_u64(mtime_ns) // g * g)", "return mtime_ns",
             ("tests/test_tar_casync.py",)),
    Mutation("read-only flag set keeps files writable by owner", "desync_ref/formats/flag_rules.py",
             "(0o555 if is_dir else 0o444)", "(0o555 if is_dir else 0o644)",
             ("tests/test_tar_casync.py",)),
    Mutation("tar: xattrs of the tree left out of the archive", "desync_ref/fs/walk.py",
             "e.xattrs.append((name, value))", "pass", TAR),
    Mutation("tar: children not in strcmp order", "desync_ref/fs/walk.py",
             "names = sorted(os.fsencode(n) for n in os.listdir(fd))",
             "names = sorted((os.fsencode(n) for n in os.listdir(fd)), reverse=True)", TAR),
    Mutation("catar writer: fcaps record before SELinux", "desync_ref/formats/catar.py",
             "    if e.selinux is not None:\n        parts.append(_string_record(CA_FORMAT_SELINUX, e.selinux))\n"
             "    if e.fcaps is not None:\n        parts.append(HEADER.pack(HEADER.size + len(e.fcaps), CA_FORMAT_FCAPS) + e.fcaps)\n",
             "    if e.fcaps is not None:\n        parts.append(HEADER.pack(HEADER.size + len(e.fcaps), CA_FORMAT_FCAPS) + e.fcaps)\n"
             "    if e.selinux is not None:\n        parts.append(_string_record(CA_FORMAT_SELINUX, e.selinux))\n",
             ("tests/test_catar_records.py", "tests/test_tar_casync.py")),
    Mutation("catar reader: accepts a FILENAME of '..'", "desync_ref/formats/catar.py",
             'name not in (b".", b"..")', 'name not in (b".",)',
             ("tests/test_catar_decoder.py", "tests/test_tar_safety.py")),
    Mutation("untar: file modes not restored", "desync_ref/fs/write.py",
             "os.fchmod(fd, self._mode(e))", "pass", UNTAR),
    Mutation("untar: xattrs not restored", "desync_ref/fs/write.py",
             "os.setxattr(fd, xname, value)", "pass", UNTAR),
    Mutation("parallel make: joins one cut past the shared one", "desync_ref/operations/make.py",
             "at = span.ends.index(ends[n])", "at = span.ends.index(ends[n]) + 1",
             ("tests/test_parallel_make.py",)),
    Mutation("mtree: spaces in names not escaped", "desync_ref/formats/mtree.py",
             'b in b"\\\\# "', 'b in b"\\\\#"', ("tests/test_mtree.py",)),
)


def _failed_test(output: str) -> str | None:
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return match.group(1) if match else None


def _pytest(tree: Path, targets: list[str], env: dict[str, str], timeout: float) -> tuple[bool, str]:
    """(passed, first failing test or reason)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *targets]
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timeout after {timeout:.0f} s"
    if proc.returncode == 0:
        return True, ""
    if proc.returncode == 5:
        return False, "no tests ran (a catcher path is wrong)"
    return False, _failed_test(proc.stdout) or proc.stdout.strip().splitlines()[-1]


def run(mutations: list[tuple[int, Mutation]], timeout: float) -> int:
    tree = Path(tempfile.mkdtemp(prefix="desync-ref-mutants-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), "HEAD"], cwd=ROOT, check=True)
    try:
        for so in (ROOT / "desync_ref" / "kernels").glob("*.so"):
            shutil.copy2(so, tree / "desync_ref" / "kernels" / so.name)
        base_env = dict(os.environ, PYTHONPATH=str(tree), DESYNC_REF_REQUIRE_COMPONENTS="1")
        survived = 0
        print("| # | mutation | file | caught by | seconds |")
        print("|---|---|---|---|---|")
        for number, m in mutations:
            target = tree / m.path
            original = target.read_text()
            if original.count(m.old) != 1:
                print(f"| {number} | {m.what} | `{m.path}` | NOT APPLIED: snippet found "
                      f"{original.count(m.old)} times | |")
                survived += 1
                continue
            target.write_text(original.replace(m.old, m.new))
            env = dict(base_env)
            if m.path.startswith("desync_ref/kernels/"):
                env["DESYNC_REF_PURE"] = "1"
            started = time.monotonic()
            try:
                passed, caught_by = _pytest(tree, list(m.first), env, timeout)
                if passed:
                    passed, caught_by = _pytest(tree, ["tests", "conformance"], env, timeout)
            finally:
                target.write_text(original)
            took = time.monotonic() - started
            if passed:
                survived += 1
                caught_by = "**SURVIVED**"
            print(f"| {number} | {m.what} | `{m.path}` | {caught_by} | {took:.0f} |", flush=True)
        return 1 if survived else 0
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
        shutil.rmtree(tree.parent, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=int, nargs="*", help="mutation numbers to run (1-based)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per pytest run")
    args = parser.parse_args()
    chosen = [(n, m) for n, m in enumerate(MUTATIONS, 1) if not args.only or n in args.only]
    return run(chosen, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
