"""The Last.fm benchmark's protocol and metrics on hand-computed and synthetic cases (no real data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.typing import NDArray

from bench.recsys.metrics import hits_at_k, ranking_metrics, top_k
from bench.recsys.peers import top_k_per_row
from bench.recsys.protocol import (
    Interactions,
    Scorer,
    Split,
    evaluate,
    mean_metrics,
    split_per_user,
    split_sizes,
)
from bench.recsys.strong import EASE

# --- metrics: hand-computed -------------------------------------------------------------------


def test_ndcg_and_friends_match_hand_computation() -> None:
    # k = 3. User A: hits at ranks 2 and 3 of 3 relevant. User B: hit at rank 3, 1 relevant.
    # User C: hit at rank 1, 5 relevant (more than k). User D: no hit, 2 relevant.
    hits = np.array([[0, 1, 1], [0, 0, 1], [1, 0, 0], [0, 0, 0]], dtype=bool)
    n_rel = np.array([3, 1, 5, 2])
    m = ranking_metrics(hits, n_rel)

    d1, d2, d3 = 1.0, 1 / math.log2(3), 1 / math.log2(4)  # 1, 0.6309, 0.5
    ideal3 = d1 + d2 + d3
    assert m["ndcg@3"] == pytest.approx([(d2 + d3) / ideal3, d3 / d1, d1 / ideal3, 0.0])
    assert m["ndcg@3"][0] == pytest.approx(0.53072, abs=1e-5)  # 1.13093 / 2.13093, by hand
    assert m["recall@3"] == pytest.approx([2 / 3, 1.0, 1 / 5, 0.0])
    assert m["precision@3"] == pytest.approx([2 / 3, 1 / 3, 1 / 3, 0.0])
    assert m["mrr@3"] == pytest.approx([1 / 2, 1 / 3, 1.0, 0.0])
    assert m["hit@3"] == pytest.approx([1.0, 1.0, 1.0, 0.0])


def test_metrics_refuse_users_without_relevant_items() -> None:
    with pytest.raises(ValueError, match="at least one relevant"):
        ranking_metrics(np.zeros((2, 3), dtype=bool), np.array([1, 0]))


def test_top_k_orders_best_first_and_never_picks_masked_items_over_real_ones() -> None:
    scores = np.array([[0.1, 0.9, -np.inf, 0.5, 0.7], [3.0, -np.inf, 1.0, 2.0, -np.inf]])
    assert top_k(scores, 3).tolist() == [[1, 4, 3], [0, 3, 2]]


def test_hits_at_k_looks_up_each_row_in_its_own_relevant_set() -> None:
    relevant = sp.csr_matrix(np.array([[0, 1, 0, 1], [1, 0, 0, 0]], dtype=np.float32))
    ranked = np.array([[3, 0], [3, 0]])
    assert hits_at_k(ranked, relevant).tolist() == [[True, False], [False, True]]


# --- split: RecBole rounding and per-user properties -------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (50, (40, 5, 5)),
        (10, (8, 1, 1)),
        (9, (7, 1, 1)),
        (5, (3, 1, 1)),
        (3, (1, 1, 1)),
        (2, (1, 0, 1)),
        (1, (1, 0, 0)),
    ],
)
def test_split_sizes_follow_recbole_rounding(n: int, expected: tuple[int, int, int]) -> None:
    assert split_sizes(n) == expected
    assert sum(split_sizes(n)) == n


def tiny_interactions(seed: int = 7, n_users: int = 40, n_items: int = 120) -> Interactions:
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        k = int(rng.integers(1, 61))  # 1..60 items, so every rounding branch is exercised
        chosen = rng.choice(n_items, size=k, replace=False)
        users += [1000 + u] * k
        items += (5000 + chosen).tolist()
    plays = rng.integers(1, 500, size=len(users)).astype(np.float32)
    return Interactions.from_triples(np.array(users), np.array(items), plays)


def as_pairs(m: sp.csr_matrix) -> set[tuple[int, int]]:
    coo = m.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist(), strict=True))


def test_split_is_8_1_1_per_user_disjoint_and_complete() -> None:
    inter = tiny_interactions()
    split = split_per_user(inter, seed=3)
    per_user = np.bincount(inter.users, minlength=inter.n_users)
    sizes = np.stack([np.diff(m.indptr) for m in (split.train, split.valid, split.test)], axis=1)
    for u, n in enumerate(per_user):
        assert tuple(sizes[u]) == split_sizes(int(n))
    train, valid, test = as_pairs(split.train), as_pairs(split.valid), as_pairs(split.test)
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert train | valid | test == set(zip(inter.users.tolist(), inter.items.tolist(), strict=True))
    # Play counts travel with their pair.
    whole = sp.csr_matrix((inter.plays, (inter.users, inter.items)), shape=split.train.shape)
    assert abs(split.train + split.valid + split.test - whole).sum() == 0


def test_split_is_reproducible_per_seed_and_differs_across_seeds() -> None:
    inter = tiny_interactions()
    a, b, c = split_per_user(inter, 1), split_per_user(inter, 1), split_per_user(inter, 2)
    assert as_pairs(a.test) == as_pairs(b.test)
    assert as_pairs(a.test) != as_pairs(c.test)


def test_masks_and_skipped_users() -> None:
    inter = tiny_interactions()
    split = split_per_user(inter, seed=0)
    assert as_pairs(split.mask("valid")) == as_pairs(split.train)
    assert as_pairs(split.mask("test")) == as_pairs(split.train) | as_pairs(split.valid)
    has_test = np.diff(split.test.indptr) > 0
    assert not has_test.all(), "the tiny data should include users too small to get a test item"
    assert split.eval_users("test").tolist() == np.flatnonzero(has_test).tolist()


def leaky_scorer(split: Split) -> Scorer:
    """Scores train items highest, then valid, then test: only correct masking lets held-out items win."""
    dense = (100 * (split.train > 0) + 50 * (split.valid > 0) + 10 * (split.test > 0)).toarray()

    def score(users: NDArray[np.int64]) -> NDArray[np.float64]:
        return np.asarray(dense[users], dtype=np.float64)

    return score


def test_evaluate_masks_known_items_so_held_out_ones_rank_first() -> None:
    inter = tiny_interactions()
    split = split_per_user(inter, seed=0)
    scorer = leaky_scorer(split)
    test = mean_metrics(evaluate(scorer, split, "test", k=10))
    valid = mean_metrics(evaluate(scorer, split, "valid", k=10))
    # Test: train and valid masked, so every test item (at most 6 per user here) is in the top 10.
    assert test["ndcg@10"] == pytest.approx(1.0)
    assert test["recall@10"] == pytest.approx(1.0)
    # Valid: only train masked; valid items outrank test items.
    assert valid["ndcg@10"] == pytest.approx(1.0)
    # The evaluated users are exactly those with held-out items.
    assert len(evaluate(scorer, split, "test")["ndcg@10"]) == len(split.eval_users("test"))


# --- peers / strong: small algebra checks ------------------------------------------------------


def test_top_k_per_row_keeps_each_rows_largest_entries() -> None:
    m = sp.csr_matrix(np.array([[0, 3, 1, 2], [5, 0, 0, 4], [0, 0, 0, 0]], dtype=np.float32))
    kept = top_k_per_row(m, 2).toarray()
    assert kept.tolist() == [[0, 3, 0, 2], [5, 0, 0, 4], [0, 0, 0, 0]]


def test_ease_user_side_form_equals_the_item_side_closed_form() -> None:
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((15, 25)) < 0.3).astype(np.float64))
    lam = 3.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(25))
    b = np.eye(25) - p / np.diag(p)  # Steck 2019: B = I - P diagMat(1 / diag(P))
    model = EASE.fit(x, lam)
    users = np.arange(15)
    np.testing.assert_allclose(model.score(users), x @ b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.item_weights([3, 7, 0]), b[:, [3, 7, 0]], rtol=1e-6, atol=1e-9)
