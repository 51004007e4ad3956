"""p(open) / p(disable) training: point-in-time replay, a learnable signal, ONNX export, serving it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from kindred.models import read_manifest
from notify_svc import timezones as tz
from notify_svc.domain import Action, Candidate, Channel, FanState, Outcome, OutcomeEvent, Trigger
from notify_svc.features import NOTIFY_FEATURES, EngagementHistory
from notify_svc.learned import MODEL_NAME, LearnedParams, LearnedPolicy, OnnxOutcomeScorer
from trainer.notify_log import LogEvent, MembershipRow, read_log, write_log
from trainer.notify_models import NotifyTrainConfig, replay, train_notify_models

START = datetime(2024, 5, 1, tzinfo=UTC)
ZONES = ("Europe/London", "America/New_York")


def evening_log(fans: int = 80, days: int = 21, seed: int = 0) -> list[LogEvent]:
    """Random-hour deliveries; fans open mostly at 18-22 local, and disable more after busy days."""
    rng = random.Random(seed)
    events: list[LogEvent] = []
    for f in range(fans):
        zone = ZONES[f % 2]
        z = ZoneInfo(zone)
        recent: list[datetime] = []
        for d in range(days):
            for k in range(rng.randint(1, 4)):
                at = START + timedelta(days=d, hours=rng.uniform(0, 24))
                nid = f"n-{f}-{d}-{k}"
                trigger = rng.choice([Trigger.NEW_POST, Trigger.COMMENT_REPLY])
                events.append(LogEvent("delivered", at, nid, f"fan-{f}", f"c-{f % 5}", int(trigger), zone))
                recent = [r for r in recent if at - r < timedelta(hours=24)] + [at]
                hour = tz.local_wall(at, z).hour
                if rng.random() < (0.5 if 18 <= hour < 22 else 0.02):
                    events.append(LogEvent("opened", at + timedelta(minutes=3), nid, f"fan-{f}"))
                if rng.random() < 0.004 * len(recent) ** 2:
                    events.append(LogEvent("disabled", at + timedelta(minutes=9), nid, f"fan-{f}"))
    return events


def test_replay_is_point_in_time() -> None:
    events = evening_log(fans=10, days=6)
    cut = START + timedelta(days=4)
    early = replay([e for e in events if e.at < cut], [])
    full = replay(events, [])
    n = len(early.x)
    assert n > 0 and len(full.x) > n
    # Rows of deliveries before the cut do not change when later events exist (labels may: an open
    # after the cut of a delivery before it is still that delivery's label).
    np.testing.assert_array_equal(full.x[:n], early.x)
    assert full.x.shape[1] == len(NOTIFY_FEATURES)


def test_log_round_trips_through_jsonl(tmp_path: Path) -> None:
    events = evening_log(fans=3, days=2)
    members = [MembershipRow("fan-1", "c-1", 2)]
    write_log(tmp_path / "log.jsonl", events, members)
    assert read_log(tmp_path / "log.jsonl") == (events, members)


def test_too_little_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too little data"):
        train_notify_models(evening_log(fans=2, days=2), [], tmp_path)


@pytest.mark.slow  # replay + fit + ONNX export: ~10-25 s on two shared cores
def test_trains_a_model_that_finds_the_signal_and_serves_it_through_the_policy(tmp_path: Path) -> None:
    events = evening_log()
    result = train_notify_models(events, [], tmp_path, version="t1", config=NotifyTrainConfig(epochs=8))
    m = result.metrics
    assert m["open_auc"] > 0.75, m  # the evening habit is learnable from the hour features
    assert m["open_log_loss"] < m["open_log_loss_base_rate"]
    assert abs(m["open_mean_predicted"] - m["open_observed"]) < 0.05
    manifest = read_manifest(tmp_path, MODEL_NAME)
    assert manifest["features"] == list(NOTIFY_FEATURES) and manifest["version"] == "t1"
    assert manifest["outputs"] == ["outcome_probs"] and manifest["parity_max_abs_diff"] <= 1e-4

    # Served: a London fan with an evening history, asked at 12:00 local, is delayed to the evening.
    history = EngagementHistory()
    data_fan = "fan-0"
    for e in sorted(events, key=lambda e: e.at):
        if e.fan_id == data_fan and e.kind == "delivered":
            history.record_delivery(e.notification_id, e.fan_id, e.creator_id, ZoneInfo(e.time_zone), e.at)
        elif e.fan_id == data_fan and e.kind == "opened":
            history.record_outcome(OutcomeEvent(e.notification_id, e.fan_id, Outcome.OPENED, e.at))
    now = START + timedelta(days=21, hours=11)  # 12:00 BST
    policy = LearnedPolicy(OnnxOutcomeScorer(tmp_path), history, LearnedParams(threshold=0.0))
    cand = Candidate("new", data_fan, "c-0", "p", Trigger.COMMENT_REPLY, Channel.PUSH, now, "Europe/London")
    verdict = policy.decide(cand, FanState(), now)
    assert verdict.decision.action is Action.DELAY_UNTIL, verdict.decision
    assert verdict.decision.deliver_at is not None
    assert 17 <= tz.local_wall(verdict.decision.deliver_at, ZoneInfo("Europe/London")).hour <= 22
    assert verdict.decision.scores["p_open_at"] > 2 * verdict.decision.scores["p_open_now"]
