"""One state-store suite, run against both backends: the embedded sqlite store and real Redis.

Decisions go through the real engine and rule policy, so the suite checks what matters end to end:
idempotency, atomic caps under concurrency, opt-out, restart survival, chunk semantics.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from notify_testkit import T0, Clock, fields

from kindred.errors import InvalidArgument
from notify_svc.domain import (
    Action,
    Candidate,
    Decision,
    FanState,
    Outcome,
    Trigger,
    Verdict,
    validate_candidate,
)
from notify_svc.engine import NotifyEngine
from notify_svc.policy import RulePolicy
from notify_svc.state import EmbeddedNotifyState, NotifyState, RedisNotifyState, per_candidate
from notify_svc.timeconv import to_us

StoreOpener = Callable[[], NotifyState]
DAY = timedelta(days=1)


def engine(store: NotifyState, clock: Clock | None = None) -> NotifyEngine:
    return NotifyEngine(store, RulePolicy(), clock=clock or Clock())


def same(a: Decision, b: Decision) -> bool:
    return (a.notification_id, a.action, a.reason, a.deliver_at, a.scores) == (
        b.notification_id,
        b.action,
        b.reason,
        b.deliver_at,
        b.scores,
    )


def test_a_replay_returns_the_recorded_decision_marked_duplicate(store: NotifyState) -> None:
    clock = Clock()
    e = engine(store, clock)
    first = e.decide(fields("n-1"))
    assert first.action is Action.SEND_NOW and not first.duplicate
    clock.advance(minutes=5)  # later, the same id: the original decision, not a fresh one
    again = e.decide(fields("n-1"))
    assert again.duplicate and same(first, again)
    assert store.fan_state("fan-1", clock.now).sends == (T0,)
    assert store.decision("n-1") is not None and same(store.decision("n-1"), first)  # type: ignore[arg-type]


def test_ten_concurrent_identical_calls_record_exactly_one_send(store: NotifyState) -> None:
    e = engine(store)
    barrier = threading.Barrier(10)

    def call(_: int) -> Decision:
        barrier.wait()
        return e.decide(fields("n-concurrent"))

    with ThreadPoolExecutor(10) as pool:
        decisions = list(pool.map(call, range(10)))
    assert Counter(d.duplicate for d in decisions) == {True: 9, False: 1}
    assert {d.action for d in decisions} == {Action.SEND_NOW}
    assert all(same(d, decisions[0]) for d in decisions)
    assert store.fan_state("fan-1", T0).sends == (T0,)


def test_concurrent_different_notifications_for_one_fan_respect_cap_and_spacing(store: NotifyState) -> None:
    e = engine(store)
    barrier = threading.Barrier(10)

    def call(i: int) -> Decision:
        barrier.wait()
        return e.decide(fields(f"n-{i}"))

    with ThreadPoolExecutor(10) as pool:
        decisions = list(pool.map(call, range(10)))
    actions = Counter(d.action for d in decisions)
    # Default cap 3 / 24 h: one now, two spaced 30 min apart, the rest into the digest.
    assert actions == {Action.SEND_NOW: 1, Action.DELAY_UNTIL: 2, Action.DIGEST: 7}
    recorded = store.fan_state("fan-1", T0).sends
    assert recorded == (T0, T0 + timedelta(minutes=30), T0 + timedelta(minutes=60))


def test_a_chunk_keeps_order_chains_one_fan_and_dedupes_repeated_ids(store: NotifyState) -> None:
    e = engine(store)
    batch = [fields("a-1"), fields("b-1", fan_id="fan-2"), fields("a-2"), fields("a-1"), fields("a-3")]
    decisions = e.decide_batch(batch)
    assert [d.notification_id for d in decisions] == ["a-1", "b-1", "a-2", "a-1", "a-3"]
    assert [d.action for d in decisions] == [
        Action.SEND_NOW,
        Action.SEND_NOW,
        Action.DELAY_UNTIL,
        Action.SEND_NOW,
        Action.DELAY_UNTIL,
    ]
    assert decisions[3].duplicate and same(decisions[3], decisions[0])
    assert decisions[4].deliver_at == T0 + timedelta(minutes=60)
    # The second chunk sees the first one's sends.
    later = e.decide_batch([fields("a-4"), fields("a-1")])
    assert later[0].reason == "daily_cap" and later[1].duplicate


def test_invalid_candidates_in_a_chunk_are_dropped_not_recorded(store: NotifyState) -> None:
    e = engine(store)
    decisions = e.decide_batch(
        [fields("ok-1"), fields("bad-1", zone="Nowhere/Town"), fields("bad-2", fan_id="")]
    )
    assert [(d.action, d.reason) for d in decisions] == [
        (Action.SEND_NOW, "eligible"),
        (Action.DROP, "invalid:fan_time_zone"),
        (Action.DROP, "invalid:fan_id"),
    ]
    assert store.decision("bad-1") is None
    # Fixed and resent, the candidate is decided normally.
    assert e.decide(fields("bad-1")).reason == "min_spacing"


def test_opt_out_is_recorded_and_only_transactional_gets_through(store: NotifyState) -> None:
    e = engine(store)
    e.record_outcome("n-0", "fan-1", int(Outcome.OPENED), None)
    assert not store.fan_state("fan-1", T0).opted_out
    e.record_outcome("n-0", "fan-1", int(Outcome.DISABLED), None)
    assert store.fan_state("fan-1", T0).opted_out
    dropped = e.decide(fields("n-1"))
    assert (dropped.action, dropped.reason) == (Action.DROP, "opted_out")
    assert e.decide(fields("pay-1", trigger=Trigger.PAYMENT_FAILED)).action is Action.SEND_NOW


def test_same_content_under_a_new_id_is_dropped_within_the_window(store: NotifyState) -> None:
    clock = Clock()
    e = engine(store, clock)
    assert e.decide(fields("n-1", post_id="p-9")).action is Action.SEND_NOW
    clock.advance(hours=2)
    assert e.decide(fields("n-2", post_id="p-9")).reason == "duplicate_content"
    assert e.decide(fields("n-3", post_id="p-9", trigger=Trigger.COMMENT_REPLY)).action is Action.SEND_NOW
    clock.advance(hours=23)
    assert e.decide(fields("n-4", post_id="p-9")).action is Action.SEND_NOW


def test_the_fans_zone_is_remembered_for_candidates_without_one(store: NotifyState) -> None:
    night_ny = T0.replace(hour=3)  # 23:00 in New York, 04:00 in London
    e = engine(store, Clock(night_ny))
    e.decide(fields("pay-1", trigger=Trigger.PAYMENT_FAILED, zone="America/New_York"))  # spends no budget
    assert store.fan_state("fan-1", night_ny).time_zone == "America/New_York"
    later = e.decide(fields("n-2", zone=""))
    assert later.reason == "quiet_hours" and later.deliver_at == T0  # 08:00 EDT


def test_state_survives_a_restart(open_store: StoreOpener) -> None:
    first = open_store()
    e = engine(first)
    decided = e.decide(fields("n-1"))
    e.record_outcome("", "fan-2", int(Outcome.DISABLED), None)
    first.close()

    reopened = open_store()
    e2 = engine(reopened)
    replay = e2.decide(fields("n-1"))
    assert replay.duplicate and same(replay, decided)
    assert reopened.fan_state("fan-1", T0).sends == (T0,)
    assert reopened.fan_state("fan-2", T0).opted_out
    assert e2.decide(fields("n-2")).reason == "min_spacing"  # the earlier send still counts


def test_sends_older_than_the_history_window_are_forgotten(store: NotifyState) -> None:
    clock = Clock()
    e = engine(store, clock)
    e.decide(fields("n-1"))
    clock.advance(days=8)
    assert store.fan_state("fan-1", clock.now).sends == ()
    assert e.decide(fields("n-2")).scores["sends_168h"] == 0.0


def test_record_outcome_validates(store: NotifyState) -> None:
    e = engine(store)
    with pytest.raises(InvalidArgument) as info:
        e.record_outcome("n", "", int(Outcome.OPENED), None)
    assert info.value.field == "fan_id"
    with pytest.raises(InvalidArgument) as info:
        e.record_outcome("n", "fan-1", 0, None)
    assert info.value.field == "outcome"


@pytest.mark.redis
def test_redis_commit_retries_when_the_fan_changed_between_read_and_write(
    redis_opener: Callable[[], RedisNotifyState],
) -> None:
    """Forces the race the version token guards against: another writer commits mid-decision.

    (The embedded store holds the write lock across the decision, so there is no race to force.)
    """
    store, rival = redis_opener(), redis_opener()
    policy = RulePolicy()
    calls = Counter[str]()

    def interfering(candidate: Candidate, fan: FanState) -> Verdict:
        calls[candidate.notification_id] += 1
        if sum(calls.values()) == 1:  # the first read is now stale: a rival sends to the same fan
            rival.decide(
                [validate_candidate(fields("rival"), T0, DAY)],
                per_candidate(lambda c, f: policy.decide(c, f, T0)),
                T0,
            )
        return policy.decide(candidate, fan, T0)

    chunk = [validate_candidate(fields(i), T0, DAY) for i in ("a-1", "a-1", "a-2")]
    decisions = store.decide(chunk, per_candidate(interfering), T0)
    # Round 1 planned a-1 as SEND_NOW on the stale view; its commit was refused and it was re-decided.
    # The repeated a-1 and a-2 (same fan) wait for later waves, so they read a-1's fresh decision.
    assert calls["a-1"] == 2 and calls["a-2"] == 1
    assert [(d.action, d.reason) for d in decisions] == [
        (Action.DELAY_UNTIL, "min_spacing"),
        (Action.DELAY_UNTIL, "min_spacing"),
        (Action.DELAY_UNTIL, "min_spacing"),
    ]
    assert decisions[1].duplicate and same(decisions[1], decisions[0])
    assert store.fan_state("fan-1", T0).sends == tuple(T0 + timedelta(minutes=m) for m in (0, 30, 60))


@pytest.mark.redis
def test_redis_prunes_expired_content_claims_and_sends_from_the_fan_hash(
    redis_opener: Callable[[], RedisNotifyState], monkeypatch: pytest.MonkeyPatch
) -> None:
    from notify_svc import state as state_module

    store = redis_opener()
    clock = Clock()
    e = engine(store, clock)
    e.decide(fields("p-1"))
    clock.advance(days=8)
    monkeypatch.setattr(state_module, "_PRUNE_ONE_IN", 1)  # every commit prunes
    e.decide(fields("p-2"))
    fan = store._r.hgetall(f"{store.prefix}fan:fan-1")
    claims = [k for k in fan if k.startswith("c:")]
    assert len(claims) == 1 and "post-p-2" in claims[0]  # p-1's claim expired and was pruned
    assert fan["s"] == str(to_us(clock.now))  # p-1's send left the history window


# A process that decides one candidate and dies (os._exit: no cleanup, no rollback of its own) after
# the policy answered and before the store recorded anything.
_CRASHING_DECIDER = """
import os, sys
from notify_testkit import T0, RETENTION, fields
from notify_svc.domain import validate_candidate
from notify_svc.policy import RulePolicy
from notify_svc.state import EmbeddedNotifyState, RedisNotifyState
from datetime import timedelta

backend, where = sys.argv[1], sys.argv[2]
store = (
    EmbeddedNotifyState(where, RETENTION) if backend == "embedded"
    else RedisNotifyState.from_url("redis://127.0.0.1:6379/0", RETENTION, prefix=where)
)
policy = RulePolicy()

def decide_then_crash(candidates, fans):
    verdicts = [policy.decide(c, f, T0) for c, f in zip(candidates, fans)]
    assert verdicts[0].decision.action.name == "SEND_NOW"
    os._exit(17)

store.decide([validate_candidate(fields("n-crash"), T0, timedelta(days=1))], decide_then_crash, T0)
"""


def _store_location(store: NotifyState) -> tuple[str, str]:
    if isinstance(store, RedisNotifyState):
        return "redis", store.prefix
    assert isinstance(store, EmbeddedNotifyState)
    return "embedded", store.path


def test_a_crash_between_deciding_and_recording_never_yields_two_sends(store: NotifyState) -> None:
    backend, where = _store_location(store)
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), str(here.parents[1])])}
    child = subprocess.run(
        [sys.executable, "-c", _CRASHING_DECIDER, backend, where], env=env, capture_output=True, timeout=60
    )
    assert child.returncode == 17, child.stderr.decode()
    # The decision died with the process: nothing recorded, no send spent...
    assert store.decision("n-crash") is None
    assert store.fan_state("fan-1", T0).sends == ()
    # ...so the caller's retry decides afresh, and every further replay is the same single send.
    e = engine(store)
    decisions = [e.decide(fields("n-crash")) for _ in range(3)]
    assert [(d.action, d.duplicate) for d in decisions] == [
        (Action.SEND_NOW, False),
        (Action.SEND_NOW, True),
        (Action.SEND_NOW, True),
    ]
    assert store.fan_state("fan-1", T0).sends == (T0,)


def test_a_failure_inside_the_decision_step_records_nothing(store: NotifyState) -> None:
    policy = RulePolicy()

    def decide_then_fail(candidates: Sequence[Candidate], fans: Sequence[FanState]) -> list[Verdict]:
        [policy.decide(c, f, T0) for c, f in zip(candidates, fans, strict=True)]
        raise RuntimeError("injected: the process dies between deciding and recording")

    chunk = [validate_candidate(fields(f"n-{i}", f"fan-{i}"), T0, DAY) for i in range(3)]
    with pytest.raises(RuntimeError, match="injected"):
        store.decide(chunk, decide_then_fail, T0)
    assert all(store.decision(f"n-{i}") is None for i in range(3))
    decided = store.decide(chunk, per_candidate(lambda c, f: policy.decide(c, f, T0)), T0)
    assert [d.action for d in decided] == [Action.SEND_NOW] * 3 and not any(d.duplicate for d in decided)
