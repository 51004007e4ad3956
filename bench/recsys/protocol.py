"""The HetRec 2011 Last.fm protocol behind the published RecBole-GNN table, reproduced exactly.

- All 92,834 (user, artist) pairs of user_artists.dat are implicit feedback; nothing is filtered.
  The play count is kept as the matrix value so a model *may* use it as confidence, but
  relevance at evaluation time is binary (a held-out pair is relevant, whatever its count).
- Each user's interactions are shuffled (seeded) and cut 8:1:1 into train/valid/test with
  RecBole's rounding rule (`split_sizes`).
- Full ranking over every artist. Valid masks the user's train items; test masks train and
  valid items. Users with nothing held out in the evaluated part are skipped.

The data is read in place from `<repo>/../shared/data/` and never copied (licence: research,
non-commercial; Cantador, Brusilovsky & Kuflik, HetRec 2011).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from bench.recsys.metrics import hits_at_k, ranking_metrics, top_k

DATASET_DIRNAME = "hetrec2011-lastfm-2k"
RATIOS: tuple[float, float, float] = (0.8, 0.1, 0.1)

Stage = Literal["valid", "test"]
# Scores for a batch of users over the whole catalogue: (len(users), n_items), higher is better.
Scorer = Callable[[NDArray[np.int64]], NDArray[np.floating]]


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """`<repo>/../shared/data/hetrec2011-lastfm-2k`: the same relative path in CI and here."""
    return repo_root().parent / "shared" / "data" / DATASET_DIRNAME


@dataclass(frozen=True)
class Interactions:
    """All (user, item, plays) triples with dense indices; raw ids kept for the friend graph."""

    users: NDArray[np.int64]
    items: NDArray[np.int64]
    plays: NDArray[np.float32]
    user_ids: NDArray[np.int64]  # dense index -> raw userID
    item_ids: NDArray[np.int64]  # dense index -> raw artistID

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @staticmethod
    def from_triples(
        raw_users: NDArray[np.int64], raw_items: NDArray[np.int64], plays: NDArray[np.float32]
    ) -> Interactions:
        user_ids, users = np.unique(raw_users, return_inverse=True)
        item_ids, items = np.unique(raw_items, return_inverse=True)
        return Interactions(
            users=users.astype(np.int64),
            items=items.astype(np.int64),
            plays=np.asarray(plays, dtype=np.float32),
            user_ids=user_ids.astype(np.int64),
            item_ids=item_ids.astype(np.int64),
        )


def _read_tsv_ints(path: Path, n_cols: int) -> NDArray[np.int64]:
    # The .dat files are tab-separated with a header row and CRLF endings; every field used is an int.
    table = np.loadtxt(path, delimiter="\t", skiprows=1, dtype=np.int64, ndmin=2)
    if table.shape[1] != n_cols:
        raise ValueError(f"{path}: expected {n_cols} columns, got {table.shape[1]}")
    return table


def load_interactions(data_dir: Path) -> Interactions:
    table = _read_tsv_ints(data_dir / "user_artists.dat", 3)
    return Interactions.from_triples(table[:, 0], table[:, 1], table[:, 2].astype(np.float32))


def load_friends(data_dir: Path, inter: Interactions) -> sp.csr_matrix:
    """Undirected 0/1 friend graph over the dense user index (the file lists both directions)."""
    table = _read_tsv_ints(data_dir / "user_friends.dat", 2)
    pos = {int(raw): i for i, raw in enumerate(inter.user_ids)}
    pairs = [(pos[a], pos[b]) for a, b in table.tolist() if a in pos and b in pos and a != b]
    rows = np.array([p[0] for p in pairs] + [p[1] for p in pairs], dtype=np.int64)
    cols = np.array([p[1] for p in pairs] + [p[0] for p in pairs], dtype=np.int64)
    graph = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(inter.n_users,) * 2)
    graph.data[:] = 1.0  # duplicates (a->b and b->a) were summed
    return graph


def split_sizes(n: int, ratios: Sequence[float] = RATIOS) -> tuple[int, ...]:
    """RecBole's per-group split sizes: later parts rounded down, the first takes the remainder,
    then each later part that rounded to 0 borrows one from the first while it has more than one.

    50 -> (40, 5, 5); 5 -> (3, 1, 1); 2 -> (1, 0, 1); 1 -> (1, 0, 0).
    """
    total = sum(ratios)
    norm = [r / total for r in ratios]
    cnt = [int(r * n) for r in norm]
    cnt[0] = n - sum(cnt[1:])
    for i in range(1, len(norm)):
        if cnt[0] <= 1:
            break
        if 0 < norm[-i] * n < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return tuple(cnt)


@dataclass(frozen=True)
class Split:
    """Users x items matrices holding play counts; the three parts are disjoint and cover the data."""

    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    seed: int

    @property
    def n_users(self) -> int:
        return int(self.train.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.train.shape[1])

    def target(self, stage: Stage) -> sp.csr_matrix:
        return self.valid if stage == "valid" else self.test

    def mask(self, stage: Stage) -> sp.csr_matrix:
        """Items never to be recommended at this stage: what the user is already known to have."""
        return self.train if stage == "valid" else (self.train + self.valid).tocsr()

    def eval_users(self, stage: Stage) -> NDArray[np.int64]:
        return np.flatnonzero(np.diff(self.target(stage).indptr) > 0).astype(np.int64)


def split_per_user(inter: Interactions, seed: int, ratios: Sequence[float] = RATIOS) -> Split:
    rng = np.random.default_rng(seed)
    # Random key, then a stable sort by user: each user's rows end up contiguous in random order.
    order = np.lexsort((rng.random(len(inter.users)), inter.users))
    users = inter.users[order]
    counts = np.bincount(users, minlength=inter.n_users)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    pos_in_user = np.arange(len(users)) - starts[users]
    sizes = np.array([split_sizes(int(c), ratios) for c in counts], dtype=np.int64)
    train_end = sizes[:, 0][users]
    valid_end = train_end + sizes[:, 1][users]
    part = np.where(pos_in_user < train_end, 0, np.where(pos_in_user < valid_end, 1, 2))

    def matrix(which: int) -> sp.csr_matrix:
        sel = order[part == which]
        m = sp.csr_matrix(
            (inter.plays[sel], (inter.users[sel], inter.items[sel])), shape=(inter.n_users, inter.n_items)
        )
        m.sort_indices()
        return m

    return Split(train=matrix(0), valid=matrix(1), test=matrix(2), seed=seed)


def evaluate(
    scorer: Scorer, split: Split, stage: Stage, k: int = 10, batch_size: int = 512
) -> dict[str, NDArray[np.float64]]:
    """Per-user metrics over the users that have held-out items at `stage` (full ranking, masked)."""
    users = split.eval_users(stage)
    target, mask = split.target(stage), split.mask(stage)
    chunks: list[dict[str, NDArray[np.float64]]] = []
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        # Copy: the mask is written into the array and must never reach a model's own buffers.
        scores = np.array(scorer(batch), dtype=np.float32)
        if scores.shape != (len(batch), split.n_items):
            raise ValueError(f"scorer returned {scores.shape}, expected {(len(batch), split.n_items)}")
        scores[~np.isfinite(scores)] = np.float32(-np.inf)
        seen = mask[batch].tocoo()
        scores[seen.row, seen.col] = -np.inf
        rel = target[batch]
        chunks.append(ranking_metrics(hits_at_k(top_k(scores, k), rel), np.diff(rel.indptr)))
    return {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}


def mean_metrics(per_user: dict[str, NDArray[np.float64]]) -> dict[str, float]:
    return {key: float(values.mean()) for key, values in per_user.items()}


def describe(inter: Interactions, k: int = 10) -> dict[str, object]:
    """The protocol as written into the results file."""
    return {
        "dataset": DATASET_DIRNAME,
        "interactions": len(inter.users),
        "users": inter.n_users,
        "items": inter.n_items,
        "feedback": "implicit: every user_artists pair is a positive; no filtering",
        "split": "per user, shuffled with the seed, 8:1:1 train/valid/test (RecBole rounding)",
        "ranking": "full ranking over all items; valid masks train, test masks train+valid",
        "users_skipped": "users without items in the evaluated part",
        "training_data": "models fit on train only; hyper-parameters chosen on valid NDCG@10",
        "k": k,
    }
