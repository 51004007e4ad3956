"""The MovieLens temporal split and the latest-ratings label slice, on hand-made timelines."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from bench.recsys.peers import binarize
from bench.recsys.temporal import Ratings, latest_slice, split_by_time, time_parts


def ratings(rows: list[tuple[int, int, int]]) -> Ratings:
    """(user, item, time) triples; ratings are item + 1 so values can be traced."""
    users, items, times = (np.array(col, dtype=np.int64) for col in zip(*rows, strict=True))
    return Ratings(
        users=users,
        items=items,
        ratings=(items + 1).astype(np.float32),
        times=times,
        n_users=int(users.max()) + 1,
        n_items=int(items.max()) + 1,
    )


def test_time_parts_cut_each_users_own_time_range() -> None:
    # User 0 spans 0..100: <=70 train, (70, 80] valid, >80 test. User 1 spans 1000..1010 (its own
    # range, not the global one). User 2 rated everything in the same second: all train.
    user0 = [(0, 0, 0), (0, 1, 70), (0, 2, 75), (0, 3, 80), (0, 4, 81), (0, 5, 100)]
    user1 = [(1, 0, 1000), (1, 1, 1007), (1, 2, 1009), (1, 3, 1010)]
    user2 = [(2, 0, 50), (2, 1, 50)]
    parts = time_parts(ratings([*user0, *user1, *user2])).tolist()
    assert parts[:6] == [0, 0, 1, 1, 2, 2]
    assert parts[6:10] == [0, 0, 2, 2]
    assert parts[10:] == [0, 0]


def test_split_by_time_is_complete_disjoint_and_never_trains_on_the_future() -> None:
    rng = np.random.default_rng(0)
    rows = [(u, int(i), int(rng.integers(0, 10_000))) for u in range(30) for i in rng.choice(50, 20, False)]
    r = ratings(rows)
    split, times = split_by_time(r, seed=4)
    parts = [binarize(m) for m in (split.train, split.valid, split.test)]
    assert sum(p.nnz for p in parts) == len(rows)
    assert parts[0].multiply(parts[2]).nnz == 0 and parts[1].multiply(parts[2]).nnz == 0
    t = {(u, i): tm for u, i, tm in rows}
    for u in range(30):
        train_t = [t[(u, int(i))] for i in split.train[u].indices]
        test_t = [t[(u, int(i))] for i in split.test[u].indices]
        if test_t:
            assert max(train_t) < min(test_t)
    assert np.array_equal(times.indptr, split.train.indptr)
    assert times[3, split.train[3].indices[0]] == t[(3, int(split.train[3].indices[0]))]


def test_latest_slice_holds_back_the_most_recent_train_ratings() -> None:
    # User 0: 8 train ratings at times 10..80 -> round(8 / 8) = 1 label, the one at 80.
    # User 1: 16 ratings -> 2 labels, the two latest. User 2: 2 ratings -> keeps both.
    rows = [(0, i, 10 * (i + 1)) for i in range(8)]
    rows += [(1, i, 1000 - i) for i in range(16)]
    rows += [(2, 0, 5), (2, 1, 6)]
    r = ratings(rows)
    # All of it is train here, so the matrices are built directly.
    train = sp.csr_matrix((r.ratings, (r.users, r.items)), shape=(3, 16))
    times = sp.csr_matrix((r.times.astype(np.float64), (r.users, r.items)), shape=(3, 16))
    train.sort_indices()
    times.sort_indices()
    fit, labels = latest_slice(times)(train, 0.125, 0)
    assert labels[0].indices.tolist() == [7]
    assert sorted(labels[1].indices.tolist()) == [0, 1]
    assert labels[2].nnz == 0
    assert abs(fit + labels - train).sum() == 0


def test_latest_slice_refuses_misaligned_timestamps() -> None:
    r = ratings([(0, 0, 1), (0, 1, 2), (0, 2, 3), (1, 0, 4)])
    split, times = split_by_time(r, seed=0)
    with pytest.raises(ValueError, match="aligned"):
        latest_slice(times[::-1].tocsr())(split.train, 0.5, 0)
