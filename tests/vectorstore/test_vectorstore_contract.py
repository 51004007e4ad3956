"""The VectorIndex contract, run against qdrant-edge and qdrant-client local mode alike."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from vs_data import CATEGORIES, IndexFactory, random_catalogue

from kindred.vectorstore import IndexPoint, PayloadFilter, search_ef


def brute_force(
    vectors: np.ndarray, points: list[IndexPoint], query: np.ndarray, k: int, flt: PayloadFilter | None
) -> list[str]:
    """Exact cosine top-k over the points that pass `flt` (reference semantics)."""
    scores = vectors @ (query / np.linalg.norm(query))
    order = np.argsort(-scores, kind="stable")
    keep = [
        points[i].item_id for i in order if flt is None or flt.matches(points[i].item_id, points[i].payload)
    ]
    return keep[:k]


def test_upsert_count_and_fetch_round_trip(make_index: IndexFactory) -> None:
    points, vectors = random_catalogue(50, 8)
    index = make_index(8)
    assert index.count() == 0
    index.upsert(points)
    assert index.count() == 50

    got = index.fetch(["c3", "missing", "c1"], with_vectors=True)
    assert [p.point_id for p in got] == ["c3", "c1"]
    assert got[0].payload == dict(points[3].payload)  # mature comes back as a bool, item_id stripped
    assert isinstance(got[0].payload["mature"], bool)
    assert got[0].vector is not None
    np.testing.assert_allclose(got[0].vector, vectors[3], atol=1e-5)


def test_search_returns_nearest_neighbours_best_first(make_index: IndexFactory) -> None:
    points, vectors = random_catalogue(200, 16, seed=1)
    index = make_index(16)
    index.upsert(points)
    query = vectors[7] + 0.05 * np.random.default_rng(2).normal(size=16).astype(np.float32)

    hits = index.search(query, 10, exact=True)

    assert [h.point_id for h in hits] == brute_force(vectors, points, query, 10, None)
    assert hits[0].point_id == "c7"
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
    assert hits[0].payload["name"] == "Creator 7"


@pytest.mark.parametrize(
    "flt",
    [
        PayloadFilter.build(categories=["music"]),
        PayloadFilter.build(languages=["fr"], exclude_mature=True),
        PayloadFilter.build(categories=["art", "games"], languages=["de", "en"], exclude_mature=True),
        PayloadFilter.build(exclude_ids=[f"c{i}" for i in range(0, 300, 2)]),
    ],
    ids=["category", "language+mature", "both+mature", "exclude-ids"],
)
def test_filtered_search_is_applied_inside_the_engine(make_index: IndexFactory, flt: PayloadFilter) -> None:
    points, vectors = random_catalogue(300, 16, seed=3)
    index = make_index(16)
    index.upsert(points)
    rng = np.random.default_rng(4)
    for _ in range(5):
        query = rng.normal(size=16).astype(np.float32)
        hits = index.search(query, 10, flt, exact=True)
        # A post-filter over the unfiltered top 10 would return fewer than 10: the engine must not.
        assert len(hits) == 10
        assert all(flt.matches(h.point_id, h.payload) for h in hits)
        assert [h.point_id for h in hits] == brute_force(vectors, points, query, 10, flt)


def test_a_filter_matching_nothing_returns_nothing(make_index: IndexFactory) -> None:
    points, _ = random_catalogue(30, 4)
    index = make_index(4)
    index.upsert(points)
    assert index.search(np.ones(4, np.float32), 5, PayloadFilter.build(categories=["no-such"])) == []


def test_fetch_applies_the_filter_and_keeps_the_callers_order(make_index: IndexFactory) -> None:
    points, _ = random_catalogue(60, 4, seed=5)
    index = make_index(4)
    index.upsert(points)
    ids = [f"c{i}" for i in range(59, -1, -3)]
    flt = PayloadFilter.build(categories=CATEGORIES[:2], exclude_mature=True, exclude_ids=["c59"])

    got = [p.point_id for p in index.fetch(ids, flt)]

    expected = [i for i in ids if flt.matches(i, points[int(i[1:])].payload)]
    assert got == expected
    assert 0 < len(got) < len(ids)


def test_upsert_replaces_and_delete_removes(make_index: IndexFactory) -> None:
    points, vectors = random_catalogue(20, 4, seed=6)
    index = make_index(4)
    index.upsert(points)
    index.upsert([IndexPoint("c0", -vectors[0], {"category": "renamed", "mature": False})])
    assert index.count() == 20
    assert index.fetch(["c0"])[0].payload["category"] == "renamed"

    assert index.delete(["c0", "c1", "never-existed"]) == 2
    assert index.count() == 18
    assert index.fetch(["c0", "c1"]) == []
    assert "c1" not in {h.point_id for h in index.search(vectors[1], 5, exact=True)}


def test_wrong_dimension_is_rejected(make_index: IndexFactory) -> None:
    index = make_index(4)
    with pytest.raises(ValueError, match="expects"):
        index.upsert([IndexPoint("x", [1.0, 2.0, 3.0], {})])
    with pytest.raises(ValueError, match="expects"):
        index.search([1.0, 0.0], 3)
    with pytest.raises(ValueError, match="NaN"):
        index.search([np.nan, 0.0, 0.0, 0.0], 3)


@pytest.mark.parametrize(
    ("k", "ef"), [(1, 128), (10, 128), (87, 348), (400, 1600), (1000, 2048), (3000, 3000)]
)
def test_search_ef_grows_with_k_within_bounds(k: int, ef: int) -> None:
    assert search_ef(k) == ef


def test_without_payload_the_same_hits_come_back_with_empty_payloads(make_index: IndexFactory) -> None:
    points, vectors = random_catalogue(120, 8, seed=4)
    index = make_index(8)
    index.upsert(points)
    flt = PayloadFilter.build(languages=["en", "fr"], exclude_ids=["c1", "c2"])
    for q in (3, 40, 77):
        full = index.search(vectors[q], 15, flt, exact=True)
        bare = index.search(vectors[q], 15, flt, exact=True, with_payload=False)
        assert [h.point_id for h in bare] == [h.point_id for h in full]
        # (qdrant-client's local mode scores the same query a few ulps apart from one call to the next)
        np.testing.assert_allclose([h.score for h in bare], [h.score for h in full], rtol=1e-6)
        assert full and all(h.payload for h in full) and all(h.payload == {} for h in bare)

    ids = ["c9", "missing", "c1", "c30", "c5"]
    for f in (None, flt):
        full_points = index.fetch(ids, f)
        bare_points = index.fetch(ids, f, with_payload=False)
        assert [p.point_id for p in bare_points] == [p.point_id for p in full_points]
        assert all(p.payload == {} and p.vector is None for p in bare_points)
