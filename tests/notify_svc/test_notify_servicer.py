"""NotifyService through gRPC, in process on port 0, with a fixed clock, over both state backends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from notify_testkit import T0, Clock

from kindred.config import Settings
from kindred.v1 import notify_pb2, notify_pb2_grpc
from notify_svc.domain import Action, Channel, Outcome, Trigger
from notify_svc.policy import RulePolicy
from notify_svc.server import SERVICE_NAME, NotifyDeps, create_server
from notify_svc.state import NotifyState

pb = notify_pb2
StoreOpener = Callable[[], NotifyState]


@dataclass
class Served:
    stub: notify_pb2_grpc.NotifyServiceStub
    channel: grpc.Channel
    clock: Clock


@pytest.fixture()
def served(tmp_path: Path, open_store: StoreOpener) -> Iterator[Served]:
    settings = Settings.from_env({"KINDRED_DATA_DIR": str(tmp_path), "KINDRED_SERVER_THREADS": "4"})
    clock = Clock()
    state = open_store()
    server = create_server(
        settings, NotifyDeps(state=state, policy=RulePolicy(), clock=clock), port=0
    ).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Served(notify_pb2_grpc.NotifyServiceStub(channel), channel, clock)
    finally:
        channel.close()
        server.stop(0)


def candidate(nid: str, **kw: object) -> pb.NotificationCandidate:
    values: dict[str, object] = {
        "notification_id": nid,
        "fan_id": "fan-1",
        "creator_id": "creator-1",
        "post_id": f"post-{nid}",
        "trigger": pb.TRIGGER_TYPE_NEW_POST,
        "channel": pb.CHANNEL_PUSH,
        "fan_time_zone": "Europe/London",
    }
    values.update(kw)
    return pb.NotificationCandidate(**values)  # type: ignore[arg-type]


def decide(s: Served, c: pb.NotificationCandidate) -> pb.Decision:
    response: pb.DecideResponse = s.stub.Decide(pb.DecideRequest(candidate=c), timeout=5)
    return response.decision


def test_health_reports_serving(served: Served) -> None:
    health = health_pb2_grpc.HealthStub(served.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_decide_sends_then_replays_and_delays(served: Served) -> None:
    first = decide(served, candidate("n-1"))
    assert (first.action, first.reason, first.duplicate) == (pb.ACTION_SEND_NOW, "eligible", False)
    assert first.scores["local_hour"] == 13.0 and not first.HasField("deliver_at")
    again = decide(served, candidate("n-1"))
    assert again.duplicate and (again.action, again.reason, dict(again.scores)) == (
        first.action,
        first.reason,
        dict(first.scores),
    )
    delayed = decide(served, candidate("n-2"))
    assert (delayed.action, delayed.reason) == (pb.ACTION_DELAY_UNTIL, "min_spacing")
    assert delayed.deliver_at.ToDatetime(tzinfo=UTC) == T0 + timedelta(minutes=30)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"notification_id": ""}, "candidate.notification_id"),
        ({"fan_id": ""}, "candidate.fan_id"),
        ({"trigger": pb.TRIGGER_TYPE_UNSPECIFIED}, "candidate.trigger"),
        ({"trigger": 77}, "candidate.trigger"),
        ({"fan_time_zone": "Moon/Tranquility"}, "candidate.fan_time_zone"),
        ({"fan_is_member": True, "membership_tier": 4}, "candidate.membership_tier"),
        ({"fan_is_member": True, "membership_tier": -1}, "candidate.membership_tier"),
        ({"membership_tier": 2}, "candidate.membership_tier"),  # a tier without membership
        ({"fan_is_member": False, "membership_tier": 1}, "candidate.membership_tier"),
    ],
)
def test_bad_candidates_are_invalid_argument_naming_the_field(
    served: Served, change: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        decide(served, candidate("n-bad", **change))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (info.value.details() or "")


def test_created_at_far_in_the_future_is_invalid(served: Served) -> None:
    c = candidate("n-future")
    c.created_at.FromDatetime(T0 + timedelta(days=2))
    with pytest.raises(grpc.RpcError) as info:
        decide(served, c)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "candidate.created_at" in (info.value.details() or "")
    c.created_at.FromDatetime(T0 + timedelta(hours=1))  # a little clock skew is fine
    assert decide(served, c).action == pb.ACTION_SEND_NOW


@pytest.mark.parametrize(
    "relationship",
    [
        {"fan_is_member": True, "membership_tier": 3},
        {"fan_is_member": True, "membership_tier": 0},  # a member without a paid tier
        {"fan_is_member": True},
        {"fan_is_member": False, "membership_tier": 0},
    ],
)
def test_valid_relationships_are_accepted(served: Served, relationship: dict[str, object]) -> None:
    assert decide(served, candidate("n-rel", **relationship)).action == pb.ACTION_SEND_NOW


def test_decide_batch_streams_chunks_in_order(served: Served) -> None:
    chunks = [
        [candidate("b-1"), candidate("b-2"), candidate("x-1", fan_id="fan-2")],
        [candidate("b-3"), candidate("b-bad", fan_time_zone="Nowhere/Land"), candidate("b-1")],
        [],
        [candidate("b-4")],
    ]
    responses = list(
        served.stub.DecideBatch(iter([pb.DecideBatchRequest(candidates=c) for c in chunks]), timeout=10)
    )
    assert [[d.notification_id for d in r.decisions] for r in responses] == [
        ["b-1", "b-2", "x-1"],
        ["b-3", "b-bad", "b-1"],
        [],
        ["b-4"],
    ]
    got = [[(d.action, d.reason) for d in r.decisions] for r in responses]
    assert got[0] == [
        (pb.ACTION_SEND_NOW, "eligible"),
        (pb.ACTION_DELAY_UNTIL, "min_spacing"),
        (pb.ACTION_SEND_NOW, "eligible"),
    ]
    assert got[1] == [
        (pb.ACTION_DELAY_UNTIL, "min_spacing"),
        (pb.ACTION_DROP, "invalid:fan_time_zone"),
        (pb.ACTION_SEND_NOW, "eligible"),
    ]
    assert responses[1].decisions[2].duplicate
    assert got[3] == [(pb.ACTION_DIGEST, "daily_cap")]


def test_an_oversized_chunk_fails_the_stream_with_invalid_argument(served: Served) -> None:
    too_many = pb.DecideBatchRequest(candidates=[candidate(f"o-{i}") for i in range(10_001)])
    with pytest.raises(grpc.RpcError) as info:
        list(served.stub.DecideBatch(iter([too_many]), timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "candidates" in (info.value.details() or "")


def test_a_bad_chunk_mid_stream_fails_it_after_the_earlier_responses(served: Served) -> None:
    chunks = [
        pb.DecideBatchRequest(candidates=[candidate("m-1")]),
        pb.DecideBatchRequest(candidates=[candidate(f"o-{i}") for i in range(10_001)]),
        pb.DecideBatchRequest(candidates=[candidate("m-2", fan_id="fan-2")]),
    ]
    received: list[list[str]] = []
    with pytest.raises(grpc.RpcError) as info:
        for response in served.stub.DecideBatch(iter(chunks), timeout=10):
            received.append([d.notification_id for d in response.decisions])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert received == [["m-1"]]  # the chunk after the bad one was never decided
    assert decide(served, candidate("m-2", fan_id="fan-2")).duplicate is False


def test_a_caller_that_waits_for_each_response_before_sending_more_is_served(served: Served) -> None:
    """The pipelined DecideBatch answers a chunk without waiting for the next one to arrive."""
    import queue as q

    outbox: q.Queue[pb.DecideBatchRequest | None] = q.Queue()

    def requests() -> Iterator[pb.DecideBatchRequest]:
        while (item := outbox.get(timeout=10)) is not None:
            yield item

    stream = served.stub.DecideBatch(requests(), timeout=10)
    got = []
    for i in range(3):
        outbox.put(pb.DecideBatchRequest(candidates=[candidate(f"w-{i}", fan_id=f"fan-w{i}")]))
        got.append(next(stream).decisions[0].notification_id)
    outbox.put(None)
    assert list(stream) == [] and got == ["w-0", "w-1", "w-2"]


def test_record_outcome_disable_drops_later_non_transactional(served: Served) -> None:
    served.stub.RecordOutcome(
        pb.RecordOutcomeRequest(notification_id="n-0", fan_id="fan-1", outcome=pb.OUTCOME_DISABLED), timeout=5
    )
    dropped = decide(served, candidate("n-1"))
    assert (dropped.action, dropped.reason) == (pb.ACTION_DROP, "opted_out")
    assert dropped.scores["opted_out"] == 1.0
    paid = decide(served, candidate("n-2", trigger=pb.TRIGGER_TYPE_PAYMENT_FAILED))
    assert (paid.action, paid.reason) == (pb.ACTION_SEND_NOW, "transactional")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.RecordOutcomeRequest(notification_id="n", outcome=pb.OUTCOME_OPENED), "fan_id"),
        (pb.RecordOutcomeRequest(notification_id="n", fan_id="f"), "outcome"),
    ],
)
def test_record_outcome_rejects_bad_input(
    served: Served, request_: pb.RecordOutcomeRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        served.stub.RecordOutcome(request_, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (info.value.details() or "")


def test_domain_enums_match_the_proto_by_name_and_value() -> None:
    for domain_enum, proto_enum, prefix in [
        (Trigger, pb.TriggerType, "TRIGGER_TYPE_"),
        (Action, pb.Action, "ACTION_"),
        (Outcome, pb.Outcome, "OUTCOME_"),
        (Channel, pb.Channel, "CHANNEL_"),
    ]:
        proto = {name.removeprefix(prefix): value for name, value in proto_enum.items() if value != 0}
        domain = {member.name: int(member) for member in domain_enum if int(member) != 0}
        assert domain == proto, domain_enum.__name__


def test_ten_concurrent_identical_decides_through_grpc_record_one_send(served: Served) -> None:
    with ThreadPoolExecutor(10) as pool:
        decisions = list(pool.map(lambda _: decide(served, candidate("n-same")), range(10)))
    assert {(d.action, d.reason) for d in decisions} == {(pb.ACTION_SEND_NOW, "eligible")}
    assert sum(not d.duplicate for d in decisions) == 1
    # One recorded send: the next notification for the fan has to wait the spacing.
    assert decide(served, candidate("n-next")).reason == "min_spacing"


def test_bad_candidates_in_a_batch_are_dropped_naming_the_field(served: Served) -> None:
    future = candidate("f-1")
    future.created_at.FromDatetime(T0 + timedelta(days=30))
    chunk = [
        candidate("ok-1"),
        candidate("t-1", trigger=99),
        candidate("z-1", fan_time_zone="Europe/Atlantis"),
        candidate("m-1", fan_id=""),
        future,
        candidate("r-1", fan_is_member=True, membership_tier=9),
    ]
    [response] = served.stub.DecideBatch(iter([pb.DecideBatchRequest(candidates=chunk)]), timeout=10)
    assert [d.reason for d in response.decisions] == [
        "eligible",
        "invalid:trigger",
        "invalid:fan_time_zone",
        "invalid:fan_id",
        "invalid:created_at",
        "invalid:membership_tier",
    ]


def test_delayed_items_and_digests_are_collected_through_grpc_and_acked(served: Served) -> None:
    for i in range(6):  # 1 send, 2 delayed by spacing, then the daily cap sends 3 to the 18:00 digest
        decide(served, candidate(f"n-{i}"))
    served.clock.advance(hours=6)  # 18:00 in London
    request = pb.CollectDueRequest(worker_id="w1", limit=10, lease_seconds=30)
    batch = list(served.stub.CollectDue(request, timeout=5))
    kinds = sorted((pb.DueKind.Name(d.kind), len(d.items)) for d in batch)
    assert kinds == [("DUE_KIND_DELAYED", 1), ("DUE_KIND_DELAYED", 1), ("DUE_KIND_DIGEST", 3)]
    digest = next(d for d in batch if d.kind == pb.DUE_KIND_DIGEST)
    assert [i.notification_id for i in digest.items] == ["n-3", "n-4", "n-5"]
    assert all(i.reason == "daily_cap" and i.trigger == pb.TRIGGER_TYPE_NEW_POST for i in digest.items)
    assert list(served.stub.CollectDue(pb.CollectDueRequest(worker_id="w2"), timeout=5)) == []
    acked = sum(
        served.stub.AckDue(
            pb.AckDueRequest(claim_id=d.claim_id, notification_ids=[i.notification_id for i in d.items]),
            timeout=5,
        ).acked
        for d in batch
    )
    assert acked == 5
    served.clock.advance(minutes=5)  # past the lease: acked items never come back
    assert list(served.stub.CollectDue(pb.CollectDueRequest(worker_id="w2"), timeout=5)) == []


def test_collect_due_without_a_worker_is_invalid(served: Served) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(served.stub.CollectDue(pb.CollectDueRequest(limit=5), timeout=5))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "worker_id" in (info.value.details() or "")
