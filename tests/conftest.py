"""Shared fixtures: the real casync as oracle, the CLI as a subprocess, peer fixtures.

With ``DESYNC_REF_REQUIRE_COMPONENTS=1`` (``make test`` and CI set it) a test skipped
because a part is missing (casync, desync's fixtures, GNU tar, the compiled chunker, ...)
fails instead, with the skip's reason: a run that checked less than the whole suite must
not end green. Without the variable (one file run by hand) such tests are skipped. A skip
that is not about a missing part raises ``NotAComponent`` and stays a skip either way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

# Real servers started once per session; each plugin module is one component.
pytest_plugins = ["sshd_server", "oci_registry_server", "gcs_server", "rgw_server"]

ROOT = Path(__file__).resolve().parent.parent
PEER_FIXTURES = ROOT / "fixtures" / "desync"  # desync's own test data, see its README
REQUIRE_ENV = "DESYNC_REF_REQUIRE_COMPONENTS"


def components_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


class NotAComponent(pytest.skip.Exception):
    """A skip for a reason other than a missing part (e.g. not running as root)."""


def skip_not_component(reason: str) -> NoReturn:
    raise NotAComponent(reason, _use_item_location=True)


def require_fuse() -> None:
    """Skip unless this run can mount over FUSE: root, /dev/fuse, fusermount, fusepy, libfuse2."""
    if os.geteuid() != 0:
        skip_not_component("FUSE mounts in these tests need root (devices, owners, trusted xattrs)")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing (kernel module fuse)")
    if shutil.which("fusermount") is None and shutil.which("fusermount3") is None:
        pytest.skip("fusermount is not installed (Debian package 'fuse3')")
    try:
        import fuse  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        pytest.skip("fusepy is not installed (Python package 'fusepy', extra 'fuse')")
    except OSError:
        pytest.skip("libfuse2 is not installed (Debian package 'libfuse2')")


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _required_failure(report: pytest.TestReport | pytest.CollectReport) -> None:
    report.outcome = "failed"
    report.longrepr = f"{REQUIRE_ENV}=1 and a required part is missing: {_skip_reason(report)}"


# Old-style wrappers (hookwrapper=True) work with every pytest >= 7 that pyproject allows.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if (report.skipped and components_required() and not hasattr(report, "wasxfail")
            and not (call.excinfo is not None and call.excinfo.errisinstance(NotAComponent))):
        _required_failure(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    """A whole module skipped at import (``importorskip``) is a missing part too."""
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if report.skipped and components_required():
        _required_failure(report)


@pytest.fixture(scope="session")
def casync() -> str:
    path = shutil.which("casync")
    if path is None:
        pytest.skip("casync is not installed (Debian package 'casync')")
    return path


@pytest.fixture(scope="session")
def peer() -> Path:
    if not PEER_FIXTURES.exists():
        pytest.skip(f"desync peer fixtures not found at {PEER_FIXTURES}")
    return PEER_FIXTURES


def run_cli(args: Sequence[str | os.PathLike[str]], *, input: bytes | None = None,
            check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m desync_ref`` and return its result; ``check`` demands exit 0."""
    proc = subprocess.run([sys.executable, "-m", "desync_ref", *map(str, args)], input=input,
                          capture_output=True, cwd=cwd, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"desync-ref {args} failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc


def assert_clean_failure(proc: subprocess.CompletedProcess[bytes]) -> str:
    """A refused input: non-zero exit, exactly one line on stderr, no traceback."""
    err = proc.stderr.decode()
    assert proc.returncode != 0, "expected a failure"
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def bytes_read() -> int:
    """What this process has read so far (``rchar`` of /proc/self/io): a test that must not
    read a file's holes compares it before and after."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, zombies included (an unreaped worker is one)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                status = Path(entry.path, "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found
