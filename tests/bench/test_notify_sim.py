"""The notification simulator, its agents and the off-policy estimators, on small worlds (seconds)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
import pytest

from bench.notify.ope import ips_snips
from bench.notify.policies import (
    LOG_DROP,
    LOG_MAX_DELAY,
    EngineAgent,
    FixedDailyCap,
    LoggingAgent,
    MemoryAgent,
    OraclePolicy,
    SendAll,
    relationships,
)
from bench.notify.sim import QUIET, Choice, Simulation, TruthModel, hour_of
from bench.notify.world import START, TRANSACTIONAL, ZONES, World, WorldConfig, local_hour_table, make_world
from notify_svc.domain import Action
from notify_svc.features import NOTIFY_FEATURES
from notify_svc.learned import LearnedParams, LearnedPolicy
from notify_svc.policy import RulePolicy

SMALL = WorldConfig(fans=60, days=4)
COL = {name: i for i, name in enumerate(NOTIFY_FEATURES)}


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(3, SMALL)


class Recording:
    """Wraps an agent and keeps what the simulation delivered, per fan, and when fans disabled."""

    def __init__(self, inner: MemoryAgent) -> None:
        self.inner = inner
        self.delivered_at: dict[int, list[datetime]] = defaultdict(list)
        self.disabled_at: dict[int, datetime] = {}

    def decide(self, now: datetime, indices: npt.NDArray[np.int64]) -> list[Choice]:
        return self.inner.decide(now, indices)

    def delivered(self, index: int, at: datetime) -> None:
        self.delivered_at[index].append(at)
        self.inner.delivered(index, at)

    def opened(self, index: int, at: datetime) -> None:
        self.inner.opened(index, at)

    def disabled(self, index: int, at: datetime) -> None:
        self.disabled_at[int(self.inner.w.candidates.fan[index])] = at
        self.inner.disabled(index, at)


def test_worlds_are_deterministic_per_seed_and_candidates_sorted_by_hour() -> None:
    a, b, c = make_world(5, SMALL), make_world(5, SMALL), make_world(6, SMALL)
    for name in ("hour", "fan", "creator", "trigger", "post"):
        np.testing.assert_array_equal(getattr(a.candidates, name), getattr(b.candidates, name))
    np.testing.assert_array_equal(a.h_base_logit, b.h_base_logit)
    assert len(a.candidates) != len(c.candidates) or not np.array_equal(a.candidates.fan, c.candidates.fan)
    assert np.all(np.diff(a.candidates.hour) >= 0)
    assert set(np.unique(a.candidates.trigger)) >= {1, 2, 3, 4}


def test_local_hours_follow_daylight_saving() -> None:
    table = local_hour_table(24 * 8)
    ny = ZONES.index("America/New_York")
    # 2026-03-08 06:00 UTC is 01:00 EST; one hour later the clocks jump to 03:00 EDT.
    h = hour_of(datetime(2026, 3, 8, 6, tzinfo=START.tzinfo))
    assert (table[ny, h], table[ny, h + 1]) == (1, 3)


def test_baselines_deliver_every_transactional_and_respect_their_rules(world: World) -> None:
    c = world.candidates
    results = {}
    for name, policy in (("send_all", SendAll()), ("cap1", FixedDailyCap(1)), ("rules", RulePolicy())):
        agent = Recording(MemoryAgent(world, policy))
        m = Simulation(world, agent, 3).run()  # type: ignore[arg-type]
        results[name] = m
        assert m.transactional_total > 0 and m.transactional_delivered == m.transactional_total
        per_fan: dict[int, list[datetime]] = defaultdict(list)
        for index, ats in agent.delivered_at.items():
            if int(c.trigger[index]) in {int(t) for t in TRANSACTIONAL}:
                continue
            fan = int(c.fan[index])
            for at in ats:
                per_fan[fan].append(at)
                disabled = agent.disabled_at.get(fan)
                assert disabled is None or at <= disabled, "delivered after the fan disabled"
        if name == "cap1":
            for ats in per_fan.values():
                ats.sort()
                assert all(b - a >= timedelta(hours=24) for a, b in itertools.pairwise(ats))
    assert results["rules"].quiet_hour_sends == 0
    assert results["send_all"].quiet_hour_sends > 0
    assert results["send_all"].sends > results["cap1"].sends


def test_volume_raises_the_true_disable_probability_and_lowers_opens(world: World) -> None:
    truth = TruthModel(world)
    fans = np.arange(10)
    creators = np.argmax(world.follows[:10], axis=1)
    triggers = np.ones(10, dtype=np.int64)
    hours = np.full(10, 30)
    open0, dis0 = truth.probs(fans, creators, triggers, hours)
    for _ in range(5):
        truth.add_deliveries(fans, creators, 29)
    open1, dis1 = truth.probs(fans, creators, triggers, hours)
    assert np.all(dis1 > dis0) and np.all(open1 < open0)


def test_oracle_reads_the_truth_and_keeps_the_guardrails(world: World) -> None:
    history = relationships(world)
    oracle = OraclePolicy(world, history, LearnedParams())
    agent = MemoryAgent(world, oracle, history)
    sim = Simulation(world, agent, 3)
    oracle.truth = sim.truth
    m = sim.run()
    assert m.quiet_hour_sends == 0 and m.transactional_delivered == m.transactional_total
    assert m.decisions["DELAY_UNTIL"] > 0  # it uses timing


class HourScorer:
    """A deterministic stand-in model: evenings are better, volume risks disables."""

    def score(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        evening = rows[:, COL["hour_sin"]] < -0.5
        p_open = np.where(evening, 0.08, 0.03)
        p_dis = 0.001 * np.expm1(rows[:, COL["sends_24h_log"]])
        return np.stack([p_open, p_dis], axis=1).astype(np.float32)


def test_learned_policy_runs_through_the_real_engine_and_state(world: World) -> None:
    params = LearnedParams()
    history = relationships(world)
    agent = EngineAgent(world, LearnedPolicy(HourScorer(), history, params), history, params.guard)
    try:
        m = Simulation(world, agent, 3).run()
    finally:
        agent.close()
    assert m.sends > 0 and m.quiet_hour_sends == 0
    assert m.transactional_delivered == m.transactional_total


def test_logging_agent_randomises_with_the_propensities_it_records(world: World) -> None:
    agent = LoggingAgent(world, 3, relationships(world))
    Simulation(world, agent, 3).run()
    rows = np.array(agent.log)
    offsets, props = rows[:, 1].astype(int), rows[:, 2]
    assert set(np.unique(offsets)) <= set(range(-1, LOG_MAX_DELAY + 1))
    np.testing.assert_allclose(props[offsets == -1], LOG_DROP)
    np.testing.assert_allclose(props[offsets >= 0], (1 - LOG_DROP) / (LOG_MAX_DELAY + 1))
    assert abs(np.mean(offsets == -1) - LOG_DROP) < 0.05
    assert {e.kind for e in agent.events} >= {"delivered", "opened"}
    assert all(e.at >= START for e in agent.events)


def test_ips_and_snips_recover_a_known_policy_value() -> None:
    rng = np.random.default_rng(0)
    n = 40_000
    means = np.array([0.0, 0.3, 0.1])  # action 0 = drop, 1 and 2 = two delivery times
    logged = rng.choice(3, size=n, p=[0.3, 0.35, 0.35])
    prop = np.array([0.3, 0.35, 0.35])[logged]
    reward = rng.binomial(1, means[logged]).astype(float)
    target = np.where(rng.random(n) < 0.5, 1, 2)  # true value 0.5·0.3 + 0.5·0.1 = 0.2
    ips, snips = ips_snips(logged, prop, reward, target, resamples=100)
    for est in (ips, snips):
        assert est.ci_low < 0.2 < est.ci_high and abs(est.value - 0.2) < 0.02
    never = ips_snips(logged, prop, reward, np.full(n, 7), resamples=10)[0]
    assert never.value == 0.0
    with pytest.raises(ValueError):
        ips_snips(logged, np.zeros(n), reward, target)


def test_a_group_bootstrap_widens_the_interval_when_rows_of_a_group_share_their_outcome() -> None:
    # 400 "fans" of 50 rows each; a fan either always or never rewards: rows are far from independent.
    rng = np.random.default_rng(1)
    fans, per_fan = 400, 50
    groups = np.repeat(np.arange(fans), per_fan)
    responsive = rng.random(fans) < 0.2
    logged = rng.choice(2, size=groups.size, p=[0.5, 0.5])
    prop = np.full(groups.size, 0.5)
    reward = (responsive[groups] & (logged == 1)).astype(float)
    target = np.ones(groups.size, dtype=np.int64)  # true value: share of responsive fans ≈ 0.2
    by_row = ips_snips(logged, prop, reward, target, resamples=300)[0]
    by_fan = ips_snips(logged, prop, reward, target, groups=groups, resamples=300)[0]
    assert by_fan.value == by_row.value  # the point estimate does not depend on the grouping
    assert by_fan.ci_high - by_fan.ci_low > 3 * (by_row.ci_high - by_row.ci_low)
    assert by_fan.ci_low < responsive.mean() < by_fan.ci_high
    with pytest.raises(ValueError, match="groups"):
        ips_snips(logged, prop, reward, target, groups=groups[:-1])


def test_the_logging_drop_rate_is_a_parameter_and_its_propensities_follow(world: World) -> None:
    agent = LoggingAgent(world, 5, relationships(world), drop=0.8)
    Simulation(world, agent, 5).run()
    rows = np.array(agent.log)
    offsets, props = rows[:, 1], rows[:, 2]
    np.testing.assert_allclose(props[offsets == -1], 0.8)
    np.testing.assert_allclose(props[offsets >= 0], 0.2 / (LOG_MAX_DELAY + 1))
    assert abs(np.mean(offsets == -1) - 0.8) < 0.05
    with pytest.raises(ValueError, match="drop"):
        LoggingAgent(world, 5, relationships(world), drop=1.0)


def test_quiet_set_matches_the_policy_default() -> None:
    from notify_svc.policy import PolicyParams

    p = PolicyParams()
    assert {h for h in range(24) if h >= p.quiet_start.hour or h < p.quiet_end.hour} == QUIET
    assert Action.SEND_NOW.value == 1


def test_a_shadowed_log_records_the_targets_choice_and_its_true_reward(world: World) -> None:
    history = relationships(world)
    agent = LoggingAgent(world, 3, history, target=LearnedPolicy(HourScorer(), history, LearnedParams()))
    sim = Simulation(world, agent, 3)
    agent.truth, agent.disabled_fans = sim.truth, sim.disabled
    sim.run()
    rows = np.array(agent.log)
    target, truth = rows[:, 3].astype(int), rows[:, 4]
    assert set(np.unique(target)) <= set(range(-1, 48)) and (target >= 0).any() and (target == -1).any()
    assert np.all(truth[target == -1] == 0.0) and np.all((truth >= 0) & (truth <= 3.0))
    assert truth[target >= 0].mean() > 0.0
