"""The ranker: re-scores the candidates retrieval proposes, from `kindred.features.ranker_features`.

Model: standardise → MLP → one score per candidate, exported to ONNX as "features" (B, F) → "score" (B,).

Training data mirrors serving. For each fan snapshot the ranker never saw through the two-tower (fans
held out of two-tower training, so their two-tower scores are as honest as at serving time), candidates
are drawn the way retrieval draws them — the two-tower's top `candidates_two_tower` plus the
`candidates_popular` most popular, minus creators the fan already knows — and labelled 1 if the fan
discovered the creator in the label window. The ranker therefore learns to re-order what retrieval
actually gives it, including when to trust popularity over the two-tower score.

Negatives: the candidates of that list the fan did not discover. Why these and not random creators:
the ranker only ever scores retrieval's output, so the distinction it must learn is between plausible
candidates — creators the two-tower already rates close to the fan, and the popular ones — not
between a relevant creator and an obviously irrelevant one, which the two-tower has settled. Random
negatives would spend the ranker's capacity on a case that never occurs at serving time and teach it
feature ranges it never sees there. Drawing from the two-tower's *own* top-n (of this run's model, on
fans it was not trained on) gives the hard negatives of exactly the retrieval it will sit behind; the
popular quota gives the other source's, with no two-tower score attached, as retrieval_svc sends them
(`two_tower_dropout` also hides the score on a few two-tower candidates, so a caller that cannot
supply it is in distribution). Lists whose candidates hold no discovery teach nothing and are skipped.

Loss: listwise softmax cross-entropy per candidate list (ListNet-style with multiple positives: the
mean −log softmax of the positives). It optimises the order within a list, which is what NDCG measures,
and needs no negative-sampling ratio to tune: every candidate of the list is a negative.

Known approximation: the two-tower that scores these lists is trained on all training snapshots, the
later ones included, so for an early snapshot its scores (and creator id embeddings) carry other fans'
later follows. The hold-out is untouched by this (nothing at or after the train end is ever read for
training), but the ranker may learn to trust the two-tower score slightly more than serving warrants;
a two-tower per cut would remove it at several times the training cost.
"""

from __future__ import annotations

import dataclasses
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
from trainer.config import RankerConfig
from trainer.datasets import Snapshot
from trainer.schedule import one_cycle
from trainer.two_tower import Standardize, feature_stats, writable


class Ranker(nn.Module):
    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int],
        dropout: float,
        mean: npt.NDArray[np.float32],
        std: npt.NDArray[np.float32],
    ) -> None:
        super().__init__()
        self.norm = Standardize(mean, std)
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(features)).squeeze(-1)  # (..., F) → (...)


@dataclasses.dataclass(frozen=True)
class Candidate:
    creator: int  # index in the catalogue creator order
    source: str  # "two_tower" | "popular"
    two_tower_score: float | None  # None where serving would not know it (see `retrieve`)
    retrieval_score: float


def retrieve(
    tt_scores: npt.NDArray[np.float32],
    popularity: npt.NDArray[np.float64],
    seen: set[int],
    *,
    n_two_tower: int,
    n_popular: int,
    two_tower_score_for_popular: bool = False,
) -> list[Candidate]:
    """Candidates for one fan as retrieval_svc returns them: two-tower top-n, then popular top-n.

    `tt_scores` (C,) are cosines of the fan's vector with every creator; `popularity` (C,) the raw
    popular-list scores (`popularity_raw`); a candidate's retrieval score on the popular side is the
    list's score (`popularity`, log-scaled to [0, 1]). A creator found by both sources keeps the
    two-tower source, like retrieval's quota merge. The retrieval service puts `scores["two_tower"]`
    only on candidates the two-tower proposed, so popular-only candidates carry no two-tower score
    here either, unless `two_tower_score_for_popular`.
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
    )


@dataclasses.dataclass
class RankerData:
    """Fixed-size candidate lists: x (G, M, F), mask (G, M) of real candidates, y (G, M) labels."""

    x: npt.NDArray[np.float32]
    mask: npt.NDArray[np.bool_]
    y: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.x)


def build_ranker_data(
    snaps: Sequence[Snapshot],
    user_vecs: Sequence[npt.NDArray[np.float32]],
    creator_vecs: Sequence[npt.NDArray[np.float32]],
    fan_filter: Callable[[str], bool],
    creator_ids: Sequence[str],
    cfg: RankerConfig,
    *,
    seed: int,
) -> RankerData:
    """Candidate lists for the fans `fan_filter` accepts, over all snapshots; lists without a positive
    among the candidates teach nothing and are skipped."""
    rng = np.random.default_rng(seed)
    size = cfg.candidates_two_tower + cfg.candidates_popular
    xs, masks, ys = [], [], []
    for snap, uv, cv in zip(snaps, user_vecs, creator_vecs, strict=True):
        scores = uv @ cv.T  # (U, C)
        for i, fan in enumerate(snap.fan_ids):
            if not fan_filter(fan):
                continue
            cands = retrieve(
                scores[i],
                snap.popularity,
                snap.seen[i],
                n_two_tower=cfg.candidates_two_tower,
                n_popular=cfg.candidates_popular,
                two_tower_score_for_popular=cfg.two_tower_score_for_popular,
            )
            labels = np.array([c.creator in snap.labels[i] for c in cands], dtype=np.float32)
            if not labels.any():
                continue
            hide = rng.random(len(cands)) < cfg.two_tower_dropout
            x = np.zeros((size, len(RANKER_FEATURES)), np.float32)
            x[: len(cands)] = featurize(snap, i, cands, creator_ids, hide_two_tower=hide)
            m = np.zeros(size, bool)
            m[: len(cands)] = True
            y = np.zeros(size, np.float32)
            y[: len(cands)] = labels
            xs.append(x)
            masks.append(m)
            ys.append(y)
    if not xs:
        return RankerData(
            np.zeros((0, size, len(RANKER_FEATURES)), np.float32),
            np.zeros((0, size), bool),
            np.zeros((0, size), np.float32),
        )
    return RankerData(np.stack(xs), np.stack(masks), np.stack(ys))


def listwise_loss(scores: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over lists of the mean −log softmax of the positives; padding never gets probability."""
    logp = F.log_softmax(scores.masked_fill(~mask, -1e9), dim=-1)  # (G, M)
    return (-(logp * y).sum(-1) / y.sum(-1).clamp(min=1.0)).mean()


@dataclasses.dataclass
class RankerResult:
    state_dict: dict[str, torch.Tensor]
    n_features: int
    stats: dict[str, npt.NDArray[np.float32]]
    history: list[dict[str, float]]


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
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = feature_stats(data.x[data.mask])
    model = Ranker(data.x.shape[-1], cfg.hidden, cfg.dropout, mean, std)
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
            loss = listwise_loss(
                model(torch.from_numpy(data.x[idx])),
                torch.from_numpy(data.mask[idx]),
                torch.from_numpy(data.y[idx]),
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            total += loss.item()
        row = {"epoch": float(epoch + 1), "loss": total / steps}
        if val is not None and len(val):
            row["val_loss"] = ranker_loss(model, val)
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
    )


@torch.no_grad()
def ranker_loss(model: Ranker, data: RankerData, batch: int = 256) -> float:
    was_training = model.training
    model.eval()
    total = 0.0
    for s in range(0, len(data), batch):
        sl = slice(s, s + batch)
        loss = listwise_loss(
            model(torch.from_numpy(data.x[sl])), torch.from_numpy(data.mask[sl]), torch.from_numpy(data.y[sl])
        )
        total += float(loss) * len(data.x[sl])
    model.train(was_training)
    return total / max(len(data), 1)


def build_model(result: RankerResult, cfg: RankerConfig) -> Ranker:
    model = Ranker(result.n_features, cfg.hidden, cfg.dropout, result.stats["mean"], result.stats["std"])
    model.load_state_dict(result.state_dict)
    return model.eval()


@torch.no_grad()
def score(model: Ranker, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    model.eval()
    return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


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
