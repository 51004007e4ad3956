"""The common-terms cut as retrieval_svc serves it, on BEIR SciFact (train queries): relevance per share.

    .venv/bin/python -m trainer.text_encoder export --out var/search/models --promote   # once
    .venv/bin/python -m bench.search.common_terms_served [--shares 0.2 0.1 0.05] [--no-write]

bench.search.common_terms measures the cut exactly, in pure Python, on BM25 alone. This runs the
service's own code: SciFact's abstracts bulk-indexed as posts (retrieval_svc.search.bulk, which keeps
the corpus's term stats; MiniLM from the models dir), then retrieval_svc.search.query.HybridSearcher
with its default parameters and each SearchParams.bm25_common_share, over the 809 train queries:

- "hybrid": the served fusion (engine RRF of dense and BM25; posts have no name vector);
- "bm25": BM25 alone (the same searcher, its dense retriever finding nothing).

NDCG@10 and Recall@100 of the top 100, and how many queries the cut changed. Writes
bench/results/search_common_terms_served.json and the "Search — common terms, served (SciFact)"
section of bench/RESULTS.md. The index is kept under var/bench/scifact/served-index and reused (the
bulk load resumes or skips what it finds).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ROOT = Path(__file__).resolve().parents[2]
K = 100
# SearchParams fields per system. BM25 alone: the dense prefetch always runs (it is what lets a query
# without matches come back empty), so a cosine floor of 1 makes it find nothing, as its weight 0
# alone would not (its hits would fill the top 100 at a fused score of 0, in no order).
SYSTEMS: Mapping[str, Mapping[str, Any]] = {
    "hybrid": {},
    "bm25": {"weights": {"dense": 0.0, "name": 0.0}, "dense_min_score": 1.0},
}


def scifact_docs(data: Any) -> list[Any]:
    """Each abstract as a post (title and text as the service indexes a post's)."""
    from kindred.data.schema import Post
    from retrieval_svc.search.documents import post_doc

    return [
        post_doc(
            Post(
                post_id=d.doc_id,
                creator_id="scifact",
                title=d.title,
                text=d.text,
                access_level="public",
                published_at=0.0,
                category="science",
                language="en",
            )
        )
        for d in data.corpus.values()
    ]


def evaluate(
    searcher: Any, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, float]:
    from bench.search.metrics import ndcg_at_k, recall_at_k

    ndcg, recall = [], []
    for qid, rels in qrels.items():
        order = [h.item_id for h in searcher.search(queries[qid], K).hits]
        ndcg.append(ndcg_at_k(order, rels, 10))
        recall.append(recall_at_k(order, rels, K))
    return {"ndcg@10": float(np.mean(ndcg)), "recall@100": float(np.mean(recall))}


def repeated(
    searcher: Any, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], repeats: int
) -> dict[str, Any]:
    """`evaluate` `repeats` times: the mean and the range of the passes. The range checks that search
    is repeatable: before HybridSearcher settled equal fused scores in item-id order, the engine's RRF
    ordered them differently from call to call and the hybrid's NDCG@10 moved by up to 0.006 between
    passes (0.7130–0.7190, 2026-11-28 00:33)."""
    passes = [evaluate(searcher, queries, qrels) for _ in range(repeats)]
    ndcg = [p["ndcg@10"] for p in passes]
    return {
        "ndcg@10": round(float(np.mean(ndcg)), 4),
        "ndcg@10_range": [round(min(ndcg), 4), round(max(ndcg), 4)],
        "recall@100": round(float(np.mean([p["recall@100"] for p in passes])), 4),
    }


def queries_changed(searcher: Any, queries: Mapping[str, str], qrels: Mapping[str, Any]) -> int:
    """Queries whose BM25 candidates the searcher looks up without some of their terms."""
    return sum(
        1 for qid in qrels if searcher.common_terms & set(searcher.index.bm25.query_terms(queries[qid]))
    )


def render(r: Mapping[str, Any]) -> str:
    lines = [
        "## Search — common terms, served (SciFact)",
        "",
        f"`{r['command']}` — {r['date']}, {r['machine'].get('cpu_model', '')} × "
        f"{r['machine'].get('nproc', '')}.",
        "",
        f"BEIR SciFact, {r['queries']} train queries, {r['documents']:,} abstracts bulk-indexed as posts by "
        f"retrieval_svc (text encoder {r['encoder']}); retrieval_svc.search.query.HybridSearcher, top "
        f'{K}. "hybrid": the served engine RRF of dense and BM25; "bm25": BM25 alone. A share: '
        "SearchParams.bm25_common_share, BM25 candidates looked up without the terms in more than that "
        "share of the documents, then scored with every term.",
        "",
        f"Each row: the mean of {r['repeats']} passes over the queries, and the range of NDCG@10 "
        + (
            "(every pass gave the same: search is repeatable)."
            if all(lo == hi for lo, hi in (row["ndcg@10_range"] for row in r["rows"]))
            else "(passes differed: search did not repeat itself)."
        ),
        "",
        "| system | share | queries changed | NDCG@10 | NDCG@10 range | Recall@100 |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        share = "none" if row["share"] is None else f"{row['share']:.0%}"
        low, high = row["ndcg@10_range"]
        lines.append(
            f"| {row['system']} | {share} | {row['queries_changed']} | {row['ndcg@10']:.4f} "
            f"| {low:.4f}–{high:.4f} | {row['recall@100']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shares", type=float, nargs="+", default=[0.2, 0.1, 0.05])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "var" / "search" / "models")
    parser.add_argument("--index", type=Path, default=ROOT / "var" / "bench" / "scifact" / "served-index")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the queries per row")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if any(not 0.0 < s < 1.0 for s in args.shares):
        parser.error("--shares are shares of the documents, between 0 and 1")

    from bench.results_md import run_header, write_results
    from bench.search.scifact import load, load_qrels
    from kindred.text.encoder import TextEncoder
    from retrieval_svc.search.bulk import bulk_index
    from retrieval_svc.search.index import SearchIndex
    from retrieval_svc.search.params import SearchParams
    from retrieval_svc.search.query import HybridSearcher

    data = load()
    qrels = load_qrels(data.train_qrels_path)
    encoder = TextEncoder.from_registry(args.models_dir)
    docs = scifact_docs(data)
    report = bulk_index(args.index, docs, encoder)
    print(f"index: {report}", flush=True)
    index = SearchIndex.open(args.index)
    rows = []
    try:
        for system, fields in SYSTEMS.items():
            for share in [None, *args.shares]:
                params = SearchParams.from_mapping({**fields, "bm25_common_share": share}, source="bench")
                searcher = HybridSearcher(index, encoder, params)
                row = {
                    "system": system,
                    "share": share,
                    "queries_changed": queries_changed(searcher, data.queries, qrels),
                    **repeated(searcher, data.queries, qrels, args.repeats),
                }
                print(row, flush=True)
                rows.append(row)
    finally:
        index.close()
    result = {
        **run_header("search_common_terms_served", "python -m bench.search.common_terms_served", argv),
        "queries": len(qrels),
        "documents": len(docs),
        "encoder": encoder.version,
        "k": K,
        "repeats": args.repeats,
        "rows": rows,
    }
    print(render(result))
    if not args.no_write:
        out = write_results("search_common_terms_served", result, render(result))
        print(f"wrote {out} and the RESULTS.md section")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
