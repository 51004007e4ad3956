"""Fits the "mf" source's creator factors (kindred.mf) with implicit's ALS on who follows whom.

    model = fit_mf(following_pairs(events.before(t)), creator_ids, cfg.mf, seed=cfg.seed)

Point in time: the only input is the follow/membership state as of `t`, so a model fitted at a training
cut knows nothing of the discoveries after it that the ranker learns to predict. Fans are rows only
while fitting; serving folds each fan in from its follows (kindred.mf), and so does the trainer when it
draws candidate lists, so the ranker trains on the same kind of scores it is served. Loss: implicit's
weighted least squares over the whole matrix (every unfollowed creator a negative with confidence 1,
every follow a positive with confidence α · BM25), not sampled negatives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from kindred.mf import MfModel, MfParams


def follow_matrix(
    following: Mapping[str, Iterable[str]], creator_ids: Sequence[str], max_follows_per_fan: int
) -> sp.csr_matrix:
    """Binary (fans × creators) in sorted-fan order; creators outside `creator_ids` are dropped, and a
    fan's follows beyond `max_follows_per_fan` (by creator id) too, as kindred.mf's fold-in drops them."""
    column = {c: i for i, c in enumerate(creator_ids)}
    rows: list[int] = []
    cols: list[int] = []
    for r, fan in enumerate(sorted(following)):
        mine = sorted(c for c in set(following[fan]) if c in column)[:max_follows_per_fan]
        rows += [r] * len(mine)
        cols += [column[c] for c in mine]
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(len(following), len(creator_ids)), dtype=np.float32)


def fit_mf(
    following: Mapping[str, Iterable[str]],
    creator_ids: Sequence[str],
    params: MfParams,
    *,
    seed: int,
    threads: int = 1,
    version: str = "",
) -> MfModel:
    """Creator factors from the follow state `following` (fan → creators); see the module docstring."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import bm25_weight

    x = follow_matrix(following, creator_ids, params.max_follows_per_fan)
    n_fans = max(x.shape[0], 1)
    df = np.asarray((x > 0).sum(axis=0)).ravel()
    idf = (np.log(float(n_fans)) - np.log1p(df)).astype(np.float32)
    lengths = np.asarray(x.sum(axis=1)).ravel()
    avg_length = float(lengths.mean()) if len(lengths) else 1.0
    factors = np.zeros((len(creator_ids), params.factors), dtype=np.float32)
    if x.nnz:
        weighted = bm25_weight(x, K1=params.bm25_k1, B=params.bm25_b).tocsr().astype(np.float32)
        # implicit's BLAS calls spin up every core's thread pool otherwise (its own warning says so).
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=params.factors,
                regularization=params.regularization,
                alpha=params.alpha,
                iterations=params.iterations,
                random_state=seed,
                num_threads=threads,
            )
            model.fit(weighted, show_progress=False)
        factors = np.asarray(model.item_factors, dtype=np.float32)
    return MfModel(
        creator_ids=tuple(creator_ids),
        item_factors=factors,
        idf=idf,
        avg_length=avg_length,
        params=params,
        version=version,
    )


__all__ = ["fit_mf", "follow_matrix"]
