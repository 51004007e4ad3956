"""The SciFact bench's document evidence, read from qdrant-edge, equals the trainer's exact version
(trainer.search_tuning.ExactRetrievers.doc_evidence): title BM25 and query-term coverage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kindred.text.fusion import COVERAGE, SENT_MAX, SENT_TOP2, TITLE_BM25, TITLE_DENSE
from kindred.text.tokenize import Bm25
from trainer.search_tuning import ExactRetrievers


def test_engine_document_evidence_matches_the_exact_one(tmp_path: Path) -> None:
    from bench.bench_search_scifact import Corpus, Index

    titles = ["Vitamin D and bone density", "Cell cycle", "", "Protein folding in the cell"]
    bodies = [
        "Vitamin D supplements raise bone density.",
        "Mitosis.",
        "No title here: vitamin",
        "Chaperones.",
    ]
    texts = [f"{t}\n{b}" if t else b for t, b in zip(titles, bodies, strict=True)]
    corpus = Corpus([f"d{i}" for i in range(4)], texts, titles, bodies)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(4, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    title_emb = np.roll(emb, 1, axis=0)
    bm25 = Bm25.fit(texts)
    index = Index(tmp_path / "s", corpus, emb, bm25, None, titles=title_emb, title_bm25=Bm25.fit(titles))
    try:
        q = "vitamin D in the cell"
        got = index.doc_features_of(q, emb[0], [0, 1, 2, 3], bm25)
        exact = ExactRetrievers.build(texts, emb, titles=titles).doc_evidence(q, ["0", "1", "2", "3"])
        assert {str(d): s for d, s in got[TITLE_BM25].items()} == pytest.approx(exact[TITLE_BM25], rel=1e-5)
        assert {str(d): s for d, s in got[COVERAGE].items()} == pytest.approx(exact[COVERAGE], rel=1e-5)
        assert got[TITLE_DENSE][2] == pytest.approx(float(title_emb[2] @ emb[0]), abs=1e-5)
    finally:
        index.close()


def test_engine_sentence_evidence_matches_numpy(tmp_path: Path) -> None:
    """SENT_MAX is the engine's MaxSim of the one-vector query (= the best sentence cosine), SENT_TOP2 the
    mean of the two best cosines read from the multivector the same call returns; one sentence: both equal."""
    from bench.bench_search_scifact import Corpus, Index

    titles = ["Vitamin D and bone density", "Cell cycle", "Protein folding"]
    bodies = ["Vitamin D raises bone density. It also helps.", "Mitosis.", "Chaperones fold. A. B."]
    texts = [f"{t}\n{b}" for t, b in zip(titles, bodies, strict=True)]
    corpus = Corpus([f"d{i}" for i in range(3)], texts, titles, bodies)
    rng = np.random.default_rng(1)

    def unit(n: int) -> np.ndarray:
        v = rng.normal(size=(n, 8)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    emb = unit(3)
    sentences = [unit(3), unit(1), unit(4)]
    bm25 = Bm25.fit(texts)
    index = Index(tmp_path / "s", corpus, emb, bm25, sentences, titles=unit(3), title_bm25=Bm25.fit(titles))
    try:
        q = unit(1)[0]
        got = index.doc_features_of("vitamin", q, [0, 1, 2], bm25)
        for d, sent in enumerate(sentences):
            cos = np.sort(sent.astype(np.float64) @ q)[::-1]
            assert got[SENT_MAX][d] == pytest.approx(float(cos[0]), abs=1e-5)
            assert got[SENT_TOP2][d] == pytest.approx(float(cos[:2].mean()), abs=1e-5)
        assert got[SENT_TOP2][1] == pytest.approx(got[SENT_MAX][1], abs=1e-6)
        assert got[SENT_TOP2][0] < got[SENT_MAX][0]
        assert set(index.doc_features_of("vitamin", q, [2], bm25)[SENT_MAX]) == {2}  # only those asked
    finally:
        index.close()
