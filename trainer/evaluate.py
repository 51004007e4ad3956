"""Offline evaluation on the time hold-out: Recall@K and NDCG@K for each way of ranking creators.

Protocol: for every fan who discovered at least one creator in the hold-out window, rank the whole
catalogue minus the creators the fan already knew at the train end, with features as of the train end.
Relevance is binary (discovered or not).

    popularity         the "popular" list as of the train end (what a fan without a model would get)
    two_tower          cosine of user and creator vectors, full catalogue, exact (no ANN error)
    two_tower+ranker   the ranker re-orders the candidates retrieval would give it — the six-source
                       serving pool (trainer.candidates.ServingPool, tables as of the train end) when a
                       pool is given, else two-tower top-n ∪ popular top-n; the rest of the catalogue
                       follows in two-tower order

Memory: only the top max(ks) of each ranking is kept per fan, and two-tower scores are computed for
`chunk_fans` fans at a time, so evaluation holds O(chunk × catalogue + fans × K), never the
(fans × catalogue) score matrix or full-catalogue lists per fan (at 100k creators × 20k fans those took
22 GB). tests/trainer/test_evaluate_memory.py fails if that comes back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from kindred.data.catalogue import Catalogue
from kindred.features import Interactions
from trainer.candidates import ServingPool, candidates_config
from trainer.config import TrainConfig
from trainer.datasets import Snapshot
from trainer.ranker import draw_candidates, featurize

DEFAULT_CHUNK_FANS = 512


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
    """Item indices by descending score (ties by index), excluding `seen` (the whole catalogue: for
    small catalogues and tools; evaluation uses `top_by`)."""
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in order if int(i) not in seen]


def top_by(scores: npt.NDArray[np.floating], seen: set[int], n: int) -> list[int]:
    """The first `n` of `rank_by(scores, seen)`, in O(catalogue) time and O(n + |seen|) extra memory."""
    take = min(len(scores), n + len(seen))
    if take <= 0:
        return []
    top = np.argpartition(-scores, take - 1)[:take] if take < len(scores) else np.arange(len(scores))
    top = top[np.lexsort((top, -scores[top]))]  # descending score, ties by index (as a stable argsort)
    return [int(i) for i in top if int(i) not in seen][:n]


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


def holdout_pool(
    cfg: TrainConfig, events: Interactions, catalogue: Catalogue, test: Snapshot, train_end: float
) -> ServingPool | None:
    """The candidates `evaluate_holdout` ranks for a serving-pool ranker: the serving sources as of the
    train end (events before it only); None for a two-source ranker (`ranker.pool`)."""
    if cfg.ranker.pool != "serving":
        return None
    return ServingPool.as_of(
        events.before(train_end),
        catalogue,
        test.creator_rows,
        as_of=train_end,
        k=cfg.eval.pool_size,
        popular_k=cfg.popular_k,
        cfg=candidates_config(cfg),
    )


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
    pool: ServingPool | None = None,
    chunk_fans: int = DEFAULT_CHUNK_FANS,
) -> dict[str, dict[str, float]]:
    """{"popularity": {...}, "two_tower": {...}, "two_tower+ranker": {...}} plus "holdout" counts."""
    rows = [i for i, y in enumerate(test.labels) if y]
    if not rows:
        raise ValueError("the hold-out window has no discoveries to evaluate against")
    top_k = max(ks)
    pop_order = np.argsort(-test.popularity, kind="stable")
    pop_lists, tt_lists, rk_lists = [], [], []
    labels = [test.labels[i] for i in rows]
    for start in range(0, len(rows), max(1, chunk_fans)):
        chunk = rows[start : start + max(1, chunk_fans)]
        tt_scores = user_vecs[chunk] @ creator_vecs.T  # (chunk, C): the only catalogue-wide block
        for r, i in enumerate(chunk):
            seen = test.seen[i]
            pop_lists.append([int(c) for c in pop_order[: top_k + len(seen)] if int(c) not in seen][:top_k])
            if ranker_score is None:
                tt_lists.append(top_by(tt_scores[r], seen, top_k))
                continue
            cands = draw_candidates(
                test,
                i,
                tt_scores[r],
                pool,
                n_two_tower=n_two_tower,
                n_popular=n_popular,
                two_tower_score_for_popular=two_tower_score_for_popular,
            )
            tt = top_by(tt_scores[r], seen, top_k + len(cands))
            tt_lists.append(tt[:top_k])
            s = ranker_score(featurize(test, i, cands, creator_ids)) if cands else np.zeros(0, np.float32)
            head = [cands[j].creator for j in np.argsort(-s, kind="stable")]
            taken = set(head)
            rk_lists.append((head + [c for c in tt if c not in taken])[:top_k])
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
