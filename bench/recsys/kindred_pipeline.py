"""Kindred's recommendation pipeline, offline: multi-source retrieval -> learned ranker served by ONNX.

The route the services take (retrieval_svc's sources, ranking_svc's ONNX ranker), rebuilt over a
benchmark's user x item matrices:

1. Retrieval. Each source scores the catalogue for a user and proposes its top items (train items
   excluded): embedding ANN over ALS factors (the two-tower's role), item-to-item co-engagement
   (EASE and item-kNN neighbours), social (artists the user's friends have), popular; optionally
   the tuned ALS + EASE + friends blend (strong.py), a second ALS and user-kNN. The pool is the
   union, each candidate tagged with every source that proposed it. Its recall of the held-out
   items bounds everything after it, so it is measured and reported.
2. Ranking. A LightGBM lambdarank model over per-candidate features (each source's score, z-score
   within the user and rank; item-kNN weighted by the user's play counts; popularity; how many
   friends have it; user activity; how many sources proposed it). Labels come from a slice of each
   user's *train* interactions held back from the sources (`holdout_fraction`; `label_folds`
   independent draws, each with its own refit sources, give the ranker more queries); the sources
   are then refit on all of train to build the pools that are ranked for valid and test. Valid
   (never test) chooses the ranker's size and, by early stopping, its number of trees.
3. Serving. The booster is exported to ONNX (bench/recsys/lgbm_onnx.py), written to a model
   registry with `kindred.models.write_model` and loaded back with `kindred.models.load_model`,
   i.e. sha256 + feature-order check + `open_session` - the same loader ranking_svc uses - and every
   reported score comes out of that onnxruntime session.

Bench-specific (not the services' code): the sources here are matrix computations over the
benchmark's ids rather than retrieval_svc's Qdrant-backed modules, and the features are this
module's, not kindred/features.py (the benchmarks have no creators/categories/prices).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from bench.recsys.lgbm_onnx import INPUT_NAME, OUTPUT_NAME, booster_to_onnx
from bench.recsys.peers import (
    Factors,
    ItemKNN,
    Popularity,
    Tuned,
    _as_numpy,
    binarize,
    bm25_user_rows,
    cosine_similarity,
    top_k_per_row,
)
from bench.recsys.protocol import Split, Stage, evaluate, mean_metrics
from bench.recsys.strong import EASE, ease_inputs, social_counts

MODEL_NAME = "bench_ranker"
BATCH = 256
SourceScorer = Callable[[NDArray[np.int64]], NDArray[np.float32]]
# (train, fraction, seed) -> (history the sources are fit on, held-back ranker labels)
LabelSplit = Callable[[sp.csr_matrix, float, int], tuple[sp.csr_matrix, sp.csr_matrix]]


@dataclass(frozen=True)
class SourceParams:
    """Hyper-parameters of the retrieval sources: those the standalone peers chose on valid."""

    als: dict[str, Any]
    ease: dict[str, Any]
    itemknn: dict[str, Any]
    # The ALS + EASE + social blend's weights (bench/recsys/strong.py), when it was tuned: a source
    # and a feature (one linear score the trees would otherwise have to approximate split by split).
    blend: dict[str, Any] | None = None

    @staticmethod
    def from_tuned(done: dict[str, Tuned]) -> SourceParams:
        blend = done["als_ease_social"].params if "als_ease_social" in done else None
        return SourceParams(done["implicit_als"].params, done["ease"].params, done["itemknn"].params, blend)


@dataclass(frozen=True)
class PipelineConfig:
    per_source: int = 100  # candidates each scored source proposes per user
    social_n: int = 50
    popular_n: int = 50
    holdout_fraction: float = 0.125  # of each user's train: ranker labels (1/8 of 80% = one 10% part)
    label_folds: int = 2  # independent hold-back draws, each with refit sources: more ranker queries
    num_leaves: tuple[int, ...] = (15,)  # 63 and 31 were no better on seed 0's valid, and cost more
    learning_rate: float = 0.03
    max_trees: int = 800
    early_stopping: int = 50
    min_data_in_leaf: int = 100
    lambda_l2: float = 10.0
    feature_fraction: float = 0.9
    objective: str = "lambdarank"  # or "rank_xendcg"
    # Extra sources/features, off by default. On Last.fm seed 0's valid NDCG@10 (module default 0.2008)
    # only use_blend with label_folds=4 gained (0.2017); als2 (192), user-kNN (100), friends weighted
    # by taste and per_source=300 did not (0.1982-0.2009). bench_recsys_lastfm.LASTFM_PIPELINE.
    als2_factors: int = 0  # >0: a second ALS source (same weighting and regularisation, other size)
    use_blend: bool = False  # the tuned blend as a source and feature (needs SourceParams.blend)
    userknn_neighbours: int = 0  # >0: user-based kNN (cosine, top-k similar users) as a source
    social_similarity: bool = False  # feature: friends who have the item, weighted by taste similarity
    train_negatives: int = 0  # >0: random negatives kept per training query (all positives stay)
    # Optional linear score the trees are boosted from (feature name, weight), added in the ONNX graph.
    # Off: starting from als_z + 0.5 ease_z measured lower on seed 0's valid (0.1975 vs 0.1999).
    base_weights: tuple[tuple[str, float], ...] = ()
    threads: int = 2
    seed: int = 0

    @staticmethod
    def quick() -> PipelineConfig:
        return PipelineConfig(per_source=50, label_folds=1, learning_rate=0.05, max_trees=150)


# --- retrieval sources ------------------------------------------------------------------------


@dataclass
class Sources:
    """Every source fit on one history matrix (users x items, play counts)."""

    scored: dict[str, SourceScorer]  # full-catalogue scorers that propose candidates: als, ease, itemknn
    # Feature-only scorers: co-engagement weighted by how much the user played each artist (binary
    # sources ignore it, but the artists a user plays most predict the next ones best).
    weighted: dict[str, SourceScorer]
    item_log_plays: NDArray[np.float32]  # mean log(1 + plays) over an item's listeners
    social: sp.csr_matrix | None  # (users, items) friend counts, None without a friend graph
    n_friends: NDArray[np.float32]
    popularity: NDArray[np.float32]
    history: sp.csr_matrix
    # (weight of EASE's z-score, of the friend count's z-score) added to ALS's; None: no blend source
    blend: tuple[float, float] | None = None

    @staticmethod
    def fit(
        history: sp.csr_matrix,
        friends: sp.csr_matrix | None,
        params: SourceParams,
        seed: int,
        threads: int,
        cfg: PipelineConfig | None = None,
    ) -> Sources:
        from implicit.cpu.als import AlternatingLeastSquares

        cfg = cfg or PipelineConfig()
        a = params.als
        bm25 = bm25_user_rows(history)

        def als_factors(n_factors: int, random_state: int) -> Factors:
            als = AlternatingLeastSquares(
                factors=n_factors,
                regularization=a["regularization"],
                alpha=a["alpha"],
                iterations=a["iterations"],
                random_state=random_state,
                num_threads=threads,
            )
            als.fit(bm25, show_progress=False)
            return Factors(_as_numpy(als.user_factors), _as_numpy(als.item_factors))

        factors = als_factors(int(a["factors"]), seed)
        scored: dict[str, SourceScorer] = {"als": factors.score}
        ease = EASE.fit(ease_inputs(history)[params.ease["input"]], float(params.ease["lambda"]))
        k = params.itemknn
        sim = cosine_similarity(history, float(k["shrink"]))
        knn = ItemKNN(binarize(history), top_k_per_row(sim, int(k["neighbours"])).T.tocsr())
        n_users = history.shape[0]
        log_plays = history.astype(np.float32).tocsr()
        log_plays.data = np.log1p(np.maximum(log_plays.data, 0.0))
        listeners = np.maximum(np.diff(history.tocsc().indptr), 1).astype(np.float32)
        scored |= {"ease": ease.score, "itemknn": knn.score}
        weighted: dict[str, SourceScorer] = {"itemknn_plays": ItemKNN(log_plays, knn.weights).score}
        if cfg.userknn_neighbours > 0 or cfg.social_similarity:
            users_sim = UserSimilarity.fit(history)
            if cfg.userknn_neighbours > 0:
                scored["userknn"] = users_sim.neighbours(cfg.userknn_neighbours).score
            if cfg.social_similarity and friends is not None:
                weighted["social_sim"] = users_sim.among(friends).score
        if cfg.als2_factors > 0:
            scored["als2"] = als_factors(cfg.als2_factors, seed + 1).score
        blend = None
        if cfg.use_blend and params.blend is not None:
            social_w = float(params.blend["social"]) if friends is not None else 0.0
            blend = (float(params.blend["ease"]), social_w)
        return Sources(
            scored=scored,
            weighted=weighted,
            item_log_plays=np.asarray(log_plays.sum(axis=0), dtype=np.float32).ravel() / listeners,
            social=social_counts(friends, history) if friends is not None else None,
            n_friends=(
                np.asarray(friends.sum(axis=1), dtype=np.float32).ravel()
                if friends is not None
                else np.zeros(n_users, dtype=np.float32)
            ),
            popularity=Popularity.fit(history).counts,
            history=history,
            blend=blend,
        )

    def proposers(self) -> list[str]:
        """Names of the sources that propose candidates by score (each gets score/z/rank features)."""
        return [*self.scored, *(["blend"] if self.blend is not None else [])]


@dataclass
class UserSimilarity:
    """Cosine similarity between users' (binary) histories, dense: the benchmarks have few users."""

    history: sp.csr_matrix  # (users, items) binary
    sim: NDArray[np.float32]  # (users, users), diagonal 0

    @staticmethod
    def fit(history: sp.csr_matrix) -> UserSimilarity:
        x = binarize(history)
        norms = np.sqrt(np.asarray(x.sum(axis=1), dtype=np.float32).ravel())
        xn = sp.diags(1.0 / np.maximum(norms, 1e-9)) @ x
        sim = np.asarray((xn @ xn.T).toarray(), dtype=np.float32)
        np.fill_diagonal(sim, 0.0)
        return UserSimilarity(x, sim)

    def neighbours(self, k: int) -> UserScores:
        """Each user's k most similar users, weighted by similarity."""
        k = min(k, self.sim.shape[0] - 1)
        cut = -np.partition(-self.sim, k - 1, axis=1)[:, k - 1 : k]
        return UserScores(self.history, np.where(self.sim >= cut, self.sim, 0.0).astype(np.float32))

    def among(self, friends: sp.csr_matrix) -> UserScores:
        """Only the user's friends, weighted by similarity (a friend with the same taste counts more)."""
        return UserScores(self.history, np.asarray(friends.multiply(self.sim).toarray(), dtype=np.float32))


@dataclass
class UserScores:
    """score(u, i) = sum over users v of weights[u, v] * history[v, i]."""

    history: sp.csr_matrix
    weights: NDArray[np.float32]  # (users, users)

    def score(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        return np.asarray((self.history.T @ self.weights[users].T).T, dtype=np.float32)


def feature_names(scored: list[str], weighted: list[str], social: bool) -> list[str]:
    names: list[str] = []
    for src in scored:
        names += [f"{src}_score", f"{src}_z", f"{src}_log_rank"]
    for src in weighted:
        names += [f"{src}_score", f"{src}_z"]
    if social:
        names += ["social_friends", "social_share", "user_friends"]
    names += [
        "item_pop_share",
        "item_log_pop",
        "pop_log_rank",
        "item_log_plays",
        "user_log_items",
        "n_sources",
    ]
    return names


@dataclass
class Pool:
    """Candidates per user (CSR layout: rows `indptr[u]:indptr[u+1]`) with their feature rows."""

    indptr: NDArray[np.int64]
    items: NDArray[np.int64]
    features: NDArray[np.float32]
    names: list[str]

    def rows(self, users: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(row of `users` each candidate belongs to, index into items/features) for a user batch."""
        starts, ends = self.indptr[users], self.indptr[users + 1]
        sizes = ends - starts
        owner = np.repeat(np.arange(len(users)), sizes)
        idx = np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(int(sizes.sum()))
        return owner, idx

    def recall(self, target: sp.csr_matrix, mask: sp.csr_matrix) -> float:
        """Mean over users with held-out items of |held-out in pool| / |held-out| (masked ones excluded)."""
        n_items = target.shape[1]
        pool_keys = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr)) * n_items + self.items
        held = (binarize(target) - binarize(target).multiply(binarize(mask))).tocsr()
        held.eliminate_zeros()
        coo = held.tocoo()
        found = np.isin(coo.row.astype(np.int64) * n_items + coo.col, pool_keys)
        per_user_hits = np.bincount(coo.row, weights=found, minlength=held.shape[0])
        per_user_n = np.diff(held.indptr)
        users = per_user_n > 0
        return float((per_user_hits[users] / per_user_n[users]).mean())


def _ranks(scores: NDArray[np.float32]) -> NDArray[np.float32]:
    """0-based rank of every item within its row (best = 0)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :], axis=1)
    return ranks.astype(np.float32)


def _zscore(s: NDArray[np.float32]) -> NDArray[np.float32]:
    out: NDArray[np.float32] = (s - s.mean(axis=1, keepdims=True)) / (s.std(axis=1, keepdims=True) + 1e-9)
    return out


def build_pool(sources: Sources, cfg: PipelineConfig) -> Pool:
    """Every user's candidate pool and features; items in `sources.history` are never candidates."""
    history = binarize(sources.history)
    n_users, n_items = history.shape
    pop = sources.popularity
    pop_share = pop / max(float(pop.sum()), 1.0)
    pop_rank = np.log1p(_ranks(pop[None, :])[0])
    user_items = np.diff(history.indptr).astype(np.float32)
    names = feature_names(sources.proposers(), list(sources.weighted), sources.social is not None)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    all_items: list[NDArray[np.int64]] = []
    all_feats: list[NDArray[np.float32]] = []
    for start in range(0, n_users, BATCH):
        users = np.arange(start, min(start + BATCH, n_users), dtype=np.int64)
        seen = history[users].tocoo()
        proposed = np.zeros((len(users), n_items), dtype=np.int8)
        per_source: list[tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]] = []
        social = sources.social[users].toarray().astype(np.float32) if sources.social is not None else None
        raw = {name: np.array(scorer(users), dtype=np.float32) for name, scorer in sources.scored.items()}
        zs = {name: _zscore(s) for name, s in raw.items()}
        if sources.blend is not None:
            # strong.Blend's score: z-scores over the whole catalogue (train items included), summed.
            w_ease, w_social = sources.blend
            raw["blend"] = zs["als"] + w_ease * zs["ease"]
            if social is not None and w_social:
                raw["blend"] += w_social * _zscore(social)
            zs["blend"] = raw["blend"].copy()
        for name in sources.proposers():
            s = raw[name]
            s[seen.row, seen.col] = -np.inf
            ranks = _ranks(s)
            proposed += ranks < cfg.per_source
            per_source.append((s, zs[name], ranks))
        if social is not None:
            # Ties (same friend count) go to the more popular artist.
            s = social + pop_share[None, :]
            s[seen.row, seen.col] = -np.inf
            s[social == 0] = -np.inf
            proposed += (_ranks(s) < cfg.social_n) & np.isfinite(s)
        pop_pick = np.broadcast_to(pop_share, (len(users), n_items)).copy()
        pop_pick[seen.row, seen.col] = -np.inf
        proposed += _ranks(pop_pick) < cfg.popular_n
        proposed[seen.row, seen.col] = 0
        rows, cols = np.nonzero(proposed)
        feats: list[NDArray[np.float32]] = []
        for s, z, ranks in per_source:
            feats += [s[rows, cols], z[rows, cols], np.log1p(ranks[rows, cols])]
        for scorer in sources.weighted.values():
            w = np.asarray(scorer(users), dtype=np.float32)
            wz = _zscore(w)
            feats += [w[rows, cols], wz[rows, cols]]
        if social is not None:
            friends = sources.n_friends[users][rows]
            feats += [social[rows, cols], social[rows, cols] / np.maximum(friends, 1.0), friends]
        feats += [
            pop_share[cols] * 1e4,
            np.log1p(pop[cols]),
            pop_rank[cols],
            sources.item_log_plays[cols],
            np.log1p(user_items[users][rows]),
            proposed[rows, cols].astype(np.float32),
        ]
        indptr[users + 1] = np.bincount(rows, minlength=len(users))
        all_items.append(cols.astype(np.int64))
        all_feats.append(np.stack(feats, axis=1).astype(np.float32))
    features = np.concatenate(all_feats)
    if not np.isfinite(features).all():
        raise ValueError("non-finite candidate feature (the ONNX trees assume finite inputs)")
    return Pool(np.cumsum(indptr), np.concatenate(all_items), features, names)


# --- labels and the ranker --------------------------------------------------------------------


def hold_back(train: sp.csr_matrix, fraction: float, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Split each user's train interactions into (for the sources, ranker labels), at random.

    Users with fewer than 3 train items keep them all: the sources need some history to propose.
    """
    coo = train.tocoo()
    rng = np.random.default_rng(seed + 10_007)
    return split_leading(train, np.lexsort((rng.random(len(coo.row)), coo.row)), fraction)


def split_leading(
    train: sp.csr_matrix, order: NDArray[np.intp], fraction: float
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(rest, labels): per user, the first round(fraction × n) of that user's interactions in `order`
    (a permutation of `train.tocoo()`'s entries, grouped by user) become ranker labels. Users with
    fewer than 3 train items keep them all: the sources need some history to propose."""
    coo = train.tocoo()
    rows = coo.row[order]
    counts = np.bincount(rows, minlength=train.shape[0])
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    pos = np.arange(len(rows)) - starts[rows]
    n_label = np.where(counts >= 3, np.maximum(1, np.round(counts * fraction)), 0).astype(np.int64)
    is_label = pos < n_label[rows]

    def part(sel: NDArray[np.bool_]) -> sp.csr_matrix:
        idx = order[sel]
        m = sp.csr_matrix((coo.data[idx], (coo.row[idx], coo.col[idx])), shape=train.shape)
        m.sort_indices()
        return m

    return part(~is_label), part(is_label)


def concat_pools(pools: list[Pool]) -> Pool:
    """Pools of several label folds as one, each fold's users becoming separate ranking queries."""
    if len(pools) == 1:
        return pools[0]
    sizes = np.concatenate([np.diff(p.indptr) for p in pools])
    return Pool(
        np.concatenate(([0], np.cumsum(sizes))).astype(np.int64),
        np.concatenate([p.items for p in pools]),
        np.concatenate([p.features for p in pools]),
        pools[0].names,
    )


def labels_for(pool: Pool, target: sp.csr_matrix) -> NDArray[np.float32]:
    n_items = target.shape[1]
    owners = np.repeat(np.arange(len(pool.indptr) - 1), np.diff(pool.indptr))
    t = target.tocoo()
    keys = np.sort(t.row.astype(np.int64) * n_items + t.col)
    return np.isin(owners * n_items + pool.items, keys).astype(np.float32)


def _groups(pool: Pool, labels: NDArray[np.float32]) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """Rows of users with at least one positive in their pool (others carry no ranking signal)."""
    owners = np.repeat(np.arange(len(pool.indptr) - 1), np.diff(pool.indptr))
    useful = np.bincount(owners, weights=labels, minlength=len(pool.indptr) - 1) > 0
    keep = useful[owners]
    return keep, np.diff(pool.indptr)[useful]


def base_vector(names: list[str], cfg: PipelineConfig) -> NDArray[np.float32]:
    w = np.zeros(len(names), dtype=np.float32)
    for name, weight in cfg.base_weights:
        if name in names:
            w[names.index(name)] = weight
    return w


def _sample_negatives(pool: Pool, labels: NDArray[np.float32], n: int, seed: int) -> NDArray[np.bool_]:
    """Rows to train on: every positive and, per user, `n` negatives drawn at random.

    Fewer rows make the ranker several times faster to fit on 2 shared cores."""
    owners = np.repeat(np.arange(len(pool.indptr) - 1), np.diff(pool.indptr))
    key = np.random.default_rng(seed + 30_011).random(len(owners)) + labels * -2.0  # positives first
    order = np.lexsort((key, owners))
    starts = pool.indptr[owners[order]]
    pos_in_user = np.arange(len(order)) - starts
    n_pos = np.bincount(owners, weights=labels, minlength=len(pool.indptr) - 1).astype(np.int64)
    keep = np.zeros(len(owners), dtype=bool)
    keep[order] = pos_in_user < n_pos[owners[order]] + n
    return keep


def train_ranker(
    train_pool: Pool,
    train_labels: NDArray[np.float32],
    valid_pool: Pool,
    valid_labels: NDArray[np.float32],
    num_leaves: int,
    cfg: PipelineConfig,
) -> Any:
    import lightgbm as lgb

    keep, groups = _groups(train_pool, train_labels)
    if cfg.train_negatives > 0:
        keep &= _sample_negatives(train_pool, train_labels, cfg.train_negatives, cfg.seed)
        owners = np.repeat(np.arange(len(train_pool.indptr) - 1), np.diff(train_pool.indptr))
        groups = np.bincount(owners[keep], minlength=len(train_pool.indptr) - 1)
        groups = groups[groups > 0]
    vkeep, vgroups = _groups(valid_pool, valid_labels)
    params = {
        "objective": cfg.objective,
        "metric": "ndcg",
        "eval_at": [10],
        "lambdarank_truncation_level": 20,
        "num_leaves": num_leaves,
        "learning_rate": cfg.learning_rate,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "lambda_l2": cfg.lambda_l2,
        "feature_fraction": cfg.feature_fraction,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "num_threads": cfg.threads,
        "seed": cfg.seed,
        "deterministic": True,
        "verbose": -1,
    }
    w = base_vector(train_pool.names, cfg)
    train_x, valid_x = train_pool.features[keep], valid_pool.features[vkeep]
    train_set = lgb.Dataset(train_x, train_labels[keep], group=groups, init_score=train_x @ w)
    valid_set = lgb.Dataset(
        valid_x, valid_labels[vkeep], group=vgroups, init_score=valid_x @ w, reference=train_set
    )
    return lgb.train(
        params,
        train_set,
        num_boost_round=cfg.max_trees,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)],
    )


@dataclass
class ServedRanker:
    """The ranker as the services hold it: an ONNX file in a registry, loaded by kindred.models."""

    model: Any  # kindred.models.OnnxModel
    registry: tempfile.TemporaryDirectory[str]

    @staticmethod
    def export(
        booster: Any, names: list[str], meta: dict[str, Any], base_weights: NDArray[np.float32] | None = None
    ) -> ServedRanker:
        from kindred.models import load_model, promote, write_model

        registry = tempfile.TemporaryDirectory(prefix="kindred-bench-ranker-")
        root = Path(registry.name)
        manifest = {
            "inputs": [INPUT_NAME],
            "outputs": [OUTPUT_NAME],
            "features": names,
            "opset": 17,
            "data_window": meta.get("data_window", "benchmark train split"),
            "metrics": meta.get("metrics", {}),
            "libraries": {"lightgbm": _version("lightgbm"), "onnx": _version("onnx")},
            "config": meta.get("config", {}),
        }
        write_model(root, MODEL_NAME, "v1", booster_to_onnx(booster, len(names), base_weights), manifest)
        promote(root, MODEL_NAME, "v1")
        return ServedRanker(load_model(root, MODEL_NAME, expected_features=names), registry)

    def run(self, features: NDArray[np.float32]) -> NDArray[np.float32]:
        out: NDArray[np.float32] = self.model.run(features)
        return out


def _version(package: str) -> str:
    from importlib import metadata

    return metadata.version(package)


@dataclass
class KindredRecommender:
    """Full-catalogue scores: the ONNX ranker's score for pooled candidates, -inf for the rest."""

    pool: Pool
    ranker: ServedRanker
    n_items: int

    def score(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        owner, idx = self.pool.rows(users)
        out = np.full((len(users), self.n_items), -np.inf, dtype=np.float32)
        out[owner, self.pool.items[idx]] = self.ranker.run(self.pool.features[idx])
        return out


@dataclass
class PipelineRun:
    """What the harness needs: the chosen model plus the diagnostics worth reporting."""

    tuned: Tuned
    pool_recall: dict[str, float] = field(default_factory=dict)
    pool_size: float = 0.0


def pipeline_candidates(
    split: Split,
    friends: sp.csr_matrix | None,
    params: SourceParams,
    cfg: PipelineConfig,
    log: Callable[[str], None],
    diagnostics: dict[str, Any],
    label_split: LabelSplit,
) -> Iterator[tuple[dict[str, Any], KindredRecommender]]:
    seed = split.seed
    label_pools: list[Pool] = []
    label_sets: list[NDArray[np.float32]] = []
    recalls: list[float] = []
    for fold in range(cfg.label_folds):
        fit_part, label_part = label_split(split.train, cfg.holdout_fraction, seed * 100 + fold)
        pool = build_pool(Sources.fit(fit_part, friends, params, seed, cfg.threads, cfg), cfg)
        label_pools.append(pool)
        label_sets.append(labels_for(pool, label_part))
        recalls.append(pool.recall(label_part, fit_part))
    label_pool, labels = concat_pools(label_pools), np.concatenate(label_sets)
    serve_pool = build_pool(Sources.fit(split.train, friends, params, seed, cfg.threads, cfg), cfg)
    valid_labels = labels_for(serve_pool, split.valid)
    stages: tuple[Stage, ...] = ("valid", "test")
    diagnostics["pool_recall"] = {
        "ranker_labels": round(float(np.mean(recalls)), 4),
        **{s: round(serve_pool.recall(split.target(s), split.mask(s)), 4) for s in stages},
    }
    diagnostics["pool_size"] = round(float(np.diff(serve_pool.indptr).mean()), 1)
    log(
        f"    pool: {diagnostics['pool_size']:.0f} candidates/user, recall "
        + ", ".join(f"{k} {v:.3f}" for k, v in diagnostics["pool_recall"].items())
    )
    for leaves in cfg.num_leaves:
        booster = train_ranker(label_pool, labels, serve_pool, valid_labels, leaves, cfg)
        chosen = {"num_leaves": leaves, "trees": int(booster.best_iteration or booster.num_trees())}
        w = base_vector(serve_pool.names, cfg)
        served = ServedRanker.export(booster, serve_pool.names, {"config": chosen}, w if w.any() else None)
        # The ONNX graph must reproduce the booster on the pool it will rank.
        sample = serve_pool.features[:: max(1, len(serve_pool.features) // 5000)]
        ref = booster.predict(sample, raw_score=True, num_iteration=booster.best_iteration) + sample @ w
        gap = float(np.abs(served.run(sample) - ref).max())
        if gap > 1e-4:
            raise RuntimeError(f"ONNX ranker differs from LightGBM by {gap}")
        yield {**chosen, "onnx_max_abs_diff": gap}, KindredRecommender(serve_pool, served, split.n_items)


def tune_kindred(
    split: Split,
    friends: sp.csr_matrix | None,
    params: SourceParams,
    cfg: PipelineConfig,
    log: Callable[[str], None] = print,
    label_split: LabelSplit = hold_back,
) -> PipelineRun:
    """Builds the pipeline on train, picks the ranker on valid NDCG@10; the harness scores test.

    `label_split` holds back the ranker's labels from train: at random for a shuffled split, the
    latest interactions for a temporal one (so the ranker learns to predict the future there too).
    """
    diagnostics: dict[str, Any] = {}
    best: Tuned | None = None
    trials: list[dict[str, Any]] = []
    for chosen, model in pipeline_candidates(split, friends, params, cfg, log, diagnostics, label_split):
        valid = mean_metrics(evaluate(model.score, split, "valid"))
        trials.append({**chosen, "ndcg@10": round(valid["ndcg@10"], 5)})
        log(f"    ranker {chosen}: valid ndcg@10 {valid['ndcg@10']:.4f}")
        if best is None or valid["ndcg@10"] > best.valid["ndcg@10"]:
            best = Tuned("kindred", model, {**chosen, "sources": params.__dict__}, valid)
    if best is None:
        raise ValueError("kindred: empty ranker grid")
    best.trials = trials
    best.params["pool_recall"] = diagnostics["pool_recall"]
    best.params["pool_size"] = diagnostics["pool_size"]
    return PipelineRun(best, diagnostics["pool_recall"], diagnostics["pool_size"])
