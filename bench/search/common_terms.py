"""What dropping common terms from the BM25 candidate query costs on BEIR SciFact (train queries).

    .venv/bin/python -m bench.search.common_terms [--cutoffs 0.2 0.1 0.05] [--no-write]

On the search latency bench's catalogue with real words, a few terms sit in a large share of the
documents ("cell" in 49%), and queries holding them read hundreds of thousands of postings
(bench.latency.search_corpus). Lucene's "common terms" idea: find candidates with the rarer terms only,
then score them with every term. This measures it on SciFact, exactly (pure Python over the whole
corpus, the service's tokenizer and BM25: title + abstract, k1 0.9, b 0.4, Qdrant's IDF), per cutoff:

- the query with every term whose document frequency exceeds `cutoff × N` dropped (unless no term
  would remain), ranked as it is: NDCG@10, Recall@100;
- its top 100 re-scored with the full query (what the service's nested prefetch gives): NDCG@10;
- the postings a query reads, on average.

Writes bench/results/search_common_terms.json and the "Search — common terms in the BM25 candidate
query (SciFact)" section of bench/RESULTS.md. The service has served the cut since
(SearchParams.bm25_common_share, kindred.text.common_terms): bench.search.common_terms_served measures
it there, and its BM25 rows equal these.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

DEPTH = 100


class ExactBm25:
    """Every document's BM25 score for a set of query terms, from an in-memory inverted index."""

    def __init__(self, weights: Sequence[Mapping[str, float]]) -> None:
        self.n_docs = len(weights)
        self.df: Counter[str] = Counter(t for w in weights for t in w)
        self.postings: dict[str, list[tuple[int, float]]] = {}
        for j, w in enumerate(weights):
            for t, x in w.items():
                self.postings.setdefault(t, []).append((j, x))

    def scores(self, terms: Sequence[str]) -> NDArray[np.float64]:
        from kindred.text.tokenize import idf

        out = np.zeros(self.n_docs)
        for t in dict.fromkeys(terms):
            w = idf(self.n_docs, self.df.get(t, 0))
            for j, x in self.postings.get(t, ()):
                out[j] += w * x
        return out

    def common(self, cutoff: float | None) -> frozenset[str]:
        """The terms in more than `cutoff` of the documents (the service's rule, on exact counts)."""
        from kindred.text.common_terms import TermStats

        if cutoff is None:
            return frozenset()
        return TermStats(n_docs=self.n_docs, df=self.df, floor=0.0).common(cutoff)

    def reads(self, terms: Sequence[str]) -> int:
        return sum(self.df.get(t, 0) for t in dict.fromkeys(terms))


def top(scores: NDArray[np.float64], k: int) -> list[int]:
    """The k best documents, best first; ties by index (a stable order)."""
    return [int(j) for j in np.argsort(-scores, kind="stable")[:k]]


def evaluate_cutoff(
    index: ExactBm25,
    queries: Mapping[str, list[str]],
    qrels: Mapping[str, Mapping[str, int]],
    doc_ids: Sequence[str],
    cutoff: float | None,
) -> dict[str, float]:
    from bench.search.metrics import ndcg_at_k, recall_at_k
    from kindred.text.common_terms import candidate_terms

    common = index.common(cutoff)
    ndcg, recall, ndcg_rescored, reads, changed = [], [], [], [], 0
    for qid, rels in qrels.items():
        terms = queries[qid]
        kept = candidate_terms(terms, common)
        changed += len(kept) != len(terms)
        reads.append(index.reads(kept))
        candidates = top(index.scores(kept), DEPTH)
        full = index.scores(terms)
        rescored = sorted(candidates, key=lambda j: -full[j])
        ndcg.append(ndcg_at_k([doc_ids[j] for j in candidates], rels, 10))
        recall.append(recall_at_k([doc_ids[j] for j in candidates], rels, DEPTH))
        ndcg_rescored.append(ndcg_at_k([doc_ids[j] for j in rescored], rels, 10))
    return {
        "queries_changed": changed,
        "ndcg@10": round(float(np.mean(ndcg)), 4),
        "recall@100": round(float(np.mean(recall)), 4),
        "ndcg@10_rescored_with_every_term": round(float(np.mean(ndcg_rescored)), 4),
        "postings_per_query": round(float(np.mean(reads)), 1),
    }


def render(r: Mapping[str, Any]) -> str:
    lines = [
        "## Search — common terms in the BM25 candidate query (SciFact)",
        "",
        f"`{r['command']}` — {r['date']}, {r['machine'].get('cpu_model', '')} × "
        f"{r['machine'].get('nproc', '')}.",
        "",
        f"BEIR SciFact, {r['queries']} train queries, {r['documents']:,} documents; exact BM25 with the "
        "service's tokenizer (title + abstract, k1 0.9, b 0.4, Qdrant's IDF). A cutoff drops from the query "
        "every term in more than that share of the documents (unless none would remain); its top "
        f"{DEPTH} are also re-scored with every term.",
        "",
        "| cutoff | terms above it | queries changed | NDCG@10 | Recall@100 | NDCG@10, top 100 re-scored "
        "| postings per query |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        cut = "none" if row["cutoff"] is None else f"{row['cutoff']:.0%}"
        lines.append(
            f"| {cut} | {row['terms_above']} | {row['queries_changed']} | {row['ndcg@10']:.4f} "
            f"| {row['recall@100']:.4f} | **{row['ndcg@10_rescored_with_every_term']:.4f}** "
            f"| {row['postings_per_query']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cutoffs", type=float, nargs="+", default=[0.2, 0.1, 0.05])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if any(not 0.0 < c < 1.0 for c in args.cutoffs):
        parser.error("--cutoffs are shares of the documents, between 0 and 1")

    from bench.results_md import run_header, write_results
    from bench.search.scifact import load, load_qrels
    from kindred.text.tokenize import Bm25

    data = load()
    qrels = load_qrels(data.train_qrels_path)
    doc_ids = list(data.corpus)
    texts = [f"{data.corpus[i].title}. {data.corpus[i].text}" for i in doc_ids]
    model = Bm25.fit(texts)
    index = ExactBm25([model.document_weights(t) for t in texts])
    queries = {qid: model.query_terms(data.queries[qid]) for qid in qrels}
    rows = []
    for cutoff in [None, *args.cutoffs]:
        row = {
            "cutoff": cutoff,
            "terms_above": len(index.common(cutoff)),
            **evaluate_cutoff(index, queries, qrels, doc_ids, cutoff),
        }
        print(row, flush=True)
        rows.append(row)
    result = {
        **run_header("search_common_terms", "python -m bench.search.common_terms", argv),
        "queries": len(qrels),
        "documents": index.n_docs,
        "depth": DEPTH,
        "rows": rows,
    }
    print(render(result))
    if not args.no_write:
        out = write_results("search_common_terms", result, render(result))
        print(f"wrote {out} and the RESULTS.md section")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
