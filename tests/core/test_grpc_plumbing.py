"""The shared gRPC plumbing: error mapping, health lifecycle, load shedding, deadlines, retries config."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kindred.config import Settings
from kindred.errors import InvalidArgument, NotFound
from kindred.grpc_client import deadline_from, make_channel
from kindred.grpc_server import KindredServer, create_grpc_server
from kindred.v1 import ranking_pb2, ranking_pb2_grpc
from ranking_svc.server import SPEC as RANKING


class _Ranking(ranking_pb2_grpc.RankingServiceServicer):
    """A servicer whose behaviour each test sets; records the deadline it saw."""

    def __init__(self) -> None:
        self.behaviour: Any = None
        self.seen_remaining: float | None = None

    def Recommend(self, request: ranking_pb2.RecommendRequest, context: grpc.ServicerContext) -> Any:
        self.seen_remaining = deadline_from(context, 10.0)
        return self.behaviour(request)


def _serve(
    settings: Settings, servicer: _Ranking, server_threads: int | None = None
) -> tuple[KindredServer, grpc.Channel]:
    """A started server for `servicer` on a free port, and a channel to it."""
    server = create_grpc_server(
        settings,
        name="test",
        port=0,
        register=lambda s: ranking_pb2_grpc.add_RankingServiceServicer_to_server(servicer, s),
        health_services=["kindred.v1.RankingService"],
        server_threads=server_threads,
    ).start()
    return server, make_channel(f"127.0.0.1:{server.port}")


@pytest.fixture()
def served() -> Iterator[tuple[KindredServer, _Ranking, grpc.Channel]]:
    settings = Settings.from_env({"KINDRED_MAX_CONCURRENT_RPCS": "2", "KINDRED_SERVER_THREADS": "4"})
    servicer = _Ranking()
    server, channel = _serve(settings, servicer)
    yield server, servicer, channel
    channel.close()
    server.stop(0)


def test_domain_errors_become_their_status_codes(
    served: tuple[KindredServer, _Ranking, grpc.Channel],
) -> None:
    _, servicer, channel = served
    stub = ranking_pb2_grpc.RankingServiceStub(channel)

    def bad(request: ranking_pb2.RecommendRequest) -> None:
        raise InvalidArgument("fan_id", "must not be empty")

    servicer.behaviour = bad
    with pytest.raises(grpc.RpcError) as info:
        stub.Recommend(ranking_pb2.RecommendRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fan_id" in (info.value.details() or "")

    def missing(request: ranking_pb2.RecommendRequest) -> None:
        raise NotFound("no such fan")

    servicer.behaviour = missing
    with pytest.raises(grpc.RpcError) as info:
        stub.Recommend(ranking_pb2.RecommendRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    def crash(request: ranking_pb2.RecommendRequest) -> None:
        raise RuntimeError("boom")

    servicer.behaviour = crash
    with pytest.raises(grpc.RpcError) as info:
        stub.Recommend(ranking_pb2.RecommendRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNKNOWN or info.value.code() == grpc.StatusCode.INTERNAL


def test_health_is_not_serving_until_ready_and_during_shutdown(
    served: tuple[KindredServer, _Ranking, grpc.Channel],
) -> None:
    server, _, channel = served
    health = health_pb2_grpc.HealthStub(channel)
    req = health_pb2.HealthCheckRequest(service="kindred.v1.RankingService")
    assert health.Check(req, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
    server.set_serving(True)
    assert health.Check(req, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    assert (
        health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        == health_pb2.HealthCheckResponse.SERVING
    )


def test_excess_concurrency_is_shed_with_resource_exhausted(
    served: tuple[KindredServer, _Ranking, grpc.Channel],
) -> None:
    _, servicer, channel = served
    stub = ranking_pb2_grpc.RankingServiceStub(channel)
    release = threading.Event()

    def slow(request: ranking_pb2.RecommendRequest) -> ranking_pb2.RecommendResponse:
        release.wait(10)
        return ranking_pb2.RecommendResponse()

    servicer.behaviour = slow
    calls = [stub.Recommend.future(ranking_pb2.RecommendRequest(), timeout=20) for _ in range(6)]
    time.sleep(0.5)
    release.set()
    codes = []
    for call in calls:
        try:
            call.result()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
    assert codes.count(grpc.StatusCode.OK) >= 2
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes


def test_remaining_deadline_is_propagated(served: tuple[KindredServer, _Ranking, grpc.Channel]) -> None:
    _, servicer, channel = served
    stub = ranking_pb2_grpc.RankingServiceStub(channel)
    servicer.behaviour = lambda request: ranking_pb2.RecommendResponse()
    stub.Recommend(ranking_pb2.RecommendRequest(), timeout=0.5)
    assert servicer.seen_remaining is not None
    assert 0 < servicer.seen_remaining <= 0.5
    stub.Recommend(ranking_pb2.RecommendRequest(), timeout=60)
    assert servicer.seen_remaining == pytest.approx(10.0)  # capped by the service's own default


def test_unavailable_is_retried_from_service_config(
    served: tuple[KindredServer, _Ranking, grpc.Channel],
) -> None:
    _, servicer, channel = served
    stub = ranking_pb2_grpc.RankingServiceStub(channel)
    attempts: list[int] = []

    def flaky(request: ranking_pb2.RecommendRequest) -> ranking_pb2.RecommendResponse:
        attempts.append(1)
        if len(attempts) < 3:
            from kindred.errors import Unavailable

            raise Unavailable("warming up")
        return ranking_pb2.RecommendResponse(fallback="")

    servicer.behaviour = flaky
    stub.Recommend(ranking_pb2.RecommendRequest(), timeout=5)
    assert len(attempts) == 3


@pytest.mark.parametrize(
    ("env", "workers"),
    [
        ({"KINDRED_SERVER_THREADS": "3"}, 3),
        # Unset in a co-located ranking process: its role's default (ranking_svc SPEC.server_threads).
        ({"KINDRED_RETRIEVAL_TARGET": "inprocess"}, 2),
    ],
)
def test_server_runs_as_many_calls_at_once_as_its_resolved_threads(env: dict[str, str], workers: int) -> None:
    settings = Settings.from_env({**env, "KINDRED_MAX_CONCURRENT_RPCS": "16"})
    servicer = _Ranking()
    lock, release = threading.Lock(), threading.Event()
    running, peak = [0], [0]

    def hold(request: ranking_pb2.RecommendRequest) -> ranking_pb2.RecommendResponse:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(10)
        with lock:
            running[0] -= 1
        return ranking_pb2.RecommendResponse()

    servicer.behaviour = hold
    server, channel = _serve(settings, servicer, RANKING.server_threads(settings))
    try:
        stub = ranking_pb2_grpc.RankingServiceStub(channel)
        request = ranking_pb2.RecommendRequest()
        calls = [stub.Recommend.future(request, timeout=20) for _ in range(workers + 3)]
        deadline = time.monotonic() + 5
        while peak[0] < workers and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # room for any call beyond the pool to start, if the pool allowed it
        seen = peak[0]
        release.set()
        for call in calls:
            call.result()  # the queued calls run once workers free up: none is lost
        assert seen == workers
    finally:
        release.set()
        channel.close()
        server.stop(0)
