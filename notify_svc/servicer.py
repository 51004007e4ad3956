"""NotifyService servicer: proto → NotifyEngine → proto. No logic of its own."""

from __future__ import annotations

import contextvars
import queue
import threading
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
        # Pipelined (see _Pipeline): chunk n+1 is read and converted, and chunk n-1's response built,
        # while chunk n waits on its state store round trips.
        pipeline = _Pipeline(self._engine, request_iterator)
        try:
            for decisions in pipeline.results():
                response = notify_pb2.DecideBatchResponse()
                add = response.decisions.add
                for d in decisions:
                    fill_decision(add(), d)  # in place: building messages and copying them in costs 2x
                yield response
        finally:
            pipeline.stop()

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


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()
# Chunks a stage may run ahead of the next one (bounds memory on a fast client).
_AHEAD = 2


class _Pipeline:
    """DecideBatch's three stages, in order, each on its own thread.

    A reader takes chunks off the request stream and converts them; a decider runs them through
    `NotifyEngine.decide_batch` one after another (so chunk n+1 is decided after chunk n, exactly as
    without the pipeline); the RPC's own thread builds and yields the responses. The stages share
    the GIL, but the decider spends much of its time waiting on the state store (a Redis round trip,
    sqlite's C code), and the other two stages run meanwhile. Errors travel down the pipeline and
    are raised in order by `results`; `stop` (the RPC ended, e.g. cancelled) lets both threads exit.
    The threads run in copies of the caller's context, so the engine's spans keep their parent.
    A stream cut short may leave up to `_AHEAD` + 1 chunks decided whose responses never went out,
    as one could before: decisions are idempotent, so the caller's retry gets them back as
    duplicates, never as second sends.
    """

    def __init__(self, engine: NotifyEngine, requests: Iterator[notify_pb2.DecideBatchRequest]) -> None:
        self._engine = engine
        self._requests = requests
        self._converted: queue.Queue[object] = queue.Queue(maxsize=_AHEAD)
        self._decided: queue.Queue[object] = queue.Queue(maxsize=_AHEAD)
        self._stopped = threading.Event()
        for stage in (self._read, self._decide):
            threading.Thread(target=contextvars.copy_context().run, args=(stage,), daemon=True).start()

    def results(self) -> Iterator[list[Decision]]:
        while True:
            item = self._decided.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield cast(list[Decision], item)

    def stop(self) -> None:
        self._stopped.set()

    def _put(self, q: queue.Queue[object], item: object) -> bool:
        while not self._stopped.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        try:
            for chunk in self._requests:
                if not self._put(self._converted, [from_proto(c) for c in chunk.candidates]):
                    return
            self._put(self._converted, _END)
        except BaseException as exc:  # delivered to the RPC thread, raised there
            self._put(self._converted, _Failed(exc))

    def _decide(self) -> None:
        while not self._stopped.is_set():
            try:
                item = self._converted.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is _END or isinstance(item, _Failed):
                self._put(self._decided, item)
                return
            try:
                result: object = self._engine.decide_batch(cast(list[CandidateFields], item))
            except BaseException as exc:  # delivered to the RPC thread, raised there
                result = _Failed(exc)
            if not self._put(self._decided, result) or isinstance(result, _Failed):
                return


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
