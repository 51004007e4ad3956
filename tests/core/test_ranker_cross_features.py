"""The ranker's per-candidate cross and source columns (kindred.features.ranker_features_batch), built
with C-level lookups, against their plain definitions written out per candidate."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from kindred.features import RANKER_FEATURES, SOURCES, normalize_source, ranker_features_batch

CREATORS: list[dict[str, Any] | None] = [
    {"creator_id": "a", "category": "Music", "language": "en", "min_price_cents": 500},
    {"creator_id": "b", "category": "Art", "language": "es", "min_price_cents": 0},
    None,  # unknown creator
    {"creator_id": "c", "category": "Podcasts", "language": "en"},
]
SOURCE_NAMES = ["CANDIDATE_SOURCE_TWO_TOWER", "social", "CANDIDATE_SOURCE_SEARCH_DENSE", "never-seen-before"]


def _column(name: str) -> int:
    return RANKER_FEATURES.index(name)


def _plain(fan: dict[str, Any], row: dict[str, Any] | None) -> dict[str, float]:
    """What the columns mean, for one candidate."""
    r = row or {}
    ids = [str(c) for c in fan.get("history") or []]
    weights = fan.get("history_weights") or [1.0] * len(ids)
    share = {c: float(w) / (float(sum(weights)) or 1.0) for c, w in zip(ids, weights, strict=True)}
    language = str(fan.get("language") or "")
    return {
        "cross.category_interest": float(str(r.get("category", "")) in set(fan.get("interests") or ())),
        "cross.language_match": float(bool(language) and language == str(r.get("language", ""))),
        "cross.in_history": float(str(r.get("creator_id", "")) in share),
        "cross.history_weight": share.get(str(r.get("creator_id", "")), 0.0),
    }


@pytest.mark.parametrize(
    "fan",
    [
        {
            "interests": ["Music", "Podcasts"],
            "language": "en",
            "history": ["c", "a"],
            "history_weights": [3, 1],
        },
        {"interests": [], "language": "", "locale": "", "history": []},  # no language: no match
        {},
    ],
)
def test_cross_and_source_columns_are_their_plain_definitions(fan: dict[str, Any]) -> None:
    out = ranker_features_batch(
        fan,
        CREATORS,
        two_tower_scores=[0.5, None, float("nan"), 0.1],
        retrieval_scores=[0.5, 0.2, None, 0.1],
        sources=SOURCE_NAMES,
    )
    for i, row in enumerate(CREATORS):
        for name, value in _plain(fan, row).items():
            assert math.isclose(out[i, _column(name)], value, rel_tol=1e-6), (i, name)
        one_hot = out[i, [_column(f"source:{s}") for s in SOURCES]]
        assert one_hot.tolist() == [float(s == normalize_source(SOURCE_NAMES[i])) for s in SOURCES]
    assert out[:, _column("source:other")].tolist() == [0.0, 0.0, 0.0, 1.0]
    np.testing.assert_array_equal(out[:, _column("cross.two_tower_missing")], [0.0, 1.0, 1.0, 0.0])


def _with_facts(**facts: Any) -> np.ndarray:  # type: ignore[type-arg]
    """The four creators' features for a fan with no row, given only retrieval's facts."""
    return ranker_features_batch(
        {}, CREATORS, two_tower_scores=[None] * 4, retrieval_scores=[0.0] * 4, sources=SOURCE_NAMES, **facts
    )


def test_co_engagement_and_social_friends_are_squashed_and_unknown_is_zero() -> None:
    def columns(**facts: Any) -> np.ndarray:  # type: ignore[type-arg]
        return _with_facts(**facts)[:, [_column("cross.co_engagement"), _column("cross.social_friends")]]

    got = columns(co_engagement=[0.0, 1.0, 3.0, float("nan")], social_friends=[2.0, 0.0, None, -1.0])
    np.testing.assert_allclose(got[:, 0], [0.0, 0.5, 0.75, 0.0], rtol=1e-6)  # x / (1 + x); NaN unknown
    np.testing.assert_allclose(got[:, 1], [2 / 3, 0.0, 0.0, 0.0], rtol=1e-6)  # negative counts clip to 0
    np.testing.assert_array_equal(columns(), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="one value per row"):
        columns(co_engagement=[1.0])


def test_the_mf_score_is_taken_raw_and_unknown_is_zero() -> None:
    def column(**facts: Any) -> np.ndarray:  # type: ignore[type-arg]
        return _with_facts(**facts)[:, _column("cross.mf_score")]

    # Raw dot products, negative ones too (unlike the counts above): the sign says "not for this fan".
    np.testing.assert_allclose(
        column(mf_scores=[0.4, -0.2, None, float("inf")]), [0.4, -0.2, 0.0, 0.0], rtol=1e-6
    )
    np.testing.assert_array_equal(column(), np.zeros(4))
    with pytest.raises(ValueError, match="one value per row"):
        column(mf_scores=[1.0, 2.0])


LIST_COLUMNS = [
    "cross.mf_score_list_z",
    "cross.mf_score_list_rank",
    "cross.co_engagement_list_z",
    "cross.two_tower_score_list_z",
]


def _list_columns(**facts: Any) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    out = ranker_features_batch(
        {},
        CREATORS,
        two_tower_scores=facts.pop("two_tower_scores", [None] * 4),
        retrieval_scores=[0.0] * 4,
        sources=SOURCE_NAMES,
        **facts,
    )
    return {name: out[:, _column(name)].astype(np.float64) for name in LIST_COLUMNS}


def test_list_columns_are_each_score_against_the_rest_of_the_list() -> None:
    mf = np.array([0.4, -0.2, 0.1, 0.1])
    got = _list_columns(mf_scores=mf.tolist(), co_engagement=[0.0, 1.0, 3.0, 2.0])
    np.testing.assert_allclose(got["cross.mf_score_list_z"], (mf - mf.mean()) / mf.std(), rtol=1e-5)
    # 1 the best, 0 the worst; the two equal scores share their places (1/3 and 2/3).
    np.testing.assert_allclose(got["cross.mf_score_list_rank"], [1.0, 0.0, 0.5, 0.5], rtol=1e-6)
    co = np.array([0.0, 1.0, 3.0, 2.0])
    np.testing.assert_allclose(got["cross.co_engagement_list_z"], (co - co.mean()) / co.std(), rtol=1e-5)


def test_list_columns_do_not_move_with_the_scale_of_the_scores() -> None:
    """The point of them: a fan whose scores are all larger (more follows folded in) reads the same."""
    base = _list_columns(mf_scores=[0.4, -0.2, 0.1, 0.3], co_engagement=[0.5, 1.0, 3.0, 2.0])
    scaled = _list_columns(mf_scores=[1.9, 0.1, 1.0, 1.6], co_engagement=[1.5, 3.0, 9.0, 6.0])
    for name in LIST_COLUMNS:
        np.testing.assert_allclose(scaled[name], base[name], atol=1e-5, err_msg=name)


def test_list_columns_of_absent_equal_or_lone_scores_are_neutral() -> None:
    nothing = _list_columns()
    for name in ("cross.mf_score_list_z", "cross.co_engagement_list_z", "cross.two_tower_score_list_z"):
        np.testing.assert_array_equal(nothing[name], np.zeros(4))
    equal = _list_columns(mf_scores=[0.2] * 4)
    np.testing.assert_array_equal(equal["cross.mf_score_list_z"], np.zeros(4))
    np.testing.assert_array_equal(equal["cross.mf_score_list_rank"], np.full(4, 0.5))
    # Two-tower: z over the candidates that have a score; the missing ones read 0.
    tt = _list_columns(two_tower_scores=[0.5, None, float("nan"), 0.1])["cross.two_tower_score_list_z"]
    np.testing.assert_allclose(tt, [1.0, 0.0, 0.0, -1.0], rtol=1e-6)
    lone = ranker_features_batch(
        {}, CREATORS[:1], two_tower_scores=[0.5], retrieval_scores=[0.0], sources=["x"], mf_scores=[0.3]
    )
    assert [float(lone[0, _column(n)]) for n in LIST_COLUMNS] == [0.0, 1.0, 0.0, 0.0]
