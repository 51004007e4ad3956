"""The hour-by-hour simulation: a policy decides each hour's candidates, deliveries happen, fans react.

Outcome model (hidden from every policy but the oracle), per delivery at simulated hour h:

    p(open)    = sigmoid(base_f + affinity_fc + trigger_offset − fatigue_open_f · F_f(h) − 0.35 · N_fc(h))
                 × activity_f(local hour)
    p(disable) = sigmoid(disable_f + fatigue_disable_f · F_f(h) + [local 22-08 h] − 0.3 · affinity_fc)

F_f is the fan's recent volume (every non-transactional delivery adds 1, decaying with a 24 h time
constant); N_fc is the novelty debt of this creator for this fan (72 h time constant; all
recommendations share one "platform" bucket), so repetition wears novelty off. A LIVE_STARTED
delivered more than 3 h after it began is stale: p(open) × 0.2 and worth nothing. A digest is one
delivery: p(open) from the best item's affinity + 0.2·log(items) − 0.3, worth
min(0.3·Σ values, 1): at best one post's open.
Transactional messages are always delivered and neither fatigue nor risk a disable. A fan who
disables gets no further non-transactional delivery (the delivery system checks at send time).

Deliveries inside one hour are scored against the state at the start of that hour (vectorised);
the policies see only the events a service would see: DELIVERED, OPENED, DISABLED.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from bench.notify.world import START, TRANSACTIONAL, VALUE_BY_TRIGGER, World, sigmoid
from notify_svc.domain import Action, Candidate, Channel, Trigger

TRIGGER_OFFSET = {
    Trigger.NEW_POST: 0.0,
    Trigger.LIVE_STARTED: 0.3,
    Trigger.CREATOR_RECOMMENDATION: -0.6,
    Trigger.COMMENT_REPLY: 1.0,
    Trigger.PAYMENT_FAILED: 1.5,
    Trigger.MEMBERSHIP_CHANGED: 1.5,
}
FATIGUE_TAU_H = 24.0
NOVELTY_TAU_H = 72.0
NOVELTY_WEIGHT = 0.35
LIVE_STALE_H = 3
QUIET = frozenset({22, 23, 0, 1, 2, 3, 4, 5, 6, 7})
_CODES = max(int(t) for t in Trigger) + 1
_OFFSETS = np.zeros(_CODES)
VALUES_BY_CODE = np.zeros(_CODES)
for _t in Trigger:
    _OFFSETS[int(_t)] = TRIGGER_OFFSET[_t]
    VALUES_BY_CODE[int(_t)] = VALUE_BY_TRIGGER[_t]
_TRANSACTIONAL_CODES = np.array([int(t) for t in TRANSACTIONAL])


def hour_of(instant: datetime) -> int:
    """The simulated hour index an instant falls in."""
    return int((instant - START) // timedelta(hours=1))


def instant_of(hour: int) -> datetime:
    return START + timedelta(hours=hour)


def notification_id(index: int) -> str:
    return f"n{index}"


def fan_id(fan: int) -> str:
    return f"f{fan:06d}"


def creator_id(creator: int) -> str:
    return f"c{creator:05d}"


def to_candidate(world: World, i: int) -> Candidate:
    c = world.candidates
    fan = int(c.fan[i])
    return Candidate(
        notification_id=notification_id(i),
        fan_id=fan_id(fan),
        creator_id=creator_id(int(c.creator[i])),
        post_id=f"p{int(c.post[i])}",
        trigger=Trigger(int(c.trigger[i])),
        channel=Channel.PUSH,
        created_at=instant_of(int(c.hour[i])),
        fan_time_zone=world.zone_name(fan),
    )


@dataclass(frozen=True)
class Choice:
    """What an agent decided for one candidate: the action and, when it delivers, the instant."""

    action: Action
    at: datetime | None = None
    propensity: float = 1.0  # probability the (randomised) agent had of taking this action


class Agent(Protocol):
    """A policy under test plus whatever state store it uses; sees only service-visible events."""

    def decide(self, now: datetime, indices: npt.NDArray[np.int64]) -> list[Choice]: ...

    def delivered(self, index: int, at: datetime) -> None: ...

    def opened(self, index: int, at: datetime) -> None: ...

    def disabled(self, index: int, at: datetime) -> None: ...


class TruthModel:
    """The hidden outcome model and its dynamic state (fatigue, novelty)."""

    def __init__(self, world: World) -> None:
        self.w = world
        self.fatigue = np.zeros(world.n_fans)
        self.fatigue_at = np.zeros(world.n_fans)
        self.novelty = np.zeros((world.n_fans, world.n_creators + 1))
        self.novelty_at = np.zeros((world.n_fans, world.n_creators + 1))

    def bucket(
        self, creators: npt.NDArray[np.int64], triggers: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        rec = triggers == int(Trigger.CREATOR_RECOMMENDATION)
        return np.where(rec, self.w.n_creators, creators)

    def volume(self, fans: npt.NDArray[np.int64], hours: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        dt = np.maximum(hours - self.fatigue_at[fans], 0.0)
        return np.asarray(self.fatigue[fans] * np.exp(-dt / FATIGUE_TAU_H), dtype=np.float64)

    def probs(
        self,
        fans: npt.NDArray[np.int64],
        creators: npt.NDArray[np.int64],
        triggers: npt.NDArray[np.int64],
        hours: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """True p(open) and p(disable) of delivering these items at these (integer) hours, now."""
        w = self.w
        hours_f = hours.astype(np.float64)
        vol = self.volume(fans, hours_f)
        b = self.bucket(creators, triggers)
        ndt = np.maximum(hours_f - self.novelty_at[fans, b], 0.0)
        nov = self.novelty[fans, b] * np.exp(-ndt / NOVELTY_TAU_H)
        aff = w.h_affinity[fans, creators]
        local = w.local_hour[w.zone[fans], np.minimum(hours, w.hours - 1)]
        p_open = (
            sigmoid(
                w.h_base_logit[fans]
                + aff
                + _OFFSETS[triggers]
                - w.h_fatigue_open[fans] * vol
                - NOVELTY_WEIGHT * nov
            )
            * w.h_activity[fans, local]
        )
        quiet = np.isin(local, list(QUIET)).astype(np.float64)
        p_dis = sigmoid(w.h_disable_logit[fans] + w.h_fatigue_disable[fans] * vol + quiet - 0.3 * aff)
        transactional = np.isin(triggers, _TRANSACTIONAL_CODES)
        return p_open, np.where(transactional, 0.0, p_dis)

    def add_deliveries(self, fans: npt.NDArray[np.int64], buckets: npt.NDArray[np.int64], hour: int) -> None:
        for arr, at, idx, tau in (
            (self.fatigue, self.fatigue_at, (fans,), FATIGUE_TAU_H),
            (self.novelty, self.novelty_at, (fans, buckets), NOVELTY_TAU_H),
        ):
            arr[idx] = arr[idx] * np.exp(-np.maximum(hour - at[idx], 0.0) / tau)
            at[idx] = hour
            np.add.at(arr, idx, 1.0)


@dataclass
class Metrics:
    candidates: int = 0
    sends: int = 0  # non-transactional deliveries, digests included
    digests: int = 0
    opens: int = 0
    value: float = 0.0
    direct_opens: int = 0  # opens of single (non-digest) notifications
    direct_value: float = 0.0
    disables: int = 0
    quiet_hour_sends: int = 0
    transactional_total: int = 0
    transactional_delivered: int = 0
    stale_live: int = 0
    decisions: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def summary(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "sends": self.sends,
            "digests": self.digests,
            "opens": self.opens,
            "disables": self.disables,
            "value": round(self.value, 3),
            "opens_per_send": round(self.opens / self.sends, 5) if self.sends else 0.0,
            "direct_opens": self.direct_opens,
            "direct_value": round(self.direct_value, 3),
            "quiet_hour_sends": self.quiet_hour_sends,
            "transactional_delivery": (
                self.transactional_delivered / self.transactional_total if self.transactional_total else 1.0
            ),
            "stale_live_sends": self.stale_live,
            "decisions": dict(self.decisions),
        }


@dataclass
class _Pending:
    index: int
    at: datetime


class Simulation:
    """Runs one agent through one world; `seed` fixes the outcome draws."""

    def __init__(self, world: World, agent: Agent, seed: int, *, progress: bool = False) -> None:
        self.w = world
        self.agent = agent
        self.rng = np.random.default_rng(seed + 7919)
        self.truth = TruthModel(world)
        self.disabled = np.zeros(world.n_fans, dtype=bool)
        self.metrics = Metrics()
        self.progress = progress
        n = len(world.candidates)
        # Per candidate: delivered, opened and the value it had (the OPE's rewards).
        self.item_delivered = np.zeros(n, dtype=bool)
        self.item_opened = np.zeros(n, dtype=bool)
        self.item_value = np.zeros(n)
        self._due: dict[int, list[_Pending]] = defaultdict(list)
        self._digests: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))

    def run(self) -> Metrics:
        c = self.w.candidates
        bounds = np.searchsorted(c.hour, np.arange(self.w.hours + 1))
        for h in range(self.w.hours):
            indices = np.arange(bounds[h], bounds[h + 1])
            now = instant_of(h)
            if indices.size:
                self._decide(now, h, indices)
            before = getattr(self.agent, "before_deliveries", None)
            if before is not None:
                before(h)  # lets a logging agent probe the truth at this hour's state
            self._deliver(h)
            if self.progress and h % 120 == 119:
                m = self.metrics
                print(
                    f"    day {(h + 1) // 24:2d}: sends {m.sends} opens {m.opens} disables {m.disables}",
                    flush=True,
                )
        return self.metrics

    def _decide(self, now: datetime, h: int, indices: npt.NDArray[np.int64]) -> None:
        c = self.w.candidates
        choices = self.agent.decide(now, indices)
        self.metrics.candidates += indices.size
        for i, choice in zip(indices.tolist(), choices, strict=True):
            self.metrics.decisions[choice.action.name] += 1
            trig = int(c.trigger[i])
            if trig in _TRANSACTIONAL_CODES:
                self.metrics.transactional_total += 1
            if choice.action in (Action.SEND_NOW, Action.DELAY_UNTIL):
                at = choice.at or now
                self._due[max(hour_of(at), h)].append(_Pending(i, at))
            elif choice.action is Action.DIGEST and choice.at is not None:
                self._digests[max(hour_of(choice.at), h)][int(c.fan[i])].append(i)

    def _deliver(self, h: int) -> None:
        c, w, m = self.w.candidates, self.w, self.metrics
        due = self._due.pop(h, [])
        digests = self._digests.pop(h, {})
        items = [
            p for p in due if not self.disabled[c.fan[p.index]] or c.trigger[p.index] in _TRANSACTIONAL_CODES
        ]
        digest_fans = [f for f in digests if not self.disabled[f]]
        if not items and not digest_fans:
            return
        idx = np.array([p.index for p in items], dtype=np.int64)
        fans = np.concatenate([c.fan[idx], np.array(digest_fans, dtype=np.int64)])
        trig = np.concatenate([c.trigger[idx], np.full(len(digest_fans), int(Trigger.NEW_POST))])
        creators = c.creator[idx]
        values = VALUES_BY_CODE[c.trigger[idx]].copy()
        stale = (c.trigger[idx] == int(Trigger.LIVE_STARTED)) & (h - c.hour[idx] > LIVE_STALE_H)
        values[stale] = 0.0
        m.stale_live += int(stale.sum())
        # Digests: the best item's creator stands for the message; value from all items.
        d_creators, d_values, d_bonus = [], [], []
        for f in digest_fans:
            its = np.array(digests[f], dtype=np.int64)
            best = its[np.argmax(w.h_affinity[f, c.creator[its]])]
            d_creators.append(int(c.creator[best]))
            d_values.append(min(0.3 * float(VALUES_BY_CODE[c.trigger[its]].sum()), 1.0))
            d_bonus.append(0.2 * np.log(len(its)))
        creators = np.concatenate([creators, np.array(d_creators, dtype=np.int64)])
        hours = np.full(fans.size, h, dtype=np.int64)
        p_open, p_dis = self.truth.probs(fans, creators, trig, hours)
        n_items = idx.size
        if digest_fans:
            # Recompute digest open odds with the size bonus and the "digest" discount (−0.3).
            base = p_open[n_items:] / np.maximum(
                w.h_activity[fans[n_items:], w.local_hour[w.zone[fans[n_items:]], h]], 1e-9
            )
            logit = np.log(base / (1 - base)) + np.array(d_bonus) - 0.3
            p_open[n_items:] = (
                sigmoid(logit) * w.h_activity[fans[n_items:], w.local_hour[w.zone[fans[n_items:]], h]]
            )
        p_open[:n_items][stale] *= 0.2
        opened = self.rng.random(fans.size) < p_open
        disabled = self.rng.random(fans.size) < p_dis
        values = np.concatenate([values, np.array(d_values)])
        transactional = np.isin(trig, _TRANSACTIONAL_CODES)
        transactional[n_items:] = False
        local = w.local_hour[w.zone[fans], h]
        quiet = np.isin(local, list(QUIET))
        regular = ~transactional
        m.sends += int(regular.sum())
        m.digests += len(digest_fans)
        m.opens += int((opened & regular).sum())
        m.value += float((values * (opened & regular)).sum())
        m.direct_opens += int((opened[:n_items] & regular[:n_items]).sum())
        m.direct_value += float((values[:n_items] * (opened[:n_items] & regular[:n_items])).sum())
        m.quiet_hour_sends += int((quiet & regular).sum())
        m.transactional_delivered += int(transactional.sum())
        self.item_delivered[idx] = True
        self.item_opened[idx] = opened[:n_items]
        self.item_value[idx] = values[:n_items]
        self.truth.add_deliveries(fans[regular], self.truth.bucket(creators[regular], trig[regular]), h)
        # Events, as the service would see them, in time order within the hour.
        for j, p in enumerate(items):
            self.agent.delivered(p.index, p.at)
            if opened[j]:
                self.agent.opened(p.index, p.at + timedelta(minutes=float(self.rng.uniform(1, 50))))
        for k in np.nonzero(disabled & regular)[0]:
            f = int(fans[k])
            if self.disabled[f]:
                continue
            self.disabled[f] = True
            m.disables += 1
            ref = items[k].index if k < n_items else digests[f][0]
            self.agent.disabled(ref, instant_of(h) + timedelta(minutes=55))
