"""EventService over gRPC: request → EventIngestor → response; the interceptor maps raised errors."""

from __future__ import annotations

import grpc

from events_svc.domain import EventIngestor
from kindred.v1 import events_pb2, events_pb2_grpc


class EventServicer(events_pb2_grpc.EventServiceServicer):
    def __init__(self, ingestor: EventIngestor) -> None:
        self._ingestor = ingestor

    def LogEvents(
        self, request: events_pb2.LogEventsRequest, context: grpc.ServicerContext
    ) -> events_pb2.LogEventsResponse:
        result = self._ingestor.ingest(request.events)
        return events_pb2.LogEventsResponse(
            accepted=result.accepted,
            duplicates=result.duplicates,
            rejected=[
                events_pb2.RejectedEvent(index=r.index, event_id=r.event_id, field=r.field, reason=r.reason)
                for r in result.rejected
            ],
        )
