"""`first_passing` (cached, prefix-checked, shared by fans) returns exactly what the plain definition
says: the lists but the last interleaved, then the last; each id at its first place; excluded ids and ids
the engine filter rejects dropped; the first n. Checked against that definition on random lists, with the
same cached entries reused across requests of different sizes and exclusions (as fans share them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kindred.vectorstore import PayloadFilter
from retrieval_svc.sources.ranked_lists import CachedList, first_passing


@dataclass
class _Point:
    point_id: str


class PassingIndex:
    """Answers fetch(ids, filter) with the ids in `passing`; counts the ids it was asked about."""

    def __init__(self, passing: set[str]) -> None:
        self.passing = passing
        self.asked: list[str] = []

    def fetch(self, ids: Sequence[str], flt: Any = None, **_: Any) -> list[_Point]:
        self.asked.extend(ids)
        return [_Point(i) for i in ids if i in self.passing]


def reference(lists: Sequence[list[str]], passing: set[str], excluded: set[str], n: int) -> list[str]:
    order = [
        x[r] for r in range(max((len(x) for x in lists[:-1]), default=0)) for x in lists[:-1] if r < len(x)
    ]
    order += lists[-1]
    out: list[str] = []
    for item in dict.fromkeys(order):
        if item in passing and item not in excluded and len(out) < n:
            out.append(item)
    return out


ids = st.sampled_from([f"c{i}" for i in range(40)])
lists_strategy = st.lists(st.lists(ids, max_size=30, unique=True), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(
    lists=lists_strategy,
    passing=st.sets(ids),
    requests=st.lists(st.tuples(st.integers(0, 45), st.sets(ids, max_size=8)), min_size=1, max_size=4),
)
def test_first_passing_matches_the_plain_definition(
    lists: list[list[str]], passing: set[str], requests: list[tuple[int, set[str]]]
) -> None:
    index = PassingIndex(passing)
    cached = [CachedList(0.0, True, list(x), [1.0] * len(x)) for x in lists]  # shared by every request
    engine_flt = PayloadFilter.build()
    for n, excluded in requests:
        flt = PayloadFilter.build(exclude_ids=sorted(excluded))
        got = first_passing(index, cached, flt, engine_flt, n, source="test")  # type: ignore[arg-type]
        assert [cached[j].ids[r] for j, r in got] == reference(lists, passing, excluded, n)
    # Each id of each list is asked about at most once however many requests reused the entries.
    per_list_asked = sum(entry.verdict[0] for entry in cached)
    assert len(index.asked) == per_list_asked <= sum(len(x) for x in lists)
