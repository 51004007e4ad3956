"""The ranker: re-scores the candidates retrieval proposes, from `kindred.features.ranker_features`.

Model: standardise → shared MLP trunk → one head per objective (default: p(follow), p(support) =
MEMBERSHIP_START, p(engage) = post views/likes), and a combined score `Σ w_h · head_h` with default
weights from the config. Exported to ONNX as "features" (B, F) → "score" (B,) first (what a caller that
knows nothing about objectives reads, and what old single-score models also have), then one
"<objective>_logit" (B,) per head. ranking_svc.objectives recombines the heads with the deployment's
weights and reports each head's share of the list ("p_follow", ...) among the stage scores.

Training data mirrors serving. For each fan snapshot scored by a two-tower that never trained on that
fan (held out of its training, or in the fold it skipped when cross-fitting: see
trainer.pipeline.fit_two_towers; so the two-tower scores are as honest as at serving time), candidates
are drawn the way retrieval draws them: with `pool = "serving"` (default) from the six-source pool —
two-tower, mf, item-to-item, social, trending, popular — through trainer.candidates.ServingPool, i.e. the
serving sources' own list logic and retrieval_svc's quota merge over candidate tables built as of the
snapshot's cut (events strictly before it, like the features), minus creators the fan already knows.
Each candidate carries what serving gives the ranker: its claiming source, that source's score as
`retrieval_score`, and the two-tower score only when the two-tower proposed it (`two_tower_dropout` also
hides it on a few, so a caller that cannot supply it at all is in distribution), and retrieval's facts
about every candidate (co-engagement, friends who follow it, the mf score). The ranker therefore
learns to re-order exactly what retrieval gives it, including when to trust a social or item-to-item
proposal over the two-tower's score.

Labels, per head: 1 if the fan did one of the objective's event types (`ranker.objectives`) with the
candidate in the label window [cut, next cut) and did not follow / support it at the cut. follow =
FOLLOW, support = MEMBERSHIP_START, engage = POST_VIEW or POST_LIKE (the generated platform has no
comments; views and likes are its engagement with a creator's posts).

Negatives (negative sampling): the other candidates of the same list — no random negatives. The ranker
only ever scores retrieval's output, so the distinction it must learn is between plausible candidates
(each source's best for this fan), not between a relevant creator and an obviously irrelevant one,
which retrieval has settled. Random negatives would spend the ranker's capacity on a case that never
occurs at serving time and teach it feature ranges it never sees there. The pool's sources give the
hard negatives of exactly the retrieval it sits behind.

Loss: per head, listwise softmax cross-entropy over the list (ListNet-style with multiple positives: the
mean −log softmax of the positives), averaged over the lists that hold a positive *for that head* —
a list without a membership teaches the support head nothing and does not dilute it; the heads' losses
are summed. A list is kept when any head has a positive in it. A head with no positive in any training
list (HetRec has follows only) never gets a gradient, so it is left at weight 0 (`trained_heads`).
Listwise losses optimise the order within a list, which is what NDCG measures, and need no
negative-sampling ratio to tune. Each head's output is therefore a logit defined up to a per-list
constant; the weighted sum of heads is the log of a weighted product of the heads' in-list softmax
probabilities, so its order is meaningful within a list, which is all re-ranking needs.

Known approximation: the two-tower that scores these lists is trained on all training snapshots, the
later ones included, so for an early snapshot its scores (and creator id embeddings) carry other fans'
later follows. The hold-out is untouched by this (nothing at or after the train end is ever read for
training), but the ranker may learn to trust the two-tower score slightly more than serving warrants;
a two-tower per cut would remove it at several times the training cost.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from kindred.features import RANKER_FEATURES, ranker_features_batch
from trainer.candidates import Candidate, ServingPool
from trainer.config import RankerConfig
from trainer.datasets import Snapshot
from trainer.schedule import one_cycle
from trainer.two_tower import Standardize, feature_stats, writable

SCORE_OUTPUT = "score"
# Fans whose (fan × catalogue) two-tower scores are computed at once while building lists.
FAN_CHUNK = 1024


def head_output(objective: str) -> str:
    """The ONNX output name of one objective's head."""
    return f"{objective}_logit"


class Ranker(nn.Module):
    """Shared trunk, one linear head per objective; `forward` is the weighted combination."""

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int],
        dropout: float,
        mean: npt.NDArray[np.float32],
        std: npt.NDArray[np.float32],
        weights: Sequence[float] = (1.0,),
    ) -> None:
        super().__init__()
        self.norm = Standardize(mean, std)
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, len(weights)))
        self.net = nn.Sequential(*layers)
        self.weights: torch.Tensor
        # Not persistent: the heads' combination is chosen after training (untrained heads zeroed, the
        # weights picked on validation), so a state dict must not carry the training-time one back into
        # a rebuilt model (`build_model`); the exported graph still holds it as a constant.
        self.register_buffer("weights", torch.tensor(list(weights), dtype=torch.float32), persistent=False)

    def objectives(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(features))  # type: ignore[no-any-return]  # (..., F) → (..., H)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.objectives(features) @ self.weights  # (..., F) → (...)


class RankerGraph(nn.Module):
    """What is exported: (score, head_1, ..., head_H), each (B,)."""

    def __init__(self, ranker: Ranker) -> None:
        super().__init__()
        self.ranker = ranker

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        heads = self.ranker.objectives(features)
        return (heads @ self.ranker.weights, *heads.unbind(-1))


def retrieve(
    tt_scores: npt.NDArray[np.float32],
    popularity: npt.NDArray[np.float64],
    seen: set[int],
    *,
    n_two_tower: int,
    n_popular: int,
    two_tower_score_for_popular: bool = False,
) -> list[Candidate]:
    """The older two-source draw (`ranker.pool = "two_source"`): two-tower top-n, then popular top-n.

    `tt_scores` (C,) are cosines of the fan's vector with every creator; `popularity` (C,) the raw
    popular-list scores (`popularity_raw`); a candidate's retrieval score on the popular side is the
    list's score (`popularity`, log-scaled to [0, 1]). A creator found by both sources keeps the
    two-tower source, like retrieval's quota merge. Popular-only candidates carry no two-tower score,
    unless `two_tower_score_for_popular`.
    """
    masked = tt_scores.astype(np.float64).copy()
    if seen:
        masked[list(seen)] = -np.inf
    top_tt = [int(i) for i in np.argsort(-masked, kind="stable")[:n_two_tower] if np.isfinite(masked[i])]
    pop_norm = np.log1p(popularity) / max(float(np.log1p(popularity).max()), 1e-12)
    out = [Candidate(i, "two_tower", float(tt_scores[i]), float(tt_scores[i])) for i in top_tt]
    taken = set(top_tt) | seen
    for i in np.argsort(-popularity, kind="stable"):
        if len(out) >= len(top_tt) + n_popular:
            break
        if int(i) not in taken:
            tt = float(tt_scores[i]) if two_tower_score_for_popular else None
            out.append(Candidate(int(i), "popular", tt, float(pop_norm[i])))
    return out


def featurize(
    snap: Snapshot,
    fan_index: int,
    candidates: Sequence[Candidate],
    creator_ids: Sequence[str],
    *,
    hide_two_tower: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.float32]:
    """(len(candidates), len(RANKER_FEATURES)) through the shared feature builder."""
    fan_row = snap.fan_rows.get(snap.fan_ids[fan_index])
    hide = hide_two_tower if hide_two_tower is not None else np.zeros(len(candidates), bool)
    return ranker_features_batch(
        fan_row,
        [snap.creator_rows.get(creator_ids[c.creator]) for c in candidates],
        two_tower_scores=[None if h else c.two_tower_score for c, h in zip(candidates, hide, strict=True)],
        retrieval_scores=[c.retrieval_score for c in candidates],
        sources=[c.source for c in candidates],
        creator_vectors=[snap.creator_x[c.creator] for c in candidates],
        co_engagement=[c.co_engagement for c in candidates],
        mf_scores=[c.mf_score for c in candidates],
        social_friends=[c.social_friends for c in candidates],
    )


@dataclasses.dataclass
class RankerData:
    """Fixed-size candidate lists: x (G, M, F), mask (G, M) of real candidates, y (G, M, H) labels per
    objective; `discovery` (G, M) the evaluation's relevance (`split.label_types`: follow or join), which
    the default combination of the heads is chosen for (`select_weights`)."""

    x: npt.NDArray[np.float32]
    mask: npt.NDArray[np.bool_]
    y: npt.NDArray[np.float32]
    discovery: npt.NDArray[np.float32] | None = None

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, keep: npt.NDArray[np.bool_]) -> RankerData:
        d = self.discovery[keep] if self.discovery is not None else None
        return RankerData(self.x[keep], self.mask[keep], self.y[keep], d)

    @staticmethod
    def concat(parts: Sequence[RankerData]) -> RankerData:
        """The lists of every part, in order (all built with one list size and feature order)."""
        if not parts:
            raise ValueError("no ranker data to concatenate")
        if len(parts) == 1:
            return parts[0]
        discovery = (
            np.concatenate([p.discovery for p in parts if p.discovery is not None])
            if all(p.discovery is not None for p in parts)
            else None
        )
        return RankerData(
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.mask for p in parts]),
            np.concatenate([p.y for p in parts]),
            discovery,
        )


def draw_candidates(
    snap: Snapshot,
    fan_index: int,
    tt_row: npt.NDArray[np.floating],
    pool: ServingPool | None,
    *,
    n_two_tower: int,
    n_popular: int,
    two_tower_score_for_popular: bool,
) -> list[Candidate]:
    """One fan's list: from the serving pool when there is one, else the two-source draw of
    `n_two_tower` + `n_popular` (training reads the counts from `ranker`, evaluation from `eval`)."""
    if pool is not None:
        fan = snap.fan_ids[fan_index]
        return pool.draw(fan, snap.fan_rows.get(fan), tt_row)
    return retrieve(
        tt_row,
        snap.popularity,
        snap.seen[fan_index],
        n_two_tower=n_two_tower,
        n_popular=n_popular,
        two_tower_score_for_popular=two_tower_score_for_popular,
    )


def list_size(cfg: RankerConfig, *, serving_pool: bool) -> int:
    return cfg.pool_size if serving_pool else cfg.candidates_two_tower + cfg.candidates_popular


def build_ranker_data(
    snaps: Sequence[Snapshot],
    user_vecs: Sequence[npt.NDArray[np.float32]],
    creator_vecs: Sequence[npt.NDArray[np.float32]],
    fan_filter: Callable[[str], bool],
    creator_ids: Sequence[str],
    cfg: RankerConfig,
    *,
    seed: int,
    pools: Sequence[ServingPool | None] | None = None,
    chunk_fans: int = FAN_CHUNK,
) -> RankerData:
    """Candidate lists for the fans `fan_filter` accepts, over all snapshots (`pools[s]`: the serving
    pool as of snapshot s's cut, or None for the two-source draw). Lists without a positive for any
    objective teach nothing and are skipped.

    Memory: two-tower scores are computed for `chunk_fans` fans at a time; what is kept grows with the
    number of lists × list size, never with fans × catalogue (tests/trainer/test_evaluate_memory.py).
    """
    rng = np.random.default_rng(seed)
    names = list(cfg.objectives)
    pools = list(pools) if pools is not None else [None] * len(snaps)
    size = list_size(cfg, serving_pool=any(p is not None for p in pools))
    xs, masks, ys, ds = [], [], [], []
    for snap, uv, cv, pool in zip(snaps, user_vecs, creator_vecs, pools, strict=True):
        missing = [n for n in names if n not in snap.objective_labels]
        if missing:
            raise ValueError(f"snapshot at {snap.cut} has no labels for objectives {missing}")
        rows = [i for i, fan in enumerate(snap.fan_ids) if fan_filter(fan)]
        for start in range(0, len(rows), max(1, chunk_fans)):
            chunk = rows[start : start + max(1, chunk_fans)]
            scores = uv[chunk] @ cv.T  # (chunk, C)
            for r, i in enumerate(chunk):
                cands = draw_candidates(
                    snap,
                    i,
                    scores[r],
                    pool,
                    n_two_tower=cfg.candidates_two_tower,
                    n_popular=cfg.candidates_popular,
                    two_tower_score_for_popular=cfg.two_tower_score_for_popular,
                )[:size]
                labels = np.array(
                    [[c.creator in snap.objective_labels[n][i] for n in names] for c in cands],
                    dtype=np.float32,
                ).reshape(len(cands), len(names))
                if not labels.any():
                    continue
                hide = rng.random(len(cands)) < cfg.two_tower_dropout
                x = np.zeros((size, len(RANKER_FEATURES)), np.float32)
                x[: len(cands)] = featurize(snap, i, cands, creator_ids, hide_two_tower=hide)
                m = np.zeros(size, bool)
                m[: len(cands)] = True
                y = np.zeros((size, len(names)), np.float32)
                y[: len(cands)] = labels
                d = np.zeros(size, np.float32)
                d[: len(cands)] = [c.creator in snap.labels[i] for c in cands]
                xs.append(x)
                masks.append(m)
                ys.append(y)
                ds.append(d)
    if not xs:
        return RankerData(
            np.zeros((0, size, len(RANKER_FEATURES)), np.float32),
            np.zeros((0, size), bool),
            np.zeros((0, size, len(names)), np.float32),
            np.zeros((0, size), np.float32),
        )
    return RankerData(np.stack(xs), np.stack(masks), np.stack(ys), np.stack(ds))


def listwise_loss(scores: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over lists of the mean −log softmax of the positives; padding never gets probability."""
    logp = F.log_softmax(scores.masked_fill(~mask, -1e9), dim=-1)  # (G, M)
    return (-(logp * y).sum(-1) / y.sum(-1).clamp(min=1.0)).mean()


def objectives_loss(
    logits: torch.Tensor, mask: torch.Tensor, y: torch.Tensor, head_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted sum over heads of `listwise_loss`, each averaged only over the lists with a positive for
    it. `logits` and `y` are (G, M, H), `mask` (G, M), `head_weights` (H,) (default: all 1)."""
    logp = F.log_softmax(logits.masked_fill(~mask[..., None], -1e9), dim=1)  # (G, M, H)
    n_pos = y.sum(1)  # (G, H)
    per_list = -(logp * y).sum(1) / n_pos.clamp(min=1.0)  # (G, H)
    has = (n_pos > 0).to(per_list.dtype)
    per_head = (per_list * has).sum(0) / has.sum(0).clamp(min=1.0)
    return per_head.sum() if head_weights is None else (per_head * head_weights).sum()


@dataclasses.dataclass
class RankerResult:
    state_dict: dict[str, torch.Tensor]
    n_features: int
    stats: dict[str, npt.NDArray[np.float32]]
    history: list[dict[str, float]]
    objectives: tuple[str, ...] = ("score",)
    weights: tuple[float, ...] = (1.0,)


def train_ranker(
    data: RankerData,
    cfg: RankerConfig,
    *,
    seed: int,
    val: RankerData | None = None,
    log: Callable[[str], None] = print,
) -> RankerResult:
    if len(data) == 0:
        raise ValueError("no ranker training lists: no held-out fan discovered a retrieved creator")
    names = tuple(cfg.objectives)
    if data.y.shape[-1] != len(names):
        raise ValueError(f"labels have {data.y.shape[-1]} objectives, ranker.objectives names {len(names)}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = feature_stats(data.x[data.mask])
    weights = cfg.weight_vector()
    model = Ranker(data.x.shape[-1], cfg.hidden, cfg.dropout, mean, std, weights)
    loss_weights = torch.tensor([cfg.objective_loss_weights.get(n, 1.0) for n in names], dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, math.ceil(len(data) / cfg.batch_groups))
    sched = one_cycle(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps, warmup=cfg.lr_warmup)
    history: list[dict[str, float]] = []
    for epoch in range(cfg.epochs):
        started = time.perf_counter()
        model.train()
        order = rng.permutation(len(data))
        total = 0.0
        for b in range(steps):
            idx = order[b * cfg.batch_groups : (b + 1) * cfg.batch_groups]
            loss = objectives_loss(
                model.objectives(torch.from_numpy(data.x[idx])),
                torch.from_numpy(data.mask[idx]),
                torch.from_numpy(data.y[idx]),
                loss_weights,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            total += loss.item()
        row = {"epoch": float(epoch + 1), "loss": total / steps}
        if val is not None and len(val):
            row["val_loss"] = ranker_loss(model, val, loss_weights)
        row["seconds"] = time.perf_counter() - started
        history.append(row)
        log(
            f"ranker epoch {epoch + 1:>3}/{cfg.epochs}  loss {row['loss']:.4f}"
            + (f"  val {row['val_loss']:.4f}" if "val_loss" in row else "")
            + f"  ({row['seconds']:.1f} s)"
        )
    model.eval()
    return RankerResult(
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        int(data.x.shape[-1]),
        {"mean": mean, "std": std},
        history,
        names,
        weights,
    )


@torch.no_grad()
def ranker_loss(
    model: Ranker, data: RankerData, head_weights: torch.Tensor | None = None, batch: int = 256
) -> float:
    was_training = model.training
    model.eval()
    total = 0.0
    for s in range(0, len(data), batch):
        sl = slice(s, s + batch)
        loss = objectives_loss(
            model.objectives(torch.from_numpy(data.x[sl])),
            torch.from_numpy(data.mask[sl]),
            torch.from_numpy(data.y[sl]),
            head_weights,
        )
        total += float(loss) * len(data.x[sl])
    model.train(was_training)
    return total / max(len(data), 1)


def build_model(result: RankerResult, cfg: RankerConfig) -> Ranker:
    model = Ranker(
        result.n_features, cfg.hidden, cfg.dropout, result.stats["mean"], result.stats["std"], result.weights
    )
    model.load_state_dict(result.state_dict)
    return model.eval()


@torch.no_grad()
def score(model: Ranker, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The combined score (default weights), (..., F) → (...)."""
    model.eval()
    return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


@torch.no_grad()
def score_objectives(model: Ranker, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Every head's logit, (..., F) → (..., H)."""
    model.eval()
    return model.objectives(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def list_ndcg(
    scores: npt.NDArray[np.floating], mask: npt.NDArray[np.bool_], rel: npt.NDArray[np.floating], k: int
) -> float:
    """Mean NDCG@k of ordering each list by `scores` (G, M), over the lists with a relevant candidate."""
    has = (rel * mask).sum(1) > 0
    if not has.any():
        return 0.0
    s, m, r = scores[has], mask[has], rel[has] * mask[has]
    order = np.argsort(-np.where(m, s, -np.inf), axis=1, kind="stable")[:, :k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (np.take_along_axis(r, order, 1) * discounts[: order.shape[1]]).sum(1)
    ideal_r = -np.sort(-r, axis=1)[:, :k]
    idcg = (ideal_r * discounts[: ideal_r.shape[1]]).sum(1)
    return float(np.mean(dcg / idcg))


def trained_heads(data: RankerData) -> tuple[bool, ...]:
    """Per objective head: did any of `data`'s lists hold a positive for it? The loss averages each head
    over its own lists with a positive, so a head without one never got a gradient: its output is its
    random initialisation, noise that no combination should weigh."""
    return tuple(bool(b) for b in ((data.y * data.mask[..., None]).sum(axis=(0, 1)) > 0))


def without_untrained(weights: Sequence[float], trained: Sequence[bool]) -> tuple[float, ...]:
    """`weights` with every untrained head's weight set to 0."""
    return tuple(float(w) if t else 0.0 for w, t in zip(weights, trained, strict=True))


def select_weights(
    model: Ranker,
    data: RankerData,
    grid: Sequence[float],
    *,
    k: int = 10,
    trained: Sequence[bool] | None = None,
) -> tuple[tuple[float, ...], list[dict[str, Any]]]:
    """The combination of heads that orders `data`'s lists best for discovery (NDCG@k), first head's
    weight fixed at 1 and every other head's from `grid`; ties keep the earlier (smaller) weights.
    Heads marked untrained in `trained` (see `trained_heads`) stay at 0 instead of being tried.

    Run on the ranker's own validation lists (never the hold-out): a head trained on few positives
    (memberships of creators the fan did not follow yet are rare) is noise at weight 1, and how much the
    engagement head helps the follow-or-join ranking is an empirical question. Returns the weights and
    every combination's score."""
    if data.discovery is None or len(data) == 0:
        raise ValueError("select_weights needs validation lists with discovery labels")
    heads = score_objectives(model, data.x)  # (G, M, H)
    trained = tuple(trained) if trained is not None else (True,) * heads.shape[-1]
    if len(trained) != heads.shape[-1]:
        raise ValueError(f"trained names {len(trained)} heads, the model has {heads.shape[-1]}")
    choices = [list(grid) if t else [0.0] for t in trained[1:]]
    combos = [(1.0, *rest) for rest in itertools.product(*choices)]
    table = [
        {"weights": list(w), f"ndcg@{k}": list_ndcg(heads @ np.asarray(w), data.mask, data.discovery, k)}
        for w in combos
    ]
    best = max(range(len(table)), key=lambda i: (table[i][f"ndcg@{k}"], -i))
    return tuple(combos[best]), table


def ray_train_loop(config: dict[str, Any]) -> None:
    """Ray Train `train_loop_per_worker` for the ranker (see trainer.two_tower.ray_train_loop)."""
    import os
    import pickle
    import tempfile

    import ray
    import ray.train

    torch.set_num_threads(int(config["threads"]))
    # Arrays from the object store are read-only views; torch wants to own writable memory.
    payload = {k: writable(v) for k, v in ray.get(config["data_ref"]).items()}
    cfg = RankerConfig(**config["cfg"])
    result = train_ranker(payload["train"], cfg, seed=int(config["seed"]), val=payload.get("val"))
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "result.pkl"), "wb") as fh:
            pickle.dump(result, fh)
        ray.train.report(
            {k: float(v) for k, v in result.history[-1].items()},
            checkpoint=ray.train.Checkpoint.from_directory(d),
        )
