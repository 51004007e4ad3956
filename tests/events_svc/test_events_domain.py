"""LogEvents' domain: per-event validation with named fields, partial acceptance, batch-level errors."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from events_svc.domain import MAX_EVENT_ID_CHARS, EventIngestor, Rejection, validate_event
from kindred.errors import InvalidArgument
from kindred.eventlog import AppendResult
from kindred.v1 import events_pb2

NOW = 1_750_000_000.0
ET = events_pb2.EventType


class FakeSink:
    """Records appended batches; ids seen before count as duplicates, like the real log."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self._seen: set[str] = set()

    def append(self, events: Sequence[events_pb2.Event]) -> AppendResult:
        ids = [e.event_id for e in events]
        self.batches.append(ids)
        fresh = [i for i in dict.fromkeys(ids) if i not in self._seen]
        self._seen.update(fresh)
        return AppendResult(accepted=len(fresh), duplicates=len(ids) - len(fresh))


def event(etype: int = ET.EVENT_TYPE_FOLLOW, **fields: object) -> events_pb2.Event:
    values: dict[str, object] = {
        "event_id": "e1",
        "fan_id": "f1",
        "creator_id": "c1",
        "post_id": "p1",
        "query": "sourdough",
    }
    values.update(fields)
    at = values.pop("occurred_at", NOW - 60)
    e = events_pb2.Event(type=etype, **values)  # type: ignore[arg-type]
    if at is not None:
        e.occurred_at.seconds = int(at)  # type: ignore[call-overload]
    return e


@pytest.mark.parametrize("etype", [t for t in ET.values() if t != ET.EVENT_TYPE_UNSPECIFIED])
def test_a_complete_event_of_every_type_is_valid(etype: int) -> None:
    assert validate_event(event(etype), 0, NOW) is None


@pytest.mark.parametrize(
    ("etype", "fields", "field"),
    [
        (ET.EVENT_TYPE_FOLLOW, {"event_id": ""}, "event_id"),
        (ET.EVENT_TYPE_FOLLOW, {"event_id": "x" * (MAX_EVENT_ID_CHARS + 1)}, "event_id"),
        (ET.EVENT_TYPE_UNSPECIFIED, {}, "type"),
        (999, {}, "type"),
        (ET.EVENT_TYPE_FOLLOW, {"fan_id": ""}, "fan_id"),
        (ET.EVENT_TYPE_FOLLOW, {"creator_id": ""}, "creator_id"),
        (ET.EVENT_TYPE_UNFOLLOW, {"creator_id": ""}, "creator_id"),
        (ET.EVENT_TYPE_MEMBERSHIP_START, {"creator_id": ""}, "creator_id"),
        (ET.EVENT_TYPE_MEMBERSHIP_END, {"creator_id": ""}, "creator_id"),
        (ET.EVENT_TYPE_CREATOR_VIEW, {"creator_id": ""}, "creator_id"),
        (ET.EVENT_TYPE_POST_VIEW, {"post_id": ""}, "post_id"),
        (ET.EVENT_TYPE_POST_LIKE, {"post_id": ""}, "post_id"),
        (ET.EVENT_TYPE_SEARCH, {"query": ""}, "query"),
        (ET.EVENT_TYPE_SEARCH, {"query": "   "}, "query"),
        (ET.EVENT_TYPE_SEARCH_CLICK, {"query": ""}, "query"),
        (ET.EVENT_TYPE_SEARCH_CLICK, {"creator_id": "", "post_id": ""}, "creator_id"),
        (ET.EVENT_TYPE_FOLLOW, {"occurred_at": None}, "occurred_at"),
        (ET.EVENT_TYPE_FOLLOW, {"occurred_at": NOW + 86_400 + 2}, "occurred_at"),
    ],
)
def test_each_problem_is_named_by_its_field(etype: int, fields: dict[str, object], field: str) -> None:
    rejection = validate_event(event(etype, **fields), 3, NOW)
    assert rejection is not None
    assert rejection.field == f"events[3].{field}" and rejection.index == 3 and rejection.reason


def test_what_is_not_required_may_be_absent() -> None:
    assert validate_event(event(ET.EVENT_TYPE_SEARCH, creator_id="", post_id=""), 0, NOW) is None
    assert (
        validate_event(event(ET.EVENT_TYPE_NOTIFICATION_OPEN, creator_id="", post_id="", query=""), 0, NOW)
        is None
    )
    assert validate_event(event(ET.EVENT_TYPE_SEARCH_CLICK, creator_id=""), 0, NOW) is None  # clicked a post
    assert validate_event(event(occurred_at=NOW + 86_400 - 1), 0, NOW) is None  # a day of clock skew is fine
    assert validate_event(event(event_id="x" * MAX_EVENT_ID_CHARS), 0, NOW) is None


def test_valid_events_are_kept_and_invalid_ones_reported_individually() -> None:
    sink = FakeSink()
    ingestor = EventIngestor(sink, clock=lambda: NOW)
    batch = [
        event(event_id="ok-1"),
        event(event_id="bad-fan", fan_id=""),
        event(ET.EVENT_TYPE_POST_VIEW, event_id="ok-2"),
        event(ET.EVENT_TYPE_SEARCH, event_id="bad-query", query=""),
    ]
    result = ingestor.ingest(batch)
    assert sink.batches == [["ok-1", "ok-2"]]
    assert (result.accepted, result.duplicates) == (2, 0)
    assert [(r.index, r.event_id, r.field) for r in result.rejected] == [
        (1, "bad-fan", "events[1].fan_id"),
        (3, "bad-query", "events[3].query"),
    ]
    again = ingestor.ingest(batch)  # a client retry is harmless
    assert (again.accepted, again.duplicates, len(again.rejected)) == (0, 2, 2)


def test_a_batch_with_only_invalid_events_appends_nothing() -> None:
    sink = FakeSink()
    result = EventIngestor(sink, clock=lambda: NOW).ingest([event(fan_id="")])
    assert sink.batches == [] and result.accepted == 0
    assert result.rejected == (Rejection(0, "e1", "events[0].fan_id", result.rejected[0].reason),)


def test_an_empty_or_oversized_batch_is_invalid_as_a_whole() -> None:
    ingestor = EventIngestor(FakeSink(), clock=lambda: NOW, max_batch=3)
    with pytest.raises(InvalidArgument) as empty:
        ingestor.ingest([])
    assert empty.value.field == "events"
    with pytest.raises(InvalidArgument, match="at most 3") as big:
        ingestor.ingest([event(event_id=f"e{i}") for i in range(4)])
    assert big.value.field == "events"
