"""Hot loops (chunker, assembler): typed Python that mypyc compiles from this same source.

The compiled extension, when built, shadows the ``.py`` file of the same name. The pure
module stays importable by path so both backends can run side by side, and
``DESYNC_REF_PURE=1`` forces it. Spec: ``spec/chunker.md``.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

PURE_ENV = "DESYNC_REF_PURE"


def pure_requested() -> bool:
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def load_pure(name: str) -> ModuleType:
    """Import ``desync_ref.kernels.<name>`` from its ``.py`` source, never the extension."""
    qualified = f"desync_ref.kernels._{name}_py"
    if qualified in sys.modules:
        return sys.modules[qualified]
    import importlib.util  # only for the pure backend: a compiled run never needs it
    from pathlib import Path

    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(qualified, path)
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships with us
        raise ImportError(f"cannot load pure kernel {name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


def is_compiled(module: ModuleType) -> bool:
    return not (getattr(module, "__file__", "") or "").endswith(".py")


def load(name: str) -> ModuleType:
    """The compiled kernel when available and allowed, else the pure one."""
    if pure_requested():
        return load_pure(name)
    try:
        return importlib.import_module(f"desync_ref.kernels.{name}")
    except ImportError:
        # A compiled kernel that cannot load (a stale or partial build) must not take the
        # tool down: the pure module computes the same results.
        return load_pure(name)


KERNELS = ("chunker", "assembler")


def load_compiled(name: str) -> ModuleType | None:
    """The mypyc extension of a kernel, or None where it was not built."""
    try:
        module = importlib.import_module(f"desync_ref.kernels.{name}")
    except ImportError:
        return None
    return module if is_compiled(module) else None


def backend() -> str:
    """'compiled', 'pure' or 'mixed': what the kernels run as in this process."""
    compiled = [is_compiled(load(name)) for name in KERNELS]
    if all(compiled):
        return "compiled"
    return "mixed" if any(compiled) else "pure"
