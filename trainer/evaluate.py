"""Offline evaluation on the time hold-out: Recall@K and NDCG@K for each way of ranking creators.

Protocol: for every fan who discovered at least one creator in the hold-out window, rank the whole
catalogue minus the creators the fan already knew at the train end, with features as of the train end.
Relevance is binary (discovered or not).

    popularity         the "popular" list as of the train end (what a fan without a model would get)
    two_tower          cosine of user and creator vectors, full catalogue, exact (no ANN error)
    two_tower+ranker   the ranker re-orders the candidates retrieval would give it (two-tower top-n ∪
                       popular top-n); the rest of the catalogue follows in two-tower order
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from trainer.datasets import Snapshot
from trainer.ranker import featurize, retrieve


def recall_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    if not relevant:
        return 0.0
    return len(set(ranked[:k]) & relevant) / len(relevant)


def ndcg_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(r + 2) for r, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(r + 2) for r in range(min(len(relevant), k)))
    return dcg / ideal


def rank_by(scores: npt.NDArray[np.floating], seen: set[int]) -> list[int]:
    """Item indices by descending score (ties by index), excluding `seen`."""
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in order if int(i) not in seen]


def summarize(
    lists: Sequence[Sequence[int]], labels: Sequence[set[int]], ks: Sequence[int]
) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(
            np.mean([recall_at_k(r, y, k) for r, y in zip(lists, labels, strict=True)])
        )
        out[f"ndcg@{k}"] = float(np.mean([ndcg_at_k(r, y, k) for r, y in zip(lists, labels, strict=True)]))
    return out


def evaluate_holdout(
    test: Snapshot,
    user_vecs: npt.NDArray[np.float32],
    creator_vecs: npt.NDArray[np.float32],
    creator_ids: Sequence[str],
    *,
    ks: Sequence[int],
    n_two_tower: int,
    n_popular: int,
    ranker_score: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]] | None,
    two_tower_score_for_popular: bool = False,
) -> dict[str, dict[str, float]]:
    """{"popularity": {...}, "two_tower": {...}, "two_tower+ranker": {...}} plus "holdout" counts."""
    rows = [i for i, y in enumerate(test.labels) if y]
    if not rows:
        raise ValueError("the hold-out window has no discoveries to evaluate against")
    tt_scores = user_vecs @ creator_vecs.T  # (U, C)
    pop_lists, tt_lists, rk_lists = [], [], []
    labels = [test.labels[i] for i in rows]
    for i in rows:
        seen = test.seen[i]
        pop_lists.append(rank_by(test.popularity, seen))
        tt = rank_by(tt_scores[i], seen)
        tt_lists.append(tt)
        if ranker_score is not None:
            cands = retrieve(
                tt_scores[i],
                test.popularity,
                seen,
                n_two_tower=n_two_tower,
                n_popular=n_popular,
                two_tower_score_for_popular=two_tower_score_for_popular,
            )
            s = ranker_score(featurize(test, i, cands, creator_ids))
            head = [cands[j].creator for j in np.argsort(-s, kind="stable")]
            taken = set(head)
            rk_lists.append(head + [c for c in tt if c not in taken])
    result = {
        "popularity": summarize(pop_lists, labels, ks),
        "two_tower": summarize(tt_lists, labels, ks),
    }
    if ranker_score is not None:
        result["two_tower+ranker"] = summarize(rk_lists, labels, ks)
    result["holdout"] = {
        "fans": float(len(rows)),
        "discoveries": float(sum(len(y) for y in labels)),
        "creators": float(len(creator_ids)),
    }
    return result


def format_table(metrics: Mapping[str, Mapping[str, float]], ks: Sequence[int]) -> str:
    cols = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]
    models = [m for m in metrics if m != "holdout"]
    width = max(len(m) for m in models) + 2
    lines = ["model".ljust(width) + "".join(c.rjust(11) for c in cols)]
    lines.append("-" * len(lines[0]))
    for m in models:
        lines.append(m.ljust(width) + "".join(f"{metrics[m].get(c, float('nan')):11.4f}" for c in cols))
    h = metrics.get("holdout")
    if h:
        lines.append(
            f"(hold-out: {int(h['fans'])} fans, {int(h['discoveries'])} discoveries, "
            f"{int(h['creators'])} creators)"
        )
    return "\n".join(lines)
