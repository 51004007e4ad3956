"""Property tests: random trigger sequences through the engine, the rule policy and the real store.

Each example replays a random stream of candidates (and a possible opt-out) for one fan, starting
near a DST transition, under random policy parameters, against an in-memory embedded store; then it
checks the invariants over everything that was decided:

- no rolling cap window holds more non-transactional deliveries than its cap;
- consecutive non-transactional deliveries are at least `min_spacing` apart;
- no non-transactional delivery falls in the fan's local quiet hours (across DST);
- nothing non-transactional is delivered, delayed or digested after the opt-out;
- transactional triggers — and only those — are sent regardless, always at once;
- replays return the original decision; the store's record matches the decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from notify_testkit import fields

from notify_svc import timezones as tz
from notify_svc.domain import Action, Decision, Outcome, Trigger
from notify_svc.engine import NotifyEngine
from notify_svc.policy import CapRule, PolicyParams, RulePolicy
from notify_svc.state import EmbeddedNotifyState, Retention

TRANSITIONS = [
    datetime(2024, 3, 10, 7, tzinfo=UTC),  # New York spring forward
    datetime(2024, 11, 3, 6, tzinfo=UTC),  # New York fall back
    datetime(2024, 3, 31, 1, tzinfo=UTC),  # London spring forward
    datetime(2024, 10, 27, 1, tzinfo=UTC),  # London fall back
]
ZONES = ["America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata"]


@dataclass(frozen=True)
class Step:
    gap_minutes: int
    trigger: Trigger
    replay: bool  # resend an earlier notification id instead of a new one
    same_post: bool  # reuse the previous post id under a new notification id
    opt_out: bool


steps = st.builds(
    Step,
    gap_minutes=st.integers(0, 8 * 60),
    trigger=st.sampled_from(list(Trigger)),
    replay=st.booleans(),
    same_post=st.integers(0, 5).map(lambda n: n == 0),
    opt_out=st.integers(0, 30).map(lambda n: n == 0),
)


@st.composite
def policy_params(draw: st.DrawFn) -> PolicyParams:
    # Quarter-hour quiet windows, so ends inside DST gaps and repeated hours come up.
    start = time(draw(st.integers(18, 23)), draw(st.sampled_from([0, 15, 30, 45])))
    end = time(draw(st.integers(0, 9)), draw(st.sampled_from([0, 15, 30, 45])))
    return PolicyParams(
        quiet_start=start,
        quiet_end=end,
        caps=(
            CapRule("daily_cap", timedelta(hours=24), draw(st.integers(1, 4))),
            CapRule("weekly_cap", timedelta(days=7), draw(st.integers(4, 10))),
        ),
        min_spacing=timedelta(minutes=draw(st.sampled_from([0, 15, 30, 90]))),
        digest_time=end,  # the end of the window is itself outside it
        dedupe_window=timedelta(hours=draw(st.sampled_from([1, 24]))),
    )


def delivered_at(d: Decision, now: datetime) -> datetime | None:
    if d.action is Action.SEND_NOW:
        return now
    if d.action is Action.DELAY_UNTIL:
        return d.deliver_at
    return None


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    params=policy_params(),
    zone=st.sampled_from(ZONES),
    start=st.builds(
        lambda base, h: base + timedelta(hours=h), st.sampled_from(TRANSITIONS), st.integers(-30, 6)
    ),
    script=st.lists(steps, min_size=1, max_size=40),
)
def test_fatigue_rules_hold_over_random_sequences(
    params: PolicyParams, zone: str, start: datetime, script: list[Step]
) -> None:
    now = start
    store = EmbeddedNotifyState(":memory:", Retention.for_policy(params.history_window, params.dedupe_window))
    engine = NotifyEngine(store, RulePolicy(params), clock=lambda: now)
    zone_info = tz.resolve_zone(zone)
    first_seen: dict[str, Decision] = {}
    issued: list[str] = []
    fatigue: list[datetime] = []  # non-transactional deliveries, in decision order
    opted_out_at: datetime | None = None
    post = 0
    try:
        for i, step in enumerate(script):
            now += timedelta(minutes=step.gap_minutes)
            if step.opt_out:
                engine.record_outcome("", "fan", int(Outcome.DISABLED), None)
                opted_out_at = opted_out_at or now
                continue
            if step.replay and issued:
                nid = issued[len(issued) // 2]
                d = engine.decide(fields(nid, fan_id="fan", zone=zone))
                original = first_seen[nid]
                assert d.duplicate
                assert (d.action, d.reason, d.deliver_at, d.scores) == (
                    original.action,
                    original.reason,
                    original.deliver_at,
                    original.scores,
                )
                continue
            post = post if step.same_post else i
            nid = f"n{i}"
            d = engine.decide(fields(nid, fan_id="fan", trigger=step.trigger, zone=zone, post_id=f"p{post}"))
            assert not d.duplicate
            first_seen[nid] = d
            issued.append(nid)

            if step.trigger in params.transactional:
                assert (d.action, d.reason) == (Action.SEND_NOW, "transactional")
                continue
            assert d.reason != "transactional"
            if opted_out_at is not None:
                assert (d.action, d.reason) == (Action.DROP, "opted_out")
            at = delivered_at(d, now)
            if at is not None:
                assert at >= now
                fatigue.append(at)
            if d.action in (Action.DELAY_UNTIL, Action.DIGEST):
                assert d.deliver_at is not None and d.deliver_at > now

        # Each new delivery lands after the previous ones, so decision order is time order.
        assert fatigue == sorted(fatigue)
        for a, b in pairwise(fatigue):
            assert b - a >= params.min_spacing, (a, b)
        for at in fatigue:
            assert not tz.is_quiet(at, zone_info, params.quiet_start, params.quiet_end), at
            for cap in params.caps:
                in_window = [s for s in fatigue if at - cap.window < s <= at]
                assert len(in_window) <= cap.max_sends, (cap.name, at, in_window)
        recent = [s for s in fatigue if s > now - params.history_window]
        assert list(store.fan_state("fan", now).sends) == recent
    finally:
        store.close()


@settings(max_examples=80, deadline=None)
@given(
    zone=st.sampled_from(["America/New_York", "Europe/London"]),
    instant=st.builds(
        lambda base, m: base + timedelta(minutes=m),
        st.sampled_from(TRANSITIONS),
        st.integers(-48 * 60, 48 * 60),
    ),
    trigger=st.sampled_from(list(Trigger)),
)
def test_a_fresh_fan_gets_at_once_exactly_what_the_rules_allow(
    zone: str, instant: datetime, trigger: Trigger
) -> None:
    params = PolicyParams()
    store = EmbeddedNotifyState(":memory:")
    try:
        d = NotifyEngine(store, RulePolicy(params), clock=lambda: instant).decide(
            fields("n", trigger=trigger, zone=zone)
        )
    finally:
        store.close()
    quiet = tz.is_quiet(instant, tz.resolve_zone(zone), params.quiet_start, params.quiet_end)
    if trigger in params.transactional:
        assert d.action is Action.SEND_NOW
    elif quiet:
        assert d.action is not Action.SEND_NOW
        assert d.reason in {"quiet_hours", "expired"}
    else:
        assert (d.action, d.reason) == (Action.SEND_NOW, "eligible")
