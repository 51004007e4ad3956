"""End to end: real service processes, a trained model, one trace across every hop.

Generates a small platform, trains the tiny config on a local Ray, starts retrieval, ranking, notify and
events as separate processes (the same `kindred serve` the demo uses), then calls Recommend through gRPC.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.instrumentation.grpc import client_interceptor
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kindred.grpc_client import wait_until_serving
from kindred.v1 import (
    common_pb2,
    events_pb2,
    events_pb2_grpc,
    notify_pb2,
    notify_pb2_grpc,
    ranking_pb2,
    ranking_pb2_grpc,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("retrieval", "notify", "events", "ranking")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mesh:
    def __init__(self, data_dir: Path, ports: dict[str, int], trace_file: Path) -> None:
        self.data_dir = data_dir
        self.ports = ports
        self.trace_file = trace_file

    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def spans(self) -> list[dict[str, object]]:
        if not self.trace_file.exists():
            return []
        return [json.loads(line) for line in self.trace_file.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    data_dir = tmp_path_factory.mktemp("mesh")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINDRED_")}
    env.update({"ORT_DISABLE_TELEMETRY": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"})
    run = lambda *args: subprocess.run([sys.executable, *args], env=env, cwd=REPO, check=True)  # noqa: E731
    run(
        "-m",
        "kindred",
        "generate",
        "--data-dir",
        str(data_dir),
        "--fans",
        "400",
        "--creators",
        "80",
        "--days",
        "21",
        "--seed",
        "3",
        "--no-progress",
    )
    run("-m", "trainer", "train", "--data-dir", str(data_dir), "--config", "tiny")

    ports = {name: _free_port() for name in SERVICES}
    trace_file = data_dir / "traces.jsonl"
    env.update({f"KINDRED_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    env.update({"KINDRED_DATA_DIR": str(data_dir), "KINDRED_TRACE_FILE": str(trace_file)})
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name in SERVICES:
            proc = subprocess.Popen([sys.executable, "-m", "kindred", "serve", name], env=env, cwd=REPO)
            procs.append(proc)
            wait_until_serving(f"127.0.0.1:{ports[name]}", proc=proc, timeout_s=90)
        yield Mesh(data_dir, ports, trace_file)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                assert proc.wait(timeout=15) == 0 or proc.returncode in (-15, 0), "unclean exit"
            except subprocess.TimeoutExpired:
                proc.kill()
                raise


def _traced_channel(target: str, provider: TracerProvider) -> grpc.Channel:
    return intercept_channel(grpc.insecure_channel(target), client_interceptor(tracer_provider=provider))  # type: ignore[no-any-return]


def _popular(mesh: Mesh, k: int) -> list[str]:
    from kindred.config import Settings
    from kindred.store.online import open_online_store

    store = open_online_store(Settings.from_env({"KINDRED_DATA_DIR": str(mesh.data_dir)}))
    try:
        row = store.get("popular", ["global"])[0] or {}
    finally:
        store.close()
    return list(row.get("creator_ids", []))[:k]


def _fans_with_history(mesh: Mesh, n: int) -> list[str]:
    fans = [
        json.loads(line)["fan_id"]
        for line in (mesh.data_dir / "catalogue" / "fans.jsonl").read_text().splitlines()
    ]
    return fans[:n]


def test_one_trace_spans_client_ranking_retrieval_qdrant_and_onnx(mesh: Mesh) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    fan = _fans_with_history(mesh, 1)[0]
    with _traced_channel(mesh.target("ranking"), provider) as channel:
        stub = ranking_pb2_grpc.RankingServiceStub(channel)
        with provider.get_tracer("e2e").start_as_current_span("e2e.client") as root:
            response = stub.Recommend(ranking_pb2.RecommendRequest(fan_id=fan, k=10), timeout=10)
        trace_id = format(root.get_span_context().trace_id, "032x")
    assert len(response.items) == 10
    client_spans = [s for s in exporter.get_finished_spans() if s.kind == otel_trace.SpanKind.CLIENT]
    assert client_spans and all(format(s.context.trace_id, "032x") == trace_id for s in client_spans)

    deadline = time.monotonic() + 10
    while True:  # span files are written as spans end; give the servers a moment
        in_trace = [s for s in mesh.spans() if s["trace_id"] == trace_id]
        services = {s["service"] for s in in_trace}
        names = {(s["service"], s["name"]) for s in in_trace}
        if {"ranking_svc", "retrieval_svc"} <= services and any(n == "qdrant.query" for _, n in names):
            break
        assert time.monotonic() < deadline, f"trace incomplete: {sorted(names)}"
        time.sleep(0.2)
    assert ("retrieval_svc", "qdrant.query") in names
    assert ("retrieval_svc", "onnx.run") in names  # the user tower
    assert ("ranking_svc", "onnx.run") in names  # the ranker
    server_spans = {s["service"] for s in in_trace if s["kind"] == "SERVER"}
    assert server_spans == {"ranking_svc", "retrieval_svc"}


def test_recommendations_come_from_the_trained_models_not_the_popular_list(mesh: Mesh) -> None:
    popular = _popular(mesh, 10)
    assert popular, "the trainer should have written the popular list"
    with grpc.insecure_channel(mesh.target("ranking")) as channel:
        stub = ranking_pb2_grpc.RankingServiceStub(channel)
        pages = {}
        for fan in _fans_with_history(mesh, 5):
            response = stub.Recommend(ranking_pb2.RecommendRequest(fan_id=fan, k=10), timeout=10)
            assert response.fallback == ""
            assert response.ranker.version and response.retriever.version
            assert all("ranker" in item.scores for item in response.items)
            pages[fan] = [item.item_id for item in response.items]
            sources = {item.source for item in response.items}
            assert common_pb2.CANDIDATE_SOURCE_TWO_TOWER in sources
    # Personalised: fans get different pages, and not simply the popularity ranking.
    assert len({tuple(p) for p in pages.values()}) > 1
    assert any(page != popular for page in pages.values())


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (ranking_pb2.RecommendRequest(fan_id="", k=10), "fan_id"),
        (ranking_pb2.RecommendRequest(fan_id="f1", k=0), "k"),
        (ranking_pb2.RecommendRequest(fan_id="f1", k=100000), "k"),
    ],
)
def test_bad_recommend_requests_get_invalid_argument_naming_the_field(
    mesh: Mesh, request_: ranking_pb2.RecommendRequest, field: str
) -> None:
    with grpc.insecure_channel(mesh.target("ranking")) as channel:
        stub = ranking_pb2_grpc.RankingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Recommend(request_, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (info.value.details() or "")


def test_notify_and_events_answer_through_the_mesh(mesh: Mesh) -> None:
    with grpc.insecure_channel(mesh.target("notify")) as channel:
        stub = notify_pb2_grpc.NotifyServiceStub(channel)
        candidate = notify_pb2.NotificationCandidate(
            notification_id="e2e-n1",
            fan_id="f-e2e",
            creator_id="c1",
            trigger=notify_pb2.TRIGGER_TYPE_PAYMENT_FAILED,
            fan_time_zone="Europe/Paris",
        )
        first = stub.Decide(notify_pb2.DecideRequest(candidate=candidate), timeout=5).decision
        again = stub.Decide(notify_pb2.DecideRequest(candidate=candidate), timeout=5).decision
        assert first.action == notify_pb2.ACTION_SEND_NOW
        assert again.duplicate and again.action == first.action
        with pytest.raises(grpc.RpcError) as info:
            stub.Decide(
                notify_pb2.DecideRequest(candidate=notify_pb2.NotificationCandidate(fan_id="f")), timeout=5
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with grpc.insecure_channel(mesh.target("events")) as channel:
        events = events_pb2_grpc.EventServiceStub(channel)
        event = events_pb2.Event(
            event_id="e2e-1", type=events_pb2.EVENT_TYPE_FOLLOW, fan_id="f1", creator_id="c1"
        )
        event.occurred_at.GetCurrentTime()
        bad = events_pb2.Event(event_id="e2e-2", type=events_pb2.EVENT_TYPE_FOLLOW, creator_id="c1")
        bad.occurred_at.GetCurrentTime()
        response = events.LogEvents(events_pb2.LogEventsRequest(events=[event, bad]), timeout=5)
        assert response.accepted == 1 and [r.field for r in response.rejected] == ["events[1].fan_id"]
        assert events.LogEvents(events_pb2.LogEventsRequest(events=[event]), timeout=5).duplicates == 1
