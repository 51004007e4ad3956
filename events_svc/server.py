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
from kindred.grpc_server import KindredServer, create_grpc_server
from kindred.telemetry import configure_telemetry, shutdown_telemetry
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


def create_server(
    settings: Settings, deps: EventsDeps | None = None, *, port: int | None = None
) -> KindredServer:
    """Builds (not starts) the server; the caller closes `deps` (deps.close()) after stopping it."""
    deps = deps or build_deps(settings)
    servicer = EventServicer(EventIngestor(deps.sink, clock=deps.clock))
    server = create_grpc_server(
        settings,
        name="events",
        port=settings.events_port if port is None else port,
        register=lambda s: events_pb2_grpc.add_EventServiceServicer_to_server(servicer, s),
        health_services=[SERVICE_NAME],
    )
    server.set_serving(True)  # the log was opened and recovered in build_deps
    return server


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s events %(levelname)s %(message)s")
    settings = Settings.from_env()
    configure_telemetry("events_svc", settings)
    deps = build_deps(settings)
    server = create_server(settings, deps).start()

    def on_stop() -> None:
        deps.close()
        shutdown_telemetry()

    server.stop_on_signals(on_stop=on_stop)
    server.wait()
