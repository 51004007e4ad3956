"""The service serving the learned policy: which policy build_deps picks, and the feedback hooks.

A tiny `notify_outcomes` model is really trained, exported to ONNX and promoted once per module
(trainer/notify_models.py); the service then runs in process on port 0 over both state backends.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import numpy as np
import pytest
from notify_testkit import T0, Clock

from kindred.config import Settings
from kindred.v1 import notify_pb2, notify_pb2_grpc
from notify_svc.domain import Candidate, Channel, Outcome, OutcomeEvent, Trigger
from notify_svc.features import EngagementSnapshot, Relationship, feature_matrix
from notify_svc.learned import MODEL_NAME, LearnedParams, LearnedPolicy
from notify_svc.policy import RulePolicy
from notify_svc.server import (
    NotifyDeps,
    attach_engagement_journal,
    build_deps,
    choose_policy,
    create_server,
    policy_label,
)
from notify_svc.state import NotifyState

pb = notify_pb2
StoreOpener = Callable[[], NotifyState]
# Every scored instant clears the bar and waiting never pays: decisions are SEND_NOW unless a
# guardrail (quiet hours) moves them, whatever the tiny model predicts.
EAGER = LearnedParams(threshold=-5.0, disable_cost=0.0, delay_gain=100.0)


# Every third fan of the training log is a tier-2 member of creator-1 (and opens more).
def log_member(f: int) -> bool:
    return f % 3 == 0


def outcome_log(fans: int = 12, days: int = 6, seed: int = 0) -> list[object]:
    """Random-hour deliveries; fans open mostly in the local evening (enough signal for a tiny model)."""
    from trainer.notify_log import LogEvent

    rng = random.Random(seed)
    start = T0 - timedelta(days=days + 1)
    events: list[object] = []
    for f in range(fans):
        zone = ("Europe/London", "America/New_York")[f % 2]
        for d in range(days):
            for k in range(3):
                at = start + timedelta(days=d, hours=rng.uniform(0, 24))
                nid = f"log-{f}-{d}-{k}"
                events.append(
                    LogEvent("delivered", at, nid, f"fan-{f}", "creator-1", int(Trigger.NEW_POST), zone)
                )
                p_open = 0.6 if 18 <= at.astimezone(ZoneInfo(zone)).hour < 22 else 0.1
                if rng.random() < p_open + 0.2 * log_member(f):
                    events.append(LogEvent("opened", at + timedelta(minutes=3), nid, f"fan-{f}"))
    return events


@pytest.fixture(scope="module")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir holding a really trained and promoted `notify_outcomes` (version "tiny")."""
    torch = pytest.importorskip("torch")
    from trainer.notify_log import MembershipRow
    from trainer.notify_models import NotifyTrainConfig, train_notify_models

    torch.set_num_threads(1)
    models = tmp_path_factory.mktemp("models")
    members = [MembershipRow(f"fan-{f}", "creator-1", 2) for f in range(12) if log_member(f)]
    train_notify_models(outcome_log(), members, models, version="tiny", config=NotifyTrainConfig(epochs=1))  # type: ignore[arg-type]
    return models


def settings_for(data_dir: Path, models_dir: Path) -> Settings:
    return Settings.from_env(
        {
            "KINDRED_DATA_DIR": str(data_dir),
            "KINDRED_MODELS_DIR": str(models_dir),
            "KINDRED_SERVER_THREADS": "4",
        }
    )


# -- build_deps: which policy serves ---------------------------------------------------------------


def test_without_a_promoted_model_the_rules_serve(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="notify_svc.server")
    deps = build_deps(settings_for(tmp_path, tmp_path / "models"))
    try:
        assert isinstance(deps.policy, RulePolicy) and policy_label(deps.policy) == "rules"
        assert f"no promoted {MODEL_NAME} model" in caplog.text
    finally:
        deps.state.close()


def test_a_promoted_model_serves_the_learned_policy_with_the_controller(
    tmp_path: Path, trained_models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="notify_svc.server")
    settings = settings_for(tmp_path, trained_models)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "notify.json").write_text(json.dumps({"target_sends_per_minute": 30}))
    deps = build_deps(settings)
    try:
        assert isinstance(deps.policy, LearnedPolicy)
        assert deps.policy.model_version == "tiny" and policy_label(deps.policy) == "learned:tiny"
        assert "notify policy: learned:tiny" in caplog.text
        assert deps.controller is not None  # the volume target drives the learned threshold
        assert deps.params == deps.policy.params.guard  # retention follows the serving guardrails
    finally:
        deps.state.close()


def test_a_model_that_fails_its_hash_check_falls_back_to_the_rules(
    tmp_path: Path, trained_models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = tmp_path / "models"
    shutil.copytree(trained_models, models)
    onnx = next((models / MODEL_NAME).rglob("*.onnx"))
    onnx.write_bytes(onnx.read_bytes() + b"tampered")
    policy, _ = choose_policy(settings_for(tmp_path, models))
    assert isinstance(policy, RulePolicy)
    assert "does not load" in caplog.text


# -- the feedback hooks through gRPC ---------------------------------------------------------------


@dataclass
class Served:
    stub: notify_pb2_grpc.NotifyServiceStub
    policy: LearnedPolicy
    state: NotifyState
    clock: Clock
    restart: Callable[[], LearnedPolicy]  # a fresh policy over a reopened store, as after a restart


@pytest.fixture()
def served(tmp_path: Path, trained_models: Path, open_store: StoreOpener) -> Iterator[Served]:
    settings = settings_for(tmp_path, trained_models)
    clock = Clock()

    def learned_over(state: NotifyState) -> tuple[LearnedPolicy, NotifyDeps]:
        policy, params = choose_policy(settings, learned=EAGER)
        assert isinstance(policy, LearnedPolicy)
        attach_engagement_journal(policy, state, clock.now)  # as build_deps does
        return policy, NotifyDeps(state, policy, params, clock)

    def restart() -> LearnedPolicy:
        return learned_over(open_store())[0]

    policy, deps = learned_over(open_store())
    server = create_server(settings, deps, port=0).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Served(notify_pb2_grpc.NotifyServiceStub(channel), policy, deps.state, clock, restart)
    finally:
        channel.close()
        server.stop(0)


def candidate(
    nid: str, fan: str = "fan-a", zone: str = "Europe/London", **relationship: object
) -> pb.NotificationCandidate:
    return pb.NotificationCandidate(
        notification_id=nid,
        fan_id=fan,
        creator_id="creator-1",
        post_id=f"post-{nid}",
        trigger=pb.TRIGGER_TYPE_NEW_POST,
        channel=pb.CHANNEL_PUSH,
        fan_time_zone=zone,
        **relationship,  # type: ignore[arg-type]
    )


def decide(s: Served, c: pb.NotificationCandidate) -> pb.Decision:
    response: pb.DecideResponse = s.stub.Decide(pb.DecideRequest(candidate=c), timeout=10)
    return response.decision


def snapshot(s: Served, fan: str = "fan-a") -> EngagementSnapshot:
    return s.policy.history.snapshot(fan, "creator-1", s.clock.now + timedelta(seconds=1))


def served_p_open_now(
    s: Served,
    nid: str,
    snap: EngagementSnapshot,
    fan_id: str = "fan-a",
    relationship: Relationship | None = None,
) -> float:
    """p(open) the served model gives the next candidate of `fan_id` now, from features built on `snap`."""
    cand = Candidate(nid, fan_id, "creator-1", f"post-{nid}", Trigger.NEW_POST, Channel.PUSH, s.clock.now,
                     "Europe/London", relationship)  # fmt: skip
    fan = s.state.fan_state(fan_id, s.clock.now)
    rows = feature_matrix([cand], [fan], [snap], [ZoneInfo("Europe/London")], [[s.clock.now]])
    return float(s.policy.scorer.score(rows.reshape(1, -1))[0, 0])


def test_send_now_and_opened_outcomes_feed_the_features_of_the_next_decision(served: Served) -> None:
    assert snapshot(served).deliveries_28d == 0
    first = decide(served, candidate("n-1"))
    assert first.action == pb.ACTION_SEND_NOW, first
    after_send = snapshot(served)
    assert (after_send.deliveries_28d, after_send.creator_deliveries_28d, after_send.opens_28d) == (1, 1, 0)
    assert decide(served, candidate("n-1")).duplicate
    assert snapshot(served).deliveries_28d == 1  # a replayed decision is not a second delivery

    served.stub.RecordOutcome(
        pb.RecordOutcomeRequest(notification_id="n-1", fan_id="fan-a", outcome=pb.OUTCOME_OPENED), timeout=5
    )
    after_open = snapshot(served)
    assert (after_open.deliveries_28d, after_open.opens_28d, after_open.opens_7d) == (1, 1, 1)
    assert after_open.creator_opens_28d == 1 and sum(after_open.open_hours) == 1.0

    # The next decision is scored on exactly those features: its p(open) is what the model gives with
    # the open counted, not what it gives a fan with no history.
    served.clock.advance(hours=1)
    with_open = served_p_open_now(
        served, "n-2", served.policy.history.snapshot("fan-a", "creator-1", served.clock.now)
    )
    without = served_p_open_now(served, "n-2", EngagementSnapshot())
    second = decide(served, candidate("n-2"))
    assert second.scores["p_open_now"] == pytest.approx(with_open, abs=1e-6)
    assert not np.isclose(with_open, without, atol=1e-6)


def test_the_candidates_relationship_reaches_the_model(served: Served) -> None:
    """Fresh fans identical but for the stated membership: the served p(open) is the model's on exactly
    those features, and membership moves it (the train/serve skew the proto fields close)."""
    expected = {
        rel: served_p_open_now(served, "x", EngagementSnapshot(), f"fan-{rel.tier}", rel)
        for rel in (Relationship(), Relationship(True, 1), Relationship(True, 3))
    }
    assert len({round(p, 6) for p in expected.values()}) == 3  # each relationship scores differently

    member = decide(served, candidate("n-m", fan="fan-m", fan_is_member=True, membership_tier=3))
    tier_1 = decide(served, candidate("n-t", fan="fan-t", fan_is_member=True, membership_tier=1))
    stranger = decide(served, candidate("n-s", fan="fan-s", fan_is_member=False, membership_tier=0))
    unstated = decide(served, candidate("n-u", fan="fan-u"))
    assert member.scores["p_open_now"] == pytest.approx(expected[Relationship(True, 3)], abs=1e-6)
    assert tier_1.scores["p_open_now"] == pytest.approx(expected[Relationship(True, 1)], abs=1e-6)
    assert stranger.scores["p_open_now"] == pytest.approx(expected[Relationship()], abs=1e-6)
    assert unstated.scores["p_open_now"] == pytest.approx(expected[Relationship()], abs=1e-6)
    assert not np.isclose(member.scores["p_open_now"], stranger.scores["p_open_now"], atol=1e-6)

    # Unstated, the history's relationship serves; stated, the candidate wins over the history.
    served.policy.history.set_relationship("fan-h", "creator-1", Relationship(True, 3))
    served.policy.history.set_relationship("fan-o", "creator-1", Relationship(True, 3))
    from_history = decide(served, candidate("n-h", fan="fan-h"))
    overridden = decide(served, candidate("n-o", fan="fan-o", fan_is_member=False))
    assert from_history.scores["p_open_now"] == pytest.approx(expected[Relationship(True, 3)], abs=1e-6)
    assert overridden.scores["p_open_now"] == pytest.approx(expected[Relationship()], abs=1e-6)


def test_delayed_items_count_as_delivered_when_acked(served: Served) -> None:
    # 12:00 UTC is midnight in Auckland: quiet hours, so the send is delayed to 08:00 local (20:00 UTC).
    decision = decide(served, candidate("n-night", fan="fan-nz", zone="Pacific/Auckland"))
    assert (decision.action, decision.reason) == (pb.ACTION_DELAY_UNTIL, "quiet_hours"), decision
    assert snapshot(served, "fan-nz").deliveries_28d == 0  # not delivered yet

    served.clock.advance(hours=8, minutes=5)
    due = list(
        served.stub.CollectDue(pb.CollectDueRequest(limit=10, worker_id="w-1", lease_seconds=60), timeout=5)
    )
    assert [i.notification_id for d in due for i in d.items] == ["n-night"]
    assert snapshot(served, "fan-nz").deliveries_28d == 0  # claimed is not delivered
    acked = served.stub.AckDue(
        pb.AckDueRequest(claim_id=due[0].claim_id, notification_ids=["n-night"]), timeout=5
    )
    assert acked.acked == 1
    assert snapshot(served, "fan-nz").deliveries_28d == 1
    # A second ack removes nothing and records nothing.
    again = served.stub.AckDue(
        pb.AckDueRequest(claim_id=due[0].claim_id, notification_ids=["n-night"]), timeout=5
    )
    assert again.acked == 0 and snapshot(served, "fan-nz").deliveries_28d == 1


def test_outcomes_of_notifications_this_policy_never_delivered_change_nothing(served: Served) -> None:
    served.stub.RecordOutcome(
        pb.RecordOutcomeRequest(notification_id="unknown", fan_id="fan-a", outcome=pb.OUTCOME_OPENED),
        timeout=5,
    )
    assert snapshot(served).opens_28d == 0
    assert Outcome.OPENED.value == pb.OUTCOME_OPENED


def test_the_fan_features_survive_a_restart(served: Served) -> None:
    """Deliveries (SEND_NOW and acked) and opens are journaled in the state store and replayed at start."""
    decide(served, candidate("n-1"))
    served.stub.RecordOutcome(
        pb.RecordOutcomeRequest(notification_id="n-1", fan_id="fan-a", outcome=pb.OUTCOME_OPENED), timeout=5
    )
    decide(served, candidate("n-night", fan="fan-nz", zone="Pacific/Auckland"))
    served.clock.advance(hours=8, minutes=5)
    (due,) = served.stub.CollectDue(
        pb.CollectDueRequest(limit=10, worker_id="w", lease_seconds=60), timeout=5
    )
    served.stub.AckDue(pb.AckDueRequest(claim_id=due.claim_id, notification_ids=["n-night"]), timeout=5)
    served.clock.advance(minutes=1)
    at = served.clock.now

    restarted = served.restart()
    assert restarted is not served.policy
    for fan in ("fan-a", "fan-nz"):
        before = served.policy.history.snapshot(fan, "creator-1", at)
        assert restarted.history.snapshot(fan, "creator-1", at) == before
    assert restarted.history.snapshot("fan-a", "creator-1", at).opens_28d == 1
    assert restarted.history.snapshot("fan-nz", "creator-1", at).deliveries_28d == 1
    # And the restarted policy keeps attributing opens of notifications delivered before the restart.
    restarted.record_outcome(OutcomeEvent("n-night", "fan-nz", Outcome.OPENED, at))
    assert restarted.history.snapshot("fan-nz", "creator-1", at + timedelta(seconds=1)).opens_28d == 1


def test_a_failing_journal_costs_persistence_not_the_call(
    trained_models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("redis")
    from notify_svc.state import RedisNotifyState

    policy = LearnedPolicy.load(trained_models, EAGER)
    policy.journal = RedisNotifyState.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    cand = Candidate("n-1", "fan-a", "creator-1", "p", Trigger.NEW_POST, Channel.PUSH, T0, "Europe/London")
    policy.record_delivery(cand, T0)  # does not raise
    assert policy.history.snapshot("fan-a", "creator-1", T0 + timedelta(seconds=1)).deliveries_28d == 1
    assert "engagement journal write failed" in caplog.text


def test_the_simulators_grpc_driver_sends_the_relationship_the_world_knows() -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    from bench.notify.grpc_agent import candidate_proto
    from bench.notify.world import WorldConfig, make_world
    from notify_svc.domain import validate_candidate
    from notify_svc.servicer import from_proto

    world = make_world(0, WorldConfig(fans=60, days=2))
    created_at = Timestamp()
    created_at.FromDatetime(T0)
    seen: set[Relationship] = set()
    for i in range(len(world.candidates.fan)):
        fan, creator = int(world.candidates.fan[i]), int(world.candidates.creator[i])
        raw = from_proto(candidate_proto(world, i, "run-", created_at))
        rel = validate_candidate(raw, T0, timedelta(days=1)).relationship
        assert rel == Relationship(bool(world.member[fan, creator]), int(world.tier[fan, creator]))
        seen.add(rel)
    assert Relationship() in seen and any(r.member and r.tier > 0 for r in seen)  # both kinds were sent
