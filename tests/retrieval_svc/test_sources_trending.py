"""Trending / cold start over a real qdrant-edge index and a fake online store."""

from __future__ import annotations

import dataclasses

import pytest
from rs_helpers import FakeStore, IndexedCreators, candidate_tables, fan_row

from kindred.data.schema import CATEGORIES
from kindred.vectorstore import PayloadFilter
from retrieval_svc.sources import SourceHit, SourceRequest
from retrieval_svc.sources.trending import TrendingSource, categories_for, languages_for, mix


@pytest.fixture()
def store(creators: IndexedCreators) -> FakeStore:
    return FakeStore(
        {"trending": candidate_tables(creators.ids, list(creators.payloads.values()))["trending"]}
    )


def test_lists_follow_the_fans_interests_and_language_and_new_creators_get_their_share(
    creators: IndexedCreators, store: FakeStore
) -> None:
    fan = fan_row("f1", [], interests=["Gaming"], language="en")

    hits = TrendingSource(store, creators.index, new_share=0.3).retrieve(
        SourceRequest("f1", fan, PayloadFilter(), 10)
    )

    keys = ("category:Gaming", "language:en", "global")
    assert store.reads == [("trending", (*keys, *(f"new:{k}" for k in keys)))]
    new = [i for i, h in enumerate(hits) if h.extra.get("trending_new") == 1.0]
    assert new == [3, 6, 9]  # 30 % of the slots, spread evenly
    assert len({h.item_id for h in hits}) == 10
    gaming = store.data["trending"]["category:Gaming"]["ids"]
    old = [h for h in hits if "trending_new" not in h.extra]
    # No "language:en" list in the store: the Gaming list and then the global one.
    assert [h.item_id for h in old[:7]] == [
        c for c in gaming if c not in {h.item_id for h in hits if h.extra}
    ][:7]
    assert old[0].reason == "trending in Gaming"
    new_gaming = store.data["trending"]["new:category:Gaming"]["ids"]
    assert hits[3].item_id == new_gaming[0] and hits[3].reason == "new in Gaming"


def test_the_request_filter_is_applied_by_the_engine_to_both_parts(
    creators: IndexedCreators, store: FakeStore
) -> None:
    flt = PayloadFilter.build(languages=["fr"], exclude_mature=True, exclude_ids=["c119"])
    hits = TrendingSource(store, creators.index).retrieve(SourceRequest("f1", None, flt, 12))
    assert len(hits) == 12
    assert creators.passes([h.item_id for h in hits], flt) == [h.item_id for h in hits]
    # The engine applies the shared part; the fan's excluded ids are dropped from the cached prefix.
    assert {f for _, f in creators.index.fetches} == {dataclasses.replace(flt, exclude_ids=frozenset())}
    assert "c119" not in {h.item_id for h in hits}
    assert any("trending_new" in h.extra for h in hits)


def test_a_new_fan_s_category_filter_stands_for_the_onboarding_interests(
    creators: IndexedCreators, store: FakeStore
) -> None:
    flt = PayloadFilter.build(categories=["Art"])
    hits = TrendingSource(store, creators.index).retrieve(SourceRequest("brand-new", None, flt, 8))
    assert store.reads[0][1][0] == "category:Art"
    assert {creators.payloads[h.item_id]["category"] for h in hits} == {"Art"}
    assert hits[0].reason == "trending in Art"


def test_without_new_creators_trending_fills_every_slot_and_a_missing_list_fails_loudly(
    creators: IndexedCreators, store: FakeStore
) -> None:
    for key in [k for k in store.data["trending"] if k.startswith("new:")]:
        del store.data["trending"][key]
    hits = TrendingSource(store, creators.index).retrieve(SourceRequest("f1", None, PayloadFilter(), 10))
    assert len(hits) == 10 and not any(h.extra for h in hits)
    with pytest.raises(LookupError, match="run the trainer"):
        TrendingSource(FakeStore(), creators.index).retrieve(SourceRequest("f1", None, PayloadFilter(), 5))


def test_category_choice_requested_first_then_interests_then_strong_engagement() -> None:
    affinity = [0.0] * len(CATEGORIES)
    affinity[CATEGORIES.index("Podcasts")] = 0.6
    affinity[CATEGORIES.index("Art")] = 0.1  # too weak to count
    fan = {"interests": ["Music"], "category_affinity": affinity}
    assert categories_for([], fan) == ["Music", "Podcasts"]
    assert categories_for(["Podcasts", "Gaming"], fan) == ["Gaming", "Podcasts"]
    assert categories_for([], None) == []
    assert languages_for([], {"language": "fr"}) == ["fr"]
    assert languages_for(["de"], {"language": "fr"}) == ["de"]


def test_mix_spreads_the_new_share_and_each_side_backfills_the_other() -> None:
    trending = [SourceHit(f"t{i}", 1.0, "") for i in range(10)]
    new = [SourceHit(f"n{i}", 1.0, "", {"trending_new": 1.0}) for i in range(10)]
    assert [h.item_id[0] for h in mix(trending, new, 5, 0.4)] == ["t", "t", "n", "t", "n"]
    assert [h.item_id for h in mix(trending[:2], new, 4, 0.25)] == ["t0", "t1", "n0", "n1"]
    assert [h.item_id for h in mix(trending, new[:1], 4, 0.5)] == ["t0", "n0", "t1", "t2"]
    assert [h.item_id for h in mix(trending, [trending[0], *new], 3, 0.34)] == ["t0", "t1", "n0"]


def test_fans_with_other_interests_and_exclusions_share_the_cached_engine_filtered_lists(
    creators: IndexedCreators, store: FakeStore
) -> None:
    now = [0.0]
    cached = TrendingSource(store, creators.index, cache_ttl_s=30.0, clock=lambda: now[0])
    uncached = TrendingSource(store, creators.index, cache_ttl_s=-1.0)
    base = PayloadFilter.build(exclude_mature=True)
    warm = [
        (fan_row("f1", ["c003"], interests=["Gaming"]), base.excluding(["c003"])),
        (fan_row("f2", [], interests=["Art"]), base),
    ]
    for fan, flt in warm:
        cached.retrieve(SourceRequest(fan["fan_id"], fan, flt, 10))
    creators.index.fetches.clear()
    store.reads.clear()

    fan = fan_row("f3", ["c002", "c006", "c010"], interests=["Art", "Gaming"])
    flt = base.excluding(fan["following"])
    hits = cached.retrieve(SourceRequest("f3", fan, flt, 10))

    assert creators.index.fetches == [] and store.reads == []  # every list and verdict came from the cache
    expected = uncached.retrieve(SourceRequest("f3", fan, flt, 10))
    assert [(h.item_id, h.score, h.reason, h.extra) for h in hits] == [
        (h.item_id, h.score, h.reason, h.extra) for h in expected
    ]
    assert len(hits) == 10 and creators.passes([h.item_id for h in hits], flt) == [h.item_id for h in hits]
    assert {h.reason for h in hits} >= {"trending in Art", "trending in Gaming"}

    creators.index.fetches.clear()
    cached.invalidate()  # an index write: the engine is asked again
    assert [h.item_id for h in cached.retrieve(SourceRequest("f3", fan, flt, 10))] == [
        h.item_id for h in hits
    ]
    assert creators.index.fetches
