"""The conformance runner's framework: running commands, check results, tasks, JUnit.

A *task* is one unit of work (a golden case, a peer fixture, a damaged index ...) that
reports one or more *checks*; each check ends as PASS, FAIL (with the reason) or SKIP
(with the reason). Families of cases (``conformance/*_cases.py``) build tasks from
``Task``, ``Checks`` and ``Context`` here; ``conformance.suite`` plans and runs them.

A check that cannot run because a component is absent (casync, desync's fixtures,
``zstandard``) reports ``Checks.missing``: SKIP for a developer running by hand, FAIL when
``DESYNC_REF_REQUIRE_COMPONENTS`` is set (``make test``, CI), so nothing is hidden there.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import subprocess
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
DEFAULT_TIMEOUT = 300.0
REQUIRE_ENV = "DESYNC_REF_REQUIRE_COMPONENTS"


def require_components_from_env() -> bool:
    """True when ``DESYNC_REF_REQUIRE_COMPONENTS`` is set to anything but ``""``/``0``."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


# --- running commands ----------------------------------------------------------------------

# Long paths in messages are shortened to these names (``$TMP``, ``$PEER``, the repository).
ALIASES: dict[str, str] = {}


def shorten(text: str) -> str:
    for path, alias in sorted(ALIASES.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(path, alias)
    return text


@dataclass
class Proc:
    """A finished command: argv, exit status, stdout bytes, stderr text."""

    argv: list[str]
    rc: int
    stdout: bytes
    stderr: str

    @property
    def cmd(self) -> str:
        return shorten(shlex.join(self.argv))

    def why(self) -> str:
        err = shorten(" | ".join(self.stderr.strip().splitlines()[-3:]))
        return f"`{self.cmd}` exited {self.rc}" + (f": {err}" if err else "")


class Runner:
    """Runs the tool under test (``impl``) and casync, with a timeout per command."""

    def __init__(self, impl: list[str], casync: str | None, timeout: float) -> None:
        self.impl = impl
        self.casync = casync
        self.timeout = timeout

    def run(self, argv: list[str], cwd: Path | None = None) -> Proc:
        try:
            cp = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=self.timeout,
                                stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            return Proc(argv, 127, b"", f"cannot run: {exc}")
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if exc.stderr else ""
            return Proc(argv, -999, b"", f"timed out after {self.timeout:g}s {err}")
        return Proc(argv, cp.returncode, cp.stdout, cp.stderr.decode(errors="replace"))

    def impl_run(self, *args: str | Path, digest: str = "sha512-256",
                 cwd: Path | None = None) -> Proc:
        extra = ["--digest", "sha256"] if digest == "sha256" else []
        return self.run([*self.impl, *extra, *map(str, args)], cwd=cwd)

    def casync_run(self, *args: str | Path, cwd: Path | None = None) -> Proc:
        if self.casync is None:
            raise Missing("casync not installed")
        return self.run([self.casync, *map(str, args)], cwd=cwd)


def find_casync(option: str | None) -> str | None:
    """The casync binary: ``option`` if given (``none``: absent), else ``casync`` on PATH."""
    if option == "none":
        return None
    if option:
        return option if Path(option).exists() or shutil.which(option) else None
    return shutil.which("casync")


# --- results ---------------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0


class Prereq(Exception):
    """A step that every check of the task depends on failed: all of them FAIL."""


class Missing(Exception):
    """A component a check needs is absent (casync, desync's fixtures, zstandard)."""


@dataclass
class Checks:
    """What one task reports: one result per declared check name."""

    task: str
    names: list[str]
    selected: set[str]
    require: bool = False  # a missing component is a FAIL, not a SKIP
    results: dict[str, Result] = field(default_factory=dict)

    def full(self, sub: str) -> str:
        return f"{self.task}:{sub}" if sub else self.task

    def wanted(self, sub: str) -> bool:
        return self.full(sub) in self.selected

    def report(self, sub: str, status: str, detail: str = "") -> None:
        name = self.full(sub)
        if name not in self.results:
            self.results[name] = Result(name, status, detail)

    def ok(self, sub: str, detail: str = "") -> None:
        self.report(sub, PASS, detail)

    def fail(self, sub: str, detail: str) -> None:
        self.report(sub, FAIL, detail)

    def skip(self, sub: str, reason: str) -> None:
        """A deliberate skip (an option, or a step this one depends on already failed)."""
        self.report(sub, SKIP, reason)

    def missing(self, sub: str, reason: str) -> None:
        """The check cannot run because a component is absent."""
        if self.require:
            self.fail(sub, f"{reason} (required: {REQUIRE_ENV} is set)")
        else:
            self.skip(sub, reason)

    def expect(self, sub: str, problem: str | None, detail: str = "") -> bool:
        """PASS if ``problem`` is None/empty, else FAIL with it. Returns success."""
        if problem:
            self.fail(sub, problem)
            return False
        self.ok(sub, detail)
        return True

    def check(self, sub: str, probe: Callable[[], str | None], detail: str = "") -> bool:
        """``expect(sub, probe())``, reporting ``missing`` if the probe lacks a component."""
        try:
            problem = probe()
        except Missing as exc:
            self.missing(sub, str(exc))
            return False
        return self.expect(sub, problem, detail)

    def finish(self, why_missing: str) -> list[Result]:
        for sub in self.names:
            if self.full(sub) not in self.results:
                self.skip(sub, why_missing)
        return [self.results[self.full(s)] for s in self.names if self.wanted(s)]


@dataclass
class Context:
    """What every task may use: the runner, desync's fixtures, the run's options."""

    run: Runner
    peer: Path | None
    strict: bool
    tmp: Path
    desync_flags: bool = False  # accept desync's flags (no EXCLUDE_FILE) for casync's
    require: bool = False  # missing components fail instead of skipping


TaskFn = Callable[[Context, Checks, Path], None]


@dataclass
class Task:
    name: str
    subs: list[str]
    fn: TaskFn


def check_names(task: Task) -> list[str]:
    return [f"{task.name}:{s}" if s else task.name for s in task.subs]


def matches(name: str, patterns: Sequence[str]) -> bool:
    """True if ``name`` contains one of ``patterns`` or matches one as a glob."""
    if not patterns:
        return True
    for p in patterns:
        if any(ch in p for ch in "*?["):
            if fnmatch.fnmatchcase(name, p):
                return True
        elif p in name:
            return True
    return False


def execute(task: Task, ctx: Context, selected: set[str]) -> list[Result]:
    """Run one task in a scratch directory of its own; its selected checks' results."""
    checks = Checks(task.name, task.subs, selected, require=ctx.require)
    work = Path(tempfile.mkdtemp(prefix="t-", dir=ctx.tmp))
    started = time.monotonic()
    why = "not run: an earlier step of this task failed"
    try:
        task.fn(ctx, checks, work)
    except Prereq as exc:
        for sub in task.subs:
            checks.fail(sub, str(exc))
    except Missing as exc:
        for sub in task.subs:
            checks.missing(sub, str(exc))
    except Exception as exc:  # a bug in the runner or a wildly broken impl: report, go on
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        for sub in task.subs:
            checks.fail(sub, f"runner error: {exc!r}{where}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = checks.finish(why)
    elapsed = time.monotonic() - started
    for r in results:
        r.seconds = elapsed / max(1, len(results))
    return results


def write_junit(path: Path, results: list[Result], impl: str) -> None:
    suite = ET.Element("testsuite", name="desync-ref-conformance", tests=str(len(results)),
                       failures=str(sum(r.status == FAIL for r in results)),
                       skipped=str(sum(r.status == SKIP for r in results)))
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="impl", value=impl)
    for r in results:
        group, _, rest = r.name.partition(":")
        tc = ET.SubElement(suite, "testcase", classname=f"conformance.{group}", name=rest or group,
                           time=f"{r.seconds:.3f}")
        if r.status == FAIL:
            ET.SubElement(tc, "failure", message=r.detail[:500]).text = r.detail
        elif r.status == SKIP:
            ET.SubElement(tc, "skipped", message=r.detail)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
