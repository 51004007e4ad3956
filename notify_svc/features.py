"""The learned notification models' feature vector — ONE definition, used by training and serving.

A row describes "deliver this candidate to this fan at instant `at`": the trigger, the fan's
relationship to the creator, the fan's recent volume and engagement, and the fan's local hour at
`at` together with how often the fan has opened notifications around that hour. Everything here is
something the service itself observes — the fan's sends (`FanState.sends`), outcome events
(DELIVERED / OPENED / DISABLED, as RecordOutcome receives them) and the membership facts the
candidate's producer knows (`Candidate.relationship`, from NotificationCandidate.fan_is_member /
membership_tier; else what `EngagementHistory.set_relationship` was told) — never a simulator's
hidden propensities.

`EngagementHistory` is the in-process record of those observations (what a delivery system and
RecordOutcome report); `feature_matrix` turns (candidate, fan state, history, instants) into rows.
The service also writes each observation to an `EngagementJournal` (its state store) as a small JSON
record and replays the last 28 days of them into a fresh history at start (`replay`), so the
features survive a restart.
The trainer replays a logged event stream through the same two pieces, point in time, so the
numbers a model was trained on are the numbers it is served with.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from notify_svc import timezones as tz
from notify_svc.domain import MAX_TIER, Candidate, FanState, Outcome, OutcomeEvent, Trigger
from notify_svc.domain import Relationship as Relationship  # re-exported: trainer and bench import it here

# Bumped whenever a feature's meaning changes; written into the model manifest.
NOTIFY_FEATURE_VERSION = "notify-features-1"

NOTIFY_FEATURES: tuple[str, ...] = (
    "trigger_new_post",
    "trigger_live_started",
    "trigger_creator_recommendation",
    "trigger_comment_reply",
    "is_member",
    "tier",  # 0 (not a member) .. 1 (top tier of 3)
    "creator_open_rate_28d",  # smoothed opens / deliveries from this creator
    "creator_sends_7d_log",  # repetition: novelty of this creator's notifications wears off
    "sends_24h_log",
    "sends_7d_log",
    "hours_since_last_log",  # capped at one week; a week when the fan has no send
    "opens_7d_log",
    "open_rate_28d",  # smoothed towards a population prior so new fans are not 0 or 1
    "active_share_at_hour",  # share of the fan's opens around the local hour, 1.0 = uniform
    "hour_sin",
    "hour_cos",
    "quiet_hour",  # local 22:00-08:00
    "deliveries_28d_log",  # how much history the engagement features rest on
)
N_FEATURES = len(NOTIFY_FEATURES)

# What the histories keep: the longest window any feature reads.
HISTORY_WINDOW = timedelta(days=28)
_WEEK_H = 24.0 * 7
_PRIOR_OPEN_RATE = 0.1
_PRIOR_WEIGHT = 5.0
_TRIGGER_COLUMNS = {
    Trigger.NEW_POST: 0,
    Trigger.LIVE_STARTED: 1,
    Trigger.CREATOR_RECOMMENDATION: 2,
    Trigger.COMMENT_REPLY: 3,
}


@runtime_checkable
class EngagementJournal(Protocol):
    """Durable engagement records (JSON strings) with their instants: the state store implements it."""

    def append_engagement(self, records: Sequence[tuple[datetime, str]]) -> None: ...

    def engagement_since(self, since: datetime) -> list[str]:
        """Records at or after `since`, in time order (older ones may already be pruned)."""
        ...


@dataclass
class _FanLog:
    deliveries: deque[tuple[float, str]] = field(default_factory=deque)  # (epoch s, creator)
    opens: deque[tuple[float, str, int]] = field(default_factory=deque)  # (epoch s, creator, local hour)


class EngagementHistory:
    """Per-fan deliveries and opens over the last 28 days, fed by outcome events.

    The delivery system calls `record_delivery` (it knows the creator of what it delivered);
    RecordOutcome's OPENED events call `record_outcome`, attributed through the notification id.
    Not thread-safe by itself: callers serialise (the service through LearnedPolicy's history lock,
    the simulator and trainer are single-threaded).
    """

    def __init__(self) -> None:
        self._fans: dict[str, _FanLog] = {}
        self._notifications: dict[str, tuple[str, str, ZoneInfo]] = {}
        self._relationships: dict[tuple[str, str], Relationship] = {}

    def set_relationship(self, fan_id: str, creator_id: str, relationship: Relationship) -> None:
        self._relationships[(fan_id, creator_id)] = relationship

    def relationship(self, fan_id: str, creator_id: str) -> Relationship:
        return self._relationships.get((fan_id, creator_id), _NO_RELATIONSHIP)

    def record_delivery(
        self, notification_id: str, fan_id: str, creator_id: str, zone: ZoneInfo, at: datetime
    ) -> None:
        """A non-transactional notification reached the fan at `at` (in time order per fan)."""
        log = self._fans.setdefault(fan_id, _FanLog())
        log.deliveries.append((at.timestamp(), creator_id))
        self._notifications[notification_id] = (fan_id, creator_id, zone)
        self._prune(log, at.timestamp())

    def record_outcome(self, event: OutcomeEvent) -> bool:
        """Counts an OPENED event towards the fan's engagement (True if counted); other outcomes are
        the state's, and opens of notifications this history never saw delivered cannot be attributed."""
        if event.outcome is not Outcome.OPENED:
            return False
        known = self._notifications.get(event.notification_id)
        if known is None or known[0] != event.fan_id:
            return False
        fan_id, creator_id, zone = known
        log = self._fans.setdefault(fan_id, _FanLog())
        hour = tz.local_wall(event.occurred_at, zone).hour
        log.opens.append((event.occurred_at.timestamp(), creator_id, hour))
        return True

    # The journal's records: what replay needs to rebuild the history, nothing more.

    @staticmethod
    def delivery_record(
        notification_id: str, fan_id: str, creator_id: str, zone: ZoneInfo, at: datetime
    ) -> str:
        body = {
            "k": "d",
            "n": notification_id,
            "f": fan_id,
            "c": creator_id,
            "z": zone.key,
            "t": at.timestamp(),
        }
        return json.dumps(body, separators=(",", ":"))

    @staticmethod
    def open_record(event: OutcomeEvent) -> str:
        body = {"k": "o", "n": event.notification_id, "f": event.fan_id, "t": event.occurred_at.timestamp()}
        return json.dumps(body, separators=(",", ":"))

    def replay(self, records: Iterable[str]) -> int:
        """Applies journal records (in time order) as if they happened again; returns how many."""
        n = 0
        for raw in records:
            r = json.loads(raw)
            at = datetime.fromtimestamp(r["t"], UTC)
            if r["k"] == "d":
                self.record_delivery(r["n"], r["f"], r["c"], tz.resolve_zone(r["z"]), at)
            else:
                self.record_outcome(OutcomeEvent(r["n"], r["f"], Outcome.OPENED, at))
            n += 1
        return n

    def forget_notifications_before(self, before: datetime) -> None:
        """Drops id → creator attribution for fans whose logs have gone quiet (memory bound)."""
        cutoff = before.timestamp()
        stale = [
            nid
            for nid, (fan_id, _, _) in self._notifications.items()
            if not self._fans[fan_id].deliveries or self._fans[fan_id].deliveries[-1][0] < cutoff
        ]
        for nid in stale:
            del self._notifications[nid]

    def snapshot(self, fan_id: str, creator_id: str, at: datetime) -> EngagementSnapshot:
        """The fan's engagement as of `at` (events at or after `at` are not counted)."""
        t = at.timestamp()
        log = self._fans.get(fan_id)
        hours = np.zeros(24, dtype=np.float64)
        opens_7d = opens_28d = deliveries = creator_deliveries = creator_opens = creator_7d = 0
        if log is not None:
            lo28, lo7 = t - HISTORY_WINDOW.total_seconds(), t - 7 * 86400.0
            for when, creator in log.deliveries:
                if lo28 <= when < t:
                    deliveries += 1
                    if creator == creator_id:
                        creator_deliveries += 1
                        creator_7d += when >= lo7
            for when, creator, hour in log.opens:
                if lo28 <= when < t:
                    opens_28d += 1
                    opens_7d += when >= lo7
                    hours[hour] += 1.0
                    creator_opens += creator == creator_id
        return EngagementSnapshot(
            relationship=self.relationship(fan_id, creator_id),
            deliveries_28d=deliveries,
            opens_28d=opens_28d,
            opens_7d=opens_7d,
            creator_deliveries_28d=creator_deliveries,
            creator_opens_28d=creator_opens,
            creator_sends_7d=creator_7d,
            open_hours=tuple(hours.tolist()),
        )

    @staticmethod
    def _prune(log: _FanLog, now_s: float) -> None:
        cutoff = now_s - HISTORY_WINDOW.total_seconds()
        while log.deliveries and log.deliveries[0][0] < cutoff:
            log.deliveries.popleft()
        while log.opens and log.opens[0][0] < cutoff:
            log.opens.popleft()


_NO_RELATIONSHIP = Relationship()


@dataclass(frozen=True)
class EngagementSnapshot:
    """One fan's observed engagement, as of one instant, relative to one creator."""

    relationship: Relationship = _NO_RELATIONSHIP
    deliveries_28d: int = 0
    opens_28d: int = 0
    opens_7d: int = 0
    creator_deliveries_28d: int = 0
    creator_opens_28d: int = 0
    creator_sends_7d: int = 0
    open_hours: tuple[float, ...] = (0.0,) * 24  # opens by local hour of day


def feature_matrix(
    candidates: Sequence[Candidate],
    fans: Sequence[FanState],
    snapshots: Sequence[EngagementSnapshot],
    zones: Sequence[ZoneInfo],
    instants: Sequence[Sequence[datetime]],
) -> npt.NDArray[np.float32]:
    """Rows (B, K, N_FEATURES): candidate b delivered at each of its K instants `instants[b]`.

    Every candidate must have the same number K of instants. Volume features count the fan's
    sends strictly before each instant (scheduled sends count once their time has come).
    """
    n = len(candidates)
    k = len(instants[0]) if n else 0
    out = np.zeros((n, k, N_FEATURES), dtype=np.float32)
    for b, (cand, fan, snap, zone, ats) in enumerate(
        zip(candidates, fans, snapshots, zones, instants, strict=True)
    ):
        if len(ats) != k:
            raise ValueError("every candidate needs the same number of instants")
        row = out[b]
        col = _TRIGGER_COLUMNS.get(cand.trigger)
        if col is not None:
            row[:, col] = 1.0
        # What the candidate states wins over what the history was told (the producer knows best).
        rel = cand.relationship if cand.relationship is not None else snap.relationship
        row[:, 4] = float(rel.member)
        row[:, 5] = rel.tier / MAX_TIER
        row[:, 6] = (snap.creator_opens_28d + _PRIOR_OPEN_RATE) / (snap.creator_deliveries_28d + 1.0)
        row[:, 7] = math.log1p(snap.creator_sends_7d)
        row[:, 11] = math.log1p(snap.opens_7d)
        row[:, 12] = (snap.opens_28d + _PRIOR_OPEN_RATE * _PRIOR_WEIGHT) / (
            snap.deliveries_28d + _PRIOR_WEIGHT
        )
        row[:, 17] = math.log1p(snap.deliveries_28d)
        smoothed = _hour_shares(np.asarray(snap.open_hours, dtype=np.float64))
        ts = np.fromiter((a.timestamp() for a in ats), dtype=np.float64, count=k)
        send_s = np.fromiter((s.timestamp() for s in fan.sends), dtype=np.float64, count=len(fan.sends))
        end = np.searchsorted(send_s, ts, side="left")  # sends strictly before each instant
        row[:, 8] = np.log1p(end - np.searchsorted(send_s, ts - 86400.0, side="right"))
        row[:, 9] = np.log1p(end - np.searchsorted(send_s, ts - 7 * 86400.0, side="right"))
        last = send_s[np.maximum(end - 1, 0)] if send_s.size else ts
        since = np.where(end > 0, (ts - last) / 3600.0, _WEEK_H)
        row[:, 10] = np.log1p(np.minimum(since, _WEEK_H))
        walls = local_walls(ats, zone)
        hour_int = np.fromiter((w.hour for w in walls), dtype=np.int64, count=k)
        hour = hour_int + np.fromiter((w.minute for w in walls), dtype=np.float64, count=k) / 60.0
        row[:, 13] = smoothed[hour_int]
        row[:, 14] = np.sin(2 * np.pi * hour / 24.0)
        row[:, 15] = np.cos(2 * np.pi * hour / 24.0)
        row[:, 16] = (hour_int >= 22) | (hour_int < 8)
    return out


def local_walls(instants: Sequence[datetime], zone: ZoneInfo) -> list[datetime]:
    """Naive local wall-clock readings of `instants` in `zone`, DST-correct.

    Fast path for the common case — ascending instants spanning at most a day with the same UTC
    offset at both ends (no zone changes its offset twice within a day): one conversion, then
    arithmetic; anything else converts instant by instant.
    """
    if not instants:
        return []
    first, last = instants[0], instants[-1]
    offset = first.astimezone(zone).utcoffset()
    if (
        offset is not None
        and timedelta(0) <= last - first <= timedelta(days=1)
        and last.astimezone(zone).utcoffset() == offset
    ) and all(a <= b for a, b in itertools.pairwise(instants)):
        return [(a + offset).replace(tzinfo=None) for a in instants]
    return [tz.local_wall(a, zone) for a in instants]


_PREV_HOUR = np.roll(np.arange(24), 1)
_NEXT_HOUR = np.roll(np.arange(24), -1)


def _hour_shares(counts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Opens around each local hour (±1 h) relative to uniform, shrunk towards 1 for thin histories."""
    around = counts + counts[_PREV_HOUR] + counts[_NEXT_HOUR]
    total = counts.sum()
    # Two pseudo-opens spread uniformly: one open is a hint, twenty are a habit.
    prior = 2.0
    return np.asarray((around + prior * 3.0 / 24.0) / (3.0 * (total + prior)) * 24.0, dtype=np.float64)
