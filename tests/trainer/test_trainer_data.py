"""Time split, snapshots and labels (no leakage across time), metrics, and configs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from kindred.data.catalogue import Catalogue
from kindred.features import USER_TOWER_FEATURES, Interactions
from kindred.v1 import events_pb2
from trainer.config import CONFIG_DIR, config_from_dict, load_config
from trainer.datasets import (
    build_snapshot,
    build_training_snapshots,
    discoveries,
    label_type_codes,
    time_split,
    training_cuts,
)
from trainer.evaluate import evaluate_holdout, format_table, ndcg_at_k, rank_by, recall_at_k

ET = events_pb2.EventType
FOLLOWS = frozenset({int(ET.EVENT_TYPE_FOLLOW)})


def test_time_split_holds_out_the_last_share_of_events() -> None:
    ev = Interactions.from_records(
        {"fan_id": "f", "creator_id": "c", "event_type": 12, "ts": float(t)}
        for t in [0.0, *range(1000, 1100)]
    )  # one ancient event, then a burst
    split = time_split(ev, 0.2)
    assert split.start == 0.0 and split.end > 1099
    assert 1075 <= split.train_end <= 1085  # by events, not by the (skewed) time span
    assert np.mean(ev.ts >= split.train_end) == pytest.approx(0.2, abs=0.02)
    with pytest.raises(ValueError):
        time_split(ev, 1.5)


def test_training_cuts_tile_the_train_window() -> None:
    ts = np.arange(100, dtype=np.float64)
    cuts = training_cuts(ts, 100.0, 4, 0.2)
    assert len(cuts) == 4
    assert cuts[-1][1] == 100.0
    assert all(a < b for a, b in cuts)
    assert all(cuts[i][1] == cuts[i + 1][0] for i in range(3))


def test_discoveries_skip_creators_already_followed() -> None:
    ev = Interactions.from_records(
        [
            {"fan_id": "f", "creator_id": "old", "event_type": ET.EVENT_TYPE_FOLLOW, "ts": 5.0},
            {"fan_id": "f", "creator_id": "new", "event_type": ET.EVENT_TYPE_FOLLOW, "ts": 12.0},
            {"fan_id": "f", "creator_id": "viewed", "event_type": ET.EVENT_TYPE_CREATOR_VIEW, "ts": 13.0},
            {"fan_id": "f", "creator_id": "late", "event_type": ET.EVENT_TYPE_FOLLOW, "ts": 25.0},
        ]
    )
    found = discoveries(ev, 10.0, 20.0, FOLLOWS, {"f": {"old"}})
    assert found == {"f": {"new"}}  # not the known one, not a view, not one after the window


def test_snapshot_features_do_not_see_the_label_window(platform: tuple[Catalogue, Interactions]) -> None:
    catalogue, ev = platform
    ids = [c.creator_id for c in catalogue.creators]
    cut = float(np.quantile(ev.ts, 0.6))
    full = build_snapshot(ev, catalogue, ids, cut=cut, window_end=float(ev.ts.max()) + 1, label_codes=FOLLOWS)
    past_only = build_snapshot(
        ev.before(cut), catalogue, ids, cut=cut, window_end=float(ev.ts.max()) + 1, label_codes=FOLLOWS
    )
    assert full.fan_ids and all(full.labels)
    shared = [f for f in full.fan_ids if f in past_only.fan_ids]
    assert not shared  # with only the past, there is nothing to discover after the cut
    np.testing.assert_array_equal(full.creator_x, past_only.creator_x)
    for f in full.fan_ids[:5]:
        assert full.fan_rows[f] == past_only.fan_rows[f]
    assert full.user_x.shape == (len(full.fan_ids), len(USER_TOWER_FEATURES))
    for i in range(len(full.fan_ids)):
        assert not (full.labels[i] & full.seen[i])  # a discovery is never a creator already followed


def test_training_snapshots_never_read_the_hold_out(platform: tuple[Catalogue, Interactions]) -> None:
    catalogue, ev = platform
    ids = [c.creator_id for c in catalogue.creators]
    split = time_split(ev, 0.2)
    snaps = build_training_snapshots(
        ev,
        catalogue,
        ids,
        split,
        n_cuts=3,
        warmup_fraction=0.3,
        label_codes=FOLLOWS,
        positive_codes=label_type_codes(["FOLLOW", "CREATOR_VIEW"]),
    )
    assert len(snaps) == 3
    assert all(s.window_end <= split.train_end for s in snaps)
    for s in snaps:
        for lab, pos in zip(s.labels, s.positives, strict=True):
            assert lab <= pos  # follows are positives too; views add more


def test_label_type_codes() -> None:
    assert label_type_codes(["FOLLOW", "EVENT_TYPE_POST_LIKE"]) == {
        ET.EVENT_TYPE_FOLLOW,
        ET.EVENT_TYPE_POST_LIKE,
    }
    with pytest.raises(ValueError, match="NOPE"):
        label_type_codes(["NOPE"])


def test_ranking_metrics_by_hand() -> None:
    ranked = [3, 1, 2, 0]
    assert recall_at_k(ranked, {1, 0}, 2) == 0.5
    assert ndcg_at_k(ranked, {3}, 10) == 1.0
    assert ndcg_at_k(ranked, {1}, 10) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(ranked, {1, 0}, 10) == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    )
    assert ndcg_at_k(ranked, {0}, 3) == 0.0
    assert rank_by(np.array([0.1, 0.9, 0.5]), {1}) == [2, 0]


def test_evaluate_holdout_rewards_the_better_model(platform: tuple[Catalogue, Interactions]) -> None:
    catalogue, ev = platform
    ids = [c.creator_id for c in catalogue.creators]
    split = time_split(ev, 0.3)
    test = build_snapshot(ev, catalogue, ids, cut=split.train_end, window_end=split.end, label_codes=FOLLOWS)
    # An oracle embedding (each fan points at its own discoveries) against a random one.
    oracle_u = np.zeros((len(test.fan_ids), len(ids)), np.float32)
    for i, lab in enumerate(test.labels):
        oracle_u[i, list(lab)] = 1.0
    eye = np.eye(len(ids), dtype=np.float32)
    good = evaluate_holdout(test, oracle_u, eye, ids, ks=(5,), n_two_tower=5, n_popular=2, ranker_score=None)
    rng = np.random.default_rng(0)
    bad = evaluate_holdout(
        test,
        rng.normal(size=oracle_u.shape).astype(np.float32),
        eye,
        ids,
        ks=(5,),
        n_two_tower=5,
        n_popular=2,
        ranker_score=None,
    )
    assert good["two_tower"]["ndcg@5"] > 0.9 > bad["two_tower"]["ndcg@5"]
    assert good["popularity"] == bad["popularity"]
    assert "two_tower" in format_table(good, (5,))


def test_configs_load_and_reject_unknown_keys(tmp_path: Path) -> None:
    tiny, default = load_config("tiny"), load_config("default")
    assert tiny.name == "tiny" and default.name == "default"
    assert tiny.two_tower.dim < default.two_tower.dim
    assert isinstance(default.eval.ks, tuple) and isinstance(default.ranker.hidden, tuple)
    assert {p.stem for p in CONFIG_DIR.glob("*.toml")} >= {"tiny", "default"}
    with pytest.raises(ValueError, match=r"config\.two_tower: dimm"):
        config_from_dict({"two_tower": {"dimm": 3}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[ranker]\nepochz = 1\n")
    with pytest.raises(ValueError, match="epochz"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match=r"known: .*default"):
        load_config("nope")
