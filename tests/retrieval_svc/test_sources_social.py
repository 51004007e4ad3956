"""Social over a real qdrant-edge index and a fake online store."""

from __future__ import annotations

import pytest
from rs_helpers import FakeStore, IndexedCreators, candidate_tables, fan_row

from kindred.vectorstore import PayloadFilter
from retrieval_svc.sources import SourceRequest, SourceSkipped
from retrieval_svc.sources.social import SocialSource, reason


@pytest.fixture()
def store(creators: IndexedCreators) -> FakeStore:
    return FakeStore({"social": candidate_tables(creators.ids, list(creators.payloads.values()))["social"]})


def test_friends_creators_in_stored_order_with_the_friend_count_as_a_fact_and_a_reason(
    creators: IndexedCreators, store: FakeStore
) -> None:
    fan = fan_row("f1", ["c001"])
    hits = SocialSource(store, creators.index).retrieve(SourceRequest("f1", fan, PayloadFilter(), 5))
    row = store.data["social"]["f1"]
    assert [h.item_id for h in hits] == row["ids"][:5]
    assert [h.extra["social_friends"] for h in hits] == [3.0, 3.0, 2.0, 2.0, 1.0]
    assert hits[0].reason == "followed by 3 of your friends"
    assert hits[4].reason == "followed by a friend of yours"
    assert hits[0].score == pytest.approx(0.75)
    assert store.reads == [("social", ("f1",))]


def test_the_request_filter_is_applied_by_the_engine(creators: IndexedCreators, store: FakeStore) -> None:
    flt = PayloadFilter.build(languages=["de", "en"], exclude_mature=True, exclude_ids=["c041", "c042"])
    hits = SocialSource(store, creators.index).retrieve(SourceRequest("f1", fan_row("f1", []), flt, 30))
    expected = creators.passes(store.data["social"]["f1"]["ids"], flt)
    assert [h.item_id for h in hits] == expected and 0 < len(expected) < 28
    # The engine judges the payload filter; excluded ids are dropped in Python (verdicts are shared by fans).
    assert [f for _, f in creators.index.fetches] == [
        PayloadFilter.build(languages=["de", "en"], exclude_mature=True)
    ]
    assert not {"c041", "c042"} & {i for ids, _ in creators.index.fetches for i in ids}


def test_no_row_means_nothing_and_a_new_fan_is_skipped(creators: IndexedCreators, store: FakeStore) -> None:
    source = SocialSource(store, creators.index)
    assert source.retrieve(SourceRequest("f9", fan_row("f9", []), PayloadFilter(), 5)) == []
    assert creators.index.fetches == []  # nothing to check against the filter
    with pytest.raises(SourceSkipped, match="new fan"):
        source.retrieve(SourceRequest("new", None, PayloadFilter(), 5))


@pytest.mark.parametrize(
    ("n", "text"), [(1, "followed by a friend of yours"), (4, "followed by 4 of your friends")]
)
def test_reasons_read_as_sentences(n: int, text: str) -> None:
    assert reason(n) == text


def test_every_creator_the_friends_follow_is_left_as_a_fact(
    creators: IndexedCreators, store: FakeStore
) -> None:
    facts: dict[str, dict[str, float]] = {}
    request = SourceRequest("f1", fan_row("f1", []), PayloadFilter(), 2, facts=facts)
    hits = SocialSource(store, creators.index).retrieve(request)
    row = store.data["social"]["f1"]
    assert len(hits) == 2 and len(facts["social_friends"]) == len(row["ids"]) > 2
    assert facts["social_friends"] == dict(zip(row["ids"], map(float, row["friends"]), strict=True))
    only: dict[str, dict[str, float]] = {}  # switched off: the same fact, nothing proposed
    SocialSource(store, creators.index).record_facts(
        SourceRequest("f1", fan_row("f1", []), PayloadFilter(), 0, facts=only)
    )
    assert only == facts
