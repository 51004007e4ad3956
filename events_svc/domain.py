"""Ingesting behavioural events: validate each one, append the valid ones, report the rest by field.

A batch is accepted partially on purpose: one malformed event from a client should not cost the other
events of its batch. Each rejected event is named by its position and field ("events[3].fan_id"), so
the caller can fix and resend just those; resending a whole batch is safe too, because the log is
idempotent by event_id. No grpc here: the servicer converts this module's results to protos.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from kindred import telemetry_schema as schema
from kindred.errors import InvalidArgument
from kindred.eventlog import AppendResult
from kindred.telemetry import get_tracer
from kindred.v1 import events_pb2

MAX_EVENT_ID_CHARS: Final = 128
MAX_BATCH: Final = 10_000
# Clients' clocks drift and events are sometimes stamped ahead; more than a day ahead is a bug.
MAX_FUTURE_SKEW_S: Final = 86_400.0

ET = events_pb2.EventType
_KNOWN_TYPES: Final = frozenset(ET.values()) - {ET.EVENT_TYPE_UNSPECIFIED}
NEEDS_CREATOR: Final = frozenset(
    {
        ET.EVENT_TYPE_FOLLOW,
        ET.EVENT_TYPE_UNFOLLOW,
        ET.EVENT_TYPE_MEMBERSHIP_START,
        ET.EVENT_TYPE_MEMBERSHIP_END,
        ET.EVENT_TYPE_CREATOR_VIEW,
    }
)
NEEDS_POST: Final = frozenset({ET.EVENT_TYPE_POST_VIEW, ET.EVENT_TYPE_POST_LIKE})
NEEDS_QUERY: Final = frozenset({ET.EVENT_TYPE_SEARCH, ET.EVENT_TYPE_SEARCH_CLICK})


class EventSink(Protocol):
    """Where accepted events go: the segment-file EventLog on one machine, a stream on the cluster."""

    def append(self, events: Sequence[events_pb2.Event]) -> AppendResult: ...


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    event_id: str
    field: str  # e.g. "events[3].fan_id"
    reason: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: tuple[Rejection, ...]


def validate_event(event: events_pb2.Event, index: int, now: float) -> Rejection | None:
    """The first problem with `event` (at position `index` of the request), or None if it is valid."""

    def reject(name: str, reason: str) -> Rejection:
        return Rejection(index, event.event_id, f"events[{index}].{name}", reason)

    if not event.event_id:
        return reject("event_id", "required: the idempotency key of the event")
    if len(event.event_id) > MAX_EVENT_ID_CHARS:
        return reject("event_id", f"at most {MAX_EVENT_ID_CHARS} characters, got {len(event.event_id)}")
    if event.type not in _KNOWN_TYPES:
        return reject("type", "required: one of the EventType values other than EVENT_TYPE_UNSPECIFIED")
    if not event.fan_id:
        return reject("fan_id", "required")
    type_name = ET.Name(event.type)
    if event.type in NEEDS_CREATOR and not event.creator_id:
        return reject("creator_id", f"required for {type_name}")
    if event.type in NEEDS_POST and not event.post_id:
        return reject("post_id", f"required for {type_name}")
    if event.type in NEEDS_QUERY and not event.query.strip():
        return reject("query", f"required for {type_name}")
    if event.type == ET.EVENT_TYPE_SEARCH_CLICK and not (event.creator_id or event.post_id):
        return reject("creator_id", "a search click needs the creator_id or post_id that was clicked")
    if not event.HasField("occurred_at"):
        return reject("occurred_at", "required")
    if not 0 <= event.occurred_at.nanos < 1_000_000_000:
        return reject("occurred_at", "nanos must be in [0, 1e9)")
    occurred = event.occurred_at.seconds + event.occurred_at.nanos / 1e9
    if occurred > now + MAX_FUTURE_SKEW_S:
        return reject(
            "occurred_at", f"{occurred - now:.0f} s in the future; at most {MAX_FUTURE_SKEW_S:.0f} s allowed"
        )
    return None


class EventIngestor:
    """Validates a batch, appends the valid events to the sink, and reports what happened to each."""

    def __init__(
        self, sink: EventSink, *, clock: Callable[[], float] = time.time, max_batch: int = MAX_BATCH
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._max_batch = max_batch
        self._tracer = get_tracer(__name__)

    def ingest(self, events: Sequence[events_pb2.Event]) -> IngestResult:
        if not events:
            raise InvalidArgument("events", "the batch is empty: send at least one event")
        if len(events) > self._max_batch:
            raise InvalidArgument("events", f"at most {self._max_batch} events per call, got {len(events)}")
        now = self._clock()
        valid: list[events_pb2.Event] = []
        rejected: list[Rejection] = []
        for i, event in enumerate(events):
            problem = validate_event(event, i, now)
            if problem is None:
                valid.append(event)
            else:
                rejected.append(problem)
        if not valid:
            return IngestResult(accepted=0, duplicates=0, rejected=tuple(rejected))
        with self._tracer.start_as_current_span(schema.SPAN_EVENTS_APPEND) as span:
            span.set_attribute(schema.BATCH_SIZE, len(valid))
            appended = self._sink.append(valid)
        return IngestResult(
            accepted=appended.accepted, duplicates=appended.duplicates, rejected=tuple(rejected)
        )
