"""Items of equal fused score come back in one order, whatever order the engine's RRF gives them.

The corpus makes an exact tie: for the query "pasta", one post is the dense retriever's first hit and
matches no query term; the other is BM25's first hit and too far from the query for the dense floor.
With equal weights both fuse to 1 / (rrf_k + 1). The ids are given both ways round, so a searcher that
kept the engine's order would put the higher id first in one of the two.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from search_testkit import text_post, write_tiny_encoder

from kindred.text.tokenize import Bm25
from retrieval_svc.search.documents import post_doc
from retrieval_svc.search.index import BM25, DENSE, Hit, SearchIndex
from retrieval_svc.search.params import SearchParams
from retrieval_svc.search.query import TIE_MARGIN, HybridSearcher, settle_ties, tie_runs_past

ON_TOPIC = "sauce garlic oven"  # Cooking words: dense finds it; no "pasta" for BM25
ON_WORD = "pasta " + "zebra " * 12  # "pasta" for BM25; mostly off-topic for dense
EQUAL = SearchParams(weights={"dense": 1.0, "bm25": 1.0, "name": 0.0})


@pytest.mark.parametrize(("on_topic_id", "on_word_id"), [("a", "b"), ("b", "a")])
def test_equal_fused_scores_come_back_in_item_id_order(
    tmp_path: Path, on_topic_id: str, on_word_id: str
) -> None:
    encoder = write_tiny_encoder(tmp_path / "models")
    docs = [
        post_doc(text_post(on_topic_id, ON_TOPIC, "Cooking")),
        post_doc(text_post(on_word_id, ON_WORD, "Cooking")),
    ]
    index = SearchIndex.create(
        tmp_path / "index", dim=encoder.dim, bm25=Bm25.fit(d.text for d in docs), encoder_version="x"
    )
    try:
        index.upsert(docs, encoder.encode([d.text for d in docs]))
        hits = HybridSearcher(index, encoder, EQUAL).search("pasta", 10).hits
        # Preconditions: each post found by one retriever only, so the two fused scores are equal.
        by_id = {h.item_id: h for h in hits}
        assert set(by_id) == {"a", "b"}
        assert DENSE in by_id[on_topic_id].scores and BM25 not in by_id[on_topic_id].scores
        assert BM25 in by_id[on_word_id].scores and DENSE not in by_id[on_word_id].scores
        assert hits[0].scores["fused"] == hits[1].scores["fused"]
        assert [h.item_id for h in hits] == ["a", "b"]
    finally:
        index.close()


def test_settle_ties_orders_equal_scores_by_id_and_keeps_k() -> None:
    hits = [Hit("c", 0.5, {}), Hit("b", 0.9, {}), Hit("a", 0.5, {}), Hit("d", 0.1, {})]
    assert [h.item_id for h in settle_ties(hits, 3)] == ["b", "a", "c"]


def test_tie_runs_past_only_a_full_list_ending_on_the_kth_score() -> None:
    def hits(*scores: float) -> list[Hit]:
        return [Hit(str(i), s, {}) for i, s in enumerate(scores)]

    assert tie_runs_past(hits(0.9, 0.5, 0.5, 0.5), k=2, limit=4)
    assert not tie_runs_past(hits(0.9, 0.5, 0.5, 0.4), k=2, limit=4)  # the tie ends inside the list
    assert not tie_runs_past(hits(0.9, 0.5, 0.5), k=2, limit=4)  # the engine had no more to give
    assert not tie_runs_past(hits(0.9), k=2, limit=1)


class _TiedEngine:
    """A real index whose fused query answers as an engine would with `n` items tied at one score: the
    first `limit` of them in an arbitrary (here: descending id) order."""

    def __init__(self, index: SearchIndex, n: int) -> None:
        self._index = index
        self.tied = [f"t{i:03d}" for i in range(n)]
        self.limits: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._index, name)

    def query(self, request: object) -> list[Hit]:
        limit = request.limit  # type: ignore[attr-defined]
        self.limits.append(limit)
        return [Hit(i, 0.5, {"kind": "post"}) for i in sorted(self.tied, reverse=True)[:limit]]


def test_a_tie_longer_than_the_margin_still_gives_the_lowest_ids(tmp_path: Path) -> None:
    encoder = write_tiny_encoder(tmp_path / "models")
    docs = [post_doc(text_post("p", ON_WORD, "Cooking"))]
    index = SearchIndex.create(
        tmp_path / "index", dim=encoder.dim, bm25=Bm25.fit(d.text for d in docs), encoder_version="x"
    )
    try:
        index.upsert(docs, encoder.encode([d.text for d in docs]))
        engine = _TiedEngine(index, n=45)  # more than k + TIE_MARGIN, fewer than the prefetches hold
        hits = HybridSearcher(engine, encoder, EQUAL).search("pasta", 5).hits  # type: ignore[arg-type]
        assert [h.item_id for h in hits] == ["t000", "t001", "t002", "t003", "t004"]
        assert engine.limits[0] == 5 + TIE_MARGIN and engine.limits[-1] > 45
    finally:
        index.close()
