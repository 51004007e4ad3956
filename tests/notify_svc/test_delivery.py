"""Delivery of DELAY_UNTIL and DIGEST items through claim + ack, on both state backends.

The items are produced by real decisions (a scripted policy picks the action per candidate, so
each test states exactly what is scheduled); claims, leases and acks run against sqlite and Redis.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import pytest
from notify_testkit import T0, Clock, fields

from kindred.errors import InvalidArgument
from notify_svc.domain import (
    Action,
    Candidate,
    Decision,
    DueKind,
    DueNotification,
    FanState,
    Outcome,
    Trigger,
    Verdict,
)
from notify_svc.engine import NotifyEngine
from notify_svc.state import NotifyState

StoreOpener = Callable[[], NotifyState]
LEASE = 60
HOUR = timedelta(hours=1)


class ScriptedPolicy:
    """Delays `d-*` ids by an hour, digests `g-*` ids at T0 + 5 h, sends the rest now."""

    def decide(self, candidate: Candidate, fan: FanState, now: datetime) -> Verdict:
        nid = candidate.notification_id
        if nid.startswith("d-"):
            return Verdict(Decision(nid, Action.DELAY_UNTIL, "quiet_hours", now + HOUR), send_at=now + HOUR)
        if nid.startswith("g-"):
            return Verdict(Decision(nid, Action.DIGEST, "daily_cap", T0 + 5 * HOUR))
        return Verdict(Decision(nid, Action.SEND_NOW, "eligible"), send_at=now)


def engine(store: NotifyState, clock: Clock | None = None) -> NotifyEngine:
    return NotifyEngine(store, ScriptedPolicy(), clock=clock or Clock())


def collect(
    e: NotifyEngine, at: datetime, worker: str = "w1", limit: int = 100, lease: int = LEASE
) -> list[DueNotification]:
    return e.collect_due(at, limit, worker, lease)


def ids(batch: Sequence[DueNotification]) -> list[str]:
    return sorted(item.notification_id for due in batch for item in due.items)


def ack_all(e: NotifyEngine, batch: Sequence[DueNotification]) -> int:
    return sum(e.ack_due(d.claim_id, [i.notification_id for i in d.items]) for d in batch)


def test_a_delayed_item_is_due_at_its_time_handed_out_once_and_gone_after_ack(store: NotifyState) -> None:
    e = engine(store)
    decision = e.decide(fields("d-1", creator_id="c-7", post_id="p-9"))
    assert decision.action is Action.DELAY_UNTIL
    assert collect(e, T0 + HOUR - timedelta(seconds=1)) == []  # not due yet
    [due] = collect(e, T0 + HOUR)
    assert (due.fan_id, due.kind, due.lease_expires_at) == (
        "fan-1",
        DueKind.DELAYED,
        T0 + HOUR + timedelta(seconds=LEASE),
    )
    [item] = due.items
    assert (item.notification_id, item.creator_id, item.post_id, item.trigger, item.channel) == (
        "d-1",
        "c-7",
        "p-9",
        int(Trigger.NEW_POST),
        1,
    )
    assert (item.deliver_at, item.reason, item.kind) == (T0 + HOUR, "quiet_hours", DueKind.DELAYED)
    assert collect(e, T0 + HOUR, worker="w2") == []  # claimed: invisible to another collector
    assert e.ack_due(due.claim_id, ["d-1"]) == 1
    assert collect(e, T0 + 3 * HOUR) == []  # acked: never again, even after the lease
    assert e.ack_due(due.claim_id, ["d-1"]) == 0


def test_a_fans_due_digest_items_come_as_one_message(store: NotifyState) -> None:
    e = engine(store)
    e.decide_batch([fields("g-1"), fields("g-2"), fields("s-1"), fields("g-3"), fields("g-4", "fan-2")])
    e.decide(fields("d-1", "fan-2"))
    early = collect(e, T0 + 4 * HOUR)  # only fan-2's delayed item is due before the digest time
    assert [(d.fan_id, d.kind, ids([d])) for d in early] == [("fan-2", DueKind.DELAYED, ["d-1"])]
    assert ack_all(e, early) == 1
    batch = collect(e, T0 + 5 * HOUR)
    digests = {d.fan_id: d for d in batch if d.kind is DueKind.DIGEST}
    assert sorted(digests) == ["fan-1", "fan-2"]
    assert [i.notification_id for i in digests["fan-1"].items] == ["g-1", "g-2", "g-3"]
    assert [i.notification_id for i in digests["fan-2"].items] == ["g-4"]
    assert all(i.reason == "daily_cap" and i.kind is DueKind.DIGEST for i in digests["fan-1"].items)
    assert len(batch) == 2 and ack_all(e, batch) == 4
    assert collect(e, T0 + 5 * HOUR) == []


def test_limit_counts_messages_and_the_rest_stay_due(store: NotifyState) -> None:
    e = engine(store)
    e.decide_batch([fields(f"d-{i}", f"fan-{i}") for i in range(5)])
    first = collect(e, T0 + HOUR, limit=2)
    second = collect(e, T0 + HOUR, limit=10)
    assert len(first) == 2 and len(second) == 3
    assert sorted(ids(first) + ids(second)) == [f"d-{i}" for i in range(5)]


def test_a_collector_that_crashes_before_acking_loses_nothing(open_store: StoreOpener) -> None:
    crashed = open_store()
    e = engine(crashed)
    e.decide_batch([fields("d-1"), fields("g-1"), fields("g-2")])
    claimed = collect(e, T0 + 5 * HOUR, worker="crashing")
    assert ids(claimed) == ["d-1", "g-1", "g-2"]
    crashed.close()  # gone without acking; its state lives on in the store
    survivor = engine(open_store())
    assert collect(survivor, T0 + 5 * HOUR + timedelta(seconds=LEASE - 1), worker="w2") == []  # still leased
    retaken = collect(survivor, T0 + 5 * HOUR + timedelta(seconds=LEASE), worker="w2")
    assert ids(retaken) == ["d-1", "g-1", "g-2"]
    assert {d.claim_id for d in retaken}.isdisjoint({d.claim_id for d in claimed})
    # The crashed collector's late ack is refused: the items belong to the new claim now.
    assert ack_all(survivor, claimed) == 0
    assert ack_all(survivor, retaken) == 3
    assert collect(survivor, T0 + 9 * HOUR) == []


def test_concurrent_collectors_never_get_the_same_item(open_store: StoreOpener) -> None:
    e = engine(open_store())
    e.decide_batch(
        [fields(f"d-{i}", f"fan-{i % 40}") for i in range(200)]
        + [fields(f"g-{i}", f"fan-{i % 7}") for i in range(30)]
    )
    got: list[str] = []
    messages = Counter[str]()
    lock = threading.Lock()

    def worker(name: str) -> None:
        mine = engine(open_store())  # one store instance per collector, as separate processes would
        while batch := collect(mine, T0 + 5 * HOUR, worker=name, limit=7):
            ack_all(mine, batch)
            with lock:
                got.extend(ids(batch))
                messages.update(d.kind.name for d in batch)

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(got) == sorted([f"d-{i}" for i in range(200)] + [f"g-{i}" for i in range(30)])
    assert messages["DELAYED"] == 200 and messages["DIGEST"] == 7  # one digest per fan


def test_scheduled_items_survive_a_restart_and_replays_do_not_duplicate_them(open_store: StoreOpener) -> None:
    first = open_store()
    e = engine(first)
    e.decide(fields("d-1"))
    assert e.decide(fields("d-1")).duplicate
    first.close()
    e2 = engine(open_store())
    assert e2.decide(fields("d-1")).duplicate
    assert ids(collect(e2, T0 + HOUR)) == ["d-1"]


def test_items_of_a_fan_who_opted_out_are_dropped_at_claim(store: NotifyState) -> None:
    e = engine(store)
    e.decide_batch([fields("d-1"), fields("g-1"), fields("d-2", "fan-2")])
    e.record_outcome("x", "fan-1", int(Outcome.DISABLED), T0)
    batch = collect(e, T0 + 5 * HOUR)
    assert ids(batch) == ["d-2"] and ack_all(e, batch) == 1
    assert collect(e, T0 + 9 * HOUR) == []


def test_sends_and_drops_schedule_nothing(store: NotifyState) -> None:
    e = engine(store)
    decisions = e.decide_batch([fields("s-1"), fields("s-2", "fan-2", zone="Mars/Base")])
    assert [d.reason for d in decisions] == ["eligible", "invalid:fan_time_zone"]
    assert collect(e, T0 + 20 * HOUR) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"worker": ""}, "worker_id"),
        ({"limit": 10_001}, "limit"),
        ({"lease": 3601}, "lease_seconds"),
    ],
)
def test_bad_collect_requests_name_the_field(
    store: NotifyState, kwargs: dict[str, object], field: str
) -> None:
    e = engine(store)
    with pytest.raises(InvalidArgument) as err:
        collect(e, T0, **kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_now_far_ahead_of_the_server_clock_is_refused(store: NotifyState) -> None:
    e = engine(store)
    with pytest.raises(InvalidArgument) as err:
        collect(e, T0 + timedelta(days=2))
    assert err.value.field == "now"
    with pytest.raises(InvalidArgument) as err:
        e.ack_due("", ["x"])
    assert err.value.field == "claim_id"
