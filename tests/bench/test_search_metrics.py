"""bench.search.metrics against hand-computed cases (trec_eval 9 / pytrec_eval semantics), plus the loaders
and the fold plans the SciFact benchmark relies on. No dependency on ../shared/data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.search import metrics as M
from bench.search.scifact import load_qrels

LOG3 = math.log2(3)


def test_single_relevant_document_by_rank() -> None:
    rels = {"d1": 1}
    assert M.ndcg_at_k(["d1", "x", "y"], rels, 10) == pytest.approx(1.0)
    assert M.ndcg_at_k(["x", "d1"], rels, 10) == pytest.approx(1 / LOG3)  # rank 2 discounted (trec_eval 9)
    assert M.ndcg_at_k(["x"] * 10 + ["d1"], rels, 10) == 0.0
    assert M.ndcg_at_k([], rels, 10) == 0.0


def test_two_relevant_documents() -> None:
    rels = {"a": 1, "b": 1}
    dcg = 1 + 1 / math.log2(4)  # ranks 1 and 3
    idcg = 1 + 1 / LOG3
    assert M.ndcg_at_k(["a", "x", "b"], rels, 10) == pytest.approx(dcg / idcg)
    assert M.ndcg_at_k(["a", "x", "b"], rels, 2) == pytest.approx(1 / idcg)


def test_graded_relevance_uses_linear_gain() -> None:
    rels = {"a": 2, "b": 1}
    got = M.ndcg_at_k(["b", "a"], rels, 10)
    linear = (1 + 2 / LOG3) / (2 + 1 / LOG3)
    exponential = (1 + 3 / LOG3) / (3 + 1 / LOG3)
    assert got == pytest.approx(linear)
    assert abs(got - exponential) > 0.05


def test_zero_relevance_judgements_do_not_count() -> None:
    rels = {"a": 1, "z": 0}
    assert M.ndcg_at_k(["z", "a"], rels, 10) == pytest.approx(1 / LOG3)
    assert M.recall_at_k(["z"], rels, 10) == 0.0
    assert M.ndcg_at_k(["a"], {"z": 0}, 10) == 0.0


def test_ties_break_by_document_id_descending() -> None:
    run = {"q": {"a": 1.0, "b": 1.0, "c": 0.5}}
    assert M.ranked(run["q"]) == ["b", "a", "c"]
    assert M.evaluate(run, {"q": {"a": 1}})["ndcg@10"] == pytest.approx(1 / LOG3)
    assert M.evaluate(run, {"q": {"b": 1}})["ndcg@10"] == pytest.approx(1.0)


def test_recall_and_means_over_qrels_queries() -> None:
    run = {"q1": {f"d{i}": 100.0 - i for i in range(150)}}
    qrels = {"q1": {"d5": 1, "d120": 1}, "q2": {"d1": 1}}  # q2 has no results at all: it scores 0
    res = M.evaluate(run, qrels, ndcg_k=(10,), recall_k=(100,))
    assert res["recall@100"] == pytest.approx((0.5 + 0.0) / 2)
    ndcg_q1 = (1 / math.log2(7)) / (1 + 1 / LOG3)
    assert res["ndcg@10"] == pytest.approx(ndcg_q1 / 2)
    per = M.per_query(run, qrels)
    assert per["q2"] == {"ndcg@10": 0.0, "recall@100": 0.0}


def test_trec_run_round_trip(tmp_path: Path) -> None:
    run = {"q1": {"d1": 0.5, "d2": 0.9}, "q2": {"d3": 1.0}}
    path = tmp_path / "run.trec"
    M.write_trec_run(run, path, tag="t")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 d2 1 0.900000 t" and lines[1] == "q1 Q0 d1 2 0.500000 t"
    assert M.read_trec_run(lines) == run


def test_load_qrels_with_header(tmp_path: Path) -> None:
    path = tmp_path / "q.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n1\t10\t1\n1\t11\t2\n2\t10\t0\n")
    assert load_qrels(path) == {"1": {"10": 1, "11": 2}, "2": {"10": 0}}


def test_learning_plan_never_scores_a_query_it_learned_from() -> None:
    pytest.importorskip("numpy")
    from bench.bench_search_scifact import learning_plan

    qids = [str(i) for i in range(10)]
    folds = [qids[0:4], qids[4:7], qids[7:10]]
    plan = learning_plan(folds, qids, qids)
    assert [name for name, _, _ in plan] == ["f1", "f2", "f3"]
    for (_, fit_ids, score_ids), fold in zip(plan, folds, strict=True):
        assert score_ids == fold and sorted(fit_ids + score_ids) == sorted(qids)
    assert learning_plan(None, ["a", "b"], ["c"]) == [("all", ["a", "b"], ["c"])]
    with pytest.raises(AssertionError):
        learning_plan(None, ["a", "b"], ["b"])  # a train/eval split that shares a query is refused


def test_cv_folds_partition_the_queries() -> None:
    # The learned fusion is scored only on queries its model never saw: folds must be disjoint and complete.
    pytest.importorskip("numpy")
    from bench.bench_search_scifact import folds_of

    qids = [str(i) for i in range(103)]
    folds = folds_of(qids, 5, seed=13)
    assert len(folds) == 5
    assert sorted(q for f in folds for q in f) == sorted(qids)
    assert all(not set(a) & set(b) for i, a in enumerate(folds) for b in folds[i + 1 :])
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert folds == folds_of(list(reversed(qids)), 5, seed=13)  # depends on the ids, not their order


def test_sentences_of_splits_titles_and_abstracts() -> None:
    from bench.bench_search_scifact import Corpus, sentences_of

    corpus = Corpus(
        ids=["1", "2"],
        texts=["", ""],
        titles=["A title", ""],
        bodies=["First sentence here. Second one (n = 3) follows! 3 more? done. lower start.", ""],
    )
    texts, offsets = sentences_of(corpus)
    assert texts[: offsets[1]] == [
        "A title",
        "First sentence here.",
        "Second one (n = 3) follows!",
        "3 more? done. lower start.",
    ]
    assert offsets == [0, 4, 5]  # an empty document still gets one (empty) sentence


def test_group_folds_keep_queries_sharing_a_relevant_document_together() -> None:
    from bench.bench_search_scifact import group_folds

    qrels = {
        "a": {"d1": 1},
        "b": {"d1": 1, "d2": 1},  # a-b share d1, b-c share d2: one component {a, b, c}
        "c": {"d2": 1},
        "d": {"d3": 1},
        "e": {"d4": 1, "d3": 0},  # a zero judgement links nothing
        "f": {"d5": 1},
        "g": {"d6": 1},
    }
    folds = group_folds(sorted(qrels), qrels, 3, seed=1)
    assert sorted(q for f in folds for q in f) == sorted(qrels)
    where = {q: i for i, f in enumerate(folds) for q in f}
    assert where["a"] == where["b"] == where["c"]
    assert len({where["d"], where["e"], where["f"], where["g"]}) >= 2  # singletons are spread out
    assert folds == group_folds(sorted(qrels), qrels, 3, seed=1)


def test_agrees_with_pytrec_eval() -> None:
    # The issue's reference numbers come from pytrec_eval: the bench's scorer must be the same function
    # (ties and graded labels included). A dev dependency (pytrec-eval-terrier), so this never skips.
    import random

    import pytrec_eval

    rng = random.Random(5)
    docs = [f"d{i}" for i in range(40)]
    qrels = {f"q{i}": {d: rng.choice([0, 1, 1, 2]) for d in rng.sample(docs, 4)} for i in range(30)}
    run = {q: {d: float(rng.randint(0, 5)) for d in rng.sample(docs, 25)} for q in qrels}  # many ties
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10"})
    ref = ev.evaluate(run)
    ours = M.per_query(run, qrels, ndcg_k=(10,), recall_k=(10,))
    for q, row in ref.items():
        assert ours[q]["ndcg@10"] == pytest.approx(row["ndcg_cut_10"], abs=1e-9)
        assert ours[q]["recall@10"] == pytest.approx(row["recall_10"], abs=1e-9)


# ------------------------------------------------------------------------------ common terms


def test_exact_bm25_common_terms_are_those_above_the_cutoff() -> None:
    from bench.search.common_terms import ExactBm25

    # "cell" in 3 of 4 documents, "t" in 2, "death" in 1.
    index = ExactBm25([{"cell": 1.0, "t": 1.0}, {"cell": 1.0, "t": 1.0}, {"cell": 1.0}, {"death": 1.0}])
    assert index.common(0.5) == {"cell"}
    assert index.common(0.25) == {"cell", "t"}
    assert index.common(None) == frozenset()


def test_exact_bm25_matches_the_reference_scorer_and_rescoring_restores_the_full_order() -> None:
    from bench.search.common_terms import ExactBm25, evaluate_cutoff, top
    from kindred.text.tokenize import Bm25, bm25_scores

    docs = [
        "apoptosis apoptosis apoptosis",  # the rare term alone, often
        "cell apoptosis",  # both terms: the full query's best
        "cell growth",
        "cell death",
        "cell division",
        "stars",
    ]
    model = Bm25.fit(docs)
    index = ExactBm25([model.document_weights(d) for d in docs])
    for query in ("cell apoptosis", "cell death", "stars"):
        assert index.scores(model.query_terms(query)) == pytest.approx(bm25_scores(query, docs, model))
    terms = model.query_terms("cell apoptosis")
    # Preconditions: "cell" (4 of 6 documents) is above a 0.5 cutoff, and without it the cut query
    # ranks another document first, so only re-scoring with every term can put d1 back on top.
    assert top(index.scores(terms), 1) == [1] and top(index.scores(["apoptosis"]), 1) == [0]
    ids = [f"d{i}" for i in range(len(docs))]
    queries, qrels = {"q": terms}, {"q": {"d1": 1}}
    full = evaluate_cutoff(index, queries, qrels, ids, None)
    cut = evaluate_cutoff(index, queries, qrels, ids, 0.5)
    assert full["queries_changed"] == 0 and cut["queries_changed"] == 1
    assert cut["postings_per_query"] == 2 < full["postings_per_query"] == 6
    assert full["ndcg@10"] == 1.0 and cut["ndcg@10"] < 1.0
    assert cut["ndcg@10_rescored_with_every_term"] == 1.0


def test_served_common_terms_rows_are_the_mean_and_range_of_the_passes() -> None:
    from types import SimpleNamespace

    from bench.search.common_terms_served import repeated

    class Searcher:
        """Ranks d1 first on even calls and d2 first on odd ones (an RRF tie broken either way)."""

        calls = 0

        def search(self, _query: str, _k: int) -> SimpleNamespace:
            self.calls += 1
            order = ["d1", "d2"] if self.calls % 2 else ["d2", "d1"]
            return SimpleNamespace(hits=[SimpleNamespace(item_id=i) for i in order])

    row = repeated(Searcher(), {"q": "text"}, {"q": {"d1": 1}}, repeats=2)
    # NDCG@10 of one relevant document at rank 1, then at rank 2 (1 / log2(3)).
    assert row["ndcg@10_range"] == [pytest.approx(0.6309, abs=1e-4), 1.0]
    assert row["ndcg@10"] == pytest.approx((1.0 + 0.6309) / 2, abs=1e-4)
    assert row["recall@100"] == 1.0


def test_scifact_abstracts_are_indexed_as_posts_with_their_title() -> None:
    from types import SimpleNamespace

    from bench.search.common_terms_served import scifact_docs
    from bench.search.scifact import Doc

    data = SimpleNamespace(corpus={"7": Doc("7", "Cell death", "Apoptosis is programmed.")})
    (doc,) = scifact_docs(data)
    assert (doc.item_id, doc.kind, doc.payload["title"]) == ("7", "post", "Cell death")
    assert doc.text == "Cell death. Apoptosis is programmed."
