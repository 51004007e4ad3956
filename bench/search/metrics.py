"""Ranked-retrieval metrics with pytrec_eval (trec_eval 9.x) semantics, and TREC run files.

Semantics reproduced from trec_eval's m_ndcg_cut.c / m_recall.c / form_res_rels.c:

- A run is ranked by score, descending; ties are broken by document id in *descending* string order
  (trec_eval's comp_sim_docno), not by the order the run lists them.
- NDCG@k: gain = the qrels relevance value itself (linear, not 2^rel − 1), counted only when > 0;
  discount log2(rank + 1) with ranks from 1; the ideal DCG uses every judged relevant document of the
  query (relevance > 0), sorted by relevance, cut at k. A query with no relevant document scores 0.
- Recall@k: relevant (relevance ≥ 1) documents in the top k / all relevant documents of the query.
- Means are over the queries of the qrels. A query the run has no results for scores 0 (pytrec_eval
  would silently drop it and average over fewer queries; we never want a failing query to vanish).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

Run = Mapping[str, Mapping[str, float]]  # query id → doc id → score
Qrels = Mapping[str, Mapping[str, int]]  # query id → doc id → relevance


def ranked(scores: Mapping[str, float]) -> list[str]:
    """Doc ids in trec_eval order: score descending, ties by doc id descending."""
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (-kv[1], _Desc(kv[0])))]


class _Desc:
    """Sort key wrapper that reverses string order (for the tie-break inside an ascending sort)."""

    __slots__ = ("s",)

    def __init__(self, s: str) -> None:
        self.s = s

    def __lt__(self, other: _Desc) -> bool:
        return self.s > other.s

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.s == other.s

    def __hash__(self) -> int:
        return hash(self.s)


def ndcg_at_k(order: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """NDCG@k of one ranked list (already in rank order) against one query's judgements."""
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(order[:k]) if rels.get(d, 0) > 0)
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(order: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    relevant = {d for d, r in rels.items() if r >= 1}
    if not relevant:
        return 0.0
    return len(relevant.intersection(order[:k])) / len(relevant)


def per_query(
    run: Run, qrels: Qrels, *, ndcg_k: Sequence[int] = (10,), recall_k: Sequence[int] = (100,)
) -> dict[str, dict[str, float]]:
    """query id → {"ndcg@10": x, "recall@100": y, ...} for every query of the qrels."""
    out: dict[str, dict[str, float]] = {}
    for qid, rels in qrels.items():
        order = ranked(run.get(qid, {}))
        row = {f"ndcg@{k}": ndcg_at_k(order, rels, k) for k in ndcg_k}
        row.update({f"recall@{k}": recall_at_k(order, rels, k) for k in recall_k})
        out[qid] = row
    return out


def evaluate(
    run: Run, qrels: Qrels, *, ndcg_k: Sequence[int] = (10,), recall_k: Sequence[int] = (100,)
) -> dict[str, float]:
    """Means over the qrels' queries, e.g. {"ndcg@10": 0.69, "recall@100": 0.92}."""
    rows = per_query(run, qrels, ndcg_k=ndcg_k, recall_k=recall_k)
    if not rows:
        raise ValueError("qrels has no queries")
    keys = next(iter(rows.values())).keys()
    return {key: sum(r[key] for r in rows.values()) / len(rows) for key in keys}


def write_trec_run(run: Run, path: Path, *, tag: str = "kindred", depth: int = 1000) -> None:
    """`qid Q0 docid rank score tag` lines, trec_eval order, at most `depth` per query."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for qid in sorted(run):
            for rank, doc in enumerate(ranked(run[qid])[:depth], start=1):
                fh.write(f"{qid} Q0 {doc} {rank} {run[qid][doc]:.6f} {tag}\n")


def read_trec_run(lines: Iterable[str]) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 5:
            run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
    return run


__all__ = [
    "Qrels",
    "Run",
    "evaluate",
    "ndcg_at_k",
    "per_query",
    "ranked",
    "read_trec_run",
    "recall_at_k",
    "write_trec_run",
]
