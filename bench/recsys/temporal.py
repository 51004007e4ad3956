"""ml-latest-small with a time-respecting split: the second, temporal check of the recommenders.

- Every rating is an implicit positive (whatever its stars: a rating means the user watched it);
  the matrix value is the rating, relevance at evaluation is binary, as in the Last.fm protocol.
- Per user, over that user's own time range [first, last] rating: the last 20% of the range is
  test, the 10% before it is valid (the end of the train period, for tuning), the rest is train.
  A user whose ratings all share one timestamp has no range: everything stays in train and the
  user is not evaluated. Ratings exactly on a cut belong to the earlier part.
- Evaluation is the Last.fm harness unchanged (bench/recsys/protocol.py `evaluate`): full ranking,
  valid masks train, test masks train+valid, models fit on train only.

`latest_slice` is the temporal counterpart of the random hold-back Kindred's ranker learns from: the
latest ratings of each user's train period become its labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from bench.recsys.kindred_pipeline import LabelSplit, split_leading
from bench.recsys.protocol import Split, repo_root

DATASET_DIRNAME = "ml-latest-small"
TEST_SHARE = 0.2
VALID_SHARE = 0.1


def default_data_dir() -> Path:
    return repo_root().parent / "shared" / "data" / DATASET_DIRNAME


@dataclass(frozen=True)
class Ratings:
    users: NDArray[np.int64]  # dense indices
    items: NDArray[np.int64]
    ratings: NDArray[np.float32]
    times: NDArray[np.int64]  # unix seconds
    n_users: int
    n_items: int


def load_ratings(data_dir: Path) -> Ratings:
    table = np.loadtxt(data_dir / "ratings.csv", delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    _, users = np.unique(table[:, 0].astype(np.int64), return_inverse=True)
    _, items = np.unique(table[:, 1].astype(np.int64), return_inverse=True)
    return Ratings(
        users=users.astype(np.int64),
        items=items.astype(np.int64),
        ratings=table[:, 2].astype(np.float32),
        times=table[:, 3].astype(np.int64),
        n_users=int(users.max()) + 1,
        n_items=int(items.max()) + 1,
    )


def time_parts(
    r: Ratings, test_share: float = TEST_SHARE, valid_share: float = VALID_SHARE
) -> NDArray[np.int8]:
    """0 train / 1 valid / 2 test for every rating, by its position in its user's time range."""
    first = np.full(r.n_users, np.iinfo(np.int64).max)
    last = np.full(r.n_users, np.iinfo(np.int64).min)
    np.minimum.at(first, r.users, r.times)
    np.maximum.at(last, r.users, r.times)
    span = (last - first).astype(np.float64)[r.users]
    offset = (r.times - first[r.users]).astype(np.float64)
    position = np.divide(offset, span, out=np.zeros_like(offset), where=span > 0)
    test_cut, valid_cut = 1.0 - test_share, 1.0 - test_share - valid_share
    return np.where(position > test_cut, 2, np.where(position > valid_cut, 1, 0)).astype(np.int8)


def split_by_time(r: Ratings, seed: int) -> tuple[Split, sp.csr_matrix]:
    """The temporal split (the seed only labels it: the split itself is deterministic) and the
    train ratings' timestamps as a matrix aligned with `split.train`."""
    part = time_parts(r)
    shape = (r.n_users, r.n_items)

    def matrix(values: NDArray[np.generic], which: int) -> sp.csr_matrix:
        sel = part == which
        m = sp.csr_matrix((values[sel], (r.users[sel], r.items[sel])), shape=shape)
        m.sort_indices()
        return m

    split = Split(matrix(r.ratings, 0), matrix(r.ratings, 1), matrix(r.ratings, 2), seed)
    return split, matrix(r.times.astype(np.float64), 0)


def latest_slice(times: sp.csr_matrix) -> LabelSplit:
    """A LabelSplit that holds back each user's latest train ratings (by time; same-second ties
    broken by the seed). Users with fewer than 3 train ratings keep them all, as in `hold_back`."""

    def split(train: sp.csr_matrix, fraction: float, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        if train.shape != times.shape or not np.array_equal(train.indptr, times.indptr):
            raise ValueError("the timestamps matrix is not aligned with this train matrix")
        coo, t = train.tocoo(), times.tocoo()
        rng = np.random.default_rng(seed + 20_011)
        # Latest first within each user: sort by (user, -time, random tie-break).
        return split_leading(train, np.lexsort((rng.random(len(coo.row)), -t.data, coo.row)), fraction)

    return split
