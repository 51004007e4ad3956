"""Re-ranking steps: each rule's effect on the order, its trace in scores and reasons, and the caps."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ranking_svc.domain import ScoredCandidate
from ranking_svc.rerank import (
    CapParams,
    Diversity,
    DiversityParams,
    Exposure,
    ExposureParams,
    Freshness,
    FreshnessParams,
    GroupCap,
    ItemFacts,
    RerankConfig,
    Reranker,
    Slate,
    _num,
    slate_facts,
    slate_numbers,
)

OFF = RerankConfig(freshness=None, diversity=None, exposure=None, cap=None)


def _cands(n: int, scores: Sequence[float] | None = None) -> list[ScoredCandidate]:
    """c0..c{n-1}, ranker scores strictly decreasing (or `scores`): the ranker's order is c0, c1, ..."""
    values = list(scores) if scores is not None else [10.0 - i for i in range(n)]
    return [ScoredCandidate(f"c{i}", "TWO_TOWER", scores={"ranker": values[i]}) for i in range(n)]


def _facts(category: str, posts_30d: int | None = None, trend: float | None = None) -> ItemFacts:
    """An established, well-followed creator: qualifies for nothing but what the test sets."""
    return ItemFacts(category, f"category:{category}", 1000, 400.0, posts_30d, trend)


def _ids(items: Sequence[ScoredCandidate]) -> list[str]:
    return [c.item_id for c in items]


def _page(
    steps: Reranker | RerankConfig, cands: list[ScoredCandidate], facts: list[ItemFacts], page: int
) -> tuple[list[ScoredCandidate], Slate]:
    reranker = steps if isinstance(steps, Reranker) else Reranker.from_config(steps)
    slate = Slate.from_facts(cands, facts)
    return reranker.rerank(slate, page), slate


def test_with_every_step_off_the_page_is_the_rankers_and_stage_scores_are_recorded() -> None:
    out, _ = _page(OFF, _cands(4), [_facts("Music")] * 4, page=3)
    assert _ids(out) == ["c0", "c1", "c2"]
    assert [c.scores["relevance"] for c in out] == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert [c.scores["ranker_position"] for c in out] == [1.0, 2.0, 3.0]
    assert all(c.scores["final"] == c.scores["relevance"] for c in out)


def test_freshness_lifts_a_creator_more_active_than_the_others_over_a_close_call_only() -> None:
    facts = [_facts(f"cat{i}", posts_30d=2, trend=0.5) for i in range(11)]  # relevance steps of 0.1
    facts[2] = _facts("cat2", posts_30d=2 + 8, trend=0.5)  # full boost 0.2: passes c1 (0.1 ahead), not c0
    facts[6] = _facts("cat6", posts_30d=2, trend=0.5 + 2.0)  # trending well above the others: full boost
    facts[8] = _facts("cat8", posts_30d=None, trend=None)  # unknown: no boost, and no effect on the median
    out, _ = _page(Reranker([Freshness(FreshnessParams(weight=0.2))]), _cands(11), facts, page=5)
    assert _ids(out) == ["c0", "c2", "c1", "c3", "c6"]
    assert out[1].scores["freshness"] == pytest.approx(0.2)
    assert out[1].scores["final"] == pytest.approx(0.8 + 0.2)
    assert out[1].reasons == ["boosted: active lately (10 posts in 30 days)"]
    assert out[4].reasons == ["boosted: trending this week"]
    assert "freshness" not in out[0].scores and not out[0].reasons


def test_freshness_is_relative_so_a_uniformly_active_slate_keeps_its_order() -> None:
    facts = [_facts(f"cat{i}", posts_30d=30, trend=3.0) for i in range(5)]
    out, _ = _page(Reranker([Freshness(FreshnessParams(weight=0.2))]), _cands(5), facts, page=5)
    assert _ids(out) == [f"c{i}" for i in range(5)] and not any("freshness" in c.scores for c in out)


def test_mmr_brings_another_category_up_and_says_so() -> None:
    ranker = [1.0, 0.95, 0.9, 0.85, 0.8, 0.0]  # relevance is the same numbers (min 0, max 1)
    facts = [_facts("Music")] * 4 + [_facts("Cooking"), _facts("Art")]
    diverse, _ = _page(Reranker([Diversity(DiversityParams(lam=0.7))]), _cands(6, ranker), facts, page=3)
    # Cooking at 0.8 beats a second Music at 0.95 - 0.3/0.7; Art at 0 does not beat it.
    assert _ids(diverse) == ["c0", "c4", "c1"]
    assert diverse[1].reasons == ["diversity: adds Cooking to the page"]
    assert diverse[0].scores["mmr"] == pytest.approx(0.7)  # the first pick has nothing to be similar to
    assert diverse[1].scores["mmr"] == pytest.approx(0.7 * 0.8)
    assert diverse[2].scores["mmr"] == pytest.approx(0.7 * 0.95 - 0.3) and not diverse[2].reasons
    # lam = 1 is pure relevance: nothing moves.
    plain, _ = _page(Reranker([Diversity(DiversityParams(lam=1.0))]), _cands(6, ranker), facts, page=3)
    assert _ids(plain) == ["c0", "c1", "c2"]


def test_mmr_uses_creator_vectors_when_every_item_has_one() -> None:
    near, far = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    facts = [
        ItemFacts(category="A", vector=near),
        ItemFacts(category="B", vector=near),
        ItemFacts(category="C", vector=far),
        ItemFacts(category="D", vector=far),
    ]
    step = Reranker([Diversity(DiversityParams(lam=0.7))])
    out, _ = _page(step, _cands(4, [1.0, 0.9, 0.8, 0.0]), facts, page=2)
    assert _ids(out) == ["c0", "c2"]  # c1 is a different category but the same direction as c0


def test_cap_holds_on_the_page_and_marks_what_it_held_back() -> None:
    facts = [_facts("Music")] * 5 + [_facts("Art")] * 3
    out, slate = _page(Reranker([GroupCap(CapParams(max_per_group=2))]), _cands(8), facts, page=4)
    assert _ids(out) == ["c0", "c1", "c5", "c6"]
    assert out[2].reasons == ["moved up: at most 2 per category on a page"]
    assert not out[0].reasons
    assert slate.stage["capped"][2] == 1.0 and slate.stage["capped"][3] == 1.0  # c2, c3 held back
    assert np.isnan(slate.stage["capped"][7])  # c7 was below the page anyway: the cap did not move it


def test_cap_gives_way_rather_than_shorten_the_page_and_then_moves_nothing() -> None:
    facts = [_facts("Music")] * 3 + [_facts("Art")] + [_facts("Music")] * 2
    out, _ = _page(Reranker([GroupCap(CapParams(max_per_group=2))]), _cands(6), facts, page=5)
    assert _ids(out) == ["c0", "c1", "c2", "c3", "c4"]
    assert not any(c.reasons for c in out)


def test_posts_are_capped_per_creator() -> None:
    cands = [ScoredCandidate(f"p{i}", "FOLLOWED_FRESH", scores={"ranker": -i}, kind="post") for i in range(4)]
    rows = [{"creator_id": cr, "category": "Music"} for cr in ("a", "a", "a", "b")]
    slate = Slate.from_rows(cands, rows)
    assert slate.group == ["creator:a", "creator:a", "creator:a", "creator:b"]
    out = Reranker([GroupCap(CapParams(max_per_group=2))]).rerank(slate, page=3)
    assert _ids(out) == ["p0", "p1", "p3"]


def test_creators_are_grouped_by_category_and_facts_come_from_rows() -> None:
    cands = [
        ScoredCandidate("a", "TRENDING", scores={"trending_new": 1.0}),
        ScoredCandidate("b", "TWO_TOWER"),
    ]
    row = {
        "category": "Art",
        "n_followers": 7,
        "created_at": 1.0,
        "as_of": 1.0 + 3 * 86_400.0,
        "n_posts_30d": 2,
    }
    slate = Slate.from_rows(cands, [row, {"category": "Art", "n_followers": "many?", "trend": None}])
    assert slate.group == ["category:Art", "category:Art"]
    assert slate.age_days[0] == pytest.approx(3.0) and slate.n_followers[0] == 7.0
    assert np.isnan(slate.n_followers[1]) and np.isnan(slate.trend[1])  # bad or missing: unknown
    assert list(slate.flagged_new) == [True, False]


def _column_reference(rows: Sequence[dict[str, Any] | None], key: str) -> np.ndarray:
    """One numeric row field as a column, field by field (what Slate.from_rows must equal)."""
    values = [(r or {}).get(key) for r in rows]
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([_num(v) for v in values], dtype=np.float64)


@pytest.mark.parametrize(
    "odd",
    [
        {},
        {"n_followers": "many?"},
        {"trend": [1, 2], "n_posts_30d": True},
        {"created_at": "12", "as_of": 5e5, "category": None},
        {"n_followers": 3, "trend": -0.5, "n_posts_30d": 4, "category": "Music"},
    ],
)
def test_slate_facts_kept_per_creator_give_the_slate_built_from_rows(odd: dict[str, Any]) -> None:
    cands = [ScoredCandidate(f"c{i}", "TWO_TOWER") for i in range(4)] + [
        ScoredCandidate("p1", "TWO_TOWER", kind="post")
    ]
    rows: list[dict[str, Any] | None] = [
        {
            "category": "Art",
            "n_followers": 7,
            "created_at": 1.0,
            "as_of": 2e5,
            "n_posts_30d": 2,
            "trend": 0.1,
        },
        None,
        odd,
        {"category": "Music", "n_followers": 12.5, "trend": None},
        {"creator_id": "c9", "category": "Art", "n_followers": 1},
    ]
    built = Slate.from_rows(cands, rows)
    facts = [slate_facts(r) for r in rows]
    kept = Slate.from_rows(cands, rows, facts)
    slates = [built, kept]
    numbers = [slate_numbers(f) for f in facts]
    if all(row is not None for row in numbers):  # kept per creator too: the same slate from them
        slates.append(Slate.from_rows(cands, rows, facts, np.array(numbers)))
    else:  # a malformed value: the batch is read column by column, so no row may stand alone
        assert odd in ({"n_followers": "many?"}, {"trend": [1, 2], "n_posts_30d": True})
    for slate in slates:
        assert slate.category == [str((r or {}).get("category") or "") for r in rows]
        assert slate.group[4] == "creator:c9"
        for attr, key in (("n_followers", "n_followers"), ("posts_30d", "n_posts_30d"), ("trend", "trend")):
            np.testing.assert_array_equal(getattr(slate, attr), _column_reference(rows, key))
        assert slate.group == built.group
        np.testing.assert_array_equal(slate.age_days, built.age_days)
    with pytest.raises(ValueError, match="numbers"):
        Slate.from_rows(cands, rows, facts, np.zeros((2, 5)))


def _exposure_case(small_at: int, small_followers: int = 5) -> tuple[list[ScoredCandidate], list[ItemFacts]]:
    facts = [_facts(f"cat{i % 7}") for i in range(20)]
    facts[small_at] = ItemFacts("Art", "category:Art", n_followers=small_followers, age_days=400.0)
    return _cands(20), facts


def test_exposure_reserves_the_last_slot_for_a_small_creator_with_a_decent_score() -> None:
    cands, facts = _exposure_case(small_at=11)  # relevance (19 - 11) / 19 ≈ 0.42
    step = Exposure(ExposureParams(slot_every=10, max_followers=20, min_relevance=0.4))
    out, slate = _page(Reranker([step]), cands, facts, page=10)
    assert _ids(out) == [f"c{i}" for i in range(9)] + ["c11"]
    assert out[9].scores["exposure"] == 1.0 and out[9].reasons == ["boosted: small creator (5 followers)"]
    assert slate.stage["exposure"][9] == -1.0  # c9 gave its slot up


@pytest.mark.parametrize(
    ("small_at", "followers", "page", "why"),
    [
        (18, 5, 10, "score too low (relevance 1/19)"),
        (11, 500, 10, "not small"),
        (11, 5, 9, "a page of 9 reserves no slot of 10"),
        (4, 5, 10, "already on the page"),
    ],
)
def test_exposure_leaves_the_page_alone_when(small_at: int, followers: int, page: int, why: str) -> None:
    cands, facts = _exposure_case(small_at, followers)
    step = Exposure(ExposureParams(slot_every=10, max_followers=20, min_relevance=0.4))
    out, _ = _page(Reranker([step]), cands, facts, page=page)
    assert _ids(out) == [f"c{i}" for i in range(page)], why
    assert not any("exposure" in c.scores for c in out)


def test_new_creators_qualify_by_age_or_by_retrievals_trending_flag() -> None:
    cands = [ScoredCandidate(f"c{i}", "TWO_TOWER") for i in range(4)]
    facts = [
        ItemFacts(age_days=3.0, n_followers=10_000),
        ItemFacts(flagged_new=True),
        ItemFacts(age_days=300.0, n_followers=10_000),
        ItemFacts(),  # nothing known: does not qualify
    ]
    step = Exposure(ExposureParams(new_days=30))
    assert list(step.qualifies(Slate.from_facts(cands, facts))) == [True, True, False, False]


def test_exposure_does_not_break_the_cap() -> None:
    cands, facts = _exposure_case(small_at=11)
    facts = [_facts("Art")] * 9 + [_facts("Music")] + facts[10:]  # the page already holds 9 Art creators
    config = RerankConfig(
        freshness=None,
        diversity=None,
        cap=CapParams(max_per_group=9),
        exposure=ExposureParams(min_relevance=0.4),
    )
    out, _ = _page(config, cands, facts, page=10)
    assert "c11" not in _ids(out)  # promoting the small Art creator would make 10 Art: no slot for it


def test_default_pipeline_order_and_a_page_that_honours_every_rule() -> None:
    cands = _cands(30)
    small = ItemFacts("Art", "category:Art", n_followers=3, age_days=400.0)
    facts = [_facts("Music")] * 12 + [small] + [_facts("Music")] * 8 + [_facts(c) for c in "ABCDEFGHI"]
    reranker = Reranker.from_config(RerankConfig())
    assert [s.name for s in reranker.steps] == ["freshness", "diversity", "exposure", "cap"]
    out, _ = _page(reranker, cands, facts, page=10)
    group_of = dict(zip(_ids(cands), [f.group for f in facts], strict=True))
    assert max(Counter(group_of[c] for c in _ids(out)).values()) <= 3
    assert out[0].item_id == "c0"  # the ranker's favourite stays first
    # Ten Music creators win MMR at lam 0.93; the small Art creator (relevance 0.59) takes the reserved
    # slot; the cap then keeps 3 Music and fills with the other categories.
    assert _ids(out) == ["c0", "c1", "c2", "c12", "c21", "c22", "c23", "c24", "c25", "c26"]
    assert out[3].reasons == ["boosted: small creator (3 followers)"]
    assert out[4].reasons == ["moved up: at most 3 per category on a page"]


def test_config_from_mapping_overrides_disables_and_rejects_typos() -> None:
    config = RerankConfig.from_mapping(
        {"diversity": {"lam": 0.5}, "exposure": None, "cap": {"max_per_group": 2}}
    )
    assert config.diversity == DiversityParams(lam=0.5) and config.exposure is None
    assert config.cap == CapParams(2) and config.freshness == FreshnessParams()
    bad_configs: list[dict[str, object]] = [
        {"divresity": {}},
        {"diversity": {"lamda": 0.5}},
        {"diversity": {"lam": 2.0}},
        {"cap": {"max_per_group": 1.5}},
        {"cap": 3},
    ]
    for bad in bad_configs:
        with pytest.raises(ValueError):
            RerankConfig.from_mapping(bad)


_GROUPS = st.sampled_from(["Music", "Art", "Gaming", "Podcasts"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    groups=st.lists(_GROUPS, min_size=1, max_size=40),
    followers=st.lists(st.integers(0, 200), min_size=40, max_size=40),
    page=st.integers(1, 25),
    cap=st.integers(1, 4),
)
def test_any_input_gives_a_full_page_that_keeps_the_cap_when_it_can(
    groups: list[str], followers: list[int], page: int, cap: int
) -> None:
    cands = _cands(len(groups))
    facts = [
        ItemFacts(g, f"category:{g}", followers[i], 400.0, posts_30d=i % 9) for i, g in enumerate(groups)
    ]
    out, _ = _page(RerankConfig(cap=CapParams(max_per_group=cap)), cands, facts, page)
    assert len(out) == min(page, len(cands)) and len(set(_ids(out))) == len(out)
    group_of = {c.item_id: f.group for c, f in zip(cands, facts, strict=True)}
    on_page = Counter(group_of[c] for c in _ids(out))
    if any(n > cap for n in on_page.values()):
        # Only when nothing else was left: everything not on the page is of a group already full.
        rest = set(_ids(cands)) - set(_ids(out))
        assert all(on_page[group_of[c]] >= cap for c in rest)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    groups=st.lists(st.sampled_from(["Music", "Art", "Gaming", ""]), min_size=1, max_size=30),
    gaps=st.lists(st.floats(0.001, 1.0), min_size=30, max_size=30),
    lam=st.floats(0.0, 1.0),
    page=st.integers(1, 30),
)
def test_the_fast_category_mmr_picks_what_the_textbook_matrix_mmr_picks(
    groups: list[str], gaps: list[float], lam: float, page: int
) -> None:
    scores = list(np.cumsum(-np.asarray(gaps[: len(groups)])))  # strictly decreasing
    facts = [ItemFacts(g, f"category:{g}") for g in groups]
    # Zero vectors add nothing to "same category" but send the step down the matrix path.
    with_vectors = [ItemFacts(g, f"category:{g}", vector=np.zeros(2, np.float32)) for g in groups]
    step = Reranker([Diversity(DiversityParams(lam=lam))])
    fast, _ = _page(step, _cands(len(groups), scores), facts, page)
    matrix, _ = _page(step, _cands(len(groups), scores), with_vectors, page)
    assert _ids(fast) == _ids(matrix)
    assert [c.scores["mmr"] for c in fast] == pytest.approx([c.scores["mmr"] for c in matrix])
    assert [c.reasons for c in fast] == [c.reasons for c in matrix]
