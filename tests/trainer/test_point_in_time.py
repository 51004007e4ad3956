"""Point-in-time correctness: training and evaluation examples built as of a cut time t never see the future.

Each test builds examples with the trainer's own code (trainer.datasets → kindred.features), changes the
event log only at or after some time, and compares the result byte for byte: the feature rows (as JSON),
the feature matrices (raw float32 bytes), the labels, and the Parquet file the pipeline writes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

from kindred.data.catalogue import Catalogue
from kindred.features import Interactions, user_tower_features_batch
from kindred.v1 import events_pb2
from trainer.datasets import Snapshot, build_snapshot, build_training_snapshots, time_split

ET = events_pb2.EventType
LABELS = frozenset({int(ET.EVENT_TYPE_FOLLOW), int(ET.EVENT_TYPE_MEMBERSHIP_START)})
DAY = 86_400.0


def snapshot_bytes(snap: Snapshot) -> bytes:
    """Everything a snapshot holds, serialised canonically (sets sorted, arrays as raw bytes)."""
    parts = [
        json.dumps(
            {
                "cut": snap.cut,
                "window_end": snap.window_end,
                "fan_ids": snap.fan_ids,
                "fan_rows": snap.fan_rows,
                "creator_rows": snap.creator_rows,
                "labels": [sorted(x) for x in snap.labels],
                "positives": [sorted(x) for x in snap.positives],
                "seen": [sorted(x) for x in snap.seen],
            },
            sort_keys=True,
        ).encode()
    ]
    for arr in (snap.user_x, snap.creator_x, snap.popularity):
        parts += [str(arr.dtype).encode(), str(arr.shape).encode(), np.ascontiguousarray(arr).tobytes()]
    return b"\x00".join(parts)


def features_bytes(snap: Snapshot) -> bytes:
    """Only what is known at the cut: the rows and the matrices built from them."""
    return json.dumps([snap.fan_rows, snap.creator_rows], sort_keys=True).encode() + snap.creator_x.tobytes()


def concat(ev: Interactions, extra: Iterable[dict[str, object]]) -> Interactions:
    """`ev` with `extra` appended at the end of the log (as an append-only log would get them)."""
    more = Interactions.from_records(extra)
    return Interactions(
        **{
            f.name: np.concatenate([getattr(ev, f.name), getattr(more, f.name)])
            for f in dataclasses.fields(ev)
        }
    )


def future_events(catalogue: Catalogue, start: float, end: float, seed: int = 1) -> list[dict[str, object]]:
    """A burst after `start`: new follows and memberships, hundreds of views, unfollows — for many fans."""
    rng = np.random.default_rng(seed)
    fans = [f.fan_id for f in catalogue.fans]
    creators = [c.creator_id for c in catalogue.creators]
    out: list[dict[str, object]] = []
    for k in range(600):
        t = float(start + (end - start) * rng.random())
        f, c = fans[int(rng.integers(len(fans)))], creators[int(rng.integers(len(creators)))]
        kind = [ET.EVENT_TYPE_CREATOR_VIEW] * 6 + [
            ET.EVENT_TYPE_FOLLOW,
            ET.EVENT_TYPE_UNFOLLOW,
            ET.EVENT_TYPE_MEMBERSHIP_START,
            ET.EVENT_TYPE_POST_LIKE,
        ]
        out.append(
            {"fan_id": f, "creator_id": c, "event_type": int(kind[k % len(kind)]), "ts": t, "value": 1.0}
        )
    # And one fan going all in on one creator right at the window's start.
    out += [
        {
            "fan_id": fans[0],
            "creator_id": creators[1],
            "event_type": int(ET.EVENT_TYPE_CREATOR_VIEW),
            "ts": start,
        }
        for _ in range(200)
    ]
    out.append(
        {"fan_id": fans[0], "creator_id": creators[1], "event_type": int(ET.EVENT_TYPE_FOLLOW), "ts": start}
    )
    return out


@pytest.fixture(scope="module")
def setup(
    platform: tuple[Catalogue, Interactions],
) -> tuple[Catalogue, Interactions, list[str], float, float]:
    catalogue, ev = platform
    ids = [c.creator_id for c in catalogue.creators]
    cut = float(np.quantile(ev.ts, 0.5))
    window_end = float(np.quantile(ev.ts, 0.75))
    return catalogue, ev, ids, cut, window_end


def test_events_after_the_window_change_nothing(
    setup: tuple[Catalogue, Interactions, list[str], float, float],
) -> None:
    catalogue, ev, ids, cut, window_end = setup
    before = build_snapshot(ev, catalogue, ids, cut=cut, window_end=window_end, label_codes=LABELS)
    assert before.fan_ids and any(before.labels)  # the test has something to lose
    later = concat(ev, future_events(catalogue, window_end, window_end + 30 * DAY))
    after = build_snapshot(later, catalogue, ids, cut=cut, window_end=window_end, label_codes=LABELS)
    assert snapshot_bytes(after) == snapshot_bytes(before)


def test_events_after_the_cut_never_reach_the_features(
    setup: tuple[Catalogue, Interactions, list[str], float, float],
) -> None:
    catalogue, ev, ids, cut, window_end = setup
    base = build_snapshot(ev, catalogue, ids, cut=cut, window_end=window_end, label_codes=LABELS)
    # The burst lands inside the label window, starting exactly at the cut.
    busy = concat(ev, future_events(catalogue, cut, window_end))
    snap = build_snapshot(busy, catalogue, ids, cut=cut, window_end=window_end, label_codes=LABELS)
    assert features_bytes(snap) == features_bytes(base)
    # The fans' matrices too, for every fan in both (the new follows add fans with labels, never features).
    common = [f for f in base.fan_ids if f in snap.fan_ids]
    assert len(common) == len(base.fan_ids)
    rows_a = base.user_x
    rows_b = snap.user_x[[snap.fan_ids.index(f) for f in common]]
    assert rows_a.tobytes() == rows_b.tobytes()
    # The burst did change the labels (so the comparison above had something to miss).
    assert sum(map(len, snap.labels)) > sum(map(len, base.labels))
    # An event exactly at the cut is a label, not a feature: fan 0 follows creator 1 at t = cut.
    f0 = catalogue.fans[0].fan_id
    assert ids[1] not in base.fan_rows[f0]["following"]
    assert 1 in snap.labels[snap.fan_ids.index(f0)]


def test_a_label_never_feeds_its_own_features(
    setup: tuple[Catalogue, Interactions, list[str], float, float],
) -> None:
    """Remove every label interaction from the log: the features as of the cut do not move a bit."""
    catalogue, ev, ids, cut, window_end = setup
    snap = build_snapshot(ev, catalogue, ids, cut=cut, window_end=window_end, label_codes=LABELS)
    label_pairs = {(f, ids[c]) for f, lab in zip(snap.fan_ids, snap.labels, strict=True) for c in lab}
    assert label_pairs
    in_window = (ev.ts >= cut) & (ev.ts < window_end) & np.isin(ev.event_type, list(LABELS))
    is_label = np.array(
        [
            w and (f, c) in label_pairs
            for w, f, c in zip(in_window, ev.fan_id.tolist(), ev.creator_id.tolist(), strict=True)
        ]
    )
    assert is_label.sum() >= len(label_pairs)
    stripped = build_snapshot(
        ev.select(~is_label), catalogue, ids, cut=cut, window_end=window_end, label_codes=LABELS
    )
    assert features_bytes(stripped) == features_bytes(snap)
    assert not any(stripped.labels)  # all of them gone: those were exactly the label events
    for i, f in enumerate(snap.fan_ids):
        row = snap.fan_rows[f]
        assert not {ids[c] for c in snap.labels[i]} & set(row["following"])  # not already followed at t
        assert not snap.labels[i] & snap.seen[i]
        # The fan's vector is the one its row gives, and the row is as of the cut.
        assert row["as_of"] == cut and (row["last_event_at"] is None or row["last_event_at"] < cut)
        assert snap.user_x[i].tobytes() == user_tower_features_batch([row])[0].tobytes()


def test_training_data_is_blind_to_the_hold_out(
    setup: tuple[Catalogue, Interactions, list[str], float, float], tmp_path: Path
) -> None:
    """Training snapshots from the real log, from the log with its hold-out deleted, and from the log with
    a burst of extra hold-out events are byte-identical — including the Parquet the pipeline writes."""
    pytest.importorskip("pyarrow")
    from trainer.pipeline import write_parquet

    catalogue, ev, ids, _, _ = setup
    split = time_split(ev, 0.2)
    kwargs = {"n_cuts": 3, "warmup_fraction": 0.3, "label_codes": LABELS}

    def build(events: Interactions, name: str) -> tuple[list[bytes], bytes]:
        snaps = build_training_snapshots(events, catalogue, ids, split, **kwargs)  # type: ignore[arg-type]
        write_parquet(tmp_path / name / "fans.parquet", list(snaps[-1].fan_rows.values()))
        return [snapshot_bytes(s) for s in snaps], (tmp_path / name / "fans.parquet").read_bytes()

    real = build(ev, "real")
    no_holdout = build(ev.before(split.train_end), "none")
    louder = build(concat(ev, future_events(catalogue, split.train_end, split.end)), "louder")
    assert len(real[0]) == 3
    assert real == no_holdout == louder


def test_a_creator_created_after_the_cut_looks_brand_new_not_future(
    setup: tuple[Catalogue, Interactions, list[str], float, float],
) -> None:
    """The catalogue is as of the log's end, so a creator created after t is already listed at t; its
    vector must not tell when in the future it will appear (documented in trainer.datasets)."""
    catalogue, ev, ids, cut, window_end = setup

    def creator_x(created_at: float) -> bytes:
        first = dataclasses.replace(catalogue.creators[0], created_at=created_at)
        creators = [first, *catalogue.creators[1:]]
        cat = Catalogue(fans=catalogue.fans, creators=creators, posts=catalogue.posts)
        no_events = ev.select(ev.creator_id != ids[0])
        snap = build_snapshot(no_events, cat, ids, cut=cut, window_end=window_end, label_codes=LABELS)
        return snap.creator_x[0].tobytes()

    assert creator_x(cut + DAY) == creator_x(cut + 9 * DAY) == creator_x(cut)
    assert creator_x(cut - 30 * DAY) != creator_x(cut)  # the age feature is live for existing creators


def test_the_rankers_candidate_lists_are_blind_to_the_label_window(
    setup: tuple[Catalogue, Interactions, list[str], float, float],
) -> None:
    """The ranker trains on the serving pool (trainer.candidates.ServingPool): its item-to-item, social
    and trending tables and popular lists are a second path from events to the ranker's input. A burst
    inside the label window (from exactly the cut) changes no table, no drawn candidate and no byte of
    the candidates' features; only the per-objective labels move."""
    from trainer.candidates import ServingPool
    from trainer.ranker import featurize

    catalogue, ev, ids, cut, window_end = setup
    codes = {
        "follow": frozenset({int(ET.EVENT_TYPE_FOLLOW)}),
        "engage": frozenset({int(ET.EVENT_TYPE_POST_LIKE)}),
    }
    rng = np.random.default_rng(0)
    tt = rng.normal(size=(len(catalogue.fans), len(ids))).astype(np.float32)
    fan_index = {f.fan_id: i for i, f in enumerate(catalogue.fans)}

    def lists(events: Interactions) -> tuple[Snapshot, ServingPool, dict[str, bytes]]:
        snap = build_snapshot(
            events, catalogue, ids, cut=cut, window_end=window_end, label_codes=LABELS, objective_codes=codes
        )
        pool = ServingPool.as_of(events, catalogue, snap.creator_rows, as_of=cut, k=10)
        out = {}
        for i, fan in enumerate(snap.fan_ids):
            cands = pool.draw(fan, snap.fan_rows.get(fan), tt[fan_index[fan]])
            out[fan] = (
                json.dumps([dataclasses.astuple(c) for c in cands]).encode()
                + featurize(snap, i, cands, ids).tobytes()
            )
        return snap, pool, out

    base_snap, base_pool, base = lists(ev)
    busy_snap, busy_pool, busy = lists(concat(ev, future_events(catalogue, cut, window_end)))
    assert base_pool.tables == busy_pool.tables and base_pool.popular == busy_pool.popular
    assert base and all(busy[f] == x for f, x in base.items())
    assert sum(map(len, busy_snap.objective_labels["follow"])) > sum(
        map(len, base_snap.objective_labels["follow"])
    )
    assert sum(map(len, busy_snap.objective_labels["engage"])) > 0  # the burst's likes are labels only
