"""The rule-based notification policy: pure decision logic, no I/O, no clock of its own.

`RulePolicy.decide(candidate, fan, now)` looks only at its arguments, so the same code runs in the
service, in property tests and in a simulator. The store calls it inside its atomic
read-decide-record step (see state.py), which is what makes caps hold under concurrency.

Rules, in order (the first that applies decides):

1. transactional triggers (payment failed, membership changed) → SEND_NOW "transactional";
   they bypass every fatigue rule and do not spend the fan's budget;
2. the fan disabled notifications → DROP "opted_out";
3. the same (creator, post, trigger) already delivered to this fan within `dedupe_window`
   → DROP "duplicate_content";
4. the earliest allowed instant is now, pushed past `min_spacing` after the fan's latest send
   (sent or scheduled) and then out of the quiet window in the fan's own time zone;
5. at that instant a rolling-window cap would be exceeded → DIGEST at the next digest time for
   low-value triggers, DROP otherwise; the reason names the cap ("daily_cap", "weekly_cap");
6. a time-sensitive trigger (a live stream) that could only be delivered after it went stale
   → DROP "expired";
7. otherwise SEND_NOW "eligible", or DELAY_UNTIL that instant with reason "quiet_hours" or
   "min_spacing" (whichever constraint set the time).

Because every new send lands after all earlier ones (rule 4), checking each cap only over the
window ending at the new send keeps every rolling window within its cap.

A learned policy (issue 5) is another `DecisionPolicy`: it keeps rules 1-3 and the caps as
guardrails and replaces "send as soon as allowed" with expected value of opens against the
cost of disables; the reason and scores fields already carry what it needs to explain itself.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from notify_svc import timezones as tz
from notify_svc.domain import Action, Candidate, Decision, FanState, Trigger, Verdict


class DecisionPolicy(Protocol):
    """Decides one candidate given the fan's state at the instant `now` (aware UTC)."""

    def decide(self, candidate: Candidate, fan: FanState, now: datetime) -> Verdict: ...


@dataclass(frozen=True)
class CapRule:
    """At most `max_sends` non-transactional deliveries in any rolling `window`; `name` is the reason."""

    name: str
    window: timedelta
    max_sends: int


@dataclass(frozen=True)
class PolicyParams:
    """Policy knobs. The defaults are a conservative starting point, not tuned values."""

    # Local wall-clock quiet window [start, end), may wrap midnight: nothing non-urgent is sent.
    quiet_start: time = time(22, 0)
    quiet_end: time = time(8, 0)
    # Rolling-window volume caps; the 24 h one is the "3 a day" that already beats send-everything.
    caps: tuple[CapRule, ...] = (
        CapRule("daily_cap", timedelta(hours=24), 3),
        CapRule("weekly_cap", timedelta(days=7), 12),
    )
    # Minimum gap between two deliveries to the same fan, so a burst of posts is not a burst of pings.
    min_spacing: timedelta = timedelta(minutes=30)
    # Local time the digest of over-cap low-value items goes out; must be outside the quiet window.
    digest_time: time = time(18, 0)
    # Triggers that go to the digest when over cap; the others are dropped (a stale "live now" or
    # a reply notification bundled hours later is worth less than the fatigue it costs).
    digestible: frozenset[Trigger] = frozenset({Trigger.NEW_POST, Trigger.CREATOR_RECOMMENDATION})
    # Allow-listed service messages: always sent at once, never counted against the fan's budget.
    transactional: frozenset[Trigger] = frozenset({Trigger.PAYMENT_FAILED, Trigger.MEMBERSHIP_CHANGED})
    # Same (creator, post, trigger) for a fan within this window is sent at most once.
    dedupe_window: timedelta = timedelta(hours=24)
    # Time-sensitive triggers are dropped rather than delivered this long after they were created.
    max_delay: tuple[tuple[Trigger, timedelta], ...] = ((Trigger.LIVE_STARTED, timedelta(hours=3)),)
    # Zone used when neither the candidate nor earlier candidates for the fan carried one.
    default_time_zone: str = "UTC"
    # Candidates created further in the future than this are rejected (clock skew allowance).
    max_future_skew: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        if not self.caps:
            raise ValueError("at least one cap is required")
        for cap in self.caps:
            if cap.max_sends < 1 or cap.window <= timedelta(0):
                raise ValueError(f"cap {cap.name}: needs max_sends >= 1 and a positive window")
        if not timedelta(0) <= self.min_spacing < timedelta(hours=24):
            raise ValueError("min_spacing must be in [0, 24h)")
        if tz.in_window(self.digest_time, self.quiet_start, self.quiet_end):
            raise ValueError("digest_time must be outside the quiet window")
        if self.digestible & self.transactional:
            raise ValueError("a trigger cannot be both transactional and digestible")
        tz.resolve_zone(self.default_time_zone, "default_time_zone")

    @property
    def history_window(self) -> timedelta:
        """How far back the policy looks at a fan's sends: the longest cap window."""
        return max(cap.window for cap in self.caps)


class RulePolicy:
    """Hand-written rules over caps, spacing, quiet hours, opt-out and dedupe (see module docstring)."""

    def __init__(self, params: PolicyParams | None = None) -> None:
        self.params = params or PolicyParams()
        self._max_delay = dict(self.params.max_delay)

    def decide(self, candidate: Candidate, fan: FanState, now: datetime) -> Verdict:
        p = self.params
        zone = tz.resolve_zone(candidate.fan_time_zone or fan.time_zone or p.default_time_zone)
        scores = fan_scores(fan, now, zone, p)

        def verdict(
            action: Action, reason: str, at: datetime | None = None, *, spends: bool = False
        ) -> Verdict:
            decision = Decision(candidate.notification_id, action, reason, at, scores)
            send_at = (at or now) if spends else None
            return Verdict(decision, send_at=send_at, claim_content=action is not Action.DROP)

        if candidate.trigger in p.transactional:
            # Not a content claim: a second payment failure is a new fact, not a duplicate.
            return Verdict(
                Decision(candidate.notification_id, Action.SEND_NOW, "transactional", None, scores)
            )
        if fan.opted_out:
            return verdict(Action.DROP, "opted_out")
        if fan.last_same_content is not None and now - fan.last_same_content < p.dedupe_window:
            return verdict(Action.DROP, "duplicate_content")

        earliest = now
        if fan.sends:
            earliest = max(now, fan.sends[-1] + p.min_spacing)
        at = tz.quiet_end(earliest, zone, p.quiet_start, p.quiet_end)

        for cap in p.caps:
            if len(fan.sends) - bisect.bisect_right(fan.sends, at - cap.window) >= cap.max_sends:
                if candidate.trigger in p.digestible:
                    return verdict(Action.DIGEST, cap.name, tz.next_wall_time(now, zone, p.digest_time))
                return verdict(Action.DROP, cap.name)

        ttl = self._max_delay.get(candidate.trigger)
        if ttl is not None and at - candidate.created_at > ttl:
            return verdict(Action.DROP, "expired")

        if at == now:
            return verdict(Action.SEND_NOW, "eligible", spends=True)
        scores["delay_minutes"] = (at - now).total_seconds() / 60.0
        reason = "quiet_hours" if at != earliest else "min_spacing"
        return verdict(Action.DELAY_UNTIL, reason, at, spends=True)


def fan_scores(fan: FanState, now: datetime, zone: ZoneInfo, params: PolicyParams) -> dict[str, float]:
    """The numbers behind a decision, for callers, the console and later the learned policy.

    `sends_<N>h` counts sends in the last N hours including ones scheduled after now;
    `hours_since_last` is relative to the latest send and is negative when that one is scheduled;
    it is absent when the fan has no sends in the history window.
    """
    scores: dict[str, float] = {}
    sends = fan.sends  # ascending (FanState's contract), so each window's count is one bisection
    for name, window in _cap_score_names(params.caps):
        scores[name] = float(len(sends) - bisect.bisect_right(sends, now - window))
    if sends:
        scores["hours_since_last"] = (now - sends[-1]).total_seconds() / 3600.0
    wall = tz.local_wall(now, zone)
    scores["local_hour"] = wall.hour + wall.minute / 60.0
    scores["quiet_hours"] = float(tz.in_window(wall.time(), params.quiet_start, params.quiet_end))
    scores["opted_out"] = float(fan.opted_out)
    return scores


@functools.lru_cache(maxsize=64)
def _cap_score_names(caps: tuple[CapRule, ...]) -> tuple[tuple[str, timedelta], ...]:
    return tuple((f"sends_{cap.window.total_seconds() / 3600.0:g}h", cap.window) for cap in caps)
