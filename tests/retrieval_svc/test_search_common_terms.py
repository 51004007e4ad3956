"""Common terms left out of the BM25 candidate lookup (kindred.text.common_terms), on a real shard.

The corpus: "jazz" is in 15 of 20 documents, "piano" in 4. At a 50% cutoff the query "jazz piano"
finds its candidates by "piano" alone, and the engine scores them with both terms, so the list is the
full query's order over the piano documents: not the piano-only order (the corpus is built so the two
differ), and without the jazz-only documents the full query would also have returned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from search_testkit import text_post, write_tiny_encoder

from kindred import telemetry_schema as schema
from kindred.text.common_terms import TermStats, candidate_terms
from kindred.text.encoder import TextEncoder
from kindred.text.fusion import FusionModel, FusionTerm
from kindred.text.tokenize import Bm25, bm25_scores
from retrieval_svc.search.bulk import bulk_index
from retrieval_svc.search.documents import post_doc
from retrieval_svc.search.index import BM25, SearchFilter, SearchIndex
from retrieval_svc.search.params import SearchParams
from retrieval_svc.search.query import HybridSearcher, QuerySide

# piano documents: the full query ("jazz piano") and "piano" alone rank them differently (asserted).
PIANO_TEXTS = [
    "piano",
    "piano jazz jazz jazz",
    "piano piano zebra zebra zebra zebra zebra zebra",
    "piano jazz guitar guitar",
]
JAZZ_ONLY = [
    f"jazz jazz {'drums ' * (i % 3)}{('vinyl', 'album', 'melody', 'sunday')[i % 4]}" for i in range(13)
]
OTHER = ["guitar chords", "bread oven", "ink canvas"]
TEXTS = PIANO_TEXTS + JAZZ_ONLY + OTHER
QUERY = "jazz piano"
BM25_ONLY = SearchParams(weights={"dense": 0.0, "bm25": 1.0, "name": 0.0}, dense_min_score=0.99)


DOCS = [post_doc(text_post(f"p{i}", t)) for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchIndex]:
    root = tmp_path_factory.mktemp("common")
    encoder = write_tiny_encoder(root / "models")
    bulk_index(root / "index", DOCS, encoder, progress=False, log=lambda _: None)
    opened = SearchIndex.open(root / "index")
    try:
        yield opened
    finally:
        opened.close()


def full_scores() -> dict[str, float]:
    model = Bm25.fit(d.text for d in DOCS)
    return {
        d.item_id: s for d, s in zip(DOCS, bm25_scores(QUERY, [d.text for d in DOCS], model), strict=True)
    }


def piano_ids() -> set[str]:
    return {d.item_id for d in DOCS[: len(PIANO_TEXTS)]}


def by_score(scores: dict[str, float], ids: set[str]) -> list[str]:
    return sorted(ids, key=lambda i: -scores[i])


def test_term_stats_count_documents_not_occurrences_and_keep_the_common_ones() -> None:
    stats = TermStats.count([["a", "a", "b"], ["a"], ["c"], ["a", "c"]], floor=0.3)
    assert stats.n_docs == 4
    assert dict(stats.df) == {"a": 3, "c": 2}  # "b": 1 of 4 is not above the floor
    assert stats.common(0.5) == {"a"}
    assert stats.common(0.1) == {"a", "c"}  # below the floor: what it stored
    assert TermStats.from_dict(stats.to_dict()) == stats


def test_a_query_of_common_terms_only_keeps_them_all() -> None:
    assert candidate_terms(["a", "x", "c"], frozenset({"a", "c"})) == ["x"]
    assert candidate_terms(["a", "c"], frozenset({"a", "c"})) == ["a", "c"]


def test_fit_with_stats_fits_what_fit_fits_in_one_pass() -> None:
    texts = [d.text for d in DOCS]
    model, stats = Bm25.fit_with_stats(texts)
    assert model == Bm25.fit(texts)
    assert stats.n_docs == len(TEXTS)
    assert stats.df["jazz"] == len(JAZZ_ONLY) + 2 and stats.df["piano"] == len(PIANO_TEXTS)


def test_a_bulk_load_keeps_the_term_stats_with_the_index(index: SearchIndex) -> None:
    assert index.term_stats is not None
    assert index.term_stats.n_docs == len(TEXTS)
    assert index.term_stats.common(0.5) == {"jazz"}


def test_the_corpus_ranks_the_piano_documents_differently_by_piano_alone() -> None:
    """The precondition that lets the next tests fail: scoring the candidates with the cut query would
    give another order than the full query's."""
    model = Bm25.fit(d.text for d in DOCS)
    alone = dict(
        zip([d.item_id for d in DOCS], bm25_scores("piano", [d.text for d in DOCS], model), strict=True)
    )
    assert by_score(alone, piano_ids()) != by_score(full_scores(), piano_ids())


def rrf_path_ids(index: SearchIndex, params: SearchParams) -> list[str]:
    return [h.item_id for h in HybridSearcher(index, index_encoder(index), params).search(QUERY, 20).hits]


def index_encoder(index: SearchIndex) -> TextEncoder:
    """The tiny encoder the fixture wrote beside the index."""
    return TextEncoder.from_registry(index.root.parent / "models")


def cut_at_half() -> SearchParams:
    return dataclasses.replace(BM25_ONLY, bm25_common_share=0.5)


def test_without_the_share_every_term_finds_candidates(index: SearchIndex) -> None:
    got = rrf_path_ids(index, BM25_ONLY)
    assert set(got) == {i for i, s in full_scores().items() if s > 0}


def test_the_engine_rrf_path_finds_candidates_by_the_rare_terms_and_ranks_them_by_every_term(
    index: SearchIndex,
) -> None:
    params = cut_at_half()
    got = rrf_path_ids(index, params)
    assert got == by_score(full_scores(), piano_ids())


def test_each_hit_keeps_its_full_bm25_score(index: SearchIndex) -> None:
    params = cut_at_half()
    hits = HybridSearcher(index, index_encoder(index), params).search(QUERY, 20).hits
    full = full_scores()
    for h in hits:
        assert h.scores[BM25] == pytest.approx(full[h.item_id], rel=1e-4)


def test_the_learned_path_finds_candidates_the_same_way(index: SearchIndex) -> None:
    encoder = index_encoder(index)
    bm25_alone = FusionModel([FusionTerm(BM25, "minmax", 1.0)])
    params = cut_at_half()
    searcher = HybridSearcher(index, encoder, params, query_side=QuerySide(encoder, bm25_alone))
    hits = searcher.search(QUERY, 20).hits
    # Its BM25 list is the piano documents in the full query's order, with their full scores.
    bm25_hits = [h for h in hits if BM25 in h.scores]
    assert [h.item_id for h in bm25_hits] == by_score(full_scores(), piano_ids())
    for h in bm25_hits:
        assert h.scores[BM25] == pytest.approx(full_scores()[h.item_id], rel=1e-4)


@pytest.mark.parametrize("learned", [False, True])
def test_a_search_with_the_cut_tokenizes_its_query_once(
    index: SearchIndex, monkeypatch: pytest.MonkeyPatch, learned: bool
) -> None:
    """The BM25 query, its common-term cut and (learned path) the coverage evidence share one
    tokenization, and what they build from it is what `Bm25.query` builds from the text."""
    encoder = index_encoder(index)
    side = QuerySide(encoder, FusionModel([FusionTerm(BM25, "minmax", 1.0)])) if learned else None
    searcher = HybridSearcher(index, encoder, cut_at_half(), query_side=side)
    calls: list[str] = []
    real = Bm25.query_terms

    def counted(self: Bm25, text: str) -> list[str]:
        calls.append(text)
        return real(self, text)

    monkeypatch.setattr(Bm25, "query_terms", counted)
    hits = searcher.search(QUERY, 20).hits
    assert calls == [QUERY] and hits
    monkeypatch.undo()
    for text in (QUERY, "Piano, piano & JAZZ!", "the"):
        assert Bm25.query_from_terms(index.bm25.query_terms(text)) == index.bm25.query(text)


def test_the_search_span_counts_the_terms_left_out(index: SearchIndex, spans: InMemorySpanExporter) -> None:
    searcher = HybridSearcher(index, index_encoder(index), cut_at_half())
    spans.clear()
    searcher.search(QUERY, 5)
    searcher.search("piano", 5)
    got = [s for s in spans.get_finished_spans() if s.name == schema.SPAN_SEARCH]
    assert [(s.attributes or {}).get(schema.SEARCH_COMMON_TERMS_DROPPED) for s in got] == [1, None]


def test_an_index_without_term_stats_looks_candidates_up_by_every_term(tmp_path: Path) -> None:
    encoder = write_tiny_encoder(tmp_path / "models")
    index = SearchIndex.create(
        tmp_path / "index", dim=encoder.dim, bm25=Bm25.fit(d.text for d in DOCS), encoder_version="x"
    )
    try:
        index.upsert(DOCS, encoder.encode([d.text for d in DOCS]))
        params = cut_at_half()
        searcher = HybridSearcher(index, encoder, params)
        assert searcher.common_terms == frozenset()
        got = {h.item_id for h in searcher.search(QUERY, 20, SearchFilter()).hits}
        assert got == {i for i, s in full_scores().items() if s > 0}
    finally:
        index.close()


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1, 1.5])
def test_a_share_outside_zero_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="bm25_common_share"):
        SearchParams(bm25_common_share=share)


def test_the_share_can_be_set_in_the_search_config() -> None:
    assert SearchParams.from_mapping({"bm25_common_share": 0.1}, source="f").bm25_common_share == 0.1
