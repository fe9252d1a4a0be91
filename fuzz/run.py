"""Run the fuzz targets with atheris (coverage-guided libFuzzer), each for a fixed time
under a memory cap, and print executions per target.

    python -m fuzz.run [--time 60] [--rss-mb 2048] [TARGET ...]     # every target, one by one
    python -m fuzz.run --worker TARGET --time 60                     # one target, in this process

Each target runs in its own process (``--worker``), so a hang or a memory blow-up ends
that target only (libFuzzer's ``-timeout`` and ``-rss_limit_mb``; the parent also sets
``ulimit -v`` as a second cap). The committed corpus ``fuzz/corpus/<target>/`` is read,
never written: new inputs go to ``fuzz/work/<target>/`` (not committed).

A worker keeps going after an exception that is not the library's own: it saves the first
input of each distinct crash (exception type and the innermost ``desync_ref`` frame) under
``fuzz/work/crashes/<target>/`` and prints it, so one known bug does not hide the next.
Hangs and memory blow-ups end the worker; libFuzzer writes their input under the same
directory (``timeout-*``, ``oom-*``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
WORK = ROOT / "fuzz" / "work"


def _signature(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    inner = [f for f in frames if "desync_ref" in f.filename] or frames
    where = f"{Path(inner[-1].filename).name}:{inner[-1].lineno}" if inner else "?"
    return f"{type(exc).__name__} at {where}"


def worker(name: str, seconds: int, rss_mb: int, timeout: int) -> int:
    import atheris

    with atheris.instrument_imports(include=["desync_ref", "fuzz"]):
        from fuzz import targets
    from fuzz.known import known
    run_one = targets.run_one
    crashes = WORK / "crashes" / name
    crashes.mkdir(parents=True, exist_ok=True)
    seen: dict[str, int] = {}

    def one_input(data: bytes) -> None:
        try:
            run_one(name, data)
        except Exception as exc:
            sig = _signature(exc)
            seen[sig] = seen.get(sig, 0) + 1
            if seen[sig] == 1:
                digest = hashlib.sha1(data).hexdigest()[:16]
                (crashes / f"crash-{digest}").write_bytes(data)
                label = "known" if known(name, exc) else "NEW"
                print(f"CRASH {name} ({label}): {sig}: {str(exc)[:200]!r} -> {crashes / f'crash-{digest}'}",
                      flush=True)

    new = WORK / name
    new.mkdir(parents=True, exist_ok=True)
    args = [sys.argv[0], str(new), str(CORPUS / name), f"-max_total_time={seconds}",
            f"-rss_limit_mb={rss_mb}", f"-timeout={timeout}", f"-artifact_prefix={crashes}/",
            "-print_final_stats=1"]
    # libFuzzer ends the process itself (its final stats give the executions and time).
    atheris.Setup(args, one_input)
    atheris.Fuzz()
    return 0


def _limit_memory(mb: int) -> None:
    # Address space a little above libFuzzer's RSS cap: the interpreter maps more than it uses.
    limit = (mb + 2048) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="*")
    p.add_argument("--time", type=int, default=int(os.environ.get("FUZZ_TIME", "60")))
    p.add_argument("--rss-mb", type=int, default=2048)
    p.add_argument("--timeout", type=int, default=20, help="seconds one input may take")
    p.add_argument("--worker")
    a = p.parse_args(argv)
    if a.worker:
        return worker(a.worker, a.time, a.rss_mb, a.timeout)

    sys.path.insert(0, str(ROOT))
    from fuzz.targets import TARGETS

    names = a.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    rows = []
    failed = False
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    for name in names:
        log = WORK / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"== {name}: {a.time} s", flush=True)
        started = time.monotonic()
        with open(log, "w") as out:
            proc = subprocess.run([sys.executable, "-m", "fuzz.run", "--worker", name, "--time", str(a.time),
                                   "--rss-mb", str(a.rss_mb), "--timeout", str(a.timeout)],
                                  cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  preexec_fn=lambda: _limit_memory(a.rss_mb), check=False)
        text = log.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("CRASH ") or "ERROR: libFuzzer" in line or (line.startswith("==") and "ERROR" in line):
                print("  " + line, flush=True)
        m = re.search(r"Done (\d+) runs in (\d+) second", text)
        execs_stat = re.search(r"stat::number_of_executed_units: (\d+)", text)
        execs = int(m[1]) if m else int(execs_stat[1]) if execs_stat else 0
        secs = float(m[2]) if m else time.monotonic() - started
        crashes = len(re.findall(r"^CRASH ", text, re.M))
        new = len(re.findall(r"^CRASH \S+ \(NEW\)", text, re.M))
        fatal = re.search(r"ERROR: libFuzzer: (timeout|out-of-memory|deadly signal|fuzz target exited)", text)
        crashes += bool(fatal)
        abnormal = "ERROR: libFuzzer" in text or not m or proc.returncode != 0
        failed |= abnormal or crashes > 0
        notes = [f"{new} not in fuzz/known.py"] if new else []
        if abnormal:
            notes.append(f"ended: {fatal[1] if fatal else 'abnormally'}, see {log.relative_to(ROOT)}")
        rows.append((name, execs, secs, crashes, "; ".join(notes)))
    print(f"\n{'target':<16}{'execs':>10}{'seconds':>9}{'execs/s':>9}{'crashes':>9}")
    for name, execs, secs, crashes, note in rows:
        rate = execs / secs if secs else 0.0
        print(f"{name:<16}{execs:>10}{secs:>9.1f}{rate:>9.0f}{crashes:>9}  {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
