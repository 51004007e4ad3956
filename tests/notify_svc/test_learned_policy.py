"""The learned policy's decision logic and the shared feature vector.

The scorer here is a small deterministic function of the feature row (p(open) rises with the fan's
observed activity at the hour, p(disable) with recent volume) so each rule of the policy can be
checked exactly; tests/trainer/test_notify_models.py drives the same policy with a trained ONNX model.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notify_svc import timezones as tz
from notify_svc.domain import Action, Candidate, Channel, FanState, Outcome, OutcomeEvent, Trigger
from notify_svc.features import (
    N_FEATURES,
    NOTIFY_FEATURES,
    EngagementHistory,
    EngagementSnapshot,
    Relationship,
    feature_matrix,
    local_walls,
)
from notify_svc.learned import LearnedParams, LearnedPolicy
from notify_svc.policy import CapRule, PolicyParams

LONDON = "Europe/London"
NOON = datetime(2024, 6, 3, 11, 0, tzinfo=UTC)  # 12:00 BST, a Monday
COL = {name: i for i, name in enumerate(NOTIFY_FEATURES)}


class ActivityScorer:
    """p(open) = 0.02 · active_share_at_hour (+ a bonus for members); p(disable) grows with sends_24h."""

    def __init__(self) -> None:
        self.calls = 0
        self.rows = 0

    def score(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.calls += 1
        self.rows += len(rows)
        p_open = 0.02 * rows[:, COL["active_share_at_hour"]] + 0.05 * rows[:, COL["is_member"]]
        p_dis = 0.0005 * np.expm1(rows[:, COL["sends_24h_log"]])
        return np.stack([p_open, p_dis], axis=1).astype(np.float32)


def cand(
    nid: str = "n-1",
    trigger: Trigger = Trigger.NEW_POST,
    *,
    fan: str = "fan-1",
    creator: str = "creator-1",
    zone: str = LONDON,
    created: datetime = NOON,
) -> Candidate:
    return Candidate(nid, fan, creator, f"post-{nid}", trigger, Channel.PUSH, created, zone)


def evening_history(fan: str = "fan-1", zone: str = LONDON, opens: int = 20) -> EngagementHistory:
    """A fan who opened `opens` notifications, all around 20:00 local, over the last three weeks."""
    history = EngagementHistory()
    z = ZoneInfo(zone)
    for i in range(opens):
        day = NOON - timedelta(days=1 + i % 20)
        at = datetime.combine(day.astimezone(z).date(), time(20, 0), z).astimezone(UTC)
        history.record_delivery(f"old-{i}", fan, "creator-x", z, at)
        history.record_outcome(OutcomeEvent(f"old-{i}", fan, Outcome.OPENED, at + timedelta(minutes=5)))
    return history


def policy(history: EngagementHistory | None = None, **kw: object) -> LearnedPolicy:
    return LearnedPolicy(ActivityScorer(), history or EngagementHistory(), LearnedParams(**kw))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ features


def test_feature_rows_have_one_column_per_name_and_count_only_earlier_sends() -> None:
    fan = FanState(sends=(NOON - timedelta(hours=30), NOON - timedelta(hours=2), NOON + timedelta(hours=1)))
    rows = feature_matrix(
        [cand()], [fan], [EngagementSnapshot()], [ZoneInfo(LONDON)], [[NOON, NOON + timedelta(hours=3)]]
    )
    assert rows.shape == (1, 2, N_FEATURES) == (1, 2, len(NOTIFY_FEATURES))
    now_row, later_row = rows[0]
    assert np.expm1(now_row[COL["sends_24h_log"]]) == pytest.approx(1.0)  # the scheduled one is not yet
    assert np.expm1(later_row[COL["sends_24h_log"]]) == pytest.approx(2.0)  # ...but counts once due
    assert np.expm1(now_row[COL["sends_7d_log"]]) == pytest.approx(2.0)
    assert np.expm1(now_row[COL["hours_since_last_log"]]) == pytest.approx(2.0)
    assert now_row[COL["trigger_new_post"]] == 1.0 and now_row[COL["trigger_comment_reply"]] == 0.0
    assert now_row[COL["quiet_hour"]] == 0.0


def test_snapshot_is_point_in_time_and_attributes_opens_by_notification() -> None:
    history = evening_history(opens=5)
    before = history.snapshot("fan-1", "creator-x", NOON)
    assert (before.deliveries_28d, before.opens_28d, before.creator_opens_28d) == (5, 5, 5)
    history.record_delivery("new", "fan-1", "creator-x", ZoneInfo(LONDON), NOON)
    history.record_outcome(OutcomeEvent("new", "fan-1", Outcome.OPENED, NOON + timedelta(minutes=1)))
    history.record_outcome(OutcomeEvent("unknown", "fan-1", Outcome.OPENED, NOON))  # not ours: ignored
    history.record_outcome(OutcomeEvent("new", "fan-2", Outcome.OPENED, NOON))  # wrong fan: ignored
    assert history.snapshot("fan-1", "creator-x", NOON) == before  # events at/after `at` do not count
    later = history.snapshot("fan-1", "creator-x", NOON + timedelta(hours=1))
    assert (later.deliveries_28d, later.opens_28d) == (6, 6)
    assert history.snapshot("fan-1", "creator-y", NOON).creator_opens_28d == 0


def test_activity_share_is_high_at_the_fans_habitual_hour_and_low_at_night() -> None:
    z = ZoneInfo(LONDON)
    snap = evening_history().snapshot("fan-1", "c", NOON)
    at_20 = datetime(2024, 6, 3, 19, 0, tzinfo=UTC)  # 20:00 BST
    at_03 = datetime(2024, 6, 4, 2, 0, tzinfo=UTC)
    rows = feature_matrix([cand()], [FanState()], [snap], [z], [[at_20, at_03]])[0]
    assert rows[0, COL["active_share_at_hour"]] > 5.0 > 0.5 > rows[1, COL["active_share_at_hour"]]
    assert rows[1, COL["quiet_hour"]] == 1.0
    fresh = feature_matrix([cand()], [FanState()], [EngagementSnapshot()], [z], [[at_20]])[0, 0]
    assert fresh[COL["active_share_at_hour"]] == pytest.approx(1.0)  # no history: uniform


def test_local_walls_fast_path_agrees_with_zoneinfo_across_a_dst_change() -> None:
    z = ZoneInfo("America/New_York")
    start = datetime(2024, 3, 10, 0, 0, tzinfo=UTC)  # spring forward at 07:00 UTC
    for first in (start + timedelta(minutes=17 * i) for i in range(100)):
        instants = [first + timedelta(hours=k) for k in range(13)]
        assert local_walls(instants, z) == [tz.local_wall(a, z) for a in instants]


# --------------------------------------------------------------------------------------- policy


def test_transactional_is_sent_even_to_an_opted_out_fan_but_nothing_else_is() -> None:
    p = policy()
    out = FanState(opted_out=True)
    assert p.decide(cand(trigger=Trigger.PAYMENT_FAILED), out, NOON).decision.action is Action.SEND_NOW
    v = p.decide(cand(trigger=Trigger.CREATOR_RECOMMENDATION), out, NOON)
    assert (v.decision.action, v.decision.reason, v.send_at) == (Action.DROP, "opted_out", None)


def test_duplicate_content_is_dropped() -> None:
    v = policy(evening_history()).decide(cand(), FanState(last_same_content=NOON - timedelta(hours=1)), NOON)
    assert (v.decision.action, v.decision.reason) == (Action.DROP, "duplicate_content")


def test_delays_to_the_fans_active_hour_when_that_raises_p_open() -> None:
    # Evening fan at 17:00 BST: 20:00 is within the 12 h horizon and far more likely to be opened.
    at_17 = datetime(2024, 6, 3, 16, 0, tzinfo=UTC)
    v = policy(evening_history()).decide(cand(created=at_17), FanState(), at_17)
    assert v.decision.action is Action.DELAY_UNTIL and v.decision.reason == "active_hour"
    assert tz.local_wall(v.decision.deliver_at, ZoneInfo(LONDON)).hour in (19, 20, 21)  # type: ignore[arg-type]
    assert v.send_at == v.decision.deliver_at
    assert v.decision.scores["p_open_at"] > v.decision.scores["p_open_now"]


def test_sends_now_when_now_is_as_good_as_any_later_hour() -> None:
    member = EngagementHistory()
    member.set_relationship("fan-1", "creator-1", Relationship(True, 2))
    v = policy(member).decide(cand(), FanState(), NOON)  # no history: every hour scores the same
    assert (v.decision.action, v.decision.reason, v.send_at) == (Action.SEND_NOW, "expected_value", NOON)
    assert v.decision.scores["utility"] > 0


def test_below_threshold_digests_low_value_triggers_and_drops_the_rest() -> None:
    p = policy(evening_history(), threshold=1.0)
    digest = p.decide(cand(), FanState(), NOON)
    assert (digest.decision.action, digest.decision.reason) == (Action.DIGEST, "below_threshold")
    assert digest.decision.deliver_at == datetime(2024, 6, 3, 17, 0, tzinfo=UTC)  # 18:00 BST
    assert digest.send_at is None
    live = p.decide(cand(trigger=Trigger.LIVE_STARTED), FanState(), NOON)
    assert (live.decision.action, live.decision.reason) == (Action.DROP, "below_threshold")


def test_digests_go_at_the_fans_best_digest_hour_and_one_fan_keeps_one_hour() -> None:
    # The evening fan's digest moves from the fixed 18:00 to their habitual evening hours, the same
    # hour for each of their items whatever the creator.
    hours = (17, 18, 19, 20, 21, 23)  # 23:00 is quiet: never chosen
    p = policy(evening_history(), threshold=1.0, digest_hours=hours)
    items = [cand(f"n-{i}", creator=f"creator-{i}") for i in range(3)]
    verdicts = p.decide_many(items, [FanState()] * 3, NOON)
    assert {v.decision.action for v in verdicts} == {Action.DIGEST}
    london = ZoneInfo(LONDON)
    walls = {tz.local_wall(v.decision.deliver_at, london) for v in verdicts}  # type: ignore[arg-type]
    assert len(walls) == 1  # one digest for the fan's items
    assert walls.pop().replace(hour=0) == datetime(2024, 6, 3) and walls == set()
    wall = tz.local_wall(verdicts[0].decision.deliver_at, london)  # type: ignore[arg-type]
    assert wall.hour in (19, 20, 21)  # the ±1 h around the habitual 20:00, not the fixed 18:00
    assert all(v.decision.scores["digest_p_open"] > 0.02 for v in verdicts)
    assert all(v.send_at is None for v in verdicts)
    fixed = policy(evening_history(), threshold=1.0).decide(cand(), FanState(), NOON)
    assert fixed.decision.deliver_at == datetime(2024, 6, 3, 17, 0, tzinfo=UTC)  # 18:00 BST
    # Late in the evening the next 20:00 is tomorrow's.
    at_21 = datetime(2024, 6, 3, 20, 30, tzinfo=UTC)  # 21:30 BST
    late = p.decide(cand("n-late", created=at_21), FanState(), at_21)
    first = verdicts[0].decision.deliver_at
    assert first is not None and late.decision.deliver_at == first + timedelta(days=1)
    with pytest.raises(ValueError, match="digest_hours"):
        LearnedParams(digest_hours=(18, 18))
    with pytest.raises(ValueError, match="digest_hours"):
        LearnedParams(digest_hours=(24,))


def test_the_controller_threshold_is_read_at_decision_time() -> None:
    p = policy(evening_history())
    at_19 = datetime(2024, 6, 3, 18, 30, tzinfo=UTC)  # 19:30 BST
    assert p.decide(cand(created=at_19), FanState(), at_19).decision.action is Action.SEND_NOW
    p.threshold = 10.0
    high = p.decide(cand("n-2", created=at_19), FanState(), at_19).decision
    assert high.action is Action.DIGEST and high.scores["threshold"] == 10.0
    p.threshold = 0.0
    assert p.decide(cand("n-3", created=at_19), FanState(), at_19).decision.action is Action.SEND_NOW


def test_quiet_hours_are_never_chosen_and_live_streams_expire() -> None:
    night = datetime(2024, 6, 3, 22, 0, tzinfo=UTC)  # 23:00 BST
    p = policy(evening_history())
    v = p.decide(cand(created=night), FanState(), night)
    assert v.decision.action is Action.DELAY_UNTIL
    wall = tz.local_wall(v.decision.deliver_at, ZoneInfo(LONDON))  # type: ignore[arg-type]
    assert not tz.in_window(wall.time(), time(22), time(8))
    # A live stream starting at 23:00 cannot reach the fan before 08:00: stale, dropped.
    live = p.decide(cand("n-live", Trigger.LIVE_STARTED, created=night), FanState(), night)
    assert (live.decision.action, live.decision.reason) == (Action.DROP, "expired")


def test_decide_many_scores_a_chunk_with_one_model_call_and_matches_decide() -> None:
    history = evening_history()
    for f in range(1, 6):
        history.set_relationship(f"fan-{f}", "creator-1", Relationship(f % 2 == 0, f % 3))
    cands = [cand(f"n-{f}", fan=f"fan-{f}") for f in range(1, 6)]
    fans = [FanState()] * 5
    batch = policy(history)
    scorer = batch.scorer
    assert isinstance(scorer, ActivityScorer)
    many = batch.decide_many(cands, fans, NOON)
    assert scorer.calls == 1 and scorer.rows == 5 * (LearnedParams().horizon_hours + 1)
    single = policy(history)
    assert [v.decision for v in many] == [
        single.decide(c, f, NOON).decision for c, f in zip(cands, fans, strict=True)
    ]


def test_candidates_of_one_fan_in_a_chunk_respect_caps_and_spacing() -> None:
    caps = PolicyParams(
        caps=(CapRule("daily_cap", timedelta(hours=24), 3), CapRule("weekly_cap", timedelta(days=7), 10))
    )
    member = EngagementHistory()
    member.set_relationship("fan-1", "creator-1", Relationship(True, 3))
    p = policy(member, guard=caps)
    verdicts = p.decide_many([cand(f"n-{i}") for i in range(8)], [FanState()] * 8, NOON)
    spends = sorted(v.send_at for v in verdicts if v.send_at is not None)
    assert len(spends) == 3
    assert all(b - a >= caps.min_spacing for a, b in itertools.pairwise(spends))
    assert {v.decision.reason for v in verdicts if v.send_at is None} == {"daily_cap"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sends_ago_min=st.lists(st.integers(min_value=-600, max_value=7 * 24 * 60), max_size=14),
    start_min=st.integers(min_value=0, max_value=60 * 24 * 400),
    zone=st.sampled_from(["Europe/London", "America/New_York", "Australia/Sydney", "Asia/Tokyo"]),
    n=st.integers(min_value=1, max_value=6),
)
def test_property_guardrails_hold_for_every_chosen_instant(
    sends_ago_min: list[int], start_min: int, zone: str, n: int
) -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=start_min)  # spans both DST changes
    guard = PolicyParams(
        caps=(CapRule("daily_cap", timedelta(hours=24), 3), CapRule("weekly_cap", timedelta(days=7), 8))
    )
    prior = sorted({now - timedelta(minutes=m) for m in sends_ago_min})
    member = EngagementHistory()
    member.set_relationship("fan-1", "creator-1", Relationship(True, 3))
    verdicts = policy(member, guard=guard).decide_many(
        [cand(f"n-{i}", zone=zone, created=now) for i in range(n)], [FanState(sends=tuple(prior))] * n, now
    )
    z = ZoneInfo(zone)
    new = [v.send_at for v in verdicts if v.send_at is not None]
    for at in new:
        assert at >= now
        assert not tz.is_quiet(at, z, guard.quiet_start, guard.quiet_end)
        others = sorted([*prior, *new])
        others.remove(at)
        assert all(abs(at - s) >= guard.min_spacing for s in others)
    everything = sorted([*prior, *new])
    for cap in guard.caps:
        for at in new:  # every rolling window holding a new send stays within the cap
            for start in everything:
                if start <= at < start + cap.window:
                    assert sum(1 for s in everything if start <= s < start + cap.window) <= cap.max_sends


def test_service_feedback_hooks_feed_the_engagement_history() -> None:
    p = policy()
    p.record_delivery(cand("paid", Trigger.PAYMENT_FAILED), NOON)  # transactional: not engagement
    p.record_delivery(cand("post"), NOON)
    p.record_outcome(OutcomeEvent("post", "fan-1", Outcome.OPENED, NOON + timedelta(minutes=2)))
    p.record_outcome(OutcomeEvent("paid", "fan-1", Outcome.OPENED, NOON + timedelta(minutes=2)))
    snap = p.history.snapshot("fan-1", "creator-1", NOON + timedelta(hours=1))
    assert (snap.deliveries_28d, snap.opens_28d, snap.creator_opens_28d) == (1, 1, 1)
    assert snap.open_hours[12] == 1.0  # 12:02 BST
