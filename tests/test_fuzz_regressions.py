"""Regression tests for the crashes fuzzing found (``fuzz/crashes/``, one line each in
``fuzz/crashes/README.md``). Each test asserts the right outcome; while the bug is open it
is marked ``xfail(strict=True)``, so the fix makes it XPASS and fail until the marker (and
the bug's entry in ``fuzz/known.py``) is removed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from desync_ref.config import ConfigError, load_config  # noqa: E402
from desync_ref.errors import InvalidParameter  # noqa: E402
from desync_ref.server.options import parse_listen  # noqa: E402
from fuzz.targets import run_one  # noqa: E402

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only

CRASHES = ROOT / "fuzz" / "crashes"


def _child(code: str, *, timeout: float, memory_mb: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (a hang or a memory blow-up must not take pytest
    with it): under ``ulimit -v memory_mb`` and killed after ``timeout`` seconds."""
    prefix = ""
    if memory_mb is not None:
        prefix = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({memory_mb << 20}, {memory_mb << 20}))\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    try:
        return subprocess.run([sys.executable, "-c", prefix + code], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=ROOT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"no result after {timeout} s")


def test_tar_stream_negative_pax_mtime() -> None:
    run_one("tarstream", (CRASHES / "tarstream" / "negative-pax-mtime.tar").read_bytes())


def test_tar_stream_exponent_pax_mtime() -> None:
    run_one("tarstream", (CRASHES / "tarstream" / "exponent-pax-mtime.tar").read_bytes())


def test_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes((CRASHES / "config" / "non-utf8.json").read_bytes())
    with pytest.raises(ConfigError):
        load_config(path)


@pytest.mark.parametrize("name", ["superscript-port", "nul-in-service", "non-utf8-service", "5000-digit-port"])
def test_listen_address_junk_port(name: str) -> None:
    text = (CRASHES / "listen_address" / name).read_bytes().decode("utf-8", "surrogateescape")
    with pytest.raises(InvalidParameter):
        parse_listen(text)


def test_location_glob_many_stars() -> None:
    pattern, _, location = (CRASHES / "location_glob" / "many-stars").read_text().partition("\n")
    done = _child(f"from desync_ref.config import location_match\n"
                  f"print(location_match({pattern!r}, {location!r}))", timeout=10)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def test_chunk_zstd_bomb() -> None:
    done = _child("from desync_ref.errors import ChunkInvalid\n"
                  "from desync_ref.formats.chunk import decompress\n"
                  "blob = open('fuzz/crashes/chunk/zstd-bomb-3g.cacnk', 'rb').read()\n"
                  "try:\n    decompress(blob)\nexcept ChunkInvalid:\n    print('ChunkInvalid')\n",
                  timeout=60, memory_mb=1536)
    assert done.returncode == 0 and done.stdout.strip() == "ChunkInvalid", done.stderr[-500:]


def test_untar_device_number_over_32_bits() -> None:
    run_one("untar", (CRASHES / "untar" / "device-number-over-32-bits.catar").read_bytes())


def test_untar_gid_out_of_range() -> None:
    run_one("untar", (CRASHES / "untar" / "gid-out-of-range.catar").read_bytes())


def test_gnutar_uid_over_63_bits() -> None:
    run_one("catar_sinks", (CRASHES / "catar_sinks" / "gnutar-uid-over-63-bits.catar").read_bytes())


@pytest.mark.parametrize("name", ["acl-uid-over-32-bits", "default-acl-id-over-32-bits",
                                  "acl-permissions-over-16-bits"])
def test_untar_acl_values_out_of_range(name: str) -> None:
    run_one("untar", (CRASHES / "untar" / f"{name}.catar").read_bytes())


@pytest.mark.parametrize("name", ["truncated-leaks-fds", "empty-leaks-fd"])
def test_untar_failure_leaks_no_descriptors(name: str) -> None:
    run_one("untar", (CRASHES / "untar" / f"{name}.catar").read_bytes())
