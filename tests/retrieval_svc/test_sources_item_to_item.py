"""Item-to-item over a real qdrant-edge index and a fake online store."""

from __future__ import annotations

import pytest
from rs_helpers import FakeStore, IndexedCreators, candidate_tables, fan_row

from kindred.vectorstore import PayloadFilter
from retrieval_svc.sources import SourceRequest, SourceSkipped
from retrieval_svc.sources.item_to_item import ItemToItemSource, aggregate, seeds_of


def _request(fan: dict, flt: PayloadFilter | None = None, n: int = 10) -> SourceRequest:  # type: ignore[type-arg]
    # As the retriever sends it: the fan's following is already excluded.
    return SourceRequest(fan["fan_id"], fan, (flt or PayloadFilter()).excluding(fan["following"]), n)


def test_neighbours_of_several_followed_creators_add_up_and_the_seeds_stay_out(
    creators: IndexedCreators,
) -> None:
    store = FakeStore(
        {
            "creator_neighbors": {
                "c010": {"ids": ["c020", "c030", "c011"], "scores": [0.5, 0.4, 0.3]},
                "c011": {"ids": ["c030", "c010", "c021"], "scores": [0.35, 0.9, 0.2]},
            }
        }
    )
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
    assert creators.index.fetches and all(f == request.filter for _, f in creators.index.fetches)


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
