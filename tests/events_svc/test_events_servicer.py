"""EventService in-process on port 0 over a real event log: partial acceptance, retries, errors, health."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from events_svc.server import SERVICE_NAME, EventsDeps, create_server
from kindred.config import Settings
from kindred.eventlog import EventLog
from kindred.v1 import events_pb2, events_pb2_grpc

NOW = 1_750_000_000.0


@dataclass
class Running:
    stub: events_pb2_grpc.EventServiceStub
    channel: grpc.Channel
    log_dir: Path


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    settings = Settings.from_env({"KINDRED_DATA_DIR": str(tmp_path)})
    log = EventLog(tmp_path / "events")
    log.recover()
    server = create_server(settings, EventsDeps(sink=log, clock=lambda: NOW, close=log.close), port=0).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Running(events_pb2_grpc.EventServiceStub(channel), channel, tmp_path / "events")
    finally:
        channel.close()
        server.stop(0)
        log.close()


def follow(event_id: str, fan_id: str = "f1") -> events_pb2.Event:
    e = events_pb2.Event(event_id=event_id, type=events_pb2.EVENT_TYPE_FOLLOW, fan_id=fan_id, creator_id="c1")
    e.occurred_at.seconds = int(NOW) - 5
    return e


def test_log_events_keeps_the_valid_ones_and_names_the_rest(running: Running) -> None:
    request = events_pb2.LogEventsRequest(
        events=[follow("a"), follow("b", fan_id=""), follow("c"), follow("a")]
    )
    response = running.stub.LogEvents(request, timeout=5)
    assert (response.accepted, response.duplicates) == (2, 1)
    assert [(r.index, r.event_id, r.field) for r in response.rejected] == [(1, "b", "events[1].fan_id")]
    assert "required" in response.rejected[0].reason
    retry = running.stub.LogEvents(request, timeout=5)
    assert (retry.accepted, retry.duplicates, len(retry.rejected)) == (0, 3, 1)
    assert [e.event_id for e in EventLog(running.log_dir).read()] == ["a", "c"]


def test_an_empty_batch_is_invalid_argument(running: Running) -> None:
    with pytest.raises(grpc.RpcError) as err:
        running.stub.LogEvents(events_pb2.LogEventsRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("events:")


def test_the_service_reports_serving(running: Running) -> None:
    health = health_pb2_grpc.HealthStub(running.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_build_deps_opens_and_recovers_the_log_under_the_data_dir(tmp_path: Path) -> None:
    from events_svc.server import build_deps

    with EventLog(tmp_path / "events") as earlier:
        earlier.append([follow("old")])
    settings = Settings.from_env({"KINDRED_DATA_DIR": str(tmp_path)})
    deps = build_deps(settings)
    try:
        assert deps.sink.append([follow("old"), follow("new")]).accepted == 1
    finally:
        deps.close()
    assert [e.event_id for e in EventLog(tmp_path / "events").read()] == ["old", "new"]
