"""``manpage DIR`` (argparse-manpage) and ``completion bash|zsh|fish`` (argcomplete): one
page per command that groff renders without a warning, and a bash completion script that,
once sourced, completes a command name and a flag (spec/cli.md "manpage and completion")."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from desync_ref.cli import COMMANDS, PROG

pytestmark = pytest.mark.compiled_pass_only


def test_manpage_writes_one_page_per_command(tmp_path: Path) -> None:
    run_cli(["manpage", tmp_path])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{PROG}.1", *(f"{PROG}-{name}.1" for name in COMMANDS)])
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed (Debian package 'groff-base')")
    for page in tmp_path.iterdir():
        check = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0 and check.stderr == "", (page.name, check.stderr)
    shown = subprocess.run(["groff", "-man", "-Tutf8", str(tmp_path / f"{PROG}-extract.1")],
                           capture_output=True, text=True, check=True).stdout
    shown = re.sub(".\b", "", shown)  # grotty's overstriking (bold, underline)
    assert "desync-ref-extract - Read an index and build a blob from it" in shown
    assert "--store" in shown.replace("\u2010", "-")


def test_manpage_refuses_a_missing_directory(tmp_path: Path) -> None:
    proc = run_cli(["manpage", tmp_path / "nope"], check=False)
    assert proc.returncode == 1 and proc.stderr.decode().count("\n") == 1


def _bash_complete(tmp_path: Path, line: str) -> list[str]:
    """COMPREPLY for ``line`` from the sourced ``completion bash`` script, with desync-ref on
    PATH as a wrapper around this interpreter."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / PROG
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m desync_ref "$@"\n')
    wrapper.chmod(0o755)
    words = line.split(" ")
    script = f"""
source <({PROG} completion bash) || exit 3
COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}
fn=$(complete -p {PROG} | sed -E 's/.*-F ([^ ]+).*/\\1/')
"$fn" {PROG} '{words[-1]}' '{words[-2]}'
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [word.strip() for word in proc.stdout.splitlines()]


def test_bash_completion_completes_commands_and_flags(tmp_path: Path) -> None:
    assert _bash_complete(tmp_path, f"{PROG} upg") == ["upgrade-s3"]
    assert "--skip-invalid-seeds" in _bash_complete(tmp_path, f"{PROG} extract --skip")


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts(shell: str) -> None:
    script = run_cli(["completion", shell]).stdout.decode()
    assert PROG in script and "_ARGCOMPLETE" in script
    if shutil.which(shell) is not None and shell == "zsh":
        check = subprocess.run(["zsh", "-n"], input=script, capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stderr
