"""Kindred's offline pipeline for the recsys benchmarks: ONNX export, label hold-back, pools, end to end.

Synthetic data only (no shared data needed); real implicit, LightGBM and onnxruntime, no mocks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest
import scipy.sparse as sp

from bench.recsys.kindred_pipeline import (
    KindredRecommender,
    PipelineConfig,
    Pool,
    ServedRanker,
    SourceParams,
    Sources,
    build_pool,
    hold_back,
    labels_for,
    tune_kindred,
)
from bench.recsys.peers import Popularity, binarize
from bench.recsys.protocol import Interactions, evaluate, mean_metrics, split_per_user

lgb = pytest.importorskip("lightgbm")

PARAMS = SourceParams(
    als={"factors": 8, "alpha": 1.0, "regularization": 1.0, "iterations": 8},
    ease={"input": "binary", "lambda": 10.0},
    itemknn={"neighbours": 20, "shrink": 1.0},
)
SMALL = PipelineConfig(per_source=15, social_n=5, popular_n=5, num_leaves=(7,), max_trees=60, threads=1)


def clustered(seed: int = 0, n_users: int = 240, n_items: int = 120, n_groups: int = 6) -> Interactions:
    """Users listen mostly inside their taste group's items: a signal popularity cannot see."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    group_items = np.array_split(rng.permutation(n_items), n_groups)
    for u in range(n_users):
        own = group_items[u % n_groups]
        k = int(rng.integers(12, 25))
        inside = rng.choice(own, size=min(len(own), int(k * 0.8)), replace=False)
        outside = rng.choice(n_items, size=k - len(inside), replace=False)
        chosen = np.unique(np.concatenate([inside, outside]))
        users += [u] * len(chosen)
        items += chosen.tolist()
    plays = rng.integers(1, 100, size=len(users)).astype(np.float32)
    return Interactions.from_triples(np.array(users), np.array(items), plays)


def friends_by_group(n_users: int, n_groups: int = 6) -> sp.csr_matrix:
    rows = [u for u in range(n_users) for v in (u + n_groups, u - n_groups) if 0 <= v < n_users]
    cols = [v for u in range(n_users) for v in (u + n_groups, u - n_groups) if 0 <= v < n_users]
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_users))


# --- ONNX export of the LightGBM ranker ---------------------------------------------------------


def test_onnx_ranker_loaded_through_kindred_models_matches_lightgbm() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((2000, 5)).astype(np.float32)
    x[:, 1] = rng.integers(0, 4, len(x))  # integer feature: values sit right next to thresholds
    y = ((x[:, 0] + 0.4 * x[:, 1] + 0.3 * rng.random(len(x))) > 1.2).astype(np.float32)
    booster = lgb.train(
        {"objective": "lambdarank", "num_leaves": 7, "min_data_in_leaf": 5, "verbose": -1, "num_threads": 1},
        lgb.Dataset(x, y, group=[20] * 100),
        num_boost_round=40,
    )
    names = [f"f{i}" for i in range(5)]
    served = ServedRanker.export(booster, names, {})
    assert served.model.features == names  # the manifest carries the feature order
    np.testing.assert_allclose(served.run(x), booster.predict(x, raw_score=True), atol=1e-5)
    # With a linear base score the graph adds x @ w to the trees, as the boosting started from it.
    w = np.array([1.0, 0.0, 0.5, 0.0, -2.0], dtype=np.float32)
    with_base = ServedRanker.export(booster, names, {}, base_weights=w)
    np.testing.assert_allclose(with_base.run(x), booster.predict(x, raw_score=True) + x @ w, atol=1e-5)


# --- ranker labels are held back from train only -------------------------------------------------


def test_hold_back_splits_each_users_train_without_touching_anything_else() -> None:
    split = split_per_user(clustered(), seed=0)
    fit, labels = hold_back(split.train, 0.125, seed=3)
    assert abs(fit + labels - split.train).sum() == 0  # complete, values kept
    assert binarize(fit).multiply(binarize(labels)).nnz == 0  # disjoint
    counts = np.diff(split.train.indptr)
    held = np.diff(labels.indptr)
    assert np.all(held[counts < 3] == 0)
    assert np.all(held[counts >= 3] == np.maximum(1, np.round(counts[counts >= 3] * 0.125)))
    again, _ = hold_back(split.train, 0.125, seed=3)
    assert abs(again - fit).sum() == 0


# --- the candidate pool --------------------------------------------------------------------------


def test_pool_never_proposes_history_and_contains_every_sources_top_items() -> None:
    inter = clustered()
    split = split_per_user(inter, seed=0)
    friends = friends_by_group(inter.n_users)
    sources = Sources.fit(split.train, friends, PARAMS, seed=0, threads=1)
    pool = build_pool(sources, SMALL)
    assert pool.features.shape == (len(pool.items), len(pool.names))
    assert np.isfinite(pool.features).all()
    history = binarize(split.train)
    owners = np.repeat(np.arange(inter.n_users), np.diff(pool.indptr))
    assert not np.asarray(history[owners, pool.items]).ravel().any()
    # Every user's pool holds ALS's top items (train masked) and the most popular unseen items.
    users = np.arange(inter.n_users)
    als = sources.scored["als"](users).copy()
    pop = np.broadcast_to(Popularity.fit(split.train).counts, als.shape).copy()
    for scores in (als, pop):
        scores[history.nonzero()] = -np.inf
    for u in range(0, inter.n_users, 37):
        mine = set(pool.items[pool.indptr[u] : pool.indptr[u + 1]].tolist())
        assert set(np.argsort(-als[u], kind="stable")[:5].tolist()) <= mine
        assert set(np.argsort(-pop[u], kind="stable")[:3].tolist()) <= mine


def test_blend_source_scores_like_the_tuned_blend_and_a_second_als_proposes_too() -> None:
    from bench.recsys.strong import Blend, SparseScores, social_counts

    inter = clustered()
    split = split_per_user(inter, seed=0)
    friends = friends_by_group(inter.n_users)
    params = replace(PARAMS, blend={"als": 1.0, "ease": 0.5, "social": 0.1})
    cfg = replace(SMALL, use_blend=True, als2_factors=4)
    sources = Sources.fit(split.train, friends, params, seed=0, threads=1, cfg=cfg)
    assert sources.proposers() == ["als", "ease", "itemknn", "als2", "blend"]
    pool = build_pool(sources, cfg)
    assert {"blend_score", "als2_z"} <= set(pool.names)

    @dataclass
    class Scorer:
        fn: Any

        def score(self, users: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
            return np.asarray(self.fn(users))

    blend = Blend(
        [
            (1.0, Scorer(sources.scored["als"])),
            (0.5, Scorer(sources.scored["ease"])),
            (0.1, SparseScores(social_counts(friends, split.train))),
        ]
    )
    users = np.arange(inter.n_users)
    expected = blend.score(users)
    owners = np.repeat(users, np.diff(pool.indptr))
    got = pool.features[:, pool.names.index("blend_score")]
    np.testing.assert_allclose(got, expected[owners, pool.items], rtol=1e-4, atol=1e-4)
    # The blend's and the second ALS's top unseen items are all candidates.
    history = binarize(split.train)
    for name in ("blend", "als2"):
        s = expected.copy() if name == "blend" else sources.scored[name](users).copy()
        s[history.nonzero()] = -np.inf
        for u in range(0, inter.n_users, 37):
            mine = set(pool.items[pool.indptr[u] : pool.indptr[u + 1]].tolist())
            assert set(np.argsort(-s[u], kind="stable")[:5].tolist()) <= mine


def test_user_similarity_sources_by_hand() -> None:
    from bench.recsys.kindred_pipeline import UserSimilarity

    history = sp.csr_matrix(
        np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1], [1, 1, 1, 0]], dtype=np.float32)
    )
    users = UserSimilarity.fit(history)
    # cos(0, 3) = 2 / sqrt(2 * 3), cos(0, 1) = 1 / 2, cos(0, 2) = 0; never a user with itself.
    assert users.sim[0, 3] == pytest.approx(2 / np.sqrt(6))
    assert users.sim[0, 1] == pytest.approx(0.5) and users.sim[0, 2] == 0.0
    assert np.all(np.diag(users.sim) == 0.0)
    # Nearest neighbour of user 0 is user 3: its items, weighted by the similarity.
    np.testing.assert_allclose(
        users.neighbours(1).score(np.array([0]))[0], users.sim[0, 3] * history[3].toarray()[0]
    )
    # Among friends only: user 0's one friend is user 1.
    friends = sp.csr_matrix(
        np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=np.float32)
    )
    np.testing.assert_allclose(users.among(friends).score(np.array([0]))[0], [0.5, 0.0, 0.5, 0.0], atol=1e-6)


def test_pool_rows_and_recall_by_hand() -> None:
    pool = Pool(
        indptr=np.array([0, 2, 2, 5]),
        items=np.array([4, 1, 0, 2, 3]),
        features=np.arange(10, dtype=np.float32).reshape(5, 2),
        names=["a", "b"],
    )
    owner, idx = pool.rows(np.array([2, 0]))
    assert owner.tolist() == [0, 0, 0, 1, 1] and idx.tolist() == [2, 3, 4, 0, 1]
    target = sp.csr_matrix(np.array([[0, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 1, 1]], dtype=np.float32))
    mask = sp.csr_matrix(np.array([[0, 0, 1, 0, 0], [0] * 5, [0] * 5], dtype=np.float32))
    # user 0: item 2 masked, item 1 in pool -> 1.0; user 1: item 0 not in its (empty) pool -> 0;
    # user 2: item 3 in pool, item 4 not -> 0.5.
    assert pool.recall(target, mask) == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    labels = labels_for(pool, target)
    assert labels.tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]


# --- end to end ----------------------------------------------------------------------------------


def test_pipeline_ranks_held_out_items_above_popularity_through_onnx() -> None:
    inter = clustered()
    split = split_per_user(inter, seed=0)
    friends = friends_by_group(inter.n_users)
    run = tune_kindred(split, friends, PARAMS, SMALL, log=lambda _: None)
    model = run.tuned.model
    assert isinstance(model, KindredRecommender)
    assert run.pool_recall["test"] > 0.5
    users = split.eval_users("test")
    scores = model.score(users)
    assert scores.shape == (len(users), split.n_items)
    # Only pooled candidates get a finite score, and those come from the ONNX session.
    assert np.isfinite(scores).sum() == sum(np.diff(model.pool.indptr)[users])
    assert run.tuned.params["onnx_max_abs_diff"] < 1e-4
    kindred = mean_metrics(evaluate(model.score, split, "test"))
    popularity = mean_metrics(evaluate(Popularity.fit(split.train).score, split, "test"))
    assert kindred["ndcg@10"] > 0.3 > popularity["ndcg@10"] + 0.2  # measured: 0.45 vs 0.03
