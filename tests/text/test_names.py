"""kindred.text.names: trigram construction, typo tolerance, and the same ranking through qdrant-edge."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kindred.text.names import name_vector, name_words, rank_names, similarity, trigrams

CREATORS = [
    "Taylor Swift",
    "Tyler Swift",
    "Taylor Smith",
    "Sarah Taylor",
    "Beyoncé Knowles",
    "Billie Eilish",
    "Ed Sheeran",
    "Edward Shearing",
    "Dua Lipa",
    "Lipa Dua Band",
    "Ariana Grande",
    "Grand Ariana Hotel",
    "Björk",
    "Bjork Fan Club",
    "The Weeknd",
    "Weekend Warriors",
    "Marques Brownlee",
    "Mark Brown",
    "Doja Cat",
    "Cat Power",
    "Post Malone",
    "Posty Malon",
    "MrBeast",
    "Mr Bean",
    "Kurzgesagt",
    "Veritasium",
    "Vsauce",
    "Linus Tech Tips",
    "Lindsey Stirling",
    "Lin-Manuel Miranda",
]


def test_trigrams_follow_pg_trgm_padding() -> None:
    assert trigrams("cat") == ["  c", " ca", "cat", "at "]
    assert trigrams("a") == ["  a", " a "]
    assert trigrams("") == [] and trigrams("  --  ") == []
    assert name_words("Lin-Manuel  MIRANDA") == ["lin", "manuel", "miranda"]
    assert name_words("Beyoncé") == ["beyonce"]


def test_similarity_is_a_cosine_of_trigram_sets() -> None:
    # taylor: 7 trigrams, taylr: 6, 4 shared; swift: 6, identical.
    assert similarity("taylr swift", "Taylor Swift") == pytest.approx(10 / math.sqrt(13 * 12))
    assert similarity("Swift Taylor", "Taylor Swift") == pytest.approx(1.0)  # word order is free
    assert similarity("BEYONCE", "Beyoncé") == pytest.approx(1.0)  # case and accents folded
    assert similarity("", "Taylor Swift") == 0.0
    assert similarity("Ed Sheeran", "Cat Power") < 0.1


@pytest.mark.parametrize(
    ("query", "want"),
    [
        ("taylr swift", "Taylor Swift"),  # deletion
        ("taylor swfit", "Taylor Swift"),  # transposition
        ("beyonse", "Beyoncé Knowles"),  # substitution, partial name, accent
        ("billie eillish", "Billie Eilish"),  # insertion
        ("ed sheran", "Ed Sheeran"),
        ("weeknd", "The Weeknd"),
        ("marqes brownlee", "Marques Brownlee"),
        ("kurzgesat", "Kurzgesagt"),
        ("bjork", "Björk"),
        ("mr beast", "MrBeast"),
    ],
)
def test_typos_rank_the_intended_creator_first(query: str, want: str) -> None:
    top = rank_names(query, CREATORS, k=3)
    assert top, query
    assert CREATORS[top[0][0]] == want, [(CREATORS[i], round(s, 3)) for i, s in top]


def test_rank_names_threshold_and_k() -> None:
    assert rank_names("zzzzqqq", CREATORS) == []
    assert rank_names("", CREATORS) == []
    assert len(rank_names("taylor", CREATORS, k=2, min_similarity=0.0)) == 2
    scores = [s for _, s in rank_names("taylor", CREATORS, k=10, min_similarity=0.0)]
    assert scores == sorted(scores, reverse=True)


def test_vector_dot_equals_similarity() -> None:
    for a, b in [("taylr swift", "Taylor Swift"), ("dua lipa", "Lipa Dua Band"), ("vsauce", "Veritasium")]:
        assert name_vector(a).dot(name_vector(b)) == pytest.approx(similarity(a, b), abs=1e-9)
    v = name_vector("Taylor Swift")
    assert sum(x * x for x in v.values) == pytest.approx(1.0)
    assert len(name_vector("")) == 0


def test_qdrant_edge_sparse_index_retrieves_through_typos(tmp_path: Path) -> None:
    qe = pytest.importorskip("qdrant_edge")
    config = qe.EdgeConfig(vectors={}, sparse_vectors={"name": qe.EdgeSparseVectorParams()})
    shard = qe.EdgeShard.create(str(tmp_path / "names"), config)
    try:
        points = []
        for i, name in enumerate(CREATORS):
            v = name_vector(name)
            points.append(qe.Point(i, {"name": qe.SparseVector(list(v.indices), list(v.values))}, {}))
        shard.update(qe.UpdateOperation.upsert_points(points))
        for query, want in [
            ("taylr swift", "Taylor Swift"),
            ("lindsay stirling", "Lindsey Stirling"),
            ("post malonee", "Post Malone"),
        ]:
            q = name_vector(query)
            hits = shard.query(
                qe.QueryRequest(
                    limit=3,
                    query=qe.Query.Nearest(qe.SparseVector(list(q.indices), list(q.values)), using="name"),
                )
            )
            assert CREATORS[int(hits[0].id)] == want
            assert hits[0].score == pytest.approx(similarity(query, want), rel=1e-5)
    finally:
        shard.close()
