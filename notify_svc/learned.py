"""The learned notification policy: expected value of an open against the cost of a disable.

For each candidate the policy scores "deliver now" and "deliver in 1..H hours" with one ONNX model
(`notify_outcomes`: features → [p(open), p(disable)], trained by trainer/notify_models.py on
outcome events), and takes the instant with the best

    utility = p(open) × value(trigger) − p(disable) × disable_cost − fatigue_cost × sends_24h − threshold

SEND_NOW when that is now, DELAY_UNTIL the later instant when it beats now by `delay_gain`
(the fan's next likely active hour), DIGEST for a digestible trigger whose best utility is not
positive, DROP otherwise. With `digest_hours` set, the digest goes at whichever of those local hours
the model expects this fan to open most (a fan-level question, so one fan's items share one digest);
otherwise at the guard's fixed digest time. The rule policy's guardrails stay hard constraints
around it: transactional triggers always send (they bypass fatigue, not opt-out rules a law
requires: a fan who disabled notifications still gets "payment failed", never a recommendation);
opt-out and dedupe drop; rolling caps, minimum spacing and quiet hours in the fan's own zone
(DST-correct, notify_svc.timezones) bound which instants may be chosen at all.

Interfaces other code builds on (kept stable):

- `LearnedPolicy.decide(candidate, fan, now) -> Verdict` — a `notify_svc.policy.DecisionPolicy`;
- `LearnedPolicy.decide_many(candidates, fans, now) -> list[Verdict]` — a whole chunk with ONE model
  call; candidates of the same fan inside the chunk see each other's sends (caps and spacing hold);
- `LearnedPolicy.threshold` — a plain float the volume controller may set at any time (a higher
  threshold sends less), read once per decide/decide_many and stamped on each decision's scores;
- `LearnedPolicy.load(models_dir)` — over the promoted model; `record_delivery(candidate, at)` /
  `record_deliveries(candidates, at)` and `record_outcome(event)` feed the engagement history the
  features read (the engine calls them on SEND_NOW, acked due items and RecordOutcome; without them
  every fan looks new); `attach_journal(store, now)` rebuilds that history from the state store's
  journal and persists new observations there (notify_svc/server.py does it at start).

The policy sees only the fan's state, the candidate and the `EngagementHistory` of outcome events —
what the service observes — never anything a simulator keeps hidden.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from kindred.models import load_model
from notify_svc import timezones as tz
from notify_svc.domain import Action, Candidate, Decision, FanState, OutcomeEvent, Trigger, Verdict
from notify_svc.features import (
    HISTORY_WINDOW,
    N_FEATURES,
    NOTIFY_FEATURES,
    EngagementHistory,
    EngagementJournal,
    feature_matrix,
    local_walls,
)
from notify_svc.policy import CapRule, PolicyParams, fan_scores

log = logging.getLogger(__name__)

MODEL_NAME = "notify_outcomes"
# The model's one output: (B, 2) probabilities, column 0 p(open), column 1 p(disable).
OUTPUT_NAME = "outcome_probs"
# Deliveries between sweeps of the history's notification-id attribution (keeps memory bounded).
_FORGET_EVERY = 10_000


class OutcomeScorer(Protocol):
    """Maps feature rows (N, N_FEATURES) to (N, 2) probabilities [p(open), p(disable)]."""

    def score(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...


class OnnxOutcomeScorer:
    """The promoted `notify_outcomes` model, hash- and feature-order-checked by kindred.models."""

    def __init__(self, models_dir: Path, version: str | None = None, *, threads: int = 1) -> None:
        self.model = load_model(
            models_dir, MODEL_NAME, expected_features=NOTIFY_FEATURES, version=version,
            intra_op_num_threads=threads,
        )  # fmt: skip
        self.version = self.model.version

    def score(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if len(rows) == 0:
            return np.zeros((0, 2), dtype=np.float32)
        return self.model.run(rows)


def default_values() -> dict[Trigger, float]:
    return {
        Trigger.NEW_POST: 1.0,
        Trigger.LIVE_STARTED: 1.5,
        Trigger.CREATOR_RECOMMENDATION: 0.5,
        Trigger.COMMENT_REPLY: 2.0,
    }


@dataclass(frozen=True)
class LearnedParams:
    """The learned policy's economics; the guardrails are the rule policy's `PolicyParams`."""

    # Value of an opened notification by trigger (the business's unit: a post open = 1).
    values: Mapping[Trigger, float] = field(default_factory=default_values)
    # A disabled fan is lost for every later notification: roughly the opens they would still give.
    disable_cost: float = 20.0
    # Opportunity cost per send already in the last 24 h (each send dulls the next).
    fatigue_cost: float = 0.01
    # Base threshold on utility; the volume controller moves `LearnedPolicy.threshold` from here.
    threshold: float = 0.0
    # Later instants considered, in whole hours after the earliest allowed one.
    horizon_hours: int = 12
    # A delay must add at least this much utility over sending now (waiting has costs the model
    # does not see: staleness, and the chance a better candidate comes along needs the slot).
    delay_gain: float = 0.005
    # Local hours a DIGEST may go at: the one with the best expected value for this fan (the model
    # at each hour's next occurrence) is chosen. Empty: always the guard's fixed `digest_time`.
    digest_hours: tuple[int, ...] = ()
    # Guardrails: caps, spacing, quiet hours, dedupe, transactional allow-list, digest time, TTLs.
    guard: PolicyParams = field(
        default_factory=lambda: PolicyParams(
            caps=(
                CapRule("daily_cap", timedelta(hours=24), 6),
                CapRule("weekly_cap", timedelta(days=7), 30),
            ),
        )
    )

    def __post_init__(self) -> None:
        if self.horizon_hours < 0 or self.disable_cost < 0 or self.fatigue_cost < 0:
            raise ValueError("horizon_hours, disable_cost and fatigue_cost must be >= 0")
        if any(not 0 <= h < 24 for h in self.digest_hours) or len(set(self.digest_hours)) != len(
            self.digest_hours
        ):
            raise ValueError("digest_hours must be distinct local hours 0..23")


@dataclass
class Plan:
    """A candidate that passed the pre-checks (`index` into the chunk) and the instants it may go at."""

    index: int
    zone: ZoneInfo
    instants: list[datetime]
    quiet: list[bool]  # each instant's local wall clock is inside the quiet window


class LearnedPolicy:
    """See the module docstring.

    Thread-safe: gRPC worker threads decide and feed outcomes concurrently, so every touch of the
    (unsynchronised) history goes through one lock; `threshold` is a plain float.
    """

    def __init__(
        self,
        scorer: OutcomeScorer,
        history: EngagementHistory,
        params: LearnedParams | None = None,
    ) -> None:
        self.scorer = scorer
        self.history = history
        self.params = params or LearnedParams()
        self.threshold: float = self.params.threshold
        self._max_delay = dict(self.params.guard.max_delay)
        self._history_lock = threading.Lock()
        self._deliveries_since_forget = 0
        # Where observations are also persisted (the state store), once `attach_journal` ran.
        self.journal: EngagementJournal | None = None

    @property
    def model_version(self) -> str:
        """The served model's version ("" for a scorer that is not a promoted model)."""
        return str(getattr(self.scorer, "version", ""))

    @classmethod
    def load(
        cls,
        models_dir: Path,
        params: LearnedParams | None = None,
        *,
        history: EngagementHistory | None = None,
    ) -> LearnedPolicy:
        """The policy over the promoted `notify_outcomes` model (hash and feature order checked)."""
        return cls(OnnxOutcomeScorer(models_dir), history or EngagementHistory(), params)

    # What the service feeds back (the history is the policy's only memory of engagement).

    def attach_journal(self, journal: EngagementJournal, now: datetime) -> int:
        """Replays the journal's last 28 days into the history, then persists every new observation
        there too (so a restarted service sees the same fan features). Returns the records replayed."""
        records = journal.engagement_since(now - HISTORY_WINDOW)
        with self._history_lock:
            replayed = self.history.replay(records)
        self.journal = journal
        return replayed

    def record_delivery(self, candidate: Candidate, at: datetime) -> None:
        """A non-transactional notification reached the fan (SEND_NOW at decision, or an acked due item)."""
        self.record_deliveries([candidate], at)

    def record_deliveries(self, candidates: Sequence[Candidate], at: datetime) -> None:
        """`record_delivery` for many (one journal write for a whole fan-out chunk)."""
        g = self.params.guard
        records: list[tuple[datetime, str]] = []
        with self._history_lock:
            for c in candidates:
                if c.trigger in g.transactional:
                    continue
                zone = tz.resolve_zone(c.fan_time_zone or g.default_time_zone)
                self.history.record_delivery(c.notification_id, c.fan_id, c.creator_id, zone, at)
                records.append(
                    (at, self.history.delivery_record(c.notification_id, c.fan_id, c.creator_id, zone, at))
                )
            self._deliveries_since_forget += len(records)
            if self._deliveries_since_forget >= _FORGET_EVERY:
                self._deliveries_since_forget = 0
                self.history.forget_notifications_before(at - HISTORY_WINDOW)
        self._persist(records)

    def record_outcome(self, event: OutcomeEvent) -> None:
        """RecordOutcome's events: OPENED counts towards the fan's engagement features."""
        with self._history_lock:
            counted = self.history.record_outcome(event)
        if counted:
            self._persist([(event.occurred_at, self.history.open_record(event))])

    def _persist(self, records: list[tuple[datetime, str]]) -> None:
        # The decision or outcome is already recorded: a journal failure costs only feature freshness
        # after a restart, so it is logged, never raised into the RPC.
        if self.journal is None or not records:
            return
        try:
            self.journal.append_engagement(records)
        except Exception:
            log.warning("engagement journal write failed; %d records kept in memory only", len(records),
                        exc_info=True)  # fmt: skip

    def decide(self, candidate: Candidate, fan: FanState, now: datetime) -> Verdict:
        return self.decide_many([candidate], [fan], now)[0]

    def decide_many(
        self, candidates: Sequence[Candidate], fans: Sequence[FanState], now: datetime
    ) -> list[Verdict]:
        """Decides a chunk in order with one model call; `fans[i]` is candidate i's fan before the chunk."""
        if len(candidates) != len(fans):
            raise ValueError("one FanState per candidate")
        g = self.params.guard
        threshold = self.threshold  # one read: the controller may move it meanwhile
        out: list[Verdict | None] = [None] * len(candidates)
        plans: list[Plan] = []
        zones: list[ZoneInfo] = []
        for i, (cand, fan) in enumerate(zip(candidates, fans, strict=True)):
            zone = tz.resolve_zone(cand.fan_time_zone or fan.time_zone or g.default_time_zone)
            zones.append(zone)
            early = self._precheck(cand, fan, now, zone)
            if early is not None:
                out[i] = early
                continue
            earliest = max(now, fan.sends[-1] + g.min_spacing) if fan.sends else now
            base = tz.quiet_end(earliest, zone, g.quiet_start, g.quiet_end)
            instants = [base + timedelta(hours=k) for k in range(self.params.horizon_hours + 1)]
            quiet = [tz.in_window(w.time(), g.quiet_start, g.quiet_end) for w in local_walls(instants, zone)]
            plans.append(Plan(i, zone, instants, quiet))

        probs = self.score_instants(candidates, fans, plans, now)
        # Sends decided earlier in this chunk, per fan: later candidates of the fan must respect them.
        extra: dict[str, list[datetime]] = {}
        for plan, p in zip(plans, probs, strict=True):
            cand, fan = candidates[plan.index], fans[plan.index]
            sends = sorted((*fan.sends, *extra.get(cand.fan_id, ())))
            verdict = self._choose(cand, fan, sends, plan, p, now, threshold)
            if verdict.send_at is not None:
                extra.setdefault(cand.fan_id, []).append(verdict.send_at)
            out[plan.index] = verdict
        if self.params.digest_hours:
            digested = [
                p for p in plans if (v := out[p.index]) is not None and v.decision.action is Action.DIGEST
            ]
            verdicts = [out[p.index] for p in digested]
            for plan, verdict in zip(
                digested, self._digest_times(candidates, fans, digested, verdicts, now), strict=True
            ):
                out[plan.index] = verdict
        return [v for v in out if v is not None]

    def _digest_times(
        self,
        candidates: Sequence[Candidate],
        fans: Sequence[FanState],
        plans: Sequence[Plan],
        verdicts: Sequence[Verdict | None],
        now: datetime,
    ) -> list[Verdict]:
        """DIGEST verdicts re-timed to the digest hour where the model expects the most from this fan:
        p(open) − p(disable) × disable_cost at the next occurrence of each of `digest_hours`, scored in
        one call for the chunk. Quiet hours are never chosen."""
        del fans  # the question is the fan's habit, not this candidate's volume context
        g, prm = self.params.guard, self.params
        hours = [h for h in prm.digest_hours if not tz.in_window(time(h), g.quiet_start, g.quiet_end)]
        kept = [v for v in verdicts if v is not None]
        if not hours or len(kept) != len(plans):
            return kept
        # Scored as a fan-level question (a plain post, no creator, no volume): every item of the fan
        # then asks the same question and gets the same hour, so a day's items stay one digest.
        generic = [
            replace(candidates[p.index], trigger=Trigger.NEW_POST, creator_id="", relationship=None)
            for p in plans
        ]
        timed = [
            Plan(i, p.zone, [tz.next_wall_time(now, p.zone, time(h)) for h in hours], [False] * len(hours))
            for i, p in enumerate(plans)
        ]
        probs = self.score_instants(generic, [FanState()] * len(plans), timed, now)
        expected = probs[:, :, 0] - probs[:, :, 1] * prm.disable_cost
        out = []
        for plan, verdict, value, p in zip(timed, kept, expected, probs, strict=True):
            best = int(np.argmax(value))
            scores = {**verdict.decision.scores, "digest_p_open": float(p[best, 0])}
            decision = replace(verdict.decision, deliver_at=plan.instants[best], scores=scores)
            out.append(replace(verdict, decision=decision))
        return out

    # ------------------------------------------------------------------------------------------

    def _precheck(self, cand: Candidate, fan: FanState, now: datetime, zone: ZoneInfo) -> Verdict | None:
        g = self.params.guard
        if cand.trigger in g.transactional:
            scores = fan_scores(fan, now, zone, g)
            return Verdict(Decision(cand.notification_id, Action.SEND_NOW, "transactional", None, scores))
        if fan.opted_out:
            return self._verdict(cand, fan, now, zone, Action.DROP, "opted_out")
        if fan.last_same_content is not None and now - fan.last_same_content < g.dedupe_window:
            return self._verdict(cand, fan, now, zone, Action.DROP, "duplicate_content")
        if cand.trigger not in self.params.values:
            return self._verdict(cand, fan, now, zone, Action.DROP, "no_value")
        return None

    def score_instants(
        self, candidates: Sequence[Candidate], fans: Sequence[FanState], plans: Sequence[Plan], now: datetime
    ) -> npt.NDArray[np.float32]:
        """(len(plans), K, 2) [p(open), p(disable)] for each plan's K instants, from one scorer call
        (K is the same for every plan of a call: the horizon's instants, or the digest hours).

        The one place probabilities come from: a reference policy (the benchmark's oracle) overrides it.
        """
        if not plans:
            return np.zeros((0, self.params.horizon_hours + 1, 2), dtype=np.float32)
        k = len(plans[0].instants)  # every plan of one call has the same number of instants
        cands = [candidates[p.index] for p in plans]
        with self._history_lock:
            snaps = [self.history.snapshot(c.fan_id, c.creator_id, now) for c in cands]
        rows = feature_matrix(
            cands, [fans[p.index] for p in plans], snaps, [p.zone for p in plans], [p.instants for p in plans]
        )
        flat = self.scorer.score(rows.reshape(-1, N_FEATURES))
        return np.asarray(flat, dtype=np.float32).reshape(len(plans), k, 2)

    def _choose(
        self,
        cand: Candidate,
        fan: FanState,
        sends: list[datetime],
        plan: Plan,
        probs: npt.NDArray[np.float32],
        now: datetime,
        threshold: float,
    ) -> Verdict:
        g, prm = self.params.guard, self.params
        value = prm.values[cand.trigger]
        ttl = self._max_delay.get(cand.trigger)
        utility = np.full(len(plan.instants), -np.inf)
        blocked_by = ""
        for j, at in enumerate(plan.instants):
            if j > 0 and plan.quiet[j]:
                continue
            if ttl is not None and at - cand.created_at > ttl:
                blocked_by = blocked_by or "expired"
                continue
            if not _spaced(sends, at, g.min_spacing):
                continue
            cap = _cap_hit(sends, at, g)
            if cap:
                blocked_by = blocked_by or cap
                continue
            recent = len(sends) - bisect.bisect_right(sends, at - timedelta(hours=24))
            p_open, p_dis = float(probs[j, 0]), float(probs[j, 1])
            utility[j] = p_open * value - p_dis * prm.disable_cost - prm.fatigue_cost * recent - threshold
        best = int(np.argmax(utility))
        first_ok = int(np.argmax(np.isfinite(utility))) if np.isfinite(utility).any() else -1
        if first_ok >= 0 and utility[best] - utility[first_ok] < prm.delay_gain:
            best = first_ok  # waiting is not worth it: take the earliest allowed instant
        extra = {
            "p_open_now": float(probs[0, 0]),
            "p_disable_now": float(probs[0, 1]),
            "value": value,
            "threshold": threshold,
        }
        if np.isfinite(utility[best]) and utility[best] > 0.0:
            at = plan.instants[best]
            extra.update(utility=float(utility[best]), p_open_at=float(probs[best, 0]))
            if at == now:
                return self._verdict(
                    cand, fan, now, plan.zone, Action.SEND_NOW, "expected_value", extra=extra, spends=at
                )
            extra["delay_minutes"] = (at - now).total_seconds() / 60.0
            reason = "active_hour" if best > 0 else _forced_delay_reason(plan, now, g)
            return self._verdict(cand, fan, now, plan.zone, Action.DELAY_UNTIL, reason, at, extra, spends=at)
        if np.isfinite(utility).any():
            extra["utility"] = float(utility[np.isfinite(utility)].max())
        reason = "below_threshold" if np.isfinite(utility).any() or not blocked_by else blocked_by
        if cand.trigger in g.digestible:
            digest_at = tz.next_wall_time(now, plan.zone, g.digest_time)
            return self._verdict(cand, fan, now, plan.zone, Action.DIGEST, reason, digest_at, extra)
        return self._verdict(cand, fan, now, plan.zone, Action.DROP, reason, extra=extra)

    def _verdict(
        self,
        cand: Candidate,
        fan: FanState,
        now: datetime,
        zone: ZoneInfo,
        action: Action,
        reason: str,
        at: datetime | None = None,
        extra: Mapping[str, float] | None = None,
        *,
        spends: datetime | None = None,
    ) -> Verdict:
        scores = fan_scores(fan, now, zone, self.params.guard)
        scores.update(extra or {})
        decision = Decision(cand.notification_id, action, reason, at, scores)
        return Verdict(decision, send_at=spends, claim_content=action is not Action.DROP)


def _forced_delay_reason(plan: Plan, now: datetime, g: PolicyParams) -> str:
    """Why the earliest allowed instant is later than now: quiet hours or spacing."""
    return "quiet_hours" if tz.is_quiet(now, plan.zone, g.quiet_start, g.quiet_end) else "min_spacing"


def _spaced(sends: Sequence[datetime], at: datetime, spacing: timedelta) -> bool:
    """At least `spacing` from every other send, before and after (scheduled sends may lie ahead)."""
    i = bisect.bisect_left(sends, at)
    if i < len(sends) and sends[i] - at < spacing:
        return False
    return not (i > 0 and at - sends[i - 1] < spacing)


def _cap_hit(sends: Sequence[datetime], at: datetime, g: PolicyParams) -> str:
    """The first cap that a send at `at` would break in any rolling window containing it, or ""."""
    merged: list[datetime] | None = None
    for cap in g.caps:
        # Fast path: fewer sends within ±window than the cap allows cannot fill any window.
        near = bisect.bisect_left(sends, at + cap.window) - bisect.bisect_right(sends, at - cap.window)
        if near < cap.max_sends:
            continue
        merged = merged or sorted((*sends, at))
        # Every window of length W that contains `at` and is maximal starts at a send in (at-W, at].
        lo = bisect.bisect_right(merged, at - cap.window)
        hi = bisect.bisect_right(merged, at)
        for start in merged[lo:hi]:
            count = bisect.bisect_left(merged, start + cap.window) - bisect.bisect_left(merged, start)
            if count > cap.max_sends:
                return cap.name
    return ""
