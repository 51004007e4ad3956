"""The rule policy and input validation, as pure functions of (candidate, fan state, now)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, time, timedelta

import pytest
from notify_testkit import T0, fields

from kindred.errors import InvalidArgument
from notify_svc.domain import (
    Action,
    Candidate,
    CandidateFields,
    FanState,
    Relationship,
    Trigger,
    validate_candidate,
)
from notify_svc.policy import CapRule, PolicyParams, RulePolicy

POLICY = RulePolicy()
DAY = timedelta(days=1)


def cand(trigger: Trigger = Trigger.NEW_POST, *, zone: str = "Europe/London", **kw: object) -> Candidate:
    raw = dataclasses.replace(fields("n-1", trigger=trigger, zone=zone), **kw)  # type: ignore[arg-type]
    return validate_candidate(raw, T0, DAY)


def sends(*minutes_ago: float) -> tuple[datetime, ...]:
    return tuple(sorted(T0 - timedelta(minutes=m) for m in minutes_ago))


def test_a_fresh_fan_gets_send_now_with_scores() -> None:
    v = POLICY.decide(cand(), FanState(), T0)
    assert (v.decision.action, v.decision.reason) == (Action.SEND_NOW, "eligible")
    assert v.send_at == T0 and v.claim_content
    assert v.decision.scores["sends_24h"] == 0.0
    assert v.decision.scores["local_hour"] == 13.0  # 12:00Z is 13:00 BST
    assert "hours_since_last" not in v.decision.scores


def test_within_spacing_delays_until_last_send_plus_spacing() -> None:
    fan = FanState(sends=sends(10))
    v = POLICY.decide(cand(), fan, T0)
    assert v.decision.action is Action.DELAY_UNTIL
    assert v.decision.reason == "min_spacing"
    assert v.decision.deliver_at == T0 + timedelta(minutes=20)
    assert v.send_at == v.decision.deliver_at
    assert v.decision.scores["hours_since_last"] == pytest.approx(10 / 60)


def test_quiet_hours_delay_to_the_end_of_the_window_in_the_fan_zone() -> None:
    night = datetime(2024, 6, 3, 3, 0, tzinfo=UTC)  # 23:00 in New York
    c = validate_candidate(fields("n", zone="America/New_York", created_at=night), night, DAY)
    v = POLICY.decide(c, FanState(), night)
    assert (v.decision.action, v.decision.reason) == (Action.DELAY_UNTIL, "quiet_hours")
    assert v.decision.deliver_at == datetime(2024, 6, 3, 12, 0, tzinfo=UTC)  # 08:00 EDT
    assert v.decision.scores["quiet_hours"] == 1.0


def test_over_the_daily_cap_low_value_goes_to_the_digest_others_are_dropped() -> None:
    fan = FanState(sends=sends(600, 300, 60))
    digest = POLICY.decide(cand(Trigger.NEW_POST), fan, T0)
    assert (digest.decision.action, digest.decision.reason) == (Action.DIGEST, "daily_cap")
    assert digest.decision.deliver_at == datetime(2024, 6, 3, 17, 0, tzinfo=UTC)  # 18:00 BST
    assert digest.send_at is None and digest.claim_content
    dropped = POLICY.decide(cand(Trigger.COMMENT_REPLY), fan, T0)
    assert (dropped.decision.action, dropped.decision.reason) == (Action.DROP, "daily_cap")
    assert dropped.send_at is None and not dropped.claim_content
    assert dropped.decision.scores["sends_24h"] == 3.0


def test_the_cap_is_rolling_not_per_calendar_day() -> None:
    # Three sends, the oldest 23h59m ago: still capped; once it is 24h old there is room again.
    assert (
        POLICY.decide(cand(), FanState(sends=sends(24 * 60 - 1, 300, 60)), T0).decision.action
        is Action.DIGEST
    )
    assert (
        POLICY.decide(cand(), FanState(sends=sends(24 * 60, 300, 60)), T0).decision.action is Action.SEND_NOW
    )


def test_weekly_cap_names_itself() -> None:
    week = tuple(sorted(T0 - timedelta(hours=30 + 10 * i) for i in range(12)))
    v = POLICY.decide(cand(Trigger.LIVE_STARTED), FanState(sends=week), T0)
    assert (v.decision.action, v.decision.reason) == (Action.DROP, "weekly_cap")


@pytest.mark.parametrize("trigger", [Trigger.PAYMENT_FAILED, Trigger.MEMBERSHIP_CHANGED])
def test_transactional_bypasses_fatigue_and_opt_out(trigger: Trigger) -> None:
    night = datetime(2024, 6, 3, 23, 30, tzinfo=UTC)  # 00:30 in London: quiet
    fan = FanState(sends=tuple(night - timedelta(minutes=m) for m in (50, 20, 5)), opted_out=True)
    c = validate_candidate(fields("t", trigger=trigger), night, DAY)
    v = POLICY.decide(c, fan, night)
    assert (v.decision.action, v.decision.reason) == (Action.SEND_NOW, "transactional")
    assert v.send_at is None and not v.claim_content  # spends no budget, claims no content


def test_without_the_allow_list_a_payment_failure_is_ordinary() -> None:
    policy = RulePolicy(PolicyParams(transactional=frozenset()))
    night = datetime(2024, 6, 3, 23, 30, tzinfo=UTC)
    c = validate_candidate(fields("t", trigger=Trigger.PAYMENT_FAILED), night, DAY)
    assert policy.decide(c, FanState(), night).decision.reason == "quiet_hours"


def test_opted_out_fans_get_nothing_non_transactional() -> None:
    for trigger in (
        Trigger.NEW_POST,
        Trigger.LIVE_STARTED,
        Trigger.COMMENT_REPLY,
        Trigger.CREATOR_RECOMMENDATION,
    ):
        v = POLICY.decide(cand(trigger), FanState(opted_out=True), T0)
        assert (v.decision.action, v.decision.reason) == (Action.DROP, "opted_out")


def test_same_content_within_the_window_is_dropped() -> None:
    recent = FanState(last_same_content=T0 - timedelta(hours=23))
    assert POLICY.decide(cand(), recent, T0).decision.reason == "duplicate_content"
    stale = FanState(last_same_content=T0 - timedelta(hours=25))
    assert POLICY.decide(cand(), stale, T0).decision.action is Action.SEND_NOW


def test_a_live_stream_that_could_only_arrive_stale_is_dropped() -> None:
    night = datetime(2024, 6, 3, 22, 0, tzinfo=UTC)  # 23:00 BST: nine hours of quiet ahead
    c = validate_candidate(fields("l", trigger=Trigger.LIVE_STARTED, created_at=night), night, DAY)
    assert POLICY.decide(c, FanState(), night).decision.reason == "expired"
    post = validate_candidate(fields("p", trigger=Trigger.NEW_POST, created_at=night), night, DAY)
    assert POLICY.decide(post, FanState(), night).decision.reason == "quiet_hours"


def test_the_zone_falls_back_to_the_fans_known_zone_then_the_default() -> None:
    night_ny = datetime(2024, 6, 3, 3, 0, tzinfo=UTC)  # 23:00 New York, 04:00 London, 03:00 UTC
    c = validate_candidate(fields("n", zone=""), night_ny, DAY)
    known = POLICY.decide(c, FanState(time_zone="America/New_York"), night_ny).decision
    assert known.deliver_at == datetime(2024, 6, 3, 12, 0, tzinfo=UTC)
    default = POLICY.decide(c, FanState(), night_ny).decision
    assert default.deliver_at == datetime(2024, 6, 3, 8, 0, tzinfo=UTC)  # 08:00 UTC


def test_spacing_pushed_into_quiet_hours_reports_quiet_hours() -> None:
    late = datetime(2024, 6, 3, 20, 50, tzinfo=UTC)  # 21:50 BST, last send 21:40 → 22:10 is quiet
    fan = FanState(sends=(late - timedelta(minutes=10),))
    c = validate_candidate(fields("n"), late, DAY)
    v = POLICY.decide(c, fan, late)
    assert v.decision.reason == "quiet_hours"
    assert v.decision.deliver_at == datetime(2024, 6, 4, 7, 0, tzinfo=UTC)


def test_params_reject_inconsistent_values() -> None:
    with pytest.raises(ValueError, match="digest_time"):
        PolicyParams(digest_time=time(23))
    with pytest.raises(ValueError, match="cap"):
        PolicyParams(caps=(CapRule("daily_cap", timedelta(hours=24), 0),))
    with pytest.raises(ValueError, match="transactional and digestible"):
        PolicyParams(transactional=frozenset({Trigger.NEW_POST}))
    with pytest.raises(InvalidArgument):
        PolicyParams(default_time_zone="Nowhere/Special")
    assert PolicyParams().history_window == timedelta(days=7)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"notification_id": ""}, "candidate.notification_id"),
        ({"fan_id": ""}, "candidate.fan_id"),
        ({"trigger": 0}, "candidate.trigger"),
        ({"trigger": 99}, "candidate.trigger"),
        ({"channel": 42}, "candidate.channel"),
        ({"fan_time_zone": "Europe/Atlantis"}, "candidate.fan_time_zone"),
        ({"created_at": T0 + timedelta(days=1, seconds=1)}, "candidate.created_at"),
        ({"created_at_invalid": True}, "candidate.created_at"),
        ({"fan_is_member": True, "membership_tier": 4}, "candidate.membership_tier"),
        ({"fan_is_member": True, "membership_tier": -1}, "candidate.membership_tier"),
        ({"membership_tier": 1}, "candidate.membership_tier"),
        ({"fan_is_member": False, "membership_tier": 3}, "candidate.membership_tier"),
    ],
)
def test_validation_names_the_field(change: dict[str, object], field: str) -> None:
    raw = dataclasses.replace(fields("n-1"), **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as info:
        validate_candidate(raw, T0, DAY)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("member", "tier", "expected"),
    [
        (None, None, None),  # not stated: the features fall back to the engagement history
        (True, 3, Relationship(True, 3)),
        (True, None, Relationship(True, 0)),
        (False, None, Relationship(False, 0)),
        (None, 0, Relationship(False, 0)),
    ],
)
def test_validation_carries_the_stated_relationship(
    member: bool | None, tier: int | None, expected: Relationship | None
) -> None:
    raw = dataclasses.replace(fields("n-1"), fan_is_member=member, membership_tier=tier)
    assert validate_candidate(raw, T0, DAY).relationship == expected


def test_validation_defaults_and_normalises_created_at() -> None:
    assert validate_candidate(fields("n"), T0, DAY).created_at == T0
    almost = T0 + DAY  # exactly one day ahead is still accepted
    assert validate_candidate(fields("n", created_at=almost), T0, DAY).created_at == almost
    naive = CandidateFields("n", "f", trigger=1, created_at=datetime(2024, 6, 3, 11))
    assert validate_candidate(naive, T0, DAY).created_at == datetime(2024, 6, 3, 11, tzinfo=UTC)
