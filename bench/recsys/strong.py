"""Strong candidates beyond the usual peers: EASE^R, and a tuned blend of ALS, EASE and friends.

EASE^R (Steck 2019) has a closed form, B = I - P / diag(P) with P = (X^T X + lambda I)^-1, but
with 17,632 items P is a dense 17,632^2 inverse. Here there are only 1,892 users, so everything
goes through the user-side (Woodbury) form instead, exact and over the full catalogue:

    K = (X X^T + lambda I)^-1                (users x users)
    X P = K X,   diag(P)_j = (1 - x_j^T K x_j) / lambda      (x_j = column j of X)
    scores = X B = X - (K X) / diag(P)

One eigendecomposition of X X^T serves every lambda in the grid. `EASE.item_weights` recovers
any columns of B the same way, which is what a retrieval source would ship (top-n per item).

The blend standardises each source's scores per user (z-scores over the catalogue) and adds them
with weights tuned on valid: the tuned ALS, EASE, and a social signal (how many of the user's
friends have the artist in *their train* interactions; nothing held out is ever read).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from bench.recsys.peers import Candidate, Recommender, Tuned, binarize, bm25_user_rows, select
from bench.recsys.protocol import Split


@dataclass(frozen=True)
class StrongGrids:
    # lambda scales with the input: BM25 values are ~4x larger than 0/1 and need a larger lambda.
    ease_lambda: dict[str, tuple[float, ...]] = field(
        default_factory=lambda: {"binary": (30.0, 100.0, 300.0), "bm25": (1000.0, 3000.0, 6000.0, 12000.0)}
    )
    blend_ease: tuple[float, ...] = (0.0, 0.5, 1.0)
    blend_social: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)

    @staticmethod
    def quick() -> StrongGrids:
        return StrongGrids(ease_lambda={"bm25": (3000.0,)}, blend_ease=(0.0, 0.5), blend_social=(0.0, 0.1))


def ease_inputs(train: sp.csr_matrix) -> dict[str, sp.csr_matrix]:
    return {"binary": binarize(train), "bm25": bm25_user_rows(train)}


@dataclass
class EASE:
    """EASE^R scores for the users it was fit on, via the users x users kernel (see module doc)."""

    x: sp.csr_matrix  # (users, items) float64
    k: NDArray[np.float64]  # (users, users) = (X X^T + lambda I)^-1
    diag_p: NDArray[np.float64]  # (items,)
    lam: float

    @staticmethod
    def from_eigh(
        x: sp.csr_matrix, eigvals: NDArray[np.float64], eigvecs: NDArray[np.float64], lam: float
    ) -> EASE:
        k = (eigvecs / (eigvals + lam)) @ eigvecs.T
        kx_t = x.T @ k  # (items, users) = (K X)^T; sparse @ dense stays cheap
        diag_p = (1.0 - np.asarray(x.multiply(kx_t.T).sum(axis=0)).ravel()) / lam
        return EASE(x=x, k=k, diag_p=diag_p, lam=lam)

    @staticmethod
    def fit(x: sp.csr_matrix, lam: float) -> EASE:
        x64 = x.astype(np.float64).tocsr()
        vals, vecs = np.linalg.eigh((x64 @ x64.T).toarray())
        return EASE.from_eigh(x64, vals, vecs, lam)

    def score(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        kx = np.asarray((self.x.T @ self.k[users].T).T)  # (batch, items) = (K X)[users]
        return np.asarray(self.x[users].toarray() - kx / self.diag_p, dtype=np.float32)

    def item_weights(self, items: Sequence[int] | NDArray[np.int64]) -> NDArray[np.float64]:
        """Columns B[:, items] of the item-item weight matrix (items, len(items)), diagonal 0."""
        cols = np.asarray(items, dtype=np.int64)
        x_j = self.x[:, cols].toarray()  # (users, m)
        p_cols = -(self.x.T @ (self.k @ x_j)) / self.lam  # -(1/lambda) X^T K X[:, J]
        p_cols[cols, np.arange(len(cols))] += 1.0 / self.lam  # + (1/lambda) I[:, J]
        b = -p_cols / self.diag_p[cols]
        b[cols, np.arange(len(cols))] = 0.0
        return np.asarray(b)


def ease_candidates(split: Split, grids: StrongGrids) -> Iterator[Candidate]:
    inputs = ease_inputs(split.train)
    for name, lams in grids.ease_lambda.items():
        x = inputs[name].astype(np.float64).tocsr()
        vals, vecs = np.linalg.eigh((x @ x.T).toarray())  # once per input, shared by every lambda
        for lam in lams:
            yield Candidate({"input": name, "lambda": lam}, EASE.from_eigh(x, vals, vecs, lam))


def tune_ease(split: Split, grids: StrongGrids) -> Tuned:
    return select("ease", ease_candidates(split, grids), split)


def social_counts(friends: sp.csr_matrix, train: sp.csr_matrix) -> sp.csr_matrix:
    """(users, items): how many of the user's friends have the item in train."""
    return (friends @ binarize(train)).tocsr()


def _zscore(s: NDArray[np.floating]) -> NDArray[np.float64]:
    s = np.asarray(s, dtype=np.float64)
    return (s - s.mean(axis=1, keepdims=True)) / (s.std(axis=1, keepdims=True) + 1e-9)


@dataclass
class Blend:
    parts: list[tuple[float, Recommender]]

    def score(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        total = np.zeros((len(users), 0))
        for weight, model in self.parts:
            if weight == 0.0:
                continue
            z = weight * _zscore(model.score(users))
            total = z if total.shape[1] == 0 else total + z
        return total.astype(np.float32)


@dataclass
class SparseScores:
    """Precomputed (users, items) sparse scores, e.g. the social counts."""

    m: sp.csr_matrix

    def score(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        return np.asarray(self.m[users].toarray(), dtype=np.float32)


def blend_candidates(
    als: Recommender, ease: Recommender, social: Recommender, grids: StrongGrids
) -> Iterator[Candidate]:
    for w_ease in grids.blend_ease:
        for w_social in grids.blend_social:
            params: dict[str, Any] = {"als": 1.0, "ease": w_ease, "social": w_social}
            yield Candidate(params, Blend([(1.0, als), (w_ease, ease), (w_social, social)]))


def tune_blend(split: Split, friends: sp.csr_matrix, als: Tuned, ease: Tuned, grids: StrongGrids) -> Tuned:
    social = SparseScores(social_counts(friends, split.train))
    return select("als_ease_social", blend_candidates(als.model, ease.model, social, grids), split)
