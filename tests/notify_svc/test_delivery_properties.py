"""Property test of delivery (Hypothesis): whatever the interleaving of decisions, collectors, acks,
crashes (claims never acked) and time, no item is held by two live claims, an acked item never comes
back, and in the end every scheduled item is delivered and acked exactly once — on both backends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from notify_testkit import REDIS_URL, RETENTION, T0, Clock, fields, redis_client_or_skip

from notify_svc.domain import Action, Candidate, Decision, DueNotification, FanState, Verdict
from notify_svc.engine import NotifyEngine
from notify_svc.state import EmbeddedNotifyState, NotifyState, RedisNotifyState

LEASE_S = 60


class SchedulingPolicy:
    """`d-*` ids are delayed by their number of minutes; `g-*` ids go to a digest at T0 + 30 min."""

    def decide(self, candidate: Candidate, fan: FanState, now: datetime) -> Verdict:
        kind, minutes = candidate.notification_id.split("-")[:2]
        if kind == "d":
            at = now + timedelta(minutes=int(minutes))
            return Verdict(
                Decision(candidate.notification_id, Action.DELAY_UNTIL, "min_spacing", at), send_at=at
            )
        return Verdict(
            Decision(candidate.notification_id, Action.DIGEST, "daily_cap", T0 + timedelta(minutes=30))
        )


decide_op = st.tuples(st.just("decide"), st.sampled_from("dg"), st.integers(0, 40), st.integers(0, 4))
collect_op = st.tuples(st.just("collect"), st.integers(1, 5), st.integers(0, 2), st.booleans())
advance_op = st.tuples(st.just("advance"), st.integers(1, 600), st.just(0), st.just(0))
programs = st.lists(st.one_of(decide_op, collect_op, advance_op), min_size=1, max_size=40)


@contextmanager
def opened(backend: str) -> Iterator[NotifyState]:
    if backend == "embedded":
        store: NotifyState = EmbeddedNotifyState(":memory:", RETENTION)
        yield store
        store.close()
        return
    admin = redis_client_or_skip()
    prefix = f"kindred-test:notify-prop:{uuid.uuid4().hex}:"
    store = RedisNotifyState.from_url(REDIS_URL, RETENTION, prefix=prefix)
    try:
        yield store
    finally:
        store.close()
        keys = list(admin.scan_iter(match=prefix + "*", count=1000))
        if keys:
            admin.delete(*keys)
        admin.close()


def check_program(backend: str, program: list[tuple[str, object, int, object]]) -> None:
    with opened(backend) as store:
        clock = Clock()
        engine = NotifyEngine(store, SchedulingPolicy(), clock=clock)
        scheduled: set[str] = set()
        live: dict[str, tuple[str, datetime]] = {}  # item → (claim, lease end)
        acked: set[str] = set()

        def collect(limit: int, worker: int, ack: bool) -> list[DueNotification]:
            batch = engine.collect_due(None, limit, f"w{worker}", LEASE_S)
            for due in batch:
                for item in due.items:
                    nid = item.notification_id
                    assert nid in scheduled and nid not in acked, f"{nid} handed out after its ack"
                    holder = live.get(nid)
                    assert holder is None or holder[1] <= clock.now, f"{nid} in two live claims"
                    assert item.deliver_at <= clock.now
                    live[nid] = (due.claim_id, due.lease_expires_at)
                if ack:  # else the collector "crashed" holding the claim
                    ids = [i.notification_id for i in due.items]
                    assert engine.ack_due(due.claim_id, ids) == len(ids)
                    acked.update(ids)
                    for nid in ids:
                        live.pop(nid)
            return batch

        for n, (op, a, b, c) in enumerate(program):
            if op == "decide":
                nid = f"{a}-{b}-{n}"
                engine.decide(fields(nid, f"fan-{c}"))
                scheduled.add(nid)
            elif op == "collect":
                assert isinstance(a, int) and isinstance(c, bool)
                collect(a, b, c)
            else:
                assert isinstance(a, int)
                clock.advance(seconds=a)
        # Drain: past every due time and lease, collectors that ack take everything that is left.
        clock.advance(hours=2)
        while collect(5, 9, True):
            pass
        assert acked == scheduled


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs)
def test_delivery_exactly_once_claims_embedded(program: list[tuple[str, object, int, object]]) -> None:
    check_program("embedded", program)


@pytest.mark.redis
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs)
def test_delivery_exactly_once_claims_redis(program: list[tuple[str, object, int, object]]) -> None:
    check_program("redis", program)
