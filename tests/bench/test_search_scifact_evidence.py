"""The SciFact bench's document evidence, read from qdrant-edge, equals the trainer's exact version
(trainer.search_tuning.ExactRetrievers.doc_evidence): title BM25 and query-term coverage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kindred.text.fusion import COVERAGE, TITLE_BM25, TITLE_DENSE
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
