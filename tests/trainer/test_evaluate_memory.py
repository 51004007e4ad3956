"""Evaluation scales: top-K per fan in fan chunks, never a (fans × catalogue) matrix or full-catalogue lists.

At 100k creators × 20k hold-out fans the old evaluation reached 22 GB. These tests measure the peak of
Python + numpy allocations (numpy reports its buffers to tracemalloc) as the hold-out doubles, on a
20k-creator catalogue, and check the top-K results are exactly those of a full-catalogue ranking.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import numpy.typing as npt
import pytest

from kindred.features import CREATOR_TOWER_FEATURES, USER_TOWER_FEATURES
from trainer.datasets import Snapshot
from trainer.evaluate import evaluate_holdout, ndcg_at_k, rank_by, recall_at_k, top_by

CREATORS, DIM = 20_000, 16
CHUNK = 25


def synthetic_holdout(
    fans: int, creators: int = CREATORS, seed: int = 0
) -> tuple[Snapshot, npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    rng = np.random.default_rng(seed)
    user_vecs = rng.normal(size=(fans, DIM)).astype(np.float32)
    creator_vecs = rng.normal(size=(creators, DIM)).astype(np.float32)
    labels = [{int(c) for c in rng.integers(0, creators, 3)} for _ in range(fans)]
    snap = Snapshot(
        cut=0.0,
        window_end=1.0,
        fan_ids=[f"f{i}" for i in range(fans)],
        fan_rows={},
        creator_rows={},
        user_x=np.zeros((fans, len(USER_TOWER_FEATURES)), np.float32),
        creator_x=np.zeros((creators, len(CREATOR_TOWER_FEATURES)), np.float32),
        labels=labels,
        positives=[set() for _ in range(fans)],
        seen=[{int(c) for c in rng.integers(0, creators, 20)} for _ in range(fans)],
        popularity=rng.pareto(1.5, creators),
        objective_labels={"follow": labels},
    )
    return snap, user_vecs, creator_vecs


def peak_bytes(run: object) -> int:
    assert callable(run)
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("with_ranker", "fans"), [(False, 400), (True, 50)])
def test_evaluation_memory_does_not_grow_with_fans_times_catalogue(with_ranker: bool, fans: int) -> None:
    """Doubling the fans must not add anything like their (fans × catalogue) scores to the peak: the old
    code added at least that much (plus full-catalogue Python lists), the chunked top-K code only the
    fans' top-K lists."""
    ranker = (lambda x: np.arange(len(x), dtype=np.float32)) if with_ranker else None

    def peak_for(n_fans: int) -> int:
        snap, users, creators = synthetic_holdout(fans=n_fans)

        def run() -> None:
            evaluate_holdout(
                snap,
                users,
                creators,
                [f"c{i}" for i in range(CREATORS)],
                ks=(10, 50),
                n_two_tower=10,
                n_popular=5,
                ranker_score=ranker,
                chunk_fans=CHUNK,
            )

        return peak_bytes(run)

    added = peak_for(2 * fans) - peak_for(fans)
    extra_scores = fans * CREATORS * 4  # float32 scores of the added fans over the catalogue
    assert added < extra_scores / 4, (
        f"{fans} more fans added {added / 1e6:.1f} MB to the peak (their scores: {extra_scores / 1e6:.0f} MB)"
    )


def test_top_k_metrics_equal_the_full_catalogue_ranking() -> None:
    snap, users, creators = synthetic_holdout(fans=80, creators=3_000, seed=1)
    ks = (10, 50)
    got = evaluate_holdout(
        snap,
        users,
        creators,
        [f"c{i}" for i in range(3_000)],
        ks=ks,
        n_two_tower=20,
        n_popular=10,
        ranker_score=None,
        chunk_fans=7,  # chunks that do not divide the fans
    )
    scores = users @ creators.T
    full = {
        "two_tower": [rank_by(scores[i], snap.seen[i]) for i in range(80)],
        "popularity": [rank_by(snap.popularity, snap.seen[i]) for i in range(80)],
    }
    for name, lists in full.items():
        for k in ks:
            want_ndcg = np.mean([ndcg_at_k(r, y, k) for r, y in zip(lists, snap.labels, strict=True)])
            want_recall = np.mean([recall_at_k(r, y, k) for r, y in zip(lists, snap.labels, strict=True)])
            assert got[name][f"ndcg@{k}"] == pytest.approx(want_ndcg, abs=1e-12)
            assert got[name][f"recall@{k}"] == pytest.approx(want_recall, abs=1e-12)


def test_top_by_is_the_head_of_the_stable_full_ranking_including_ties() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, 200).astype(np.float32)  # many ties: order must fall back to the index
    seen = {int(i) for i in rng.integers(0, 200, 30)}
    for n in (1, 10, 100, 200, 500):
        assert top_by(scores, seen, n) == rank_by(scores, seen)[:n]


def test_ranker_training_lists_do_not_grow_with_fans_times_catalogue() -> None:
    """The ranker's data build (trainer.ranker.build_ranker_data) keeps lists (fans × list size), and
    scores the catalogue for `chunk_fans` fans at a time."""
    from trainer.config import RankerConfig
    from trainer.ranker import build_ranker_data

    cfg = RankerConfig(
        pool="two_source",
        candidates_two_tower=20,
        candidates_popular=10,
        objectives={"follow": ("FOLLOW",)},
        objective_weights={"follow": 1.0},
    )

    def peak_for(n_fans: int) -> tuple[int, int]:
        snap, users, creators = synthetic_holdout(fans=n_fans)
        # Every fan's top two-tower creator is a label, so every list is kept.
        for i in range(n_fans):
            best = int(np.argmax(users[i] @ creators.T))
            snap.labels[i].add(best)
            snap.seen[i].discard(best)
        kept: list[int] = []

        def run() -> None:
            data = build_ranker_data(
                [snap],
                [users],
                [creators],
                lambda _: True,
                [f"c{i}" for i in range(CREATORS)],
                cfg,
                seed=0,
                chunk_fans=CHUNK,
            )
            kept.append(len(data))

        return peak_bytes(run), kept[0]

    (small, n_small), (large, n_large) = peak_for(60), peak_for(120)
    assert (n_small, n_large) == (60, 120)
    added = large - small
    assert added < 60 * CREATORS * 4 / 4, f"60 more fans added {added / 1e6:.1f} MB to the peak"
