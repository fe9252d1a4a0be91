"""Build hook: compile the kernels with mypyc when possible, else ship pure Python.

Everything else about the package lives in pyproject.toml. ``DESYNC_REF_PURE_BUILD=1``
skips compilation; a missing compiler or mypyc also falls back to the pure modules.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

KERNELS = ["desync_ref/kernels/chunker.py", "desync_ref/kernels/assembler.py"]
# urllib3: the HTTP(S), GCS and OCI store clients; aiohttp (+ uvloop off Windows):
# chunk-server/index-server; botocore: S3 stores; paramiko: SFTP stores; pycryptodome:
# encrypted stores (XChaCha20-Poly1305 and AES-256-GCM; `cryptography` has no XChaCha);
# tqdm: progress bars on a terminal (no dependencies of its own, imported only when shown).
BASE_REQUIREMENTS = ["zstandard>=0.21", "mypy_extensions>=1.0", "urllib3>=2.0", "aiohttp>=3.9",
                     "uvloop>=0.19; sys_platform != 'win32'", "botocore>=1.31", "paramiko>=3.0",
                     "pycryptodome>=3.18", "tqdm>=4.60",
                     # `manpage` (man pages from the parser) and `completion` (bash, zsh, fish)
                     "argparse-manpage>=4.5", "argcomplete>=3.1"]
# Compiled kernels index native vectors from librt (shipped with mypy); pure ones need none.
NATIVE_REQUIREMENTS = ["librt"]


class OptionalBuildExt(build_ext):
    """A failed native build leaves the pure-Python kernels in charge instead of failing."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            print(f"desync-ref: mypyc build failed, using pure Python: {exc}", file=sys.stderr)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"desync-ref: cannot compile {ext.name}, using pure Python: {exc}", file=sys.stderr)


def native_modules() -> list[object]:
    if os.environ.get("DESYNC_REF_PURE_BUILD", "") not in ("", "0"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    try:
        return list(mypycify(KERNELS, opt_level="3", debug_level="0", separate=True))
    except Exception as exc:
        print(f"desync-ref: mypyc unavailable, using pure Python: {exc}", file=sys.stderr)
        return []


modules = native_modules()
setup(
    ext_modules=modules,
    cmdclass={"build_ext": OptionalBuildExt},
    install_requires=BASE_REQUIREMENTS + (NATIVE_REQUIREMENTS if modules else []),
)
