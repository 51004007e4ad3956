"""NotifyService servicer: proto → NotifyEngine → proto. No logic of its own."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import cast

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from kindred.errors import InvalidArgument
from kindred.v1 import notify_pb2, notify_pb2_grpc
from notify_svc.domain import Action, CandidateFields, Decision
from notify_svc.engine import NotifyEngine

# Domain and proto enums share values and names; looking the proto value up by name keeps them honest.
_ACTIONS = {a: cast(notify_pb2.Action, notify_pb2.Action.Value(f"ACTION_{a.name}")) for a in Action}


class NotifyServicer(notify_pb2_grpc.NotifyServiceServicer):
    def __init__(self, engine: NotifyEngine) -> None:
        self._engine = engine

    def Decide(
        self, request: notify_pb2.DecideRequest, context: grpc.ServicerContext
    ) -> notify_pb2.DecideResponse:
        decision = self._engine.decide(from_proto(request.candidate))
        return notify_pb2.DecideResponse(decision=to_proto(decision))

    def DecideBatch(
        self, request_iterator: Iterator[notify_pb2.DecideBatchRequest], context: grpc.ServicerContext
    ) -> Iterator[notify_pb2.DecideBatchResponse]:
        # One response chunk per request chunk, in order, so callers can zip them back together.
        for chunk in request_iterator:
            decisions = self._engine.decide_batch([from_proto(c) for c in chunk.candidates])
            yield notify_pb2.DecideBatchResponse(decisions=[to_proto(d) for d in decisions])

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
        created_at_invalid=c.HasField("created_at") and created_at is None,
    )


def to_proto(d: Decision) -> notify_pb2.Decision:
    out = notify_pb2.Decision(
        notification_id=d.notification_id,
        action=_ACTIONS[d.action],
        reason=d.reason,
        scores=d.scores,
        duplicate=d.duplicate,
    )
    if d.deliver_at is not None:
        out.deliver_at.FromDatetime(d.deliver_at)
    return out


def _instant(ts: Timestamp) -> datetime | None:
    """The timestamp as aware UTC, or None when it is outside the representable range."""
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None
