"""Wiring of the events service: the event log, the ingestor, the gRPC server."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from events_svc.domain import EventIngestor, EventSink
from events_svc.servicer import EventServicer
from kindred.config import Settings
from kindred.eventlog import EventLog
from kindred.grpc_server import KindredServer
from kindred.service import ServiceSpec, run_service
from kindred.v1 import events_pb2_grpc

SERVICE_NAME = "kindred.v1.EventService"
log = logging.getLogger(__name__)


@dataclasses.dataclass
class EventsDeps:
    sink: EventSink
    clock: Callable[[], float] = time.time
    close: Callable[[], None] = lambda: None  # releases the sink after the server stopped


def build_deps(settings: Settings) -> EventsDeps:
    """Opens the event log under the data directory and recovers it (lock, id index, torn tail)."""
    event_log = EventLog(settings.data_dir / "events")
    report = event_log.recover()
    log.info(
        "event log %s: %d events in %d segments (%d torn bytes dropped)",
        event_log.directory,
        report.events,
        report.segments,
        report.truncated_bytes,
    )
    return EventsDeps(sink=event_log, close=event_log.close)


def make_servicer(settings: Settings, deps: EventsDeps) -> EventServicer:
    return EventServicer(EventIngestor(deps.sink, clock=deps.clock))


SPEC: ServiceSpec[EventsDeps] = ServiceSpec(
    name="events",
    grpc_service=SERVICE_NAME,
    port=lambda settings: settings.events_port,
    add_servicer=events_pb2_grpc.add_EventServiceServicer_to_server,
    build_deps=build_deps,
    make_servicer=make_servicer,
    close_deps=lambda deps: deps.close(),
)


def create_server(
    settings: Settings, deps: EventsDeps | None = None, *, port: int | None = None
) -> KindredServer:
    """A SERVING server around `deps` (built from settings if not given); the caller closes deps."""
    return SPEC.create_server(settings, deps, port=port)


def main() -> None:
    run_service(SPEC)
