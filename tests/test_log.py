"""desync_ref/log.py: the library's loggers import nothing, drop records while ``logging``
is not loaded, and hand them to ``logging`` once it is; the command line without
``--verbose`` prints none of them even when something else loaded ``logging``, and with it
prints them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import run_cli


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)


def test_records_are_dropped_while_logging_is_not_loaded() -> None:
    done = _python("import sys\nfrom desync_ref.log import get_logger\n"
                   "get_logger('desync_ref.x').warning('dropped %s', 1)\n"
                   "print('logging' in sys.modules)\n")
    assert (done.stdout, done.stderr) == ("False\n", "")


def test_records_reach_logging_once_it_is_loaded() -> None:
    done = _python("import logging, sys\n"
                   "logging.basicConfig(stream=sys.stdout, format='%(name)s %(levelname)s "
                   "%(funcName)s %(message)s')\n"
                   "from desync_ref.log import get_logger\n"
                   "def caller():\n    get_logger('desync_ref.x').warning('kept %s', 2)\n"
                   "caller()\n")
    assert done.stdout == "desync_ref.x WARNING caller kept 2\n"  # the caller's frame


def test_cli_without_verbose_silences_records_when_logging_was_loaded_by_another() -> None:
    done = _python("import logging\n"  # as a store's client library would
                   "from desync_ref.log import get_logger\n"
                   "from desync_ref.cli import setup_logging\n"
                   "setup_logging(False)\n"
                   "get_logger('desync_ref.x').warning('not shown')\n"
                   "get_logger('desync_ref.x').error('not shown either')\n")
    assert done.stderr == ""


def test_cli_verbose_prints_the_library_records(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(bytes(range(256)) * 4096)
    run_cli(["make", "-s", tmp_path / "s", tmp_path / "x.caibx", tmp_path / "blob"])
    quiet = run_cli(["extract", "-s", tmp_path / "s", tmp_path / "x.caibx", tmp_path / "a"])
    loud = run_cli(["--verbose", "extract", "-s", tmp_path / "s", tmp_path / "x.caibx",
                    tmp_path / "b"])
    assert quiet.stderr == b""
    assert b"INFO desync_ref.operations.extract: " in loud.stderr


def test_cli_without_verbose_silences_records_when_logging_is_loaded_later() -> None:
    done = _python("import sys\n"
                   "from desync_ref.log import get_logger\n"
                   "from desync_ref.cli import setup_logging\n"
                   "setup_logging(False)\n"
                   "assert 'logging' not in sys.modules\n"
                   "import logging\n"  # loaded after the command line was set up
                   "get_logger('desync_ref.x').warning('not shown')\n")
    assert done.stderr == ""
