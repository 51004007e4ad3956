"""kindred.features: rows from events, vectors from rows — the one path training and serving share."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kindred.data.catalogue import Catalogue
from kindred.data.schema import CATEGORIES, Creator, Fan, Tier
from kindred.features import (
    CREATOR_TOWER_FEATURES,
    RANKER_FEATURES,
    SOURCES,
    USER_TOWER_FEATURES,
    Interactions,
    build_creator_rows,
    build_fan_rows,
    build_popular_lists,
    creator_cross_facts,
    creator_tower_features,
    following_pairs,
    history_bucket,
    normalize_source,
    ranker_features,
    ranker_features_batch,
    user_tower_features,
    user_tower_features_batch,
)
from kindred.v1 import events_pb2

ET = events_pb2.EventType
T0 = 1_750_000_000.0


def events(*rows: tuple[str, str, int, float]) -> Interactions:
    return Interactions.from_records(
        {"fan_id": f, "creator_id": c, "event_type": t, "ts": ts} for f, c, t, ts in rows
    )


def test_feature_names_are_unique() -> None:
    for names in (USER_TOWER_FEATURES, CREATOR_TOWER_FEATURES, RANKER_FEATURES):
        assert len(set(names)) == len(names)


@pytest.mark.parametrize("missing", [None, {}])
def test_a_new_fan_gets_finite_defaults(missing: dict[str, object] | None) -> None:
    x = user_tower_features(missing)
    assert x.shape == (len(USER_TOWER_FEATURES),) and x.dtype == np.float32
    assert np.all(np.isfinite(x))
    assert x[USER_TOWER_FEATURES.index("has_history")] == 0.0
    assert x[USER_TOWER_FEATURES.index("recency")] == 1.0  # "never active" is the far end of the scale
    r = ranker_features(missing, None, two_tower_score=None, retrieval_score=None, source="popular")
    assert r.shape == (len(RANKER_FEATURES),) and np.all(np.isfinite(r))
    assert r[RANKER_FEATURES.index("cross.two_tower_missing")] == 1.0
    assert r[RANKER_FEATURES.index("creator.has_row")] == 0.0


def test_rows_with_garbage_values_still_give_finite_vectors() -> None:
    fan = {
        "n_events": "many",
        "category_affinity": [1.0, "x"],
        "last_event_at": None,
        "history": ["c1"],
        "history_weights": [1.0, 2.0],
        "price_level_cents": float("nan"),
    }
    assert np.all(np.isfinite(user_tower_features(fan)))
    assert np.all(np.isfinite(creator_tower_features({"popularity": float("inf"), "trend": 1e9})))


def test_fan_rows_only_see_events_before_as_of(platform: tuple[Catalogue, Interactions]) -> None:
    catalogue, ev = platform
    cut = float(np.quantile(ev.ts, 0.5))
    before = build_fan_rows(ev.before(cut), catalogue.fans, catalogue.creators, as_of=cut)
    everything = build_fan_rows(ev, catalogue.fans, catalogue.creators, as_of=cut)
    assert before == everything  # later events cannot leak into features as of `cut`
    later = build_fan_rows(ev, catalogue.fans, catalogue.creators, as_of=float(ev.ts.max()) + 1)
    assert later != before


def test_fan_row_counts_history_and_following() -> None:
    fans = [Fan("f1", "fr-FR", "Europe/Paris", interests=(CATEGORIES[1],))]
    creators = [
        Creator("c1", "A", CATEGORIES[0], tiers=(Tier("t1", "T", 500),)),
        Creator("c2", "B", CATEGORIES[1]),
    ]
    ev = Interactions.from_records(
        [
            {"fan_id": "f1", "creator_id": "c1", "event_type": ET.EVENT_TYPE_FOLLOW, "ts": T0},
            {
                "fan_id": "f1",
                "creator_id": "c1",
                "event_type": ET.EVENT_TYPE_MEMBERSHIP_START,
                "ts": T0 + 1,
                "tier_id": "t1",
                "value": 5.0,
            },
            {"fan_id": "f1", "creator_id": "c2", "event_type": ET.EVENT_TYPE_FOLLOW, "ts": T0 + 2},
            {"fan_id": "f1", "creator_id": "c2", "event_type": ET.EVENT_TYPE_UNFOLLOW, "ts": T0 + 3},
            {"fan_id": "f1", "creator_id": "", "event_type": ET.EVENT_TYPE_SEARCH, "ts": T0 + 4},
        ]
    )
    row = build_fan_rows(ev, fans, creators, as_of=T0 + 10)["f1"]
    assert (row["n_events"], row["n_follows"], row["n_unfollows"], row["n_searches"]) == (5, 2, 1, 1)
    assert row["language"] == "fr"
    assert row["following"] == ["c1"]  # c2 was unfollowed
    assert row["history"] == ["c1", "c2"]  # c1: follow + membership outweighs c2's follow
    assert row["price_level_cents"] == 500.0  # the tier's price, not the event value
    assert row["category_affinity"][0] > row["category_affinity"][1] > 0
    assert math.isclose(sum(row["category_affinity"]), 1.0)
    json.dumps(row)  # the online store keeps JSON


def test_following_follows_the_last_start_or_end() -> None:
    ev = events(
        ("f", "c", ET.EVENT_TYPE_FOLLOW, 1),
        ("f", "c", ET.EVENT_TYPE_UNFOLLOW, 2),
        ("f", "c", ET.EVENT_TYPE_FOLLOW, 3),
        ("f", "d", ET.EVENT_TYPE_MEMBERSHIP_START, 1),
        ("f", "d", ET.EVENT_TYPE_MEMBERSHIP_END, 5),
        ("g", "c", ET.EVENT_TYPE_CREATOR_VIEW, 1),
    )
    assert following_pairs(ev) == {"f": {"c"}}


def test_creator_rows_and_popular_lists(platform: tuple[Catalogue, Interactions]) -> None:
    catalogue, ev = platform
    as_of = float(ev.ts.max()) + 1
    rows = build_creator_rows(ev, catalogue.creators, catalogue.posts, as_of=as_of)
    assert set(rows) == {c.creator_id for c in catalogue.creators}
    pops = [r["popularity"] for r in rows.values()]
    assert max(pops) == 1.0 and min(pops) >= 0.0
    assert all(r["n_followers"] <= r["n_fans"] for r in rows.values())
    lists = build_popular_lists(rows, k=5)
    top = lists["global"]["creator_ids"]
    assert len(top) == 5
    raw = [rows[c]["popularity_raw"] for c in top]
    assert raw == sorted(raw, reverse=True)
    cat = catalogue.creators[0].category
    assert all(rows[c]["category"] == cat for c in lists[f"category:{cat}"]["creator_ids"])
    json.dumps(lists)


def test_rows_survive_a_json_round_trip_unchanged(platform: tuple[Catalogue, Interactions]) -> None:
    catalogue, ev = platform
    as_of = float(ev.ts.max()) + 1
    fans = build_fan_rows(ev, catalogue.fans, catalogue.creators, as_of=as_of)
    fan = next(iter(fans.values()))
    assert np.array_equal(user_tower_features(fan), user_tower_features(json.loads(json.dumps(fan))))


def test_batch_and_single_ranker_features_agree(platform: tuple[Catalogue, Interactions]) -> None:
    catalogue, ev = platform
    as_of = float(ev.ts.max()) + 1
    fan = build_fan_rows(ev, catalogue.fans, catalogue.creators, as_of=as_of)["f0001"]
    creators = build_creator_rows(ev, catalogue.creators, catalogue.posts, as_of=as_of)
    rows = [creators[c] for c in sorted(creators)[:6]] + [None]
    tt = [0.3, -0.1, None, 0.9, float("nan"), 0.0, 0.2]
    rs = [0.3, 0.5, 0.1, None, 0.2, 0.0, 0.1]
    src = [
        "CANDIDATE_SOURCE_TWO_TOWER",
        "popular",
        "SEARCH_HYBRID",
        "two_tower",
        "weird",
        "social",
        "popular",
    ]
    batch = ranker_features_batch(fan, rows, two_tower_scores=tt, retrieval_scores=rs, sources=src)
    # A candidate alone is its own list: its list-relative columns read 0 (a z-score of one; no mf score
    # given, so no mf rank); the rest are the batch's row.
    in_list = np.array(["_list_" in n for n in RANKER_FEATURES])
    assert in_list.any() and batch[:, in_list].any()
    for i in range(len(rows)):
        single = ranker_features(fan, rows[i], two_tower_score=tt[i], retrieval_score=rs[i], source=src[i])
        np.testing.assert_array_equal(batch[i, ~in_list], single[~in_list])
        assert not single[in_list].any()
    cached = ranker_features_batch(
        fan,
        rows,
        two_tower_scores=tt,
        retrieval_scores=rs,
        sources=src,
        creator_vectors=np.stack([creator_tower_features(r) for r in rows]),
    )
    np.testing.assert_array_equal(batch, cached)
    # What ranking keeps per creator (vector and cross facts) gives the very same matrix, odd rows too.
    odd = [*rows, {"category": None, "language": 7, "min_price_cents": "x", "creator_id": 12}, {}]
    odd_tt, odd_rs, odd_src = [*tt, 0.1, None], [*rs, 0.2, 0.3], [*src, "x", "social"]
    kept = ranker_features_batch(
        fan,
        odd,
        two_tower_scores=odd_tt,
        retrieval_scores=odd_rs,
        sources=odd_src,
        creator_vectors=np.stack([creator_tower_features(r) for r in odd]),
        creator_facts=[creator_cross_facts(r) for r in odd],
    )
    rebuilt = ranker_features_batch(
        fan, odd, two_tower_scores=odd_tt, retrieval_scores=odd_rs, sources=odd_src
    )
    np.testing.assert_array_equal(kept, rebuilt)
    # The longer list's first rows: the same, except the columns relative to the list.
    np.testing.assert_array_equal(kept[: len(rows), ~in_list], batch[:, ~in_list])


def test_ranker_cross_features_mean_what_they_say(platform: tuple[Catalogue, Interactions]) -> None:
    catalogue, ev = platform
    as_of = float(ev.ts.max()) + 1
    fan = build_fan_rows(ev, catalogue.fans, catalogue.creators, as_of=as_of)["f0001"]
    creators = build_creator_rows(ev, catalogue.creators, catalogue.posts, as_of=as_of)
    known = fan["history"][0]
    stranger = next(c for c in creators if c not in fan["history"])
    x = ranker_features_batch(
        fan,
        [creators[known], creators[stranger]],
        two_tower_scores=[0.5, None],
        retrieval_scores=[0.5, 0.7],
        sources=["two_tower", "popular"],
    )
    col = {n: i for i, n in enumerate(RANKER_FEATURES)}
    assert x[0, col["cross.in_history"]] == 1.0 and x[1, col["cross.in_history"]] == 0.0
    assert x[0, col["cross.history_weight"]] > 0.0
    assert (x[0, col["cross.two_tower_score"]], x[0, col["cross.two_tower_missing"]]) == (0.5, 0.0)
    assert (x[1, col["cross.two_tower_score"]], x[1, col["cross.two_tower_missing"]]) == (0.0, 1.0)
    assert x[0, col["source:two_tower"]] == 1.0 and x[1, col["source:popular"]] == 1.0
    assert x[:, [col[f"source:{s}"] for s in SOURCES]].sum() == 2.0
    cat = creators[known]["category"]
    assert math.isclose(
        x[0, col["cross.category_affinity"]], fan["category_affinity"][CATEGORIES.index(cat)], rel_tol=1e-6
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("CANDIDATE_SOURCE_TWO_TOWER", "two_tower"),
        ("two_tower", "two_tower"),
        ("POPULAR", "popular"),
        ("CANDIDATE_SOURCE_SEARCH_SPARSE", "search"),
        ("CANDIDATE_SOURCE_UNSPECIFIED", "other"),
        ("", "other"),
    ],
)
def test_sources_normalise(raw: str, expected: str) -> None:
    assert normalize_source(raw) == expected


def test_history_hash_is_stable_and_in_range() -> None:
    assert history_bucket("c00042") == history_bucket("c00042")
    buckets = {history_bucket(f"c{i:05d}") for i in range(1000)}
    assert min(buckets) >= 0 and max(buckets) < 256 and len(buckets) > 200


def test_user_batch_matches_rows(platform: tuple[Catalogue, Interactions]) -> None:
    catalogue, ev = platform
    rows = list(
        build_fan_rows(ev, catalogue.fans, catalogue.creators, as_of=float(ev.ts.max()) + 1).values()
    )[:5]
    batch = user_tower_features_batch([*rows, None])
    assert batch.shape == (6, len(USER_TOWER_FEATURES))
    np.testing.assert_array_equal(batch[2], user_tower_features(rows[2]))


def test_user_vector_ignores_history_order(platform: tuple[Catalogue, Interactions]) -> None:
    catalogue, ev = platform
    fan = build_fan_rows(ev, catalogue.fans, catalogue.creators, as_of=float(ev.ts.max()) + 1)["f0002"]
    assert len(fan["history"]) > 2
    shuffled = dict(fan, history=fan["history"][::-1], history_weights=fan["history_weights"][::-1])
    np.testing.assert_allclose(user_tower_features(fan), user_tower_features(shuffled), rtol=1e-6)
    heavier = dict(fan, history_weights=[w * 2 for w in fan["history_weights"]])  # only shares matter
    np.testing.assert_allclose(user_tower_features(fan), user_tower_features(heavier), rtol=1e-6)
