"""The assembler's plan (kernels/assembler.py): the compiled kernel gives the pure module's
plan, and every plan covers the target with runs that hold what they claim and are
longest where desync's sequencer takes the longest match. Spec: spec/extract.md."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from desync_ref import kernels

pure = kernels.load_pure("assembler")
compiled = kernels.load_compiled("assembler")

# Few distinct ids, so targets and seeds share runs and repeat chunks.
ids_ = st.lists(st.integers(0, 6), max_size=40)


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[bytes], list[int], list[int], list[tuple[list[bytes], list[int]]]]:
    target = draw(ids_)
    seeds = draw(st.lists(ids_, max_size=3))
    marks = [draw(st.sampled_from([0, 0, 0, 1, 2])) for _ in target]

    def sized(numbers: list[int]) -> tuple[list[bytes], list[int]]:
        return [bytes([n]) * 4 for n in numbers], [100 + n for n in numbers]

    ids, sizes = sized(target)
    return ids, sizes, marks, [sized(s) for s in seeds]


def match(ids: list[bytes], sizes: list[int], marks: list[int], at: int,
          seed_ids: list[bytes], seed_sizes: list[int], start: int, stop: int) -> int:
    n = 0
    while (at + n < len(ids) and start + n < stop and marks[at + n] == 0
           and ids[at + n] == seed_ids[start + n] and sizes[at + n] == seed_sizes[start + n]):
        n += 1
    return n


@settings(max_examples=400, deadline=None)
@given(cases())
def test_plan_properties(case: tuple[list[bytes], list[int], list[int],
                                    list[tuple[list[bytes], list[int]]]]) -> None:
    ids, sizes, marks, seeds = case
    runs = pure.plan(ids, sizes, marks, seeds)
    at = 0
    for kind, first, end, seed, seed_first in runs:
        assert first == at and end > first  # contiguous, in order, never empty
        at = end
        if kind == pure.RUN_IN_PLACE:
            assert all(m == pure.MARK_IN_PLACE for m in marks[first:end])
        elif kind == pure.RUN_ZERO:
            assert all(m == pure.MARK_ZERO for m in marks[first:end])
        elif kind == pure.RUN_SEED:
            seed_ids, seed_sizes = seeds[seed]
            n = end - first
            assert match(ids, sizes, marks, first, seed_ids, seed_sizes, seed_first,
                         len(seed_ids)) >= n
        elif kind == pure.RUN_SELF:
            n = end - first
            assert seed_first + n <= first  # the source is written before it is read
            assert match(ids, sizes, marks, first, ids, sizes, seed_first, first) >= n
        else:
            assert kind == pure.RUN_STORE
        if kind in (pure.RUN_SEED, pure.RUN_SELF, pure.RUN_STORE):
            # No seed, and no earlier part of the target, offers a longer run here.
            longest = max([match(ids, sizes, marks, first, s_ids, s_sizes, p, len(s_ids))
                           for s_ids, s_sizes in seeds for p in range(len(s_ids))]
                          + [match(ids, sizes, marks, first, ids, sizes, p, first)
                             for p in range(first)] + [0])
            got = 0 if kind == pure.RUN_STORE else end - first
            assert got == longest
    assert at == len(ids)


@pytest.mark.skipif(compiled is None, reason="the mypyc kernels are not built")
@settings(max_examples=400, deadline=None)
@given(cases())
def test_compiled_plan_equals_pure(case: tuple[list[bytes], list[int], list[int],
                                              list[tuple[list[bytes], list[int]]]]) -> None:
    assert compiled is not None
    ids, sizes, marks, seeds = case
    assert compiled.plan(ids, sizes, marks, seeds) == pure.plan(ids, sizes, marks, seeds)


def test_store_runs_merge_and_repeats_become_self() -> None:
    a, b, c = b"a", b"b", b"c"
    runs = pure.plan([a, b, c, a, b, c, c], [1] * 7, [0] * 7, [])
    assert runs == [(pure.RUN_STORE, 0, 3, -1, -1), (pure.RUN_SELF, 3, 6, -1, 0),
                    (pure.RUN_SELF, 6, 7, -1, 2)]
