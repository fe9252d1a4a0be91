"""What a command loads before it does any work (issue 14: start-up time).

Each test runs a fresh interpreter, builds the parser of one command (or runs a small
command) and reads ``sys.modules`` there: a top-level import of the servers, the remote
store clients, the catar codecs or multiprocessing in a module that parsing or a small run
goes through makes these fail. No timing is asserted, only what was imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Never needed to parse a local command line; each costs milliseconds at every start.
HEAVY = (
    "aiohttp", "boto3", "botocore", "paramiko", "google", "urllib3", "requests",
    "http.client", "http.server", "urllib.request", "ssl", "asyncio", "socket",
    "multiprocessing", "concurrent.futures.process", "zstandard", "hashlib", "logging",
    "tarfile", "csv", "json",
    "desync_ref.server", "desync_ref.mount", "desync_ref.audit", "desync_ref.operations",
    "desync_ref.stores", "desync_ref.config", "desync_ref.formats.chunk",
    "desync_ref.formats.index", "desync_ref.formats.records", "desync_ref.formats.catar",
    "desync_ref.formats.catar_decoder", "desync_ref.formats.casync_protocol",
    "desync_ref.formats.gnutar", "desync_ref.formats.tarstream", "desync_ref.fs.exclude",
)

LOCAL_COMMANDS = {
    "make": ["make", "-s", "store", "out.caibx", "blob"],
    "extract": ["extract", "-s", "store", "--seed", "a.caibx", "in.caibx", "out"],
    "cat": ["cat", "-s", "store", "in.caibx", "out"],
    "chop": ["chop", "-s", "store", "in.caibx", "blob"],
    "verify": ["verify", "-s", "store"],
    "tar": ["tar", "-i", "-s", "store", "out.caidx", "dir"],
    "untar": ["untar", "-i", "-s", "store", "in.caidx", "dir"],
}


def _loaded_after(code: str, cwd: Path | None = None) -> tuple[set[str], str]:
    """Run ``code`` in a fresh interpreter; the modules it left loaded and its stdout
    (everything before the last line, which carries the module list)."""
    probe = code + "\nimport sys\nloaded = sorted(sys.modules)\nimport json\nprint(json.dumps(loaded))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=cwd, env=dict(os.environ), timeout=120, check=True)
    *out, modules = done.stdout.splitlines()
    return set(json.loads(modules)), "\n".join(out)


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules for heavy in HEAVY if m == heavy or m.startswith(heavy + "."))


@pytest.mark.parametrize("command", sorted(LOCAL_COMMANDS))
def test_parser_of_a_local_command_loads_nothing_heavy(command: str) -> None:
    argv = LOCAL_COMMANDS[command]
    modules, _ = _loaded_after(
        "from desync_ref.cli import build_parser\n"
        f"args = build_parser({argv!r}).parse_args({argv!r})\n"
        f"assert args.command == {command!r}, args\n")
    assert f"desync_ref.cli.{command}" in modules
    assert _heavy(modules) == []
    # Only the command asked for is built.
    others = {f"desync_ref.cli.{name}" for name in LOCAL_COMMANDS if name != command}
    assert modules & others == set()


def test_version_builds_no_command() -> None:
    modules, out = _loaded_after(
        "from desync_ref.cli import main, version_text\n"
        "try:\n    main(['--version'])\nexcept SystemExit as exc:\n    assert exc.code == 0\n"
        "print('expected:', version_text())\n")
    printed, expected = out.splitlines()
    assert f"expected: {printed}" == expected and printed.startswith("desync-ref ")
    assert not [m for m in modules if m.startswith("desync_ref.cli.") and m != "desync_ref.cli.usage"
                and m != "desync_ref.cli.common"]
    assert _heavy(modules) == []


def test_help_still_lists_every_command() -> None:
    from desync_ref.cli import COMMANDS

    done = subprocess.run([sys.executable, "-m", "desync_ref", "--help"], capture_output=True,
                          text=True, check=True, timeout=120)
    for name in COMMANDS:
        assert name in done.stdout


def test_small_make_and_extract_start_no_worker_processes(tmp_path: Path) -> None:
    """A small file is chunked and extracted in one process: multiprocessing, the catar
    codecs and the dump's records stay unloaded, and the bytes come back whole."""
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(300_000) + bytes(70_000) + os.urandom(50_000))
    modules, _ = _loaded_after(
        "from desync_ref.cli import main\n"
        "assert main(['make', '-s', 'store', 'blob.caibx', 'blob']) == 0\n"
        "assert main(['extract', '-s', 'store', 'blob.caibx', 'out']) == 0\n",
        cwd=tmp_path)
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
    for name in ("multiprocessing", "concurrent.futures.process", "desync_ref.formats.records",
                 "desync_ref.formats.catar", "desync_ref.server", "http.client", "csv", "json"):
        assert name not in modules, name


def test_exclude_patterns_need_no_child_process() -> None:
    """fs/exclude.py reaches glibc's fnmatch without ``ctypes.util.find_library`` (which
    runs ldconfig in a child process, at every start when it was done at import)."""
    _, out = _loaded_after(
        "import subprocess\n"
        "def refuse(*args, **kwargs):\n    raise AssertionError(f'child process {args!r}')\n"
        "subprocess.Popen = refuse\n"
        "from desync_ref.fs.exclude import fnmatch\n"
        "print(fnmatch(b'*.o', b'a.o'), fnmatch(b'*', b'.hidden'), fnmatch(b'[[:digit:]]x', b'7x'),"
        " fnmatch(b'a\\\\*', b'a*'), fnmatch(b'a\\\\*', b'ab'))\n")
    assert out == "True False True True False"


def test_tar_of_a_directory_loads_no_tar_reader(tmp_path: Path) -> None:
    """tar of a directory and untar of its catar: the tar-stream reader (tarfile) and
    multiprocessing stay unloaded, and the tree comes back."""
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a").write_bytes(b"hello\n")
    (tree / "sub" / "b").write_bytes(os.urandom(20_000))
    modules, _ = _loaded_after(
        "from desync_ref.cli import main\n"
        "assert main(['tar', 't.catar', 'tree']) == 0\n"
        "assert main(['untar', 't.catar', 'back']) == 0\n",
        cwd=tmp_path)
    assert (tmp_path / "back" / "a").read_bytes() == b"hello\n"
    assert (tmp_path / "back" / "sub" / "b").read_bytes() == (tree / "sub" / "b").read_bytes()
    for name in ("tarfile", "multiprocessing", "desync_ref.formats.tarstream", "desync_ref.server"):
        assert name not in modules, name


def test_extract_by_worker_processes_starts_lean(tmp_path: Path) -> None:
    """An extract large enough for worker processes: the parent reads the index and plans
    without the dump's records (loaded only for a damaged index), the servers or the JSON
    and CSV writers, leaves the cyclic collector on as it found it (it is held off only
    while the entries and the plan are made), and the bytes come back whole."""
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(6 << 20) + bytes(600_000) + os.urandom(300_000))
    modules, out = _loaded_after(
        "import gc\n"
        "import desync_ref.operations.extract_workers as workers\n"
        "from desync_ref.cli import main\n"
        "assert main(['make', '-s', 'store', 'blob.caibx', 'blob']) == 0\n"
        "ran = []\n"
        "plan = workers.run_plan\n"
        "def counted(*args, **kwargs):\n"
        "    ran.append(gc.isenabled())\n"
        "    return plan(*args, **kwargs)\n"
        "workers.run_plan = counted\n"
        "assert main(['extract', '-n', '2', '-s', 'store', 'blob.caibx', 'out']) == 0\n"
        "print(ran, gc.isenabled())\n",
        cwd=tmp_path)
    assert out == "[True] True"  # the worker path ran, with the collector on
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
    for name in ("desync_ref.formats.records", "desync_ref.server", "desync_ref.audit",
                 "http.client", "csv", "json"):
        assert name not in modules, name
