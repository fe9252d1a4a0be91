"""pytest-benchmark for the kernels, compiled and pure (`make bench`)."""

from __future__ import annotations

import os
from types import ModuleType

import pytest

from desync_ref import kernels

DATA = os.urandom(8 << 20)


def _backends() -> list[tuple[str, ModuleType]]:
    found = [("pure", kernels.load_pure("chunker"))]
    compiled = kernels.load_compiled("chunker")
    if compiled is not None:
        found.append(("compiled", compiled))
    return found


def chunk_all(module: ModuleType, data: bytes, discriminator: int = 49535) -> int:
    pos, count = 0, 0
    while pos < len(data):
        cut = module.find_cut(data, pos, len(data), 16384, 262144, discriminator)
        pos = len(data) if cut < 0 else cut
        count += 1
    return count


# 49535: casync's default (avg 64 KiB), odd; 49536 = 2**7 * 387 takes the even-d scan.
@pytest.mark.parametrize("discriminator", [49535, 49536])
@pytest.mark.parametrize(("name", "module"), _backends(), ids=lambda v: v if isinstance(v, str) else "")
def test_chunker_throughput(benchmark: pytest.FixtureRequest, name: str, module: ModuleType,
                            discriminator: int) -> None:
    data = DATA if name == "compiled" else DATA[: 1 << 20]
    benchmark.extra_info["bytes"] = len(data)
    count = benchmark(chunk_all, module, data, discriminator)  # type: ignore[operator]
    assert count > 0
