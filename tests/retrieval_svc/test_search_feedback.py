"""Pseudo-relevance feedback (kindred.text.fusion.PRF_DENSE): the first pass's best documents by RRF of
the BM25 and base-dense lists, their unit mean vector, and each candidate's cosine to it — as the search
service serves it (one vector fetch, one more query in the rescoring batch), as the trainer computes it
for its examples, and only for a fusion that reads it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from search_testkit import build_index, creators, posts, write_tiny_encoder

from kindred.text.encoder import TextEncoder
from kindred.text.fusion import (
    DEFAULT_RRF_K,
    PRF_DENSE,
    FitExample,
    FusionModel,
    feedback_docs,
    feedback_vector,
)
from retrieval_svc.search.index import DENSE, SearchIndex
from retrieval_svc.search.query import HybridSearcher, QuerySide

QUERIES = ("pasta sauce", "jazz piano notes", "watercolor brush", "midnight velvet")
TOL = 1e-4


def test_feedback_documents_are_the_best_by_rrf_of_bm25_and_base_dense() -> None:
    hits = {
        "bm25": [("a", 9.0), ("b", 5.0), ("c", 1.0)],
        "dense": [("b", 0.9), ("d", 0.8), ("a", 0.7)],
        "dense_tuned": [("z", 0.99)],  # not a first-pass list: never fed back
    }
    # a: 1/61 + 1/63, b: 1/62 + 1/61, d: 1/62, c: 1/63
    assert feedback_docs(hits) == ["b", "a", "d"]
    assert feedback_docs(hits, n=5) == ["b", "a", "d", "c"]
    assert feedback_docs({"dense": [("x", 0.5), ("x", 0.4), ("y", 0.3)]}) == ["x", "y"]  # best rank kept
    # A list's equal scores rank by id, in whatever order the engine returned them.
    tied = {"bm25": [("m", 2.0), ("k", 2.0), ("j", 1.0)], "dense": [("j", 0.9), ("k", 0.5)]}
    assert feedback_docs(tied) == feedback_docs({**tied, "bm25": [("k", 2.0), ("m", 2.0), ("j", 1.0)]})
    assert feedback_docs(tied) == ["k", "j", "m"]  # k: 1/61 + 1/62, j: 1/63 + 1/61, m: 1/62
    # Equal fused scores settle by id, whatever the lists' order.
    assert feedback_docs({"bm25": [("q", 1.0), ("p", 0.5)], "dense": [("p", 1.0), ("q", 0.5)]}, n=1) == ["p"]
    assert feedback_docs({}) == [] and feedback_docs(hits, n=0) == []
    fused_b = 1 / (DEFAULT_RRF_K + 2) + 1 / (DEFAULT_RRF_K + 1)
    fused_a = 1 / (DEFAULT_RRF_K + 1) + 1 / (DEFAULT_RRF_K + 3)
    assert fused_b > fused_a  # the order above is RRF's, not a list's


def test_the_feedback_vector_is_the_unit_mean() -> None:
    vec = feedback_vector([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert vec is not None and vec == pytest.approx(np.array([1.0, 1.0]) / np.sqrt(2))
    assert feedback_vector([]) is None
    assert feedback_vector([[1.0, 0.0], [-1.0, 0.0]]) is None  # nothing left to point at


def _feedback_fusion() -> FusionModel:
    """A small ranker over the retrievers and PRF_DENSE (synthetic queries: the relevant document has the
    best feedback cosine), so a searcher asks for it."""
    from trainer.search_tuning import fit_ranked_fusion

    rng = random.Random(0)
    examples = []
    for q in range(80):
        docs = [f"q{q}d{i}" for i in range(20)]
        scores = {
            r: {d: rng.uniform(0.1, 0.6) for d in docs} for r in ("bm25", "dense", "dense_tuned", PRF_DENSE)
        }
        scores[PRF_DENSE][docs[0]] += 0.4
        hits = {r: sorted(m.items(), key=lambda kv: -kv[1])[:12] for r, m in scores.items() if r != PRF_DENSE}
        examples.append(FitExample(hits, {docs[0]: 1.0}, scores))
    return fit_ranked_fusion(examples, retrievers=("bm25", "dense", "dense_tuned", PRF_DENSE), rounds=20)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> TextEncoder:
    return write_tiny_encoder(tmp_path_factory.mktemp("models"))


@pytest.fixture()
def index(tmp_path: Path, encoder: TextEncoder) -> Iterator[SearchIndex]:
    idx = build_index(tmp_path / "search", encoder)
    yield idx
    idx.close()


def test_the_index_returns_stored_vectors_by_item_id(index: SearchIndex, encoder: TextEncoder) -> None:
    from retrieval_svc.search.bulk import catalogue_docs

    docs = {d.item_id: d for d in catalogue_docs(SimpleNamespace(creators=creators(), posts=posts()))}  # type: ignore[arg-type]
    post_id = posts()[0].post_id
    stored = index.vectors_of([post_id, "no-such-item", post_id], DENSE)
    assert len(stored) == 1  # absent ids skipped, duplicates once
    expected = encoder.encode([docs[post_id].text])[0]
    expected = expected / np.linalg.norm(expected)  # cosine vectors are stored unit
    assert np.asarray(stored[0]) == pytest.approx(expected, abs=1e-5)
    assert index.vectors_of([], DENSE) == []


def test_the_service_serves_the_trainers_feedback_cosines(index: SearchIndex, encoder: TextEncoder) -> None:
    """For every candidate of a served query, the engine's PRF_DENSE is the trainer's exact computation
    (first pass from exact BM25 / dense lists over the same documents), and it is not the query cosine."""
    from trainer.search_tuning import BM25, DENSE_BASE, as_hits, catalogue_documents, catalogue_retrievers

    searcher = HybridSearcher(index, encoder, query_side=QuerySide(encoder, _feedback_fusion()))
    catalogue = SimpleNamespace(creators=creators(), posts=posts())
    retr = catalogue_retrievers(catalogue, encoder, log=lambda _m: None)
    keys, _ = catalogue_documents(catalogue)
    row = {k.partition(":")[2]: str(i) for i, k in enumerate(keys)}
    ids = [str(i) for i in range(len(keys))]
    compared = differs = 0
    for query in QUERIES:
        q = encoder.encode([query])[0]
        hits = searcher.search(query, 100).hits  # k above the catalogue: the whole union
        assert len(hits) > 5, query
        first = {
            BM25: as_hits(retr.bm25_hits(query, 100), ids),
            DENSE_BASE: as_hits(retr.dense_hits(q, 100), ids),
        }
        rows = [row[h.item_id] for h in hits]
        exact = retr.feedback_evidence(first, rows)[PRF_DENSE]
        for hit, r in zip(hits, rows, strict=True):
            assert hit.scores[PRF_DENSE] == pytest.approx(exact[r], abs=TOL), (query, hit.item_id)
            compared += 1
            differs += abs(hit.scores[PRF_DENSE] - hit.scores.get("dense", -1.0)) > 1e-2
    assert compared > 40 and differs > compared // 2


def test_a_fusion_that_does_not_read_it_gets_no_feedback(index: SearchIndex, encoder: TextEncoder) -> None:
    from trainer.search_tuning import fit_ranked_fusion

    rng = random.Random(1)
    examples = []
    for q in range(40):
        docs = [f"q{q}d{i}" for i in range(10)]
        scores = {r: {d: rng.random() for d in docs} for r in ("bm25", "dense", "dense_tuned")}
        hits = {r: sorted(m.items(), key=lambda kv: -kv[1]) for r, m in scores.items()}
        examples.append(FitExample(hits, {docs[0]: 1.0}, scores))
    fusion = fit_ranked_fusion(examples, retrievers=("bm25", "dense", "dense_tuned"), rounds=10)
    searcher = HybridSearcher(index, encoder, query_side=QuerySide(encoder, fusion))
    hits = searcher.search("pasta sauce", 10).hits
    assert hits and not any(PRF_DENSE in h.scores for h in hits)


def test_no_first_pass_means_no_feedback_query(index: SearchIndex, encoder: TextEncoder) -> None:
    searcher = HybridSearcher(index, encoder, query_side=QuerySide(encoder, _feedback_fusion()))
    assert searcher._feedback_query({}) == {}
    assert set(searcher._feedback_query({"bm25": index.fetch([posts()[0].post_id])})) == {PRF_DENSE}
