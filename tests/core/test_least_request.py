"""Least-request balancing over several backends (kindred.least_request), through real gRPC servers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from kindred import telemetry_schema as schema
from kindred.grpc_client import make_channel, round_robin_channel
from kindred.least_request import LeastRequestChannel, split_targets

METHOD = "/kindred.test.Echo/Call"


class Backend:
    """A gRPC server with one bytes → bytes method that waits while its gate is closed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.gate = threading.Event()
        self.gate.set()
        self.arrived = 0
        self.refuse = False  # answer UNAVAILABLE (alive, but cannot serve)
        self._lock = threading.Lock()
        handler = grpc.method_handlers_generic_handler(
            "kindred.test.Echo",
            {
                "Call": grpc.unary_unary_rpc_method_handler(self._call),
                "Stream": grpc.unary_stream_rpc_method_handler(self._stream),
            },
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _call(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.arrived += 1
        if self.refuse:
            context.abort(grpc.StatusCode.UNAVAILABLE, "refusing")
        self.gate.wait(10)
        return self.name.encode()

    def _stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self.gate.wait(10)
        for i in range(3):
            yield f"{self.name}{i}".encode()


@pytest.fixture()
def backends() -> Iterator[tuple[Backend, Backend]]:
    pair = (Backend("a"), Backend("b"))
    yield pair
    for b in pair:
        b.gate.set()
        b.server.stop(0)


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():  # type: ignore[operator]
            return
        done.wait(0.01)
    raise AssertionError("condition not reached in time")


def test_split_targets() -> None:
    assert split_targets("ipv4:127.0.0.1:1,127.0.0.1:2") == ["ipv4:127.0.0.1:1", "ipv4:127.0.0.1:2"]
    assert split_targets("ipv6:[::1]:1,[::1]:2") == ["ipv6:[::1]:1", "ipv6:[::1]:2"]
    assert split_targets("search-0.search:50051, search-1.search:50051") == [
        "search-0.search:50051",
        "search-1.search:50051",
    ]
    assert split_targets("127.0.0.1:50051") == ["127.0.0.1:50051"]
    assert split_targets("dns:///retrieval:50051") == ["dns:///retrieval:50051"]
    assert split_targets("ipv4:127.0.0.1:1") == ["ipv4:127.0.0.1:1"]


def test_calls_go_to_the_backend_with_fewer_in_flight(backends: tuple[Backend, Backend]) -> None:
    """One call stuck on b: every following call goes to a, where round robin (gRPC's round_robin, or
    make_channel before least-request) would send every second one to the stuck b and wait there."""
    a, b = backends
    channel = make_channel(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}")
    assert isinstance(channel, LeastRequestChannel)
    call = channel.unary_unary(METHOD)
    b.gate.clear()
    a.gate.clear()
    first = [call.future(b"x", timeout=10) for _ in range(2)]  # one on each: the counts tie at 0, then 1
    wait_for(lambda: a.arrived == 1 and b.arrived == 1)
    a.gate.set()  # a's call ends; b's stays in flight
    wait_for(lambda: sum(f.done() for f in first) == 1)
    assert channel.in_flight == [0, 1]
    for _ in range(6):  # sequential: each finds a idle and b busy
        assert call(b"x", timeout=2) == b"a"
    assert (a.arrived, b.arrived) == (7, 1)
    b.gate.set()
    assert sorted(f.result(timeout=5) for f in first) == [b"a", b"b"]
    assert channel.in_flight == [0, 0]
    channel.close()


def test_an_idle_client_alternates(backends: tuple[Backend, Backend]) -> None:
    a, b = backends
    with make_channel(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}") as channel:
        call = channel.unary_unary(METHOD)
        answers = [call(b"x", timeout=5) for _ in range(10)]
    assert answers.count(b"a") == 5 and answers.count(b"b") == 5


def test_a_dead_backend_is_avoided_and_its_refusals_retried_elsewhere(
    backends: tuple[Backend, Backend],
) -> None:
    """Nothing listens on the second address: every call still answers (from a), and no call counts stay
    behind."""
    a, dead = backends
    dead.server.stop(0)
    with make_channel(f"127.0.0.1:{a.port},127.0.0.1:{dead.port}") as channel:
        call = channel.unary_unary(METHOD)
        assert [call(b"x", timeout=5) for _ in range(10)] == [b"a"] * 10
        assert channel.in_flight == [0, 0]  # type: ignore[attr-defined]


def test_counts_end_with_failed_calls_and_futures(backends: tuple[Backend, Backend]) -> None:
    a, b = backends
    with make_channel(f"127.0.0.1:{a.port},127.0.0.1:{b.port}") as channel:
        missing = channel.unary_unary("/kindred.test.Echo/Nope")
        for _ in range(4):
            with pytest.raises(grpc.RpcError) as info:
                missing(b"x", timeout=5)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        call = channel.unary_unary(METHOD)
        results = [f.result(timeout=5) for f in [call.future(b"x", timeout=5) for _ in range(4)]]
        assert sorted(results) == [b"a", b"a", b"b", b"b"]
        response, rpc = call.with_call(b"x", timeout=5)
        assert response in (b"a", b"b") and rpc.code() == grpc.StatusCode.OK
        # A future's result can be read before gRPC has run its done callbacks (on another thread),
        # which is where its count ends: wait for them.
        wait_for(lambda: channel.in_flight == [0, 0])  # type: ignore[attr-defined]


def test_a_refused_call_is_answered_by_another_backend_and_counted(backends: tuple[Backend, Backend]) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    refusing, ok = backends
    refusing.refuse = True
    names = [f"127.0.0.1:{refusing.port}", f"127.0.0.1:{ok.port}"]
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    with LeastRequestChannel([round_robin_channel(n) for n in names], names, meter=meter) as channel:
        call = channel.unary_unary(METHOD)
        assert [call(b"x", timeout=5) for _ in range(4)] == [b"b"] * 4
        assert channel.in_flight == [0, 0]
    data = reader.get_metrics_data()
    assert data is not None
    counted = {
        dict(point.attributes or {})[schema.BACKEND]: getattr(point, "value", None)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == schema.METRIC_RETRIED_ELSEWHERE
        for point in metric.data.data_points
    }
    # The first call tries `refusing` (the tie-break starts there), is refused and answered by `ok`;
    # `refusing` is then passed over (ejected for EJECT_S), so the next calls go straight to `ok`.
    assert counted == {names[0]: 1} and ok.arrived == 4


def test_a_stream_counts_in_flight_until_it_ends(backends: tuple[Backend, Backend]) -> None:
    a, b = backends
    with make_channel(f"127.0.0.1:{a.port},127.0.0.1:{b.port}") as channel:
        stream = channel.unary_stream("/kindred.test.Echo/Stream")
        a.gate.clear()
        b.gate.clear()
        first = stream(b"x", timeout=5)
        wait_for(lambda: channel.in_flight == [1, 0])  # type: ignore[attr-defined]
        second = stream(b"x", timeout=5)  # the other backend: the first stream is still open
        assert channel.in_flight == [1, 1]  # type: ignore[attr-defined]
        a.gate.set()
        b.gate.set()
        assert sorted([list(first), list(second)]) == [[b"a0", b"a1", b"a2"], [b"b0", b"b1", b"b2"]]
        wait_for(lambda: channel.in_flight == [0, 0])  # type: ignore[attr-defined]
