"""Item-to-item over a real qdrant-edge index and a fake online store."""

from __future__ import annotations

import pytest
from rs_helpers import FakeStore, IndexedCreators, candidate_tables, fan_row

from kindred.vectorstore import PayloadFilter
from retrieval_svc.sources import SourceRequest, SourceSkipped
from retrieval_svc.sources.item_to_item import ItemToItemSource, aggregate, seeds_of
from retrieval_svc.sources.ranked_lists import VerdictCache


def _request(fan: dict, flt: PayloadFilter | None = None, n: int = 10) -> SourceRequest:  # type: ignore[type-arg]
    # As the retriever sends it: the fan's following is already excluded.
    return SourceRequest(fan["fan_id"], fan, (flt or PayloadFilter()).excluding(fan["following"]), n)


def _two_seed_store() -> FakeStore:
    """Neighbours of the seeds c010 and c011: c030 is a neighbour of both, c011 and c010 of each other."""
    return FakeStore(
        {
            "creator_neighbors": {
                "c010": {"ids": ["c020", "c030", "c011"], "scores": [0.5, 0.4, 0.3]},
                "c011": {"ids": ["c030", "c010", "c021"], "scores": [0.35, 0.9, 0.2]},
            }
        }
    )


def test_neighbours_of_several_followed_creators_add_up_and_the_seeds_stay_out(
    creators: IndexedCreators,
) -> None:
    store = _two_seed_store()
    fan = fan_row("f1", ["c010", "c011"])

    hits = ItemToItemSource(store, creators.index).retrieve(_request(fan))

    assert [h.item_id for h in hits] == ["c030", "c020", "c021"]  # 0.4 + 0.35 > 0.5 > 0.2
    assert hits[0].score == pytest.approx(0.75 / 1.75)
    assert hits[0].extra == {"item_to_item_seeds": 2.0}
    assert hits[0].reason == "similar to 2 creators you follow"
    assert hits[1].reason == "similar to a creator you follow"
    assert store.reads == [("creator_neighbors", ("c010", "c011"))]  # one batched read


def test_the_request_filter_is_applied_by_the_engine(creators: IndexedCreators) -> None:
    store = FakeStore(candidate_tables(creators.ids, list(creators.payloads.values())))
    fan = fan_row("f1", ["c001", "c002", "c003", "c050"])
    flt = PayloadFilter.build(languages=["en", "fr"], categories=["Art", "Music"], exclude_mature=True)
    request = _request(fan, flt, n=6)

    hits = ItemToItemSource(store, creators.index).retrieve(request)

    seeds = seeds_of(fan)
    ranked = aggregate(seeds, [store.data["creator_neighbors"][s] for s in seeds])
    expected = creators.passes([h.item_id for h in ranked], request.filter)[:6]
    assert [h.item_id for h in hits] == expected and len(expected) >= 3
    # The engine judges the payload filter; the fan's excluded ids are dropped in Python and never asked.
    engine_filter = PayloadFilter.build(
        languages=["en", "fr"], categories=["Art", "Music"], exclude_mature=True
    )
    assert creators.index.fetches and all(f == engine_filter for _, f in creators.index.fetches)
    assert not {i for ids, _ in creators.index.fetches for i in ids} & request.filter.exclude_ids


def test_a_neighbour_missing_from_the_index_drops_out(creators: IndexedCreators) -> None:
    store = FakeStore({"creator_neighbors": {"c010": {"ids": ["ghost", "c020"], "scores": [0.9, 0.1]}}})
    hits = ItemToItemSource(store, creators.index).retrieve(_request(fan_row("f1", ["c010"])))
    assert [h.item_id for h in hits] == ["c020"]


def test_seeds_are_the_strongest_follows_first_and_capped(creators: IndexedCreators) -> None:
    following = [f"c{i:03d}" for i in range(80)]
    fan = fan_row("f1", following)
    fan["history"] = ["c079", "c500", "c003"]  # history holds viewed-only creators too: not seeds
    store = FakeStore({"creator_neighbors": {}})
    ItemToItemSource(store, creators.index, max_seeds=50).retrieve(_request(fan))
    ((_, keys),) = store.reads
    assert keys[:3] == ("c079", "c003", "c000") and len(keys) == 50 and "c500" not in keys


def test_new_fans_are_skipped_fans_following_nobody_get_nothing_and_store_errors_fail(
    creators: IndexedCreators,
) -> None:
    store = FakeStore({"creator_neighbors": {}})
    source = ItemToItemSource(store, creators.index)
    with pytest.raises(SourceSkipped, match="new fan"):
        source.retrieve(SourceRequest("new", None, PayloadFilter(), 5))
    assert source.retrieve(_request(fan_row("f2", []))) == []
    assert store.reads == []
    with pytest.raises(RuntimeError, match="unavailable"):
        source.retrieve(SourceRequest("f1", None, PayloadFilter(), 5, fan_error="TimeoutError"))


class _HidingIndex:
    """The real index, except that ids in `hidden` are gone (a creator deleted from the index)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.hidden: set[str] = set()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def fetch(self, ids: object, filter: PayloadFilter | None = None, **kw: object) -> list:  # type: ignore[type-arg]
        return [p for p in self.inner.fetch(ids, filter, **kw) if p.point_id not in self.hidden]  # type: ignore[attr-defined]


def test_filter_verdicts_are_shared_across_fans_and_dropped_on_writes_and_expiry(
    creators: IndexedCreators,
) -> None:
    neighbours = {
        "c010": {"ids": ["c020", "c021", "c022", "c023"], "scores": [0.9, 0.8, 0.7, 0.6]},
        "c011": {"ids": ["c022", "c023", "c024", "c025"], "scores": [0.9, 0.8, 0.7, 0.6]},
    }
    store = FakeStore({"creator_neighbors": neighbours})
    now = [0.0]
    verdicts = VerdictCache(ttl_s=30.0, clock=lambda: now[0])
    index = _HidingIndex(creators.index)
    source = ItemToItemSource(store, index, verdicts=verdicts)  # type: ignore[arg-type]
    asked = creators.index.fetches

    def ids_of(fan: str, follows: str) -> list[str]:
        return [h.item_id for h in source.retrieve(_request(fan_row(fan, [follows]), n=10))]

    assert ids_of("f1", "c010") == ["c020", "c021", "c022", "c023"]
    assert [set(ids) for ids, _ in asked] == [{"c020", "c021", "c022", "c023"}]
    # Another fan, overlapping neighbours: the engine is asked only about the ids it has not judged.
    assert ids_of("f2", "c011") == ["c022", "c023", "c024", "c025"]
    assert [set(ids) for ids, _ in asked[1:]] == [{"c024", "c025"}]
    asked.clear()
    assert ids_of("f1", "c010") == ["c020", "c021", "c022", "c023"] and asked == []

    # The index changes (c021 deleted). Within the TTL and without invalidate() the verdict is kept...
    index.hidden.add("c021")
    assert "c021" in ids_of("f1", "c010")
    # ...an index write through the service calls invalidate(), and the engine is asked again.
    source.invalidate()
    assert ids_of("f1", "c010") == ["c020", "c022", "c023"] and asked
    # Expiry does the same for changes the service did not make itself.
    index.hidden = {"c022"}
    asked.clear()
    now[0] += 31.0
    assert ids_of("f1", "c010") == ["c020", "c021", "c023"] and asked

    # Another payload filter is judged on its own.
    asked.clear()
    flt = PayloadFilter.build(exclude_mature=True)
    source.retrieve(_request(fan_row("f1", ["c010"]), flt))
    assert asked and all(f == flt for _, f in asked)


def test_every_neighbours_sum_is_left_as_a_fact_for_other_sources_candidates(
    creators: IndexedCreators,
) -> None:
    store = _two_seed_store()
    fan = fan_row("f1", ["c010", "c011"])
    facts: dict[str, dict[str, float]] = {}
    request = SourceRequest("f1", fan, PayloadFilter().excluding(fan["following"]), 1, facts=facts)
    hits = ItemToItemSource(store, creators.index).retrieve(request)
    assert [h.item_id for h in hits] == ["c030"]  # one returned, every neighbour known
    assert facts["co_engagement"] == pytest.approx({"c030": 0.75, "c020": 0.5, "c021": 0.2})
    # Switched off by the request, the source leaves the same fact and proposes nothing.
    only: dict[str, dict[str, float]] = {}
    source = ItemToItemSource(store, creators.index)
    source.record_facts(SourceRequest("f1", fan, PayloadFilter().excluding(fan["following"]), 0, facts=only))
    assert only == facts
