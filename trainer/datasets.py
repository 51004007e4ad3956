"""From the event log to training examples: ingest (Ray Data), time split, snapshots.

The evaluation question is "which creators will this fan start following next?", so examples are built
the same way at every point in time:

    features as of a cut time t   (kindred.features rows over events strictly before t)
    known    = creators the fan follows or is a member of at t   (never recommended, never a label)
    labels   = creators the fan starts following / joins (`label_types`) in [t, t_next), not known at t

Creators the fan only viewed before t stay candidates (and show up in the fan's history features):
turning a look into a follow is exactly what a recommendation is for.

The hold-out is the last `test_fraction` of events (by time: the time by which 1 − test_fraction of all
events had happened, which a long, sparse back catalogue of old follows cannot skew): one snapshot at the
train end, labelled by the hold-out window. Training snapshots sit at `n_cuts` cut times inside the
train window, so the model learns exactly the task it is evaluated on, and no event at or after the
train end is ever read for training.

Point in time, and where it is enforced:

    features   kindred.features reads `events.before(t)`: strictly earlier events (ts < t)
    known      from those same rows ("following"), so also strictly before t
    labels     `events.between(t, t_next)`: t ≤ ts < t_next; an event at exactly t is a label, never a
               feature, so a label interaction cannot be part of its own example's features
    training   `build_training_snapshots` cuts the log at the train end before building anything

tests/trainer/test_point_in_time.py proves it byte for byte: appending events after the window (new
follows, hundreds of views) leaves a snapshot identical; events inside the window change its labels but
not one byte of its features; deleting every label interaction leaves the features identical; and the
training snapshots (and their Parquet) are identical with the hold-out deleted or doubled.

What is not point in time: the catalogue is one snapshot, as of the end of the log. Creators created
after a cut are already candidates at that cut, with the features of a brand-new creator (no events,
age 0: their future creation time does not reach the vectors) — on the default platform 1–3 % of the
training labels and none of the hold-out's. Fans who sign up inside a label window appear with their
onboarding interests and no history, the cold start serving sees too.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kindred.data.catalogue import Catalogue
from kindred.features import (
    Interactions,
    build_creator_rows,
    build_fan_rows,
    creator_tower_features_batch,
    user_tower_features_batch,
)
from kindred.v1 import events_pb2

log = logging.getLogger(__name__)

_COLUMNS = ("fan_id", "creator_id", "post_id", "event_type", "ts", "value", "tier_id")


def read_segments_batch(batch: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    """Ray Data `map_batches` function: a batch of segment paths → their events as columns.

    Runs inside Ray workers, so it imports the event log lazily and returns numpy columns (Arrow-friendly),
    not one Python dict per event.
    """
    from kindred.eventlog import read_segment

    cols: dict[str, list[Any]] = {c: [] for c in _COLUMNS}
    for path in batch["path"]:
        for e in read_segment(Path(str(path))):
            cols["fan_id"].append(e.fan_id)
            cols["creator_id"].append(e.creator_id)
            cols["post_id"].append(e.post_id)
            cols["event_type"].append(int(e.type))
            cols["ts"].append(e.occurred_at.seconds + e.occurred_at.nanos / 1e9)
            cols["value"].append(e.value)
            cols["tier_id"].append(e.tier_id)
    return {
        "fan_id": np.array(cols["fan_id"], dtype=object),
        "creator_id": np.array(cols["creator_id"], dtype=object),
        "post_id": np.array(cols["post_id"], dtype=object),
        "event_type": np.array(cols["event_type"], dtype=np.int16),
        "ts": np.array(cols["ts"], dtype=np.float64),
        "value": np.array(cols["value"], dtype=np.float64),
        "tier_id": np.array(cols["tier_id"], dtype=object),
    }


def ingest_with_ray(segment_paths: Sequence[Path]) -> dict[str, npt.NDArray[Any]]:
    """Reads every segment in parallel with Ray Data (one task per segment); returns concatenated columns."""
    import ray.data

    if not segment_paths:
        return read_segments_batch({"path": np.array([], dtype=object)})
    ds = ray.data.from_items(
        [{"path": str(p)} for p in segment_paths], override_num_blocks=len(segment_paths)
    )
    events = ds.map_batches(read_segments_batch, batch_size=1, batch_format="numpy")
    parts = list(events.iter_batches(batch_size=None, batch_format="numpy"))
    if not parts:
        return read_segments_batch({"path": np.array([], dtype=object)})
    return {c: np.concatenate([np.asarray(p[c]) for p in parts]) for c in _COLUMNS}


def to_interactions(columns: Mapping[str, npt.NDArray[Any]], catalogue: Catalogue) -> Interactions:
    """Columns → Interactions: fills a post event's creator from the catalogue, drops events without a fan,
    and sorts by time (segments are in append order, which need not be time order)."""
    post_creator = {p.post_id: p.creator_id for p in catalogue.posts}
    creator = np.array(
        [
            c if c else post_creator.get(p, "")
            for c, p in zip(columns["creator_id"].tolist(), columns["post_id"].tolist(), strict=True)
        ],
        dtype=np.str_,
    )
    fan = np.asarray(columns["fan_id"]).astype(np.str_)
    keep = fan != ""
    order = np.argsort(np.asarray(columns["ts"])[keep], kind="stable")
    return Interactions(
        fan_id=fan[keep][order],
        creator_id=creator[keep][order],
        event_type=np.asarray(columns["event_type"], dtype=np.int16)[keep][order],
        ts=np.asarray(columns["ts"], dtype=np.float64)[keep][order],
        value=np.asarray(columns["value"], dtype=np.float64)[keep][order],
        tier_id=np.asarray(columns["tier_id"]).astype(np.str_)[keep][order],
    )


@dataclasses.dataclass(frozen=True)
class TimeSplit:
    start: float  # first event
    train_end: float  # hold-out starts here
    end: float  # just after the last event

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def time_split(events: Interactions, test_fraction: float) -> TimeSplit:
    """Train end = the time by which (1 − test_fraction) of the events had happened."""
    if len(events) == 0:
        raise ValueError("the event log is empty: nothing to train on (run `kindred generate` first)")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    start, last = float(events.ts.min()), float(events.ts.max())
    train_end = float(np.quantile(events.ts, 1.0 - test_fraction))
    return TimeSplit(start=start, train_end=train_end, end=last + 1e-3)


def label_type_codes(names: Sequence[str]) -> frozenset[int]:
    codes = set()
    for name in names:
        full = name if name.startswith("EVENT_TYPE_") else f"EVENT_TYPE_{name}"
        try:
            codes.add(int(events_pb2.EventType.Value(full)))
        except ValueError as exc:
            raise ValueError(f"unknown event type {name!r} in split.label_types") from exc
    return frozenset(codes)


def objective_label_codes(objectives: Mapping[str, Sequence[str]]) -> dict[str, frozenset[int]]:
    """`ranker.objectives` ({"follow": ["FOLLOW"], ...}) as event type codes per objective."""
    return {name: label_type_codes(types) for name, types in objectives.items()}


def discoveries(
    events: Interactions, start: float, end: float, label_codes: frozenset[int], known: Mapping[str, set[str]]
) -> dict[str, set[str]]:
    """fan → creators with a label event in [start, end) that were not in `known[fan]` at `start`."""
    window = events.between(start, end)
    is_label = np.isin(window.event_type, np.array(sorted(label_codes), dtype=np.int16)) & (
        window.creator_id != ""
    )
    out: dict[str, set[str]] = {}
    for f, c in zip(window.fan_id[is_label].tolist(), window.creator_id[is_label].tolist(), strict=True):
        if c not in known.get(f, ()):
            out.setdefault(f, set()).add(c)
    return out


@dataclasses.dataclass
class Snapshot:
    """Everything known at one cut time, and what happened next.

    `user_x` rows are the fans in `fan_ids` (those with ≥1 label), in that order; `creator_x` rows follow
    the catalogue creator order shared by every snapshot.
    """

    cut: float
    window_end: float
    fan_ids: list[str]
    fan_rows: dict[str, dict[str, Any]]
    creator_rows: dict[str, dict[str, Any]]
    user_x: npt.NDArray[np.float32]  # (U, F_user)
    creator_x: npt.NDArray[np.float32]  # (C, F_creator)
    labels: list[set[int]]  # discoveries (label_types) per fan in fan_ids, as creator indices
    positives: list[set[int]]  # two-tower training positives (positive_types) per fan
    seen: list[set[int]]  # creators the fan follows / is a member of at the cut (excluded from ranking)
    popularity: npt.NDArray[np.float64]  # (C,) popular-list score at the cut
    # Per ranker objective (e.g. "follow", "support", "engage"): creators the fan did one of that
    # objective's event types with in [cut, window_end), not known at the cut; one set per fan in fan_ids.
    objective_labels: dict[str, list[set[int]]] = dataclasses.field(default_factory=dict)


def build_snapshot(
    events: Interactions,
    catalogue: Catalogue,
    creator_ids: Sequence[str],
    *,
    cut: float,
    window_end: float,
    label_codes: frozenset[int],
    positive_codes: frozenset[int] | None = None,
    objective_codes: Mapping[str, frozenset[int]] | None = None,
) -> Snapshot:
    """Features as of `cut` (events before it only), labels from [cut, window_end).

    `positive_codes` (default: the label codes) widens what counts as a training positive for the
    two-tower; fans with a label or a positive are kept, in id order. `objective_codes` adds the ranker's
    per-objective labels for those fans (same window, same "not known at the cut" rule).
    """
    creator_index = {c: i for i, c in enumerate(creator_ids)}
    past = events.before(cut)
    fan_rows = build_fan_rows(past, catalogue.fans, catalogue.creators, as_of=cut)
    creator_rows = build_creator_rows(past, catalogue.creators, catalogue.posts, as_of=cut)
    known = {f: set(row["following"]) for f, row in fan_rows.items()}
    found = discoveries(events, cut, window_end, label_codes, known)
    wide = found if positive_codes is None else discoveries(events, cut, window_end, positive_codes, known)

    def as_index(cs: set[str]) -> set[int]:
        return {creator_index[c] for c in cs if c in creator_index}

    candidates = sorted(f for f in set(found) | set(wide) if f in fan_rows)
    labels_all = [as_index(found.get(f, set())) for f in candidates]
    positives_all = [as_index(wide.get(f, set())) for f in candidates]
    keep = [i for i in range(len(candidates)) if labels_all[i] or positives_all[i]]
    fan_ids = [candidates[i] for i in keep]
    labels = [labels_all[i] for i in keep]
    objective_labels = {
        name: [as_index(per_fan.get(f, set())) for f in fan_ids]
        for name, per_fan in (
            (name, discoveries(events, cut, window_end, codes, known))
            for name, codes in (objective_codes or {}).items()
        )
    }
    return Snapshot(
        cut=cut,
        window_end=window_end,
        fan_ids=fan_ids,
        fan_rows=fan_rows,
        creator_rows=creator_rows,
        user_x=user_tower_features_batch([fan_rows[f] for f in fan_ids]),
        creator_x=creator_tower_features_batch([creator_rows.get(c) for c in creator_ids]),
        labels=labels,
        positives=[positives_all[i] for i in keep],
        seen=[{creator_index[c] for c in known.get(f, ()) if c in creator_index} for f in fan_ids],
        popularity=np.array(
            [float(creator_rows[c]["popularity_raw"]) if c in creator_rows else 0.0 for c in creator_ids]
        ),
        objective_labels=objective_labels,
    )


def training_cuts(
    train_ts: npt.NDArray[np.float64], train_end: float, n_cuts: int, warmup_fraction: float
) -> list[tuple[float, float]]:
    """(cut, window_end) pairs tiling the train window after the warm-up, each window holding about the
    same number of events (quantiles of the train events' times, like the hold-out split)."""
    if n_cuts < 1:
        raise ValueError("split.n_cuts must be ≥ 1")
    if len(train_ts) == 0:
        raise ValueError("no events before the train end")
    edges = np.quantile(train_ts, np.linspace(warmup_fraction, 1.0, n_cuts + 1))
    edges[-1] = train_end
    return [(float(a), float(b)) for a, b in itertools.pairwise(edges) if b > a]


def build_training_snapshots(
    events: Interactions,
    catalogue: Catalogue,
    creator_ids: Sequence[str],
    split: TimeSplit,
    *,
    n_cuts: int,
    warmup_fraction: float,
    label_codes: frozenset[int],
    positive_codes: frozenset[int] | None = None,
    objective_codes: Mapping[str, frozenset[int]] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[Snapshot]:
    train_events = events.before(split.train_end)  # nothing from the hold-out, by construction
    snaps = []
    cuts = training_cuts(train_events.ts, split.train_end, n_cuts, warmup_fraction)
    for i, (cut, window_end) in enumerate(cuts):
        snap = build_snapshot(
            train_events,
            catalogue,
            creator_ids,
            cut=cut,
            window_end=window_end,
            label_codes=label_codes,
            positive_codes=positive_codes,
            objective_codes=objective_codes,
        )
        progress(
            f"snapshot {i + 1}/{len(cuts)} at {_day(cut)}: {len(snap.fan_ids)} fans, "
            f"{sum(len(x) for x in snap.labels)} discoveries, {sum(len(x) for x in snap.positives)} positives"
        )
        snaps.append(snap)
    return snaps


def _day(epoch_s: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch_s))


@dataclasses.dataclass(frozen=True)
class PlatformHoldout:
    """A platform's events split as the trainer splits them, and its hold-out snapshot."""

    catalogue: Catalogue
    creator_ids: list[str]
    events: Interactions
    split: TimeSplit
    test: Snapshot  # features as of the train end, labels (discoveries) after it


def load_platform_holdout(
    data_dir: Path, test_fraction: float, label_types: Sequence[str]
) -> PlatformHoldout:
    """What offline benchmarks re-score on a trained platform: its event log read in this process (no
    Ray: one read is all they need), split by time like the trainer's run with the same `split` config."""
    from kindred.eventlog import EventLog

    catalogue = Catalogue.load(data_dir)
    creator_ids = [c.creator_id for c in catalogue.creators]
    segments = EventLog(data_dir / "events").segment_paths()
    events = to_interactions(
        read_segments_batch({"path": np.array([str(p) for p in segments], dtype=object)}), catalogue
    )
    split = time_split(events, test_fraction)
    test = build_snapshot(
        events,
        catalogue,
        creator_ids,
        cut=split.train_end,
        window_end=split.end,
        label_codes=label_type_codes(label_types),
    )
    return PlatformHoldout(catalogue, creator_ids, events, split, test)
