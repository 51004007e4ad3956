"""The volume controller on synthetic streams: converges to the target rate, stays there, follows a
change of load; and in the engine: drives the policy's threshold, stamps it on decisions, exports it."""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from notify_testkit import T0, Clock, fields
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from notify_svc.controller import (
    METRIC_SEND_RATE,
    METRIC_THRESHOLD,
    ControllerParams,
    VolumeController,
    counts_as_send,
)
from notify_svc.domain import Action, Candidate, Decision, FanState, Trigger, Verdict
from notify_svc.engine import NotifyEngine
from notify_svc.state import NotifyState

MINUTE = timedelta(minutes=1)


def private_meter() -> tuple[VolumeControllerFactory, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    return VolumeControllerFactory(provider), reader


class VolumeControllerFactory:
    def __init__(self, provider: MeterProvider) -> None:
        self._provider = provider

    def __call__(self, params: ControllerParams, initial: float = 0.5) -> VolumeController:
        return VolumeController(params, initial, meter=self._provider.get_meter("test"))


def decisions(n_sends: int, n_drops: int) -> list[Decision]:
    return [Decision(f"s{i}", Action.SEND_NOW, "eligible") for i in range(n_sends)] + [
        Decision(f"d{i}", Action.DROP, "below_threshold") for i in range(n_drops)
    ]


def run_stream(
    controller: VolumeController, arrivals_per_minute: Sequence[int], rng: random.Random, start: datetime
) -> tuple[list[float], list[float]]:
    """Each minute, candidates with uniform scores; those at or above the threshold are sent.

    Returns the per-minute send rates and thresholds. The controller sees only the decisions.
    """
    rates, thresholds = [], []
    now = start
    threshold = controller.threshold
    for arrivals in arrivals_per_minute:
        # Ten batches a minute, each decided at the threshold in effect when it arrives.
        sent = 0
        for _ in range(10):
            n = arrivals // 10
            sends = sum(1 for _ in range(n) if rng.random() >= threshold)
            sent += sends
            now += MINUTE / 10
            threshold = controller.observe(decisions(sends, n - sends), now)
        rates.append(float(sent))
        thresholds.append(threshold)
    return rates, thresholds


def test_converges_to_the_target_rate_and_stays_stable() -> None:
    make, _ = private_meter()
    controller = make(ControllerParams(target_per_minute=200))
    rates, thresholds = run_stream(controller, [1000] * 120, random.Random(7), T0)
    # The plant: 1000 candidates a minute, uniform scores → the threshold that holds 200/min is 0.8.
    tail_rates, tail_thresholds = rates[60:], thresholds[60:]
    assert abs(statistics.mean(tail_rates) - 200) / 200 < 0.05
    assert abs(statistics.mean(tail_thresholds) - 0.8) < 0.03
    assert statistics.pstdev(tail_thresholds) < 0.02  # stable, not oscillating
    assert rates[0] > 400  # it started far off (threshold 0.5 → ~500/min), so it really moved


def test_follows_a_step_in_load() -> None:
    make, _ = private_meter()
    controller = make(ControllerParams(target_per_minute=200))
    rates, thresholds = run_stream(controller, [1000] * 60 + [4000] * 90, random.Random(11), T0)
    # Four times the candidates: the threshold must rise to ≈ 0.95 to hold the same 200/min.
    assert abs(statistics.mean(rates[-30:]) - 200) / 200 < 0.07
    assert thresholds[-1] > 0.9 > thresholds[59]


def test_the_threshold_stays_within_bounds_and_recovers_without_windup() -> None:
    make, _ = private_meter()
    params = ControllerParams(target_per_minute=2000, low=0.1, high=0.9)
    controller = make(params)
    # Unreachable target (only 1000 candidates a minute): pinned at the low bound...
    _, thresholds = run_stream(controller, [1000] * 60, random.Random(3), T0)
    assert min(thresholds) >= 0.1 and thresholds[-1] == pytest.approx(0.1)
    # ...and when the load comes back the rate is held again within minutes, not after unwinding.
    rates, _ = run_stream(controller, [8000] * 40, random.Random(4), T0 + 60 * MINUTE)
    assert abs(statistics.mean(rates[-15:]) - 2000) / 2000 < 0.07


def test_only_fresh_non_transactional_sends_count() -> None:
    assert counts_as_send(Decision("a", Action.SEND_NOW, "eligible"))
    assert counts_as_send(Decision("b", Action.DELAY_UNTIL, "quiet_hours"))
    assert not counts_as_send(Decision("c", Action.SEND_NOW, "transactional"))
    assert not counts_as_send(Decision("d", Action.SEND_NOW, "eligible", duplicate=True))
    assert not counts_as_send(Decision("e", Action.DIGEST, "daily_cap"))


class ThresholdPolicy:
    """Sends a candidate whose (hash-derived, fixed) score beats the threshold; scores many at once."""

    def __init__(self) -> None:
        self.threshold = 0.5
        self.batch_calls = 0

    def score(self, candidate: Candidate) -> float:
        return random.Random(candidate.notification_id).random()

    def decide(self, candidate: Candidate, fan: FanState, now: datetime) -> Verdict:
        return self.decide_many([candidate], [fan], now)[0]

    def decide_many(
        self, candidates: Sequence[Candidate], fans: Sequence[FanState], now: datetime
    ) -> list[Verdict]:
        self.batch_calls += 1
        out = []
        for c in candidates:
            s = self.score(c)
            action = Action.SEND_NOW if s >= self.threshold else Action.DROP
            decision = Decision(c.notification_id, action, "model", scores={"p_open": s})
            out.append(Verdict(decision, send_at=now if action is Action.SEND_NOW else None))
        return out


def test_the_engine_drives_the_policy_threshold_and_reports_it(store: NotifyState) -> None:
    make, reader = private_meter()
    controller = make(ControllerParams(target_per_minute=100), initial=0.2)
    policy = ThresholdPolicy()
    clock = Clock()
    engine = NotifyEngine(store, policy, clock=clock, controller=controller)
    for minute in range(30):
        batch = [fields(f"m{minute}-{i}", f"fan-{minute}-{i}", Trigger.NEW_POST) for i in range(400)]
        out = engine.decide_batch(batch)
        clock.advance(minutes=1)
    # 400 candidates a minute, target 100 → threshold ≈ 0.75; uniform scores make that the answer.
    assert policy.threshold == pytest.approx(0.75, abs=0.06)
    assert policy.batch_calls >= 30  # scored through decide_many, wave by wave
    sent = sum(1 for d in out if d.action is Action.SEND_NOW)
    assert 60 <= sent <= 140
    assert out[0].scores["threshold"] == pytest.approx(controller.threshold, abs=0.1)
    assert out[0].scores["target_sends_per_min"] == 100
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, float] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                point = m.data.data_points[0]
                assert isinstance(point, NumberDataPoint)
                points[m.name] = point.value
    assert points[METRIC_THRESHOLD] == pytest.approx(policy.threshold)
    assert points[METRIC_SEND_RATE] == pytest.approx(controller.observed_per_minute)


def test_a_controller_needs_a_thresholded_policy(store: NotifyState) -> None:
    from notify_svc.policy import RulePolicy

    make, _ = private_meter()
    with pytest.raises(ValueError, match="threshold"):
        NotifyEngine(store, RulePolicy(), controller=make(ControllerParams(target_per_minute=1)))


def test_the_server_reads_the_controller_config_and_refuses_bad_ones(tmp_path: Path) -> None:
    from notify_svc.policy import RulePolicy
    from notify_svc.server import load_controller

    path = tmp_path / "notify.json"
    assert load_controller(path, ThresholdPolicy()) is None  # no file: no controller
    path.write_text(json.dumps({"target_sends_per_minute": 50, "interval_s": 30}))
    controller = load_controller(path, ThresholdPolicy())
    assert controller is not None
    assert controller.params.target_per_minute == 50 and controller.params.interval == timedelta(seconds=30)
    with pytest.raises(ValueError, match="threshold"):
        load_controller(path, RulePolicy())
    path.write_text(json.dumps({"target_sends_per_minute": 50, "kq": 1}))
    with pytest.raises(ValueError, match="kq"):
        load_controller(path, ThresholdPolicy())


class StampingPolicy(ThresholdPolicy):
    """Stamps the threshold it compared with, as LearnedPolicy does."""

    def decide_many(
        self, candidates: Sequence[Candidate], fans: Sequence[FanState], now: datetime
    ) -> list[Verdict]:
        used = self.threshold
        return [
            dataclasses.replace(
                v, decision=dataclasses.replace(v.decision, scores={**v.decision.scores, "threshold": used})
            )
            for v in super().decide_many(candidates, fans, now)
        ]


def test_a_decision_shows_the_threshold_the_policy_used_not_the_controllers_current_one(
    store: NotifyState,
) -> None:
    make, _ = private_meter()
    controller = make(ControllerParams(target_per_minute=100), initial=0.2)
    policy = StampingPolicy()
    engine = NotifyEngine(store, policy, clock=Clock(), controller=controller)
    policy.threshold = 0.9  # e.g. moved by another stream's batch since the controller last observed
    out = engine.decide_batch([fields("s-1", "fan-s", Trigger.NEW_POST)])
    assert out[0].scores["threshold"] == 0.9 != controller.threshold
    assert out[0].scores["target_sends_per_min"] == 100
