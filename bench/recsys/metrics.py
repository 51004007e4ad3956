"""Top-k ranking metrics over full-catalogue scores, with RecBole's definitions.

Per user, with `hits` the 0/1 relevance of the k ranked items and `R` the number of
held-out relevant items:

- Recall@k    = hits / R
- Precision@k = hits / k
- Hit@k       = 1 if any hit
- MRR@k       = 1 / rank of the first hit (0 if none in the top k)
- NDCG@k      = sum(hit_i / log2(i + 1)) / sum_{i <= min(R, k)} 1 / log2(i + 1)   (ranks from 1)

Everything is vectorised over a batch of users; nothing here densifies the catalogue.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

METRICS: tuple[str, ...] = ("recall", "ndcg", "mrr", "hit", "precision")


def metric_keys(k: int) -> tuple[str, ...]:
    """The result keys for cut-off k, e.g. ("recall@10", "ndcg@10", ...)."""
    return tuple(f"{name}@{k}" for name in METRICS)


def top_k(scores: NDArray[np.floating], k: int) -> NDArray[np.int64]:
    """Column indices of the k highest scores in each row, best first.

    Masked items must already carry -inf. argpartition keeps this O(items) per row; only the
    k survivors are sorted.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (users, items), got shape {scores.shape}")
    n_items = scores.shape[1]
    if not 0 < k <= n_items:
        raise ValueError(f"k must be in 1..{n_items}, got {k}")
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def hits_at_k(ranked: NDArray[np.integer], relevant: sp.csr_matrix) -> NDArray[np.bool_]:
    """(users, k) booleans: is ranked[u, i] among row u's stored items in `relevant`?

    Membership is tested on flattened (row, item) keys, so the relevant matrix is never densified.
    """
    n_rows, _ = ranked.shape
    if relevant.shape[0] != n_rows:
        raise ValueError(f"ranked has {n_rows} rows but relevant has {relevant.shape[0]}")
    n_items = np.int64(relevant.shape[1])
    rel = relevant.tocoo()
    rel_keys = rel.row.astype(np.int64) * n_items + rel.col.astype(np.int64)
    ranked_keys = np.arange(n_rows, dtype=np.int64)[:, None] * n_items + ranked.astype(np.int64)
    return np.isin(ranked_keys, rel_keys)


def ranking_metrics(
    hits: NDArray[np.bool_], n_relevant: NDArray[np.integer]
) -> dict[str, NDArray[np.float64]]:
    """Per-user metric arrays at k = hits.shape[1], keyed like "ndcg@10"."""
    n_users, k = hits.shape
    n_relevant = np.asarray(n_relevant, dtype=np.int64)
    if n_relevant.shape != (n_users,):
        raise ValueError(f"n_relevant must have shape ({n_users},), got {n_relevant.shape}")
    if np.any(n_relevant < 1):
        # A user with nothing held out has no defined recall/NDCG; the protocol skips them upstream.
        raise ValueError("every evaluated user needs at least one relevant item")
    h = hits.astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
    n_hits = h.sum(axis=1)
    first_hit = hits.argmax(axis=1)
    return {
        f"recall@{k}": n_hits / n_relevant,
        f"ndcg@{k}": (h @ discounts) / ideal,
        f"mrr@{k}": np.where(n_hits > 0, 1.0 / (first_hit + 1.0), 0.0),
        f"hit@{k}": (n_hits > 0).astype(np.float64),
        f"precision@{k}": n_hits / k,
    }
