"""kindred.compute_gate through a real gRPC server: gated methods compute `compute_concurrency` at a time,
other methods are not held back, and a call whose deadline passed while it waited is never computed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from kindred.compute_gate import ComputeGate, make_gate
from kindred.config import IN_PROCESS, Settings, SettingsError
from kindred.grpc_server import KindredServer, create_grpc_server
from kindred.v1 import ranking_pb2, ranking_pb2_grpc

RANK = "/kindred.v1.RankingService/Rank"


class _Counting(ranking_pb2_grpc.RankingServiceServicer):
    """Rank holds for `hold_s` and records how many Rank calls ran at once; Recommend meets a partner
    at a barrier, which only two calls in flight together can pass."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.active = 0
        self.most_active = 0
        self.computed = 0
        self._lock = threading.Lock()
        self.barrier = threading.Barrier(2, timeout=5.0)

    def Rank(self, request: ranking_pb2.RankRequest, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self.active += 1
            self.computed += 1
            self.most_active = max(self.most_active, self.active)
        time.sleep(self.hold_s)
        with self._lock:
            self.active -= 1
        return ranking_pb2.RankResponse()

    def Recommend(self, request: ranking_pb2.RecommendRequest, context: grpc.ServicerContext) -> Any:
        self.barrier.wait()
        return ranking_pb2.RecommendResponse()


def _serve(concurrency: int, servicer: _Counting) -> tuple[KindredServer, grpc.Channel]:
    settings = Settings.from_env(
        {"KINDRED_SERVER_THREADS": "6", "KINDRED_COMPUTE_CONCURRENCY": str(concurrency)}
    )
    server = create_grpc_server(
        settings,
        name="test",
        port=0,
        register=lambda s: ranking_pb2_grpc.add_RankingServiceServicer_to_server(servicer, s),
        health_services=["kindred.v1.RankingService"],
        gated_methods=[RANK],
    ).start()
    return server, grpc.insecure_channel(f"127.0.0.1:{server.port}")


@pytest.fixture()
def gate_one() -> Iterator[tuple[_Counting, ranking_pb2_grpc.RankingServiceStub]]:
    servicer = _Counting(hold_s=0.3)
    server, channel = _serve(1, servicer)
    yield servicer, ranking_pb2_grpc.RankingServiceStub(channel)
    channel.close()
    server.stop(0)


@pytest.mark.parametrize(("concurrency", "expected_most"), [(1, 1), (2, 2), (0, 4)])
def test_gated_calls_compute_as_many_at_once_as_set(concurrency: int, expected_most: int) -> None:
    servicer = _Counting(hold_s=0.3)
    server, channel = _serve(concurrency, servicer)
    stub = ranking_pb2_grpc.RankingServiceStub(channel)
    try:
        with ThreadPoolExecutor(4) as pool:
            calls = [
                pool.submit(stub.Rank, ranking_pb2.RankRequest(fan_id="f"), timeout=10) for _ in range(4)
            ]
            for call in calls:
                call.result()
    finally:
        channel.close()
        server.stop(0)
    assert servicer.computed == 4
    # Four calls sent at once, each computing for 0.3 s: the gate lets exactly `concurrency` overlap
    # (0: no gate, so all four do).
    assert servicer.most_active == expected_most


def test_methods_not_gated_still_run_together(
    gate_one: tuple[_Counting, ranking_pb2_grpc.RankingServiceStub],
) -> None:
    servicer, stub = gate_one
    with ThreadPoolExecutor(2) as pool:
        calls = [
            pool.submit(stub.Recommend, ranking_pb2.RecommendRequest(fan_id="f"), timeout=10)
            for _ in range(2)
        ]
        for call in calls:
            call.result()  # each waits at the barrier for the other: only possible if both run at once
    assert not servicer.barrier.broken


def test_a_call_past_its_deadline_after_waiting_is_not_computed(
    gate_one: tuple[_Counting, ranking_pb2_grpc.RankingServiceStub],
) -> None:
    servicer, stub = gate_one
    servicer.hold_s = 0.6
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(stub.Rank, ranking_pb2.RankRequest(fan_id="first"), timeout=10)
        time.sleep(0.15)  # the first holds the gate now
        late = pool.submit(stub.Rank, ranking_pb2.RankRequest(fan_id="late"), timeout=0.2)
        with pytest.raises(grpc.RpcError) as info:
            late.result()
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        first.result()
    time.sleep(0.3)  # the late call got the gate when the first finished, and gave it up at once
    assert servicer.computed == 1
    assert servicer.most_active == 1


def test_gate_limits_and_settings() -> None:
    assert make_gate(0) is None
    gate = make_gate(3)
    assert isinstance(gate, ComputeGate) and gate.limit == 3
    with pytest.raises(ValueError, match="limit"):
        ComputeGate(0)
    assert Settings().compute_concurrency == 1
    assert Settings.from_env({"KINDRED_COMPUTE_CONCURRENCY": "0"}).compute_concurrency == 0
    with pytest.raises(SettingsError, match="KINDRED_COMPUTE_CONCURRENCY"):
        Settings.from_env({"KINDRED_COMPUTE_CONCURRENCY": "-1"})


def test_services_gate_only_their_computing_methods() -> None:
    from ranking_svc.server import SPEC as RANKING
    from retrieval_svc.server import SEARCH_REPLICA_SPEC
    from retrieval_svc.server import SPEC as RETRIEVAL

    mesh = Settings()
    colocated = Settings(retrieval_target=IN_PROCESS)
    # In the mesh, ranking's Recommend waits on the retrieval hop: gating it would hold the gate idle.
    assert RANKING.gated_paths(mesh) == [RANK]
    assert RANKING.gated_paths(colocated) == [
        "/kindred.v1.RankingService/Rank",
        "/kindred.v1.RankingService/Recommend",
    ]
    assert RETRIEVAL.gated_paths(mesh) == [
        "/kindred.v1.RetrievalService/Retrieve",
        "/kindred.v1.RetrievalService/SimilarCreators",
    ]
    # Search's query encoding releases the GIL: two Searches overlap usefully, so none is gated.
    assert SEARCH_REPLICA_SPEC.gated_paths(mesh) == []
    # Worker threads: two where no call waits on another service, eight where Recommend waits on the hop;
    # KINDRED_SERVER_THREADS overrides both.
    assert RETRIEVAL.server_threads(mesh) == SEARCH_REPLICA_SPEC.server_threads(mesh) == 2
    assert RANKING.server_threads(colocated) == 2 and RANKING.server_threads(mesh) == 8
    assert RETRIEVAL.server_threads(Settings(server_threads=5)) == 5
    # Reads over the network (a Redis store, a Qdrant server) would wait inside the gate: no gate, 8 threads.
    for remote in (Settings(online_store="redis"), Settings(vector_backend="server")):
        for spec in (RANKING, RETRIEVAL, SEARCH_REPLICA_SPEC):
            assert spec.gated_paths(remote) == [] and spec.server_threads(remote) == 8
        colocated_remote = remote.replace(retrieval_target=IN_PROCESS)
        assert RANKING.gated_paths(colocated_remote) == [] and RANKING.server_threads(colocated_remote) == 8


def test_a_gated_name_the_service_lacks_is_refused() -> None:
    import dataclasses

    from ranking_svc.server import SPEC as RANKING

    typo = dataclasses.replace(RANKING, gated_methods=lambda _settings: ("Recomend",))
    with pytest.raises(ValueError, match="Recomend"):
        typo.gated_paths(Settings())
