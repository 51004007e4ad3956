"""trainer.candidates: the item-to-item, social and trending tables, and the candidate-pool evaluation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from kindred.data.catalogue import Catalogue
from kindred.data.schema import Creator, Friendship
from kindred.features import Interactions, following_pairs
from kindred.v1 import events_pb2
from trainer.candidates import (
    NEIGHBORS,
    SOCIAL,
    TRENDING,
    CandidatesConfig,
    CandidateTables,
    Holdout,
    build_candidate_tables,
    candidate_pool_recall,
    co_engagement_neighbors,
    publish_candidates,
    social_lists,
    trending_lists,
)

ET = events_pb2.EventType
DAY = 86_400.0
T0 = 1_750_000_000.0


def _follows(pairs: Mapping[str, str]) -> dict[str, set[str]]:
    return {fan: set(creators) for fan, creators in pairs.items()}


# --------------------------------------------------------------------------------------------------
# Item-to-item
# --------------------------------------------------------------------------------------------------


def test_shrinkage_demotes_a_pair_that_rests_on_one_shared_fan() -> None:
    # a: 4 fans; b: 16 fans, 3 of them a's; x: 1 fan, also a's. Plain cosine prefers x (1/2 > 3/8).
    following = {f"f{i}": {"a", "b"} for i in range(3)} | {"f3": {"a", "x"}}
    following |= {f"g{i}": {"b"} for i in range(13)}

    plain = co_engagement_neighbors(following, k=5, shrinkage=0.0)
    shrunk = co_engagement_neighbors(following, k=5, shrinkage=5.0)

    assert plain["a"]["ids"] == ["x", "b"]
    assert plain["a"]["scores"] == pytest.approx([0.5, 3 / 8], abs=1e-6)
    assert shrunk["a"]["ids"] == ["b", "x"]
    assert shrunk["a"]["scores"] == pytest.approx([3 / 8 * 3 / 8, 0.5 / 6], abs=1e-6)
    assert shrunk["x"]["ids"] == ["a"] and shrunk["b"]["ids"] == ["a"]  # symmetric, nothing else shared


def test_neighbours_match_a_dense_computation_on_random_follows() -> None:
    rng = np.random.default_rng(3)
    n_fans, n_creators, lam, k = 60, 25, 2.0, 6
    x = rng.random((n_fans, n_creators)) < rng.uniform(0.02, 0.3, size=n_creators)  # popularity varies
    following = {f"f{u:02d}": {f"c{j:02d}" for j in np.flatnonzero(x[u])} for u in range(n_fans)}

    table = co_engagement_neighbors(following, k=k, shrinkage=lam)

    co = x.T.astype(float) @ x.astype(float)
    n = np.diag(co).copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = co / np.sqrt(np.outer(n, n)) * co / (co + lam)
    np.fill_diagonal(sim, 0.0)
    for j in range(n_creators):
        cid = f"c{j:02d}"
        expected = sorted((-sim[j, i], f"c{i:02d}") for i in range(n_creators) if i != j and co[j, i] > 0)[:k]
        got = table.get(cid, {"ids": [], "scores": []})
        assert got["ids"] == [c for _, c in expected], cid
        assert got["scores"] == pytest.approx([-s for s, _ in expected], abs=1e-6)


def test_heavy_followers_count_only_up_to_the_cap() -> None:
    following = {"heavy": {"a", "b", "c", "d"}, "f1": {"c", "d"}}
    table = co_engagement_neighbors(following, k=5, shrinkage=0.0, max_follows_per_fan=2)
    # "heavy" contributes a and b only (the first by id): c and d are linked by f1 alone.
    assert table["a"]["ids"] == ["b"] and table["c"]["ids"] == ["d"]


# --------------------------------------------------------------------------------------------------
# Social
# --------------------------------------------------------------------------------------------------


def test_social_counts_friends_leaves_out_what_the_fan_has_and_breaks_ties_by_strength() -> None:
    following = _follows({"A": "w", "B": "xy", "C": "xz", "D": "xyw", "E": "q", "F": ""})
    friends = {"A": {"B", "C", "D", "E"}, "F": {"A"}}
    strength = {("C", "z"): 5.0, ("E", "q"): 1.0}

    table = social_lists(following, friends, k=10, strength=strength)

    assert table["A"]["ids"] == ["x", "y", "z", "q"]
    assert table["A"]["friends"] == [3, 2, 1, 1]
    assert table["A"]["scores"] == pytest.approx([0.75, 2 / 3, 0.5, 0.5])
    assert table["F"] == {"ids": ["w"], "scores": [0.5], "friends": [1]}
    assert social_lists(following, friends, k=2)["A"]["ids"] == ["x", "y"]


def test_every_fan_with_friends_gets_a_row_even_an_empty_one() -> None:
    table = social_lists(_follows({"A": "x", "B": "x"}), {"A": {"B"}, "B": {"A"}}, k=5)
    assert table == {
        "A": {"ids": [], "scores": [], "friends": []},
        "B": {"ids": [], "scores": [], "friends": []},
    }


# --------------------------------------------------------------------------------------------------
# Trending and new creators
# --------------------------------------------------------------------------------------------------


def _creator(cid: str, *, category: str = "Music", language: str = "en", age_days: float = 400) -> Creator:
    return Creator(cid, cid, category, language=language, created_at=T0 - age_days * DAY)


def _views(creator: str, per_day: Mapping[int, int]) -> list[dict[str, Any]]:
    """`per_day[d]` creator views on day d before T0 (d = 1: the last day), each from another fan."""
    return [
        {
            "fan_id": f"v{d}-{i}",
            "creator_id": creator,
            "event_type": ET.EVENT_TYPE_CREATOR_VIEW,
            "ts": T0 - d * DAY + 60,
        }
        for d, n in per_day.items()
        for i in range(n)
    ]


def test_growth_against_the_creators_own_baseline_ranks_trending_and_new_creators_get_their_list() -> None:
    cfg = CandidatesConfig(trending_window_days=7, trending_baseline_days=21, trending_prior=5)
    creators = [
        _creator("grower", category="Art"),
        _creator("steady"),
        _creator("fading", language="fr"),
        _creator("fresh", age_days=5),
        _creator("fresh_famous", age_days=5),
        _creator("fresh_unseen", age_days=2),
        _creator("fresh_quiet", age_days=10),
    ]
    records = _views("grower", {d: 1 for d in range(8, 29)} | {d: 6 for d in range(1, 8)})
    records += _views("steady", {d: 10 for d in range(1, 29)})
    records += _views("fading", {d: 10 for d in range(8, 29)} | {d: 1 for d in range(1, 8)})
    records += _views("fresh", {d: 3 for d in range(1, 5)})
    records += _views("fresh_quiet", {2: 1})
    records += _views("grower", {-1: 100})  # after as_of: must not count
    following = {f"fan{i}": {"fresh_famous"} for i in range(25)} | {"fan99": {"fresh"}}
    events = Interactions.from_records(sorted(records, key=lambda r: float(r["ts"])))

    table = trending_lists(events, creators, following, as_of=T0, cfg=cfg)

    assert table["global"]["ids"] == ["grower", "fresh", "fresh_quiet"]  # steady and fading do not grow
    assert table["global"]["scores"][0] == 1.0
    assert table["category:Art"]["ids"] == ["grower"]
    # grower: recent 42 vs expected 7 → (42 − 7) / sqrt(7 + 5); fresh has no baseline: 12 / sqrt(5).
    assert table["global"]["scores"][1] == pytest.approx((12 / math.sqrt(5)) / (35 / math.sqrt(12)), abs=1e-5)
    # New: young and not yet followed by many (fresh_famous has 25 followers), by views per day of age.
    assert table["new:global"]["ids"] == ["fresh", "fresh_quiet", "fresh_unseen"]
    assert table["new:global"]["scores"] == pytest.approx([1.0, (1 / 10) / (12 / 5), 0.0], abs=1e-5)
    assert "new:category:Music" in table and "new:language:en" in table
    assert all(0.0 <= s <= 1.0 for row in table.values() for s in row["scores"])


# --------------------------------------------------------------------------------------------------
# All tables, leakage, evaluation, publishing
# --------------------------------------------------------------------------------------------------


def _with_friends(catalogue: Catalogue) -> Catalogue:
    fans = [f.fan_id for f in catalogue.fans]
    pairs = {Friendship.undirected(fans[i], fans[(i * 7 + 3) % len(fans)]) for i in range(len(fans))}
    return dataclasses.replace(catalogue, friendships=sorted(pairs, key=lambda p: (p.fan_id, p.friend_id)))


def test_tables_read_nothing_at_or_after_as_of(platform: tuple[Catalogue, Interactions]) -> None:
    catalogue, events = platform
    catalogue = _with_friends(catalogue)
    cut = float(np.quantile(events.ts, 0.6))

    from_all = build_candidate_tables(events, catalogue, as_of=cut)
    from_past = build_candidate_tables(events.before(cut), catalogue, as_of=cut)
    later = build_candidate_tables(events, catalogue, as_of=float(events.ts.max()) + 1)

    assert from_all == from_past
    assert from_all.neighbors and from_all.social and from_all.trending and from_all.mf is not None
    assert later.neighbors != from_all.neighbors  # the test can fail: more follows, other neighbours
    assert later.mf != from_all.mf
    following = following_pairs(events.before(cut))
    for fan, row in from_all.social.items():
        assert not set(row["ids"]) & following.get(fan, set())


class FakeWriter:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def put(self, namespace: str, rows: Mapping[str, Mapping[str, Any]]) -> None:
        self.data.setdefault(namespace, {}).update(rows)


def test_pool_recall_follows_the_serving_quotas() -> None:
    creator_ids = [f"c{i}" for i in range(6)]
    tt = np.array([[0.9, 0.8, 0.7, 0.1, 0.0, -0.1]], dtype=np.float32)
    tables = CandidateTables(
        neighbors={"c5": {"ids": ["c4", "c3"], "scores": [0.9, 0.5]}},
        social={"f1": {"ids": ["c3"], "scores": [0.5], "friends": [1]}},
        trending={},
    )
    fan_rows = {"f1": {"following": ["c5"], "history": ["c5"]}}
    popular = {"global": {"creator_ids": creator_ids, "scores": [1.0] * 6}}
    args = (["f1"], [{"c4", "c3"}], fan_rows, tt, creator_ids, tables, popular)

    only_tt = candidate_pool_recall(*args, ks=[2], shares={"two_tower": 1.0})
    mixed = candidate_pool_recall(*args, ks=[2], shares={"two_tower": 0.5, "item_to_item": 0.5})
    with_social = candidate_pool_recall(
        *args, ks=[2], shares={"item_to_item": 0.5, "social": 0.5, "two_tower": 0.0}
    )

    assert only_tt["recall@2"] == 0.0  # c0, c1
    assert mixed["recall@2"] == 0.5 and mixed["item_to_item@2"] == 1.0  # c0 + c4
    assert with_social["recall@2"] == 1.0  # c4 + c3 (social's c3 also i2i's second)


def test_publish_writes_the_three_namespaces_and_measures_the_pool(
    platform: tuple[Catalogue, Interactions],
) -> None:
    catalogue, events = _with_friends(platform[0]), platform[1]
    train_end = float(np.quantile(events.ts, 0.8))
    end = float(events.ts.max()) + 1
    known = following_pairs(events.before(train_end))
    later = following_pairs(events)
    fan_ids = sorted(f for f in later if later[f] - known.get(f, set()))
    labels = [later[f] - known.get(f, set()) for f in fan_ids]
    creator_ids = [c.creator_id for c in catalogue.creators]
    fan_rows = {f: {"following": sorted(known.get(f, ())), "interests": []} for f in fan_ids}
    rng = np.random.default_rng(0)
    holdout = Holdout(
        fan_ids=fan_ids,
        labels=labels,
        fan_rows=fan_rows,
        creator_rows={
            c: {"creator_id": c, "popularity_raw": float(i), "popularity": 0.1}
            for i, c in enumerate(creator_ids)
        },
        two_tower_scores=rng.normal(size=(len(fan_ids), len(creator_ids))).astype(np.float32),
        creator_ids=creator_ids,
        as_of=train_end,
    )
    writer = FakeWriter()
    lines: list[str] = []

    metrics = publish_candidates(writer, events, catalogue, as_of=end, holdout=holdout, note=lines.append)

    assert set(writer.data) == {NEIGHBORS, SOCIAL, TRENDING}
    assert writer.data[NEIGHBORS] == build_candidate_tables(events, catalogue, as_of=end).neighbors
    for k in (50, 100):
        assert 0.0 < metrics[f"candidate_recall@{k}"] <= 1.0
        assert f"candidate_recall@{k}_two_tower+popular" in metrics
    assert metrics["source_recall:item_to_item@50"] > 0.0
    assert any("candidate pool recall@100" in line for line in lines)


def _pool_at_80_percent(
    platform: tuple[Catalogue, Interactions], k: int
) -> tuple[Catalogue, list[str], dict[str, Any], Any]:
    """(catalogue with friends, creator ids, fan rows, ServingPool of k) as of the 80% quantile of time."""
    from kindred.features import build_creator_rows, build_fan_rows
    from trainer.candidates import ServingPool

    catalogue, events = _with_friends(platform[0]), platform[1]
    as_of = float(np.quantile(events.ts, 0.8))
    fan_rows = build_fan_rows(events, catalogue.fans, catalogue.creators, as_of=as_of)
    creator_rows = build_creator_rows(events, catalogue.creators, catalogue.posts, as_of=as_of)
    pool = ServingPool.as_of(events, catalogue, creator_rows, as_of=as_of, k=k)
    return catalogue, [c.creator_id for c in catalogue.creators], fan_rows, pool


def test_the_serving_pool_draws_like_retrieval_and_tags_every_candidate(
    platform: tuple[Catalogue, Interactions],
) -> None:
    """trainer.candidates.ServingPool: the ranker's training and evaluation candidates come from all five
    serving sources through retrieval_svc's merge, carrying what serving gives the ranker."""
    from retrieval_svc.retriever import DEFAULT_QUOTA_SHARES, resolve_quotas

    catalogue, creator_ids, fan_rows, pool = _pool_at_80_percent(platform, k=8)
    assert pool.quotas == resolve_quotas(8, DEFAULT_QUOTA_SHARES, {})  # serving's own quota split
    rng = np.random.default_rng(0)
    claimed: set[str] = set()
    for fan in catalogue.fans:
        tt = rng.normal(size=len(creator_ids)).astype(np.float32)
        row = fan_rows.get(fan.fan_id)
        cands = pool.draw(fan.fan_id, row, tt)
        following = set((row or {}).get("following") or ())
        ids = [creator_ids[c.creator] for c in cands]
        assert 0 < len(cands) <= 8 and len(set(ids)) == len(ids)
        assert not following & set(ids)  # excluded like the serving filter
        for c in cands:
            assert c.sources[0] == c.source and set(c.sources) <= set(DEFAULT_QUOTA_SHARES)
            # The two-tower score only where the two-tower proposed the candidate, as at serving time.
            assert (c.two_tower_score is not None) == ("two_tower" in c.sources)
            if c.two_tower_score is not None:
                assert c.two_tower_score == pytest.approx(float(tt[c.creator]))
            if c.source == "two_tower":
                assert c.retrieval_score == pytest.approx(float(tt[c.creator]))
        claimed |= {c.source for c in cands}
    assert claimed >= {"two_tower", "mf", "item_to_item", "social", "popular"}


@pytest.mark.parametrize("fact_sources_off", [False, True])
def test_the_serving_pool_gives_every_candidate_retrievals_facts(
    platform: tuple[Catalogue, Interactions], fact_sources_off: bool
) -> None:
    """Co-engagement, friend counts and the mf score for every candidate, whichever source claimed it —
    what serving's retriever writes from the item-to-item, social and mf sources' facts — recomputed here
    from the tables; also when those three sources' quotas are 0 (serving still records their facts)."""
    from retrieval_svc.sources.item_to_item import seeds_of
    from trainer.candidates import ServingPool

    catalogue, creator_ids, fan_rows, pool = _pool_at_80_percent(platform, k=12)
    if fact_sources_off:
        shares = {"two_tower": 0.5, "trending": 0.25, "popular": 0.25, "mf": 0.0, "item_to_item": 0.0}
        pool = ServingPool(pool.tables, pool.popular, creator_ids, k=12, shares={**shares, "social": 0.0})
        assert {n for n, q in pool.quotas.items() if q == 0} == {"mf", "item_to_item", "social"}
    rng = np.random.default_rng(1)
    outside = {"co_engagement": 0, "social_friends": 0, "mf_score": 0}
    assert pool.tables.mf is not None
    for fan in catalogue.fans:
        row = fan_rows.get(fan.fan_id) or {}
        seeds = seeds_of(row)
        social = pool.tables.social.get(fan.fan_id) or {}
        friends = dict(zip(social.get("ids", []), social.get("friends", []), strict=True))
        for c in pool.draw(fan.fan_id, row, rng.normal(size=len(creator_ids)).astype(np.float32)):
            item = creator_ids[c.creator]
            expected = 0.0
            for seed in seeds:
                neighbours = pool.tables.neighbors.get(seed) or {"ids": [], "scores": []}
                for other, score in zip(neighbours["ids"], neighbours["scores"], strict=True):
                    expected += score if other == item and item not in seeds else 0.0
            assert c.co_engagement == pytest.approx(expected)
            assert c.social_friends == float(friends.get(item, 0))
            vector = pool.tables.mf.fold_in(row.get("following") or ())
            mf = 0.0 if vector is None else float(pool.tables.mf.item_factors[c.creator] @ vector)
            assert c.mf_score == pytest.approx(mf, abs=1e-5)
            outside["mf_score"] += c.source != "mf" and c.mf_score != 0
            outside["co_engagement"] += c.source != "item_to_item" and c.co_engagement > 0
            outside["social_friends"] += c.source != "social" and c.social_friends > 0
    assert min(outside.values()) > 0  # the point: candidates of other sources carry them too
