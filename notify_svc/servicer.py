"""NotifyService servicer: proto → NotifyEngine → proto. No logic of its own."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import cast

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from kindred.errors import InvalidArgument
from kindred.v1 import notify_pb2, notify_pb2_grpc
from notify_svc.domain import Action, CandidateFields, Decision, DueKind, DueNotification
from notify_svc.engine import NotifyEngine

# Domain and proto enums share values and names; looking the proto value up by name keeps them honest.
_ACTIONS = {a: cast(notify_pb2.Action, notify_pb2.Action.Value(f"ACTION_{a.name}")) for a in Action}
_DUE_KINDS = {k: cast(notify_pb2.DueKind, notify_pb2.DueKind.Value(f"DUE_KIND_{k.name}")) for k in DueKind}


class NotifyServicer(notify_pb2_grpc.NotifyServiceServicer):
    def __init__(self, engine: NotifyEngine) -> None:
        self._engine = engine

    def Decide(
        self, request: notify_pb2.DecideRequest, context: grpc.ServicerContext
    ) -> notify_pb2.DecideResponse:
        response = notify_pb2.DecideResponse()
        fill_decision(response.decision, self._engine.decide(from_proto(request.candidate)))
        return response

    def DecideBatch(
        self, request_iterator: Iterator[notify_pb2.DecideBatchRequest], context: grpc.ServicerContext
    ) -> Iterator[notify_pb2.DecideBatchResponse]:
        # One response chunk per request chunk, in order, so callers can zip them back together.
        for chunk in request_iterator:
            decisions = self._engine.decide_batch([from_proto(c) for c in chunk.candidates])
            response = notify_pb2.DecideBatchResponse()
            add = response.decisions.add
            for d in decisions:
                fill_decision(add(), d)  # in place: building messages and copying them in costs 2x
            yield response

    def RecordOutcome(
        self, request: notify_pb2.RecordOutcomeRequest, context: grpc.ServicerContext
    ) -> notify_pb2.RecordOutcomeResponse:
        occurred_at = None
        if request.HasField("occurred_at"):
            occurred_at = _instant(request.occurred_at)
            if occurred_at is None:
                raise InvalidArgument("occurred_at", "not a valid timestamp")
        self._engine.record_outcome(request.notification_id, request.fan_id, request.outcome, occurred_at)
        return notify_pb2.RecordOutcomeResponse()

    def CollectDue(
        self, request: notify_pb2.CollectDueRequest, context: grpc.ServicerContext
    ) -> Iterator[notify_pb2.DueNotification]:
        now = None
        if request.HasField("now"):
            now = _instant(request.now)
            if now is None:
                raise InvalidArgument("now", "not a valid timestamp")
        # Claimed before the first message goes out: a stream cut short leaves claims that expire.
        claimed = self._engine.collect_due(now, request.limit, request.worker_id, request.lease_seconds)
        for due in claimed:
            yield due_to_proto(due)

    def AckDue(
        self, request: notify_pb2.AckDueRequest, context: grpc.ServicerContext
    ) -> notify_pb2.AckDueResponse:
        acked = self._engine.ack_due(request.claim_id, list(request.notification_ids))
        return notify_pb2.AckDueResponse(acked=acked)


def from_proto(c: notify_pb2.NotificationCandidate) -> CandidateFields:
    created_at = _instant(c.created_at) if c.HasField("created_at") else None
    return CandidateFields(
        notification_id=c.notification_id,
        fan_id=c.fan_id,
        creator_id=c.creator_id,
        post_id=c.post_id,
        trigger=c.trigger,
        channel=c.channel,
        created_at=created_at,
        fan_time_zone=c.fan_time_zone,
        fan_is_member=c.fan_is_member if c.HasField("fan_is_member") else None,
        membership_tier=c.membership_tier if c.HasField("membership_tier") else None,
        created_at_invalid=c.HasField("created_at") and created_at is None,
    )


def fill_decision(out: notify_pb2.Decision, d: Decision) -> None:
    out.notification_id = d.notification_id
    out.action = _ACTIONS[d.action]
    out.reason = d.reason
    out.duplicate = d.duplicate
    out.scores.update(d.scores)
    if d.deliver_at is not None:
        out.deliver_at.FromDatetime(d.deliver_at)


def due_to_proto(due: DueNotification) -> notify_pb2.DueNotification:
    out = notify_pb2.DueNotification(claim_id=due.claim_id, fan_id=due.fan_id, kind=_DUE_KINDS[due.kind])
    out.lease_expires_at.FromDatetime(due.lease_expires_at)
    for item in due.items:
        proto = out.items.add(
            notification_id=item.notification_id,
            creator_id=item.creator_id,
            post_id=item.post_id,
            trigger=cast(notify_pb2.TriggerType, item.trigger),
            channel=cast(notify_pb2.Channel, item.channel),
            reason=item.reason,
        )
        proto.deliver_at.FromDatetime(item.deliver_at)
    return out


def _instant(ts: Timestamp) -> datetime | None:
    """The timestamp as aware UTC, or None when it is outside the representable range."""
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None
