"""The retriever's merge, quotas, de-duplication and degradation, with fake sources and a fake store."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest
from rs_helpers import FakeStore, fan_row

from kindred.errors import InvalidArgument, Unavailable
from kindred.vectorstore import PayloadFilter
from retrieval_svc.retriever import RetrieveQuery, Retriever, resolve_quotas
from retrieval_svc.sources import SourceHit, SourceRequest, SourceSkipped


class FakeSource:
    """Returns canned hits (or raises); records the requests it got."""

    def __init__(self, name: str, ids: Sequence[str] = (), error: Exception | None = None) -> None:
        self._name = name
        self.ids = list(ids)
        self.error = error
        self.requests: list[SourceRequest] = []

    @property
    def name(self) -> str:
        return self._name

    def retrieve(self, request: SourceRequest) -> list[SourceHit]:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        ids = [i for i in self.ids if i not in request.filter.exclude_ids]
        return [SourceHit(i, 1.0 - r / 100, f"from {self._name}") for r, i in enumerate(ids[: request.n])]


def _setup(tt_ids: Sequence[str], pop_ids: Sequence[str], fans: dict[str, dict] | None = None):  # type: ignore[no-untyped-def]
    tt = FakeSource("two_tower", tt_ids)
    pop = FakeSource("popular", pop_ids)
    store = FakeStore({"fan": fans if fans is not None else {"f1": fan_row("f1", [])}})
    # The shares these tests were written with (the service's defaults include more sources).
    return Retriever([tt, pop], store, quota_shares={"two_tower": 0.7, "popular": 0.3}), tt, pop, store


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (RetrieveQuery(fan_id="", k=10), "fan_id"),
        (RetrieveQuery(fan_id="   ", k=10), "fan_id"),
        (RetrieveQuery(fan_id="f1", k=0), "k"),
        (RetrieveQuery(fan_id="f1", k=1001), "k"),
        (RetrieveQuery(fan_id="f1", k=10, source_quotas={"social_magic": 3}), "source_quotas"),
        (RetrieveQuery(fan_id="f1", k=10, source_quotas={"popular": -1}), "source_quotas"),
    ],
)
def test_invalid_queries_name_the_field(query: RetrieveQuery, field: str) -> None:
    retriever, *_ = _setup(["a"], ["b"])
    with pytest.raises(InvalidArgument) as info:
        retriever.retrieve(query)
    assert info.value.field == field


def test_default_quotas_split_k_between_sources() -> None:
    retriever, *_ = _setup([f"t{i}" for i in range(30)], [f"p{i}" for i in range(30)])
    result = retriever.retrieve(RetrieveQuery("f1", 10))
    assert Counter(c.source for c in result.candidates) == {"two_tower": 7, "popular": 3}
    assert result.degraded == {}
    by_id = {c.item_id: c for c in result.candidates}
    assert set(by_id) == {f"t{i}" for i in range(7)} | {f"p{i}" for i in range(3)}
    assert by_id["t0"].scores == {"two_tower": 1.0, "retrieval": 1.0}
    assert by_id["p2"].reasons == ["from popular"]


def test_request_quotas_override_defaults_by_enum_or_short_name() -> None:
    retriever, *_ = _setup([f"t{i}" for i in range(30)], [f"p{i}" for i in range(30)])
    result = retriever.retrieve(RetrieveQuery("f1", 10, source_quotas={"CANDIDATE_SOURCE_POPULAR": 8}))
    assert Counter(c.source for c in result.candidates) == {"two_tower": 2, "popular": 8}


def test_a_source_switched_off_is_not_called_and_not_degraded() -> None:
    retriever, tt, _, _ = _setup([f"t{i}" for i in range(30)], [f"p{i}" for i in range(30)])
    result = retriever.retrieve(RetrieveQuery("f1", 10, source_quotas={"two_tower": 0}))
    assert tt.requests == []
    assert {c.source for c in result.candidates} == {"popular"} and len(result.candidates) == 10
    assert result.degraded == {}


def test_duplicates_appear_once_with_every_source_and_score() -> None:
    shared = ["x", "y"]
    retriever, *_ = _setup([*shared, "t1", "t2"], ["p1", "y", "x", "p2"])
    result = retriever.retrieve(RetrieveQuery("f1", 6, source_quotas={"two_tower": 3, "popular": 3}))
    ids = [c.item_id for c in result.candidates]
    assert len(ids) == len(set(ids)) == 6
    x = next(c for c in result.candidates if c.item_id == "x")
    assert x.source == "two_tower" and x.sources == ["two_tower", "popular"]
    assert x.scores["retrieval"] == x.scores["two_tower"] == 1.0
    assert x.scores["popular"] == pytest.approx(0.98)
    assert x.reasons == ["from two_tower", "from popular"]
    # Proposed by both sources near the top: fused ranking puts the shared items first.
    assert ids[:2] == ["x", "y"]


def test_new_fan_skips_two_tower_and_popular_fills_k() -> None:
    retriever, tt, _, _ = _setup([f"t{i}" for i in range(30)], [f"p{i}" for i in range(30)], fans={})
    tt.error = SourceSkipped("no features for this fan yet (new fan)")
    result = retriever.retrieve(RetrieveQuery("new-fan", 10))
    assert [c.item_id for c in result.candidates] == [f"p{i}" for i in range(10)]
    assert result.degraded == {"two_tower": "skipped: no features for this fan yet (new fan)"}


def test_a_failing_source_is_reported_and_the_others_fill_k() -> None:
    retriever, _, pop, _ = _setup([f"t{i}" for i in range(30)], [f"p{i}" for i in range(30)])
    pop.error = ConnectionError("store down")
    result = retriever.retrieve(RetrieveQuery("f1", 10))
    assert [c.source for c in result.candidates] == ["two_tower"] * 10
    assert result.degraded == {"popular": "failed: ConnectionError: store down"}


def test_when_no_source_can_answer_the_request_is_unavailable() -> None:
    retriever, tt, pop, _ = _setup([], [])
    tt.error = SourceSkipped("new fan")
    pop.error = RuntimeError("boom")
    with pytest.raises(Unavailable, match="no candidate source"):
        retriever.retrieve(RetrieveQuery("f1", 10))


def test_history_and_request_filters_reach_every_source() -> None:
    fans = {"f1": fan_row("f1", ["t0", "p0"])}
    retriever, tt, pop, _ = _setup([f"t{i}" for i in range(5)], [f"p{i}" for i in range(5)], fans=fans)
    flt = PayloadFilter.build(languages=["fr"], exclude_ids=["t3"], exclude_mature=True)
    result = retriever.retrieve(RetrieveQuery("f1", 4, filter=flt))
    for source in (tt, pop):
        sent = source.requests[0].filter
        assert sent.exclude_ids == {"t0", "p0", "t3"}
        assert sent.languages == {"fr"} and sent.exclude_mature
        assert source.requests[0].fan is not None and source.requests[0].fan["fan_id"] == "f1"
    assert not {"t0", "p0", "t3"} & {c.item_id for c in result.candidates}


def test_a_store_failure_reaches_the_sources_as_an_error_not_as_a_new_fan() -> None:
    retriever, tt, _, store = _setup(["t0"], ["p0"])
    store.fail = TimeoutError("redis timeout")
    retriever.retrieve(RetrieveQuery("f1", 2))
    assert tt.requests[0].fan is None
    assert tt.requests[0].fan_error == "TimeoutError: redis timeout"


def test_fewer_candidates_than_k_when_the_sources_run_dry() -> None:
    retriever, *_ = _setup(["t0", "t1"], ["t1", "p0"])
    result = retriever.retrieve(RetrieveQuery("f1", 10))
    assert sorted(c.item_id for c in result.candidates) == ["p0", "t0", "t1"]


def test_posts_only_requests_get_no_creators() -> None:
    retriever, tt, _, _ = _setup(["t0"], ["p0"])
    assert retriever.retrieve(RetrieveQuery("f1", 5, want_creators=False)).candidates == []
    assert tt.requests == []


@pytest.mark.parametrize("k", [1, 2, 3, 7, 10, 999, 1000])
def test_resolved_quotas_sum_to_k(k: int) -> None:
    quotas = resolve_quotas(k, {"two_tower": 0.7, "popular": 0.3}, {})
    assert sum(quotas.values()) == k
    assert quotas["two_tower"] >= quotas["popular"]
    shares = {"two_tower": 0.7, "popular": 0.3}
    assert resolve_quotas(k, shares, {"popular": 1}) == {"popular": 1, "two_tower": k - 1}


def test_sources_are_asked_for_their_quota_plus_slack_not_for_k() -> None:
    retriever, tt, pop, _ = _setup([f"t{i}" for i in range(300)], [f"p{i}" for i in range(300)])
    result = retriever.retrieve(RetrieveQuery("f1", 100))
    assert len(result.candidates) == 100
    assert [r.n for r in tt.requests] == [70 + 70 // 4]
    assert [r.n for r in pop.requests] == [30 + 8]


def test_unfilled_slots_ask_the_remaining_sources_again_for_k() -> None:
    retriever, tt, pop, _ = _setup([f"t{i}" for i in range(300)], [f"p{i}" for i in range(300)], fans={})
    tt.error = SourceSkipped("new fan")
    result = retriever.retrieve(RetrieveQuery("new", 100))
    assert [c.item_id for c in result.candidates] == [f"p{i}" for i in range(100)]
    assert [r.n for r in pop.requests] == [38, 100]
    # A source that already returned everything it has is not asked twice.
    retriever, tt, pop, _ = _setup(["t0"], [f"p{i}" for i in range(20)])
    assert len(retriever.retrieve(RetrieveQuery("f1", 100)).candidates) == 21
    assert [r.n for r in tt.requests] == [87] and [r.n for r in pop.requests] == [38]


def test_a_hits_named_facts_reach_the_candidates_scores_and_the_claiming_source_wins_clashes() -> None:
    class Facts(FakeSource):
        def __init__(self, name: str, ids: Sequence[str], facts: dict[str, float]) -> None:
            super().__init__(name, ids)
            self.facts = facts

        def retrieve(self, request: SourceRequest) -> list[SourceHit]:
            return [SourceHit(h.item_id, h.score, h.reason, self.facts) for h in super().retrieve(request)]

    social = Facts("social", ["a", "b"], {"social_friends": 3.0, "shared": 1.0})
    i2i = Facts("item_to_item", ["b", "c"], {"item_to_item_seeds": 2.0, "shared": 2.0})
    store = FakeStore({"fan": {"f1": fan_row("f1", [])}})
    retriever = Retriever([social, i2i], store, quota_shares={"social": 0.5, "item_to_item": 0.5})
    by_id = {c.item_id: c for c in retriever.retrieve(RetrieveQuery("f1", 3)).candidates}
    assert by_id["a"].scores == {"social": 1.0, "social_friends": 3.0, "shared": 1.0, "retrieval": 1.0}
    b = by_id["b"]
    assert b.source == "social" and b.sources == ["social", "item_to_item"]
    assert b.scores["social_friends"] == 3.0 and b.scores["item_to_item_seeds"] == 2.0
    assert b.scores["shared"] == 1.0  # the claiming source's value
    assert by_id["c"].scores["item_to_item_seeds"] == 2.0 and "social_friends" not in by_id["c"].scores


def test_every_source_with_a_share_gets_a_slot_when_k_has_room_for_all() -> None:
    shares = {"two_tower": 0.55, "item_to_item": 0.2, "social": 0.1, "trending": 0.1, "popular": 0.05}
    assert resolve_quotas(10, shares, {}) == {
        "two_tower": 5,  # 5.5 rounds up by largest remainder, then gives popular its one slot
        "item_to_item": 2,
        "social": 1,
        "trending": 1,
        "popular": 1,
    }
    assert resolve_quotas(100, shares, {}) == {
        "two_tower": 55,
        "item_to_item": 20,
        "social": 10,
        "trending": 10,
        "popular": 5,
    }
    assert sum(resolve_quotas(3, shares, {}).values()) == 3  # no room for all: shares decide
    assert resolve_quotas(3, shares, {})["popular"] == 0
    assert resolve_quotas(10, {**shares, "social": 0.0}, {})["social"] == 0  # a zero share stays off


def test_item_facts_reach_every_candidate_whichever_source_proposed_it() -> None:
    class Knowing(FakeSource):
        """Returns its canned hits and records a fact about items it did not return too."""

        def __init__(self, name: str, ids: Sequence[str], fact: str, values: dict[str, float]) -> None:
            super().__init__(name, ids)
            self.fact, self.values = fact, values

        def retrieve(self, request: SourceRequest) -> list[SourceHit]:
            hits = super().retrieve(request)  # raises first when told to fail
            assert request.facts is not None
            request.facts[self.fact] = self.values
            return hits

    i2i = Knowing("item_to_item", ["b"], "co_engagement", {"a": 0.5, "b": 1.5, "z": 9.0})
    tt = FakeSource("two_tower", ["a", "c"])
    store = FakeStore({"fan": {"f1": fan_row("f1", [])}})
    retriever = Retriever([tt, i2i], store, quota_shares={"two_tower": 0.5, "item_to_item": 0.5})
    by_id = {c.item_id: c for c in retriever.retrieve(RetrieveQuery("f1", 3)).candidates}
    assert {i: c.scores["co_engagement"] for i, c in by_id.items()} == {"a": 0.5, "b": 1.5, "c": 0.0}
    # A fact no source recorded (the source failed) stays unknown: absent, not 0.
    failing = Knowing("item_to_item", ["b"], "co_engagement", {})
    failing.error = RuntimeError("store down")
    retriever = Retriever([tt, failing], store, quota_shares={"two_tower": 0.5, "item_to_item": 0.5})
    assert all("co_engagement" not in c.scores for c in retriever.retrieve(RetrieveQuery("f1", 2)).candidates)


class FactsOnly(FakeSource):
    """A source with facts (like mf): `record_facts` leaves {"fact": 2.0} for every id it knows."""

    def __init__(self, name: str, ids: Sequence[str], error: Exception | None = None) -> None:
        super().__init__(name, ids)
        self.fact_error = error
        self.fact_requests: list[SourceRequest] = []

    def record_facts(self, request: SourceRequest) -> None:
        self.fact_requests.append(request)
        if self.fact_error is not None:
            raise self.fact_error
        assert request.facts is not None
        request.facts["fact"] = {i: 2.0 for i in self.ids}

    def retrieve(self, request: SourceRequest) -> list[SourceHit]:
        self.record_facts(request)
        return super().retrieve(request)


def test_a_source_switched_off_still_leaves_its_facts_for_the_ranker() -> None:
    """The ranker was trained with every source's facts; a quota of 0 (the request's or the deployment's)
    must not silently turn them into 0 for every candidate."""
    pop = FakeSource("popular", ["a", "b", "c"])
    facts = FactsOnly("mf", ["b", "z"])
    store = FakeStore({"fan": {"f1": fan_row("f1", [])}})
    retriever = Retriever([facts, pop], store, quota_shares={"mf": 0.5, "popular": 0.5})
    result = retriever.retrieve(RetrieveQuery("f1", 3, source_quotas={"mf": 0}))
    assert facts.requests == [] and len(facts.fact_requests) == 1  # asked for facts, not candidates
    assert [c.item_id for c in result.candidates] == ["a", "b", "c"] and result.degraded == {}
    assert [c.scores["fact"] for c in result.candidates] == [0.0, 2.0, 0.0]
    # Without record_facts (a plain source switched off), nothing is asked, as before.
    off = Retriever([FakeSource("mf", ["b"]), pop], store, quota_shares={"mf": 0.0, "popular": 1.0})
    assert "fact" not in off.retrieve(RetrieveQuery("f1", 3)).candidates[0].scores


def test_a_failing_fact_recorder_is_reported_and_leaves_the_page_whole() -> None:
    pop = FakeSource("popular", ["a", "b", "c"])
    facts = FactsOnly("mf", ["b"], error=RuntimeError("redis down"))
    store = FakeStore({"fan": {"f1": fan_row("f1", [])}})
    retriever = Retriever([facts, pop], store, quota_shares={"mf": 0.0, "popular": 1.0})
    result = retriever.retrieve(RetrieveQuery("f1", 3))
    assert [c.item_id for c in result.candidates] == ["a", "b", "c"]
    assert result.degraded == {"mf": "facts failed: RuntimeError: redis down"}
    assert all("fact" not in c.scores for c in result.candidates)
