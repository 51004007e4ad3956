"""Encoded document evidence (kindred.text.fusion.ENCODED_DOC_FEATURES) in the search index: an index
built with it stores each item's title and sentence vectors (no HNSW graph), the learned path's rescoring
batch reads title_dense / sent_max / sent_top2 from them — the same numbers as numpy cosines over the
encoder's vectors and as the trainer's examples — writes and deletes keep them, and an index without
them still serves a fusion that asks (features absent, one warning)."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from search_testkit import build_index, creators, posts, write_tiny_encoder

from kindred.data.schema import Post
from kindred.text.encoder import TextEncoder
from kindred.text.fusion import (
    ENCODED_DOC_FEATURES,
    SENT_MAX,
    SENT_TOP2,
    TITLE_DENSE,
    FitExample,
    FusionModel,
    item_sentences,
)
from retrieval_svc.search.bulk import bulk_index, catalogue_docs
from retrieval_svc.search.documents import post_doc
from retrieval_svc.search.index import SENTENCES, TITLE_VEC, SearchIndex, encode_documents
from retrieval_svc.search.query import HybridSearcher, QuerySide, SearchHit

QUERIES = ("pasta sauce", "jazz piano notes", "watercolor brush", "midnight velvet")
TOL = 1e-4


def _catalogue() -> SimpleNamespace:
    return SimpleNamespace(creators=creators(), posts=posts())


def _creator_texts(c: Any) -> tuple[str, list[str]]:
    """(title, sentences) of a creator from its own fields: its name, then category, tags, description."""
    body = ". ".join(p for p in (c.category, " ".join(c.tags), c.description) if p)
    return c.name, item_sentences(c.name, body)


def _post_texts(p: Any) -> tuple[str, list[str]]:
    """(title, sentences) of a post: its title, then its text's sentences (the title once)."""
    return p.title, item_sentences(p.title, p.text)


def _expected_texts() -> dict[str, tuple[str, list[str]]]:
    """item id → (title, sentences), from the catalogue's own fields."""
    return {
        **{c.creator_id: _creator_texts(c) for c in creators()},
        **{p.post_id: _post_texts(p) for p in posts()},
    }


def _assert_evidence(
    scores: Mapping[str, float],
    encoder: TextEncoder,
    q: np.ndarray,
    title: str,
    sentences: list[str],
    label: str,
) -> np.ndarray:
    """`scores`' title_dense / sent_max / sent_top2 are the numpy cosines of the query `q` to the item's
    title and sentences; returns the sentences' cosines, best first."""
    cos = np.sort(_unit(encoder.encode(sentences)) @ q)[::-1]
    assert scores[TITLE_DENSE] == pytest.approx(float(_unit(encoder.encode([title])[0]) @ q), abs=TOL), label
    assert scores[SENT_MAX] == pytest.approx(cos[0], abs=TOL), label
    assert scores[SENT_TOP2] == pytest.approx(cos[:2].mean(), abs=TOL), label
    return cos


def _encoded_fusion(features: tuple[str, ...] = ENCODED_DOC_FEATURES) -> FusionModel:
    """A small ranker over the retrievers and encoded evidence `features` (synthetic queries: the
    relevant document has the best title and sentence cosines), so a searcher asks the index for them."""
    from trainer.search_tuning import fit_ranked_fusion

    rng = random.Random(0)
    examples = []
    for q in range(80):
        docs = [f"q{q}d{i}" for i in range(20)]
        scores = {
            r: {d: rng.uniform(0.1, 0.6) for d in docs}
            for r in ("bm25", "dense", "dense_tuned", *ENCODED_DOC_FEATURES)
        }
        for r in (TITLE_DENSE, SENT_MAX, SENT_TOP2):
            scores[r][docs[0]] += 0.4
        hits = {
            r: sorted(m.items(), key=lambda kv: -kv[1])[:12]
            for r, m in scores.items()
            if r not in ENCODED_DOC_FEATURES
        }
        examples.append(FitExample(hits, {docs[0]: 1.0}, scores))
    return fit_ranked_fusion(examples, retrievers=("bm25", "dense", "dense_tuned", *features), rounds=20)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> TextEncoder:
    return write_tiny_encoder(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def fusion() -> FusionModel:
    return _encoded_fusion()


def _bulk(root: Path, encoder: TextEncoder) -> SearchIndex:
    docs = catalogue_docs(_catalogue())  # type: ignore[arg-type]
    bulk_index(root, docs, encoder, batch_size=8, progress=False, log=lambda _m: None, encoded_evidence=True)
    return SearchIndex.open(root)


def _unit(x: Any) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _all_candidates(searcher: HybridSearcher, query: str) -> list[SearchHit]:
    """Every candidate of the union (k above the catalogue's size: the fused list is the whole union)."""
    return searcher.search(query, 100).hits


def test_an_index_with_encoded_evidence_serves_the_numpy_cosines_of_every_candidate(
    tmp_path: Path, encoder: TextEncoder, fusion: FusionModel
) -> None:
    root = tmp_path / "search"
    index = _bulk(root, encoder)
    try:
        assert index.encoded_evidence and json.loads((root / "meta.json").read_text())["encoded_evidence"]
        # Title and sentences are only scored exactly over candidates: no HNSW graph for them (the
        # shard's own record of its configuration).
        vectors = json.loads((root / "shard" / "edge_config.json").read_text())["vectors"]
        assert vectors[TITLE_VEC]["hnsw_config"]["m"] == 0 and "multivector_config" not in vectors[TITLE_VEC]
        assert vectors[SENTENCES]["hnsw_config"]["m"] == 0
        assert vectors[SENTENCES]["multivector_config"] == {"comparator": "max_sim"}
        assert all(vectors[v]["distance"] == "Cosine" for v in (TITLE_VEC, SENTENCES))
        assert "hnsw_config" not in vectors["dense"]  # the collection's graph (m 16)

        searcher = HybridSearcher(index, encoder, query_side=QuerySide(encoder, fusion))
        texts = _expected_texts()
        checked = two_sentences = 0
        for query in QUERIES:
            q = _unit(encoder.encode([query])[0])
            hits = _all_candidates(searcher, query)
            assert len(hits) > 5, query
            for hit in hits:
                title, sentences = texts[hit.item_id]
                cos_sent = _assert_evidence(hit.scores, encoder, q, title, sentences, hit.item_id)
                checked += 1
                two_sentences += len(sentences) > 1 and cos_sent[0] - cos_sent[1] > 1e-3
        assert checked > 40 and two_sentences > 10  # top-2 differs from the best for many of them
    finally:
        index.close()


def test_writes_store_the_evidence_and_deletes_remove_it(
    tmp_path: Path, encoder: TextEncoder, fusion: FusionModel
) -> None:
    index = _bulk(tmp_path / "search", encoder)
    try:
        post = Post(
            post_id="p-new",
            creator_id=creators()[2].creator_id,
            title="Pasta night",
            text="Fresh noodles and garlic. Jazz drums all night. Sauce recipe inside.",
            access_level="public",
            published_at=1_770_000_000.0,
            category="Cooking",
            language="en",
        )
        docs = [post_doc(post)]
        with pytest.raises(ValueError, match="encoded evidence"):
            index.upsert(docs, encoder.encode([d.text for d in docs]))  # never half-written
        index.upsert(docs, *encode_documents(docs, encoder.encode, evidence=True))

        searcher = HybridSearcher(index, encoder, query_side=QuerySide(encoder, fusion))
        q = _unit(encoder.encode(["jazz drums"])[0])
        hit = next(h for h in _all_candidates(searcher, "jazz drums") if h.item_id == "p-new")
        title, sentences = _post_texts(post)
        assert len(sentences) == 4
        _assert_evidence(hit.scores, encoder, q, title, sentences, "p-new")

        assert index.delete(["p-new"]) == 1
        stage = searcher._stage_scores(
            searcher._evidence_queries(
                "jazz drums", searcher.index.bm25.query("jazz drums"), [float(x) for x in q]
            ),
            ["p-new", "pc000"],
            dense=list(q),
        )
        assert set(stage) == {TITLE_DENSE, SENT_MAX, SENT_TOP2}
        assert all("p-new" not in scores for scores in stage.values())
        assert all("pc000" in scores for scores in stage.values())  # a stored item still has them
    finally:
        index.close()


def test_a_fusion_reading_only_the_best_sentence_gets_no_top2(tmp_path: Path, encoder: TextEncoder) -> None:
    """SENT_TOP2 needs the candidates' sentence vectors returned (the costly part): only fetched, and
    only served, for a fusion that reads it."""
    index = _bulk(tmp_path / "search", encoder)
    try:
        fusion = _encoded_fusion((TITLE_DENSE, SENT_MAX))
        searcher = HybridSearcher(index, encoder, query_side=QuerySide(encoder, fusion))
        hits = _all_candidates(searcher, "pasta sauce")
        assert hits and all({TITLE_DENSE, SENT_MAX} <= set(h.scores) for h in hits)
        assert not any(SENT_TOP2 in h.scores for h in hits)
    finally:
        index.close()


def test_an_index_without_it_serves_a_fusion_that_asks_with_the_features_absent(
    tmp_path: Path, encoder: TextEncoder, fusion: FusionModel, caplog: pytest.LogCaptureFixture
) -> None:
    index = build_index(tmp_path / "search", encoder)
    try:
        assert not index.encoded_evidence
        with caplog.at_level(logging.WARNING, logger="retrieval_svc.search.query"):
            searcher = HybridSearcher(index, encoder, query_side=QuerySide(encoder, fusion))
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and all(f in warnings[0] for f in ENCODED_DOC_FEATURES), warnings
        assert "--encoded-evidence" in warnings[0]
        hits = searcher.search("pasta sauce", 5).hits
        assert hits and hits[0].payload["category"] == "Cooking"
        assert all(not set(ENCODED_DOC_FEATURES) & set(h.scores) for h in hits)
    finally:
        index.close()


def test_the_trainer_computes_the_numbers_the_engine_serves(
    tmp_path: Path, encoder: TextEncoder, fusion: FusionModel
) -> None:
    """trainer.search_tuning's examples read the encoded evidence from catalogue_retrievers: for every
    candidate of a served query, the same title / sentence numbers as the engine's rescoring."""
    from trainer.search_tuning import catalogue_documents, catalogue_retrievers

    index = _bulk(tmp_path / "search", encoder)
    try:
        searcher = HybridSearcher(index, encoder, query_side=QuerySide(encoder, fusion))
        catalogue = _catalogue()
        retr = catalogue_retrievers(
            catalogue, encoder, encoded_features=ENCODED_DOC_FEATURES, log=lambda _m: None
        )
        keys, _ = catalogue_documents(catalogue)
        row = {k.partition(":")[2]: str(i) for i, k in enumerate(keys)}
        compared = 0
        for query in QUERIES:
            hits = _all_candidates(searcher, query)
            rows = [row[h.item_id] for h in hits]
            exact = retr.doc_evidence(query, rows, encoder.encode([query])[0])
            assert set(exact) == set(ENCODED_DOC_FEATURES)
            for hit, r in zip(hits, rows, strict=True):
                for feature in ENCODED_DOC_FEATURES:
                    assert exact[feature][r] == pytest.approx(hit.scores[feature], abs=TOL), (
                        query,
                        hit.item_id,
                    )
                    compared += 1
        assert compared > 100
        # Without encoded features asked for, the trainer computes none (and encodes no sentences).
        plain = catalogue_retrievers(catalogue, encoder, log=lambda _m: None)
        assert (
            plain.encoded is None and plain.doc_evidence("pasta", ["0"], encoder.encode(["pasta"])[0]) == {}
        )
    finally:
        index.close()


def test_the_services_real_time_upserts_write_the_evidence(
    tmp_path: Path, encoder: TextEncoder, fusion: FusionModel
) -> None:
    """UpsertPosts / UpsertCreators (SearchService) on an index that stores encoded evidence: the new
    items get their title and sentence vectors, readable by the next search."""
    from retrieval_svc.search.service import SearchService

    service = SearchService(_bulk(tmp_path / "search", encoder), encoder)
    try:
        creator = dataclasses.replace(creators()[0], creator_id="c-new", name="Velvet Jazz Trio")
        post = Post(
            post_id="p-live",
            creator_id="c-new",
            title="Jazz night",
            text="Jazz drums all night. Piano notes and garlic. Sauce recipe inside.",
            access_level="public",
            published_at=1_770_000_000.0,
            category="Music",
            language="en",
        )
        assert service.upsert_creators([creator]) == 1
        assert service.upsert_posts([post]) == 1
        searcher = HybridSearcher(service.index, encoder, query_side=QuerySide(encoder, fusion))
        q = _unit(encoder.encode(["jazz piano notes"])[0])
        stage = searcher._stage_scores(
            searcher._evidence_queries(
                "jazz piano notes", searcher.index.bm25.query("jazz piano notes"), [float(x) for x in q]
            ),
            ["p-live", "c-new"],
            dense=list(q),
        )
        for item_id, (title, sentences) in (
            ("p-live", _post_texts(post)),
            ("c-new", _creator_texts(creator)),
        ):
            _assert_evidence({f: stage[f][item_id] for f in stage}, encoder, q, title, sentences, item_id)
    finally:
        service.close()
