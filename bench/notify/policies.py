"""The policies compared by the simulator, and the agents that hold their state.

Baselines are `DecisionPolicy`s like the service's own: `SendAll`, `FixedDailyCap(n)`; the tuned
rules are notify_svc.policy.RulePolicy itself. Agents:

- `MemoryAgent`: an in-memory stand-in for the state store (sends in the last 7 days, opt-out, content
  claims), deciding candidates one by one like the store does — or, for a policy with
  `decide_many`, a whole hour as one chunk;
- `EngineAgent`: the service's decision code end to end — notify_svc.engine.NotifyEngine over the real
  EmbeddedNotifyState (sqlite), with a simulated clock; outcomes go through `record_outcome`;
- `LoggingAgent`: the randomised logging policy (the training data and the OPE's log), optionally
  shadowed by a target policy whose choice on each logged state is recorded for the OPE.

`OraclePolicy` is the learned policy's decision code with the model replaced by the simulator's
hidden truth — the upper reference.
"""

from __future__ import annotations

import bisect
import tempfile
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.notify.sim import (
    LIVE_STALE_H,
    VALUES_BY_CODE,
    Choice,
    TruthModel,
    creator_id,
    fan_id,
    hour_of,
    notification_id,
    to_candidate,
)
from bench.notify.world import TRANSACTIONAL, World
from notify_svc import timezones as tz
from notify_svc.domain import (
    Action,
    Candidate,
    CandidateFields,
    Decision,
    FanState,
    Outcome,
    OutcomeEvent,
    Verdict,
    content_key,
)
from notify_svc.engine import NotifyEngine
from notify_svc.features import EngagementHistory, Relationship
from notify_svc.learned import LearnedPolicy, Plan
from notify_svc.policy import DecisionPolicy, PolicyParams
from notify_svc.state import EmbeddedNotifyState, Retention
from trainer.notify_log import LogEvent, MembershipRow

_WEEK = timedelta(days=7)
_TRANSACTIONAL = frozenset(TRANSACTIONAL)


class SendAll:
    """Every candidate at once (opt-out still honoured: no real system ignores it)."""

    def decide(self, candidate: Candidate, fan: FanState, now: datetime) -> Verdict:
        if fan.opted_out and candidate.trigger not in _TRANSACTIONAL:
            return Verdict(Decision(candidate.notification_id, Action.DROP, "opted_out"))
        spends = None if candidate.trigger in _TRANSACTIONAL else now
        return Verdict(Decision(candidate.notification_id, Action.SEND_NOW, "send_all"), send_at=spends)


class FixedDailyCap:
    """At most `cap` sends in any 24 h, first come first served; no quiet hours, no digests."""

    def __init__(self, cap: int) -> None:
        self.cap = cap

    def decide(self, candidate: Candidate, fan: FanState, now: datetime) -> Verdict:
        if candidate.trigger in _TRANSACTIONAL:
            return Verdict(Decision(candidate.notification_id, Action.SEND_NOW, "transactional"))
        if fan.opted_out:
            return Verdict(Decision(candidate.notification_id, Action.DROP, "opted_out"))
        if sum(1 for s in fan.sends if s > now - timedelta(hours=24)) >= self.cap:
            return Verdict(Decision(candidate.notification_id, Action.DROP, "daily_cap"))
        return Verdict(Decision(candidate.notification_id, Action.SEND_NOW, "eligible"), send_at=now)


def relationships(world: World) -> EngagementHistory:
    """A fresh history knowing the observable memberships (what the candidate producer knows)."""
    history = EngagementHistory()
    for f, c in zip(*np.nonzero(world.member), strict=True):
        history.set_relationship(
            fan_id(int(f)), creator_id(int(c)), Relationship(True, int(world.tier[f, c]))
        )
    return history


def memberships(world: World) -> list[MembershipRow]:
    return [
        MembershipRow(fan_id(int(f)), creator_id(int(c)), int(world.tier[f, c]))
        for f, c in zip(*np.nonzero(world.member), strict=True)
    ]


class MemoryAgent:
    """Service-equivalent state in memory; `policy` decides (see module docstring)."""

    def __init__(
        self, world: World, policy: DecisionPolicy, history: EngagementHistory | None = None
    ) -> None:
        self.w = world
        self.policy = policy
        self.history = history
        self.sends: dict[str, list[datetime]] = {}
        self.opted_out: set[str] = set()
        self.claims: dict[tuple[str, str], datetime] = {}
        self._cands: dict[int, Candidate] = {}

    def fan_state(self, cand: Candidate, now: datetime) -> FanState:
        sends = self.sends.get(cand.fan_id, [])
        lo = bisect.bisect_right(sends, now - _WEEK)
        if lo > 64:
            del sends[:lo]
            lo = 0
        claim = self.claims.get((cand.fan_id, content_key(cand)))
        return FanState(
            sends=tuple(sends[lo:]),
            opted_out=cand.fan_id in self.opted_out,
            time_zone=cand.fan_time_zone,
            last_same_content=claim,
        )

    def apply(self, cand: Candidate, verdict: Verdict, now: datetime) -> Choice:
        if verdict.send_at is not None:
            bisect.insort(self.sends.setdefault(cand.fan_id, []), verdict.send_at)
        if verdict.claim_content:
            self.claims[(cand.fan_id, content_key(cand))] = now
        d = verdict.decision
        return Choice(d.action, d.deliver_at or (now if d.action is Action.SEND_NOW else None))

    def decide(self, now: datetime, indices: npt.NDArray[np.int64]) -> list[Choice]:
        cands = [self._candidate(int(i)) for i in indices]
        decide_many = getattr(self.policy, "decide_many", None)
        if decide_many is not None:
            fans = [self.fan_state(c, now) for c in cands]
            verdicts: list[Verdict] = decide_many(cands, fans, now)
            return [self.apply(c, v, now) for c, v in zip(cands, verdicts, strict=True)]
        return [self.apply(c, self.policy.decide(c, self.fan_state(c, now), now), now) for c in cands]

    def _candidate(self, i: int) -> Candidate:
        cand = to_candidate(self.w, i)
        self._cands[i] = cand
        return cand

    def delivered(self, index: int, at: datetime) -> None:
        cand = self._cands.pop(index, None) or to_candidate(self.w, index)
        if self.history is not None and cand.trigger not in _TRANSACTIONAL:
            zone = tz.resolve_zone(cand.fan_time_zone)
            self.history.record_delivery(cand.notification_id, cand.fan_id, cand.creator_id, zone, at)

    def opened(self, index: int, at: datetime) -> None:
        if self.history is not None:
            cand = to_candidate(self.w, index)
            self.history.record_outcome(OutcomeEvent(cand.notification_id, cand.fan_id, Outcome.OPENED, at))

    def disabled(self, index: int, at: datetime) -> None:
        self.opted_out.add(to_candidate(self.w, index).fan_id)


class EngineAgent:
    """NotifyEngine + EmbeddedNotifyState (sqlite in a temporary directory) with a simulated clock."""

    def __init__(
        self, world: World, policy: DecisionPolicy, history: EngagementHistory | None, params: PolicyParams
    ) -> None:
        self.w = world
        self.history = history
        self.now = datetime.fromtimestamp(0).astimezone()
        self._dir = tempfile.TemporaryDirectory(prefix="notify-sim-")
        retention = Retention.for_policy(params.history_window, params.dedupe_window)
        self.state = EmbeddedNotifyState.open(Path(self._dir.name), retention)
        self.engine = NotifyEngine(self.state, policy, clock=lambda: self.now)

    def close(self) -> None:
        self.state.close()
        self._dir.cleanup()

    def decide(self, now: datetime, indices: npt.NDArray[np.int64]) -> list[Choice]:
        self.now = now
        raws = []
        for i in indices.tolist():
            c = to_candidate(self.w, i)
            raws.append(
                CandidateFields(
                    c.notification_id, c.fan_id, c.creator_id, c.post_id, int(c.trigger), int(c.channel),
                    c.created_at, c.fan_time_zone,
                )
            )  # fmt: skip
        decisions = self.engine.decide_batch(raws)
        return [
            Choice(d.action, d.deliver_at or (now if d.action is Action.SEND_NOW else None))
            for d in decisions
        ]

    def delivered(self, index: int, at: datetime) -> None:
        cand = to_candidate(self.w, index)
        self.engine.record_outcome(cand.notification_id, cand.fan_id, int(Outcome.DELIVERED), at)
        if self.history is not None and cand.trigger not in _TRANSACTIONAL:
            zone = tz.resolve_zone(cand.fan_time_zone)
            self.history.record_delivery(cand.notification_id, cand.fan_id, cand.creator_id, zone, at)

    def opened(self, index: int, at: datetime) -> None:
        cand = to_candidate(self.w, index)
        self.engine.record_outcome(cand.notification_id, cand.fan_id, int(Outcome.OPENED), at)
        if self.history is not None:
            self.history.record_outcome(OutcomeEvent(cand.notification_id, cand.fan_id, Outcome.OPENED, at))

    def disabled(self, index: int, at: datetime) -> None:
        cand = to_candidate(self.w, index)
        self.engine.record_outcome(cand.notification_id, cand.fan_id, int(Outcome.DISABLED), at)


# The logging policy's action space: DROP, or deliver `k` whole hours from now, k = 0..LOG_MAX_DELAY.
LOG_MAX_DELAY = 23
LOG_DROP = 0.3


class LoggingAgent(MemoryAgent):
    """Uniformly randomised logging (opt-out and transactional rules only), recording propensities.

    DROP with probability `drop`, else a delivery hour uniform over 0..LOG_MAX_DELAY. A high `drop`
    logs lightly-fatigued fans (the states a good policy keeps them in), a low one heavy volume.

    `log` rows per non-transactional candidate of a fan not opted out: (index, offset, propensity,
    target_offset, target_truth) where offset is −1 for DROP else the delivery hour − decision hour;
    the target columns are filled when a `target` policy shadows the log (−2 = not shadowed) and
    `truth` is set: what the target would have done on this very state, and the true expected reward
    of that action — p(open) × value evaluated when the delivery hour comes, on the state the logging
    run has then (0 if the fan has disabled by then): exactly the quantity IPS/SNIPS estimate.
    """

    def __init__(
        self,
        world: World,
        seed: int,
        history: EngagementHistory,
        target: LearnedPolicy | None = None,
        *,
        drop: float = LOG_DROP,
    ) -> None:
        super().__init__(world, SendAll(), history)
        if not 0.0 < drop < 1.0:
            raise ValueError("drop must be in (0, 1): every action needs a positive propensity")
        self.rng = np.random.default_rng(seed + 104729)
        self.drop = drop
        self.target = target
        self.truth: TruthModel | None = None
        self.disabled_fans: npt.NDArray[np.bool_] | None = None  # the simulation's, set with `truth`
        self.log: list[list[float]] = []
        self.events: list[LogEvent] = []
        self._probes: dict[int, list[tuple[int, int]]] = {}  # hour → (log row, candidate index)

    def delivered(self, index: int, at: datetime) -> None:
        cand = self._cands.get(index) or to_candidate(self.w, index)
        self.events.append(
            LogEvent("delivered", at, cand.notification_id, cand.fan_id, cand.creator_id, int(cand.trigger),
                     cand.fan_time_zone)
        )  # fmt: skip
        super().delivered(index, at)

    def opened(self, index: int, at: datetime) -> None:
        self.events.append(
            LogEvent("opened", at, notification_id(index), fan_id(int(self.w.candidates.fan[index])))
        )
        super().opened(index, at)

    def disabled(self, index: int, at: datetime) -> None:
        self.events.append(
            LogEvent("disabled", at, notification_id(index), fan_id(int(self.w.candidates.fan[index])))
        )
        super().disabled(index, at)

    def decide(self, now: datetime, indices: npt.NDArray[np.int64]) -> list[Choice]:
        cands = [self._candidate(int(i)) for i in indices]
        fans = [self.fan_state(c, now) for c in cands]
        h = hour_of(now)
        targets = [-2] * len(cands)
        if self.target is not None and self.truth is not None:
            targets = self._shadow(cands, fans, now, h)
        out = []
        for k, (i, cand, fan) in enumerate(zip(indices.tolist(), cands, fans, strict=True)):
            if cand.trigger in _TRANSACTIONAL:
                out.append(Choice(Action.SEND_NOW, now))
                continue
            if fan.opted_out:
                out.append(Choice(Action.DROP))
                continue
            if self.rng.random() < self.drop:
                offset, prop = -1, self.drop
                out.append(Choice(Action.DROP, propensity=prop))
            else:
                offset = int(self.rng.integers(0, LOG_MAX_DELAY + 1))
                prop = (1 - self.drop) / (LOG_MAX_DELAY + 1)
                at = now + timedelta(hours=offset)
                bisect.insort(self.sends.setdefault(cand.fan_id, []), at)
                action = Action.SEND_NOW if offset == 0 else Action.DELAY_UNTIL
                out.append(Choice(action, at, prop))
            if targets[k] >= 0:
                self._probes.setdefault(h + targets[k], []).append((len(self.log), i))
            self.log.append([i, offset, prop, targets[k], 0.0])
        return out

    def before_deliveries(self, hour: int) -> None:
        """Evaluates the target's would-be deliveries due this hour on the state the run has now."""
        probes = self._probes.pop(hour, [])
        if not probes or self.truth is None:
            return
        c = self.w.candidates
        idx = np.array([i for _, i in probes], dtype=np.int64)
        p_open, _ = self.truth.probs(c.fan[idx], c.creator[idx], c.trigger[idx], np.full(idx.size, hour))
        values = VALUES_BY_CODE[c.trigger[idx]].copy()
        values[(c.trigger[idx] == 2) & (hour - c.hour[idx] > LIVE_STALE_H)] = 0.0
        if self.disabled_fans is not None:
            values[self.disabled_fans[c.fan[idx]]] = 0.0
        for (row, _), p, v in zip(probes, p_open, values, strict=True):
            self.log[row][4] = float(p * v)

    def _shadow(
        self, cands: Sequence[Candidate], fans: Sequence[FanState], now: datetime, h: int
    ) -> list[int]:
        """The target's choice on this state: delivery hour − h, or −1 (DROP; a DIGEST counts as DROP)."""
        assert self.target is not None
        return [
            hour_of(v.decision.deliver_at or now) - h
            if v.decision.action in (Action.SEND_NOW, Action.DELAY_UNTIL)
            else -1
            for v in self.target.decide_many(cands, fans, now)
        ]


class OraclePolicy(LearnedPolicy):
    """The learned policy's decision code reading the simulator's hidden truth: an UPPER REFERENCE."""

    def __init__(self, world: World, history: EngagementHistory, params: Any = None) -> None:
        super().__init__(_NoScorer(), history, params)
        self.w = world
        self.truth: TruthModel | None = None

    def score_instants(
        self, candidates: Sequence[Candidate], fans: Sequence[FanState], plans: Sequence[Plan], now: datetime
    ) -> npt.NDArray[np.float32]:
        assert self.truth is not None, "set .truth to the simulation's TruthModel"
        if not plans:
            return np.zeros((0, self.params.horizon_hours + 1, 2), dtype=np.float32)
        k = len(plans[0].instants)
        idx = np.array([int(candidates[p.index].notification_id[1:]) for p in plans], dtype=np.int64)
        c = self.w.candidates
        hours = np.array([[hour_of(at) for at in p.instants] for p in plans], dtype=np.int64)
        who, creators, triggers = (np.repeat(a[idx], k) for a in (c.fan, c.creator, c.trigger))
        p_open, p_dis = self.truth.probs(who, creators, triggers, hours.reshape(-1))
        return np.stack([p_open, p_dis], axis=1).astype(np.float32).reshape(len(plans), k, 2)


class _NoScorer:
    def score(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        raise AssertionError("the oracle reads the truth, never a model")
