"""The service with a learned-to-rank fusion (kindred.text.fusion kind "lambdarank", ONNX beside
fusion.json): loaded from a promoted query-encoder directory, union rescoring in the engine, name
matching kept, and the files' integrity checked."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from search_testkit import build_index, creators, write_tiny_encoder

from kindred.config import Settings
from kindred.text.fusion import COVERAGE, DOC_FEATURES, DOC_LEN, TITLE_BM25, FitExample, FusionModel
from retrieval_svc.search.index import SearchFilter, search_index_root
from retrieval_svc.search.params import SearchParams
from retrieval_svc.search.query import HybridSearcher, QuerySide


def _ranker_fusion(doc_features: bool = False) -> FusionModel:
    """A small ranker taught that agreeing retrievers mean relevance (synthetic queries); with
    `doc_features`, also that covering the query's terms and a matching title do."""
    from trainer.search_tuning import fit_ranked_fusion

    rng = random.Random(0)
    examples = []
    for q in range(120):
        docs = [f"q{q}d{i}" for i in range(25)]
        scores = {
            "bm25": {d: rng.uniform(0, 8) for d in docs},
            "dense": {d: rng.uniform(0.2, 0.7) for d in docs},
            "dense_tuned": {d: rng.uniform(0.2, 0.7) for d in docs},
        }
        scores["bm25"][docs[0]] += 6
        scores["dense"][docs[0]] += 0.25
        scores["dense_tuned"][docs[0]] += 0.3
        if doc_features:
            scores[TITLE_BM25] = {d: rng.uniform(0, 2) for d in docs}
            scores[COVERAGE] = {d: rng.uniform(0, 0.6) for d in docs}
            scores[DOC_LEN] = {d: rng.uniform(2, 5) for d in docs}
            scores[TITLE_BM25][docs[0]] += 2
            scores[COVERAGE][docs[0]] += 0.4
        hits = {
            r: sorted(m.items(), key=lambda kv: -kv[1])[:15]
            for r, m in scores.items()
            if r not in DOC_FEATURES
        }
        examples.append(FitExample(hits, {docs[0]: 1.0}, scores))
    retrievers = ("bm25", "dense", "dense_tuned", *(DOC_FEATURES if doc_features else ()))
    return fit_ranked_fusion(examples, retrievers=retrievers, rounds=40)


def _setup(tmp_path: Path, fusion: FusionModel | None = None) -> Settings:
    settings = Settings(data_dir=tmp_path)
    doc = write_tiny_encoder(settings.resolved_models_dir)
    write_tiny_encoder(
        settings.resolved_models_dir,
        "tuned-ltr",
        name="text_query_encoder",
        extra_manifest={"document_encoder": {"sha256": doc.manifest["sha256"]}},
        extra_files=(fusion or _ranker_fusion()).files("fusion.json"),
    )
    build_index(search_index_root(settings), doc).close()
    return settings


def test_a_lambdarank_fusion_serves_with_union_rescoring_and_names(tmp_path: Path) -> None:
    from retrieval_svc.server import open_search

    settings = _setup(tmp_path)
    svc = open_search(settings)
    assert svc is not None and svc.searcher.query_side is not None
    try:
        fusion = svc.searcher.fusion
        assert fusion is not None and fusion.kind == "lambdarank" and fusion.rescore
        assert "name" in fusion.retrievers  # the service's name term, added on top of the ranker
        out = svc.search("pasta sauce", 5, SearchFilter())
        assert out.hits and out.hits[0].payload["category"] == "Cooking"
        assert all("dense_tuned" in h.scores for h in out.hits)
        typo = svc.search("midnigt velvett", 3, SearchFilter()).hits
        assert typo[0].item_id == creators()[0].creator_id and "name" in typo[0].scores
        assert svc.search("qqqxv wwwkz", 10, SearchFilter()).hits == []

        # Union rescoring: with lists only 2 deep, "pasta jazz" unites Cooking and Music candidates that
        # each retriever listed only in part; rescored, every hit carries every retriever's real score.
        index, encoder, side = svc.searcher.index, svc.searcher.encoder, svc.searcher.query_side
        shallow = HybridSearcher(
            index, encoder, SearchParams(depth=2), query_side=QuerySide(side.encoder, fusion)
        )
        for query in ("pasta sauce", "jazz piano", "pasta jazz"):
            for hit in shallow.search(query, 2).hits:
                assert {"bm25", "dense", "dense_tuned"} <= set(hit.scores), (query, hit.item_id, hit.scores)
    finally:
        svc.close()


def test_a_tampered_ranker_is_refused_at_start(tmp_path: Path) -> None:
    from kindred.errors import ModelMismatch
    from retrieval_svc.server import open_search

    settings = _setup(tmp_path)
    onnx = settings.resolved_models_dir / "text_query_encoder" / "tuned-ltr" / "fusion.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-8])
    with pytest.raises(ModelMismatch):
        open_search(settings)


def test_a_ranker_reading_document_evidence_gets_it_from_the_index(tmp_path: Path) -> None:
    """Title BM25 and term coverage come from the index's own vectors in the rescoring batch, the
    length from the payload: every hit carries them, and a query's words in a title count."""
    from retrieval_svc.server import open_search

    settings = _setup(tmp_path, _ranker_fusion(doc_features=True))
    svc = open_search(settings)
    assert svc is not None and svc.searcher.fusion is not None
    try:
        assert set(DOC_FEATURES) <= set(svc.searcher.fusion.retrievers)
        assert svc.searcher.index.doc_evidence
        out = svc.search("pasta sauce", 5, SearchFilter())
        assert out.hits and out.hits[0].payload["category"] == "Cooking"
        for hit in out.hits:
            assert DOC_LEN in hit.scores and hit.scores[DOC_LEN] > 0
            assert 0.0 < hit.scores.get(COVERAGE, 1.0) <= 1.0 + 1e-6
        assert any(TITLE_BM25 in h.scores for h in out.hits)
    finally:
        svc.close()
