"""gRPC server plumbing shared by every Kindred service.

`create_grpc_server` returns a server with: the standard health service (NOT_SERVING until the
service says its models and indexes are loaded, and again during shutdown), reflection, OpenTelemetry
server spans, one error interceptor that maps domain errors to status codes, a receive-size limit, and
a concurrency limit that sheds excess calls with RESOURCE_EXHAUSTED (grpc's own
`maximum_concurrent_rpcs`), and the compute gate for the methods a service marks as pure computation
(kindred.compute_gate). Services only register their servicers.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import server_interceptor as otel_server_interceptor

from kindred import telemetry_schema as schema
from kindred.compute_gate import ComputeGate, make_gate
from kindred.config import Settings
from kindred.errors import KindredError
from kindred.telemetry import get_meter, tracing_enabled

log = logging.getLogger(__name__)


class ErrorInterceptor(grpc.ServerInterceptor):
    """Translates KindredError into its declared status code; anything else becomes INTERNAL.

    Also records the per-RPC latency histogram, so every method gets it without servicer code, and puts
    the unary methods named in `gated` (full paths, "/package.Service/Method") behind `gate`
    (kindred.compute_gate); the time spent waiting there counts in the latency.
    """

    def __init__(self, gate: ComputeGate | None = None, gated: Collection[str] = ()) -> None:
        meter = get_meter("kindred.grpc_server")
        self._duration = meter.create_histogram(schema.METRIC_RPC_DURATION, unit="ms")
        self._gate = gate
        self._gated = frozenset(gated)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        if handler.unary_unary:
            behavior = handler.unary_unary
            if self._gate is not None and method in self._gated:
                behavior = self._gate.wrap(behavior, method)
            return handler._replace(unary_unary=self._wrap_unary(behavior, method))
        if handler.unary_stream:
            return handler._replace(unary_stream=self._wrap_stream(handler.unary_stream, method))
        if handler.stream_unary:
            return handler._replace(stream_unary=self._wrap_unary(handler.stream_unary, method))
        if handler.stream_stream:
            return handler._replace(stream_stream=self._wrap_stream(handler.stream_stream, method))
        return handler

    def _wrap_unary(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            code = "OK"
            try:
                return behavior(request, context)
            except KindredError as exc:
                code = exc.status
                context.abort(getattr(grpc.StatusCode, exc.status), str(exc))
            except Exception as exc:
                code = _code_of(context, exc)
                raise
            finally:
                self._record(method, code, start)

        return wrapper

    def _wrap_stream(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            start = time.perf_counter()
            code = "OK"
            try:
                yield from behavior(request, context)
            except KindredError as exc:
                code = exc.status
                context.abort(getattr(grpc.StatusCode, exc.status), str(exc))
            except Exception as exc:
                code = _code_of(context, exc)
                raise
            finally:
                self._record(method, code, start)

        return wrapper

    def _record(self, method: str, code: str, start: float) -> None:
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        self._duration.record(elapsed_ms, {"rpc.method": method, "rpc.grpc.status_code": code})


def _code_of(context: grpc.ServicerContext, exc: Exception) -> str:
    # context.abort() raises a bare Exception after setting the code; report that code, not INTERNAL.
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    log.exception("unhandled error in servicer", exc_info=exc)
    return "INTERNAL"


class KindredServer:
    """A started-or-startable gRPC server with health status control and graceful shutdown."""

    def __init__(
        self,
        server: grpc.Server,
        port: int,
        health_servicer: health.HealthServicer,
        service_names: Sequence[str],
        grace_s: float,
    ) -> None:
        self.server = server
        self.port = port
        self._health = health_servicer
        self._service_names = list(service_names)
        self._grace_s = grace_s
        self._stopped = threading.Event()
        self.set_serving(False)

    def start(self) -> KindredServer:
        self.server.start()
        return self

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self._service_names]:
            self._health.set(name, status)

    def stop(self, grace_s: float | None = None) -> None:
        """Reports NOT_SERVING first (so balancers drain us), then lets in-flight calls finish."""
        if self._stopped.is_set():
            return
        self._health.enter_graceful_shutdown()
        self.server.stop(self._grace_s if grace_s is None else grace_s).wait()
        self._stopped.set()

    def wait(self) -> None:
        self.server.wait_for_termination()

    def stop_on_signals(self, on_stop: Callable[[], None] | None = None) -> None:
        """SIGTERM/SIGINT → graceful stop (then `on_stop`, e.g. closing stores). Main thread only."""

        def handler(signum: int, _frame: object) -> None:
            log.info("signal %s: shutting down gracefully", signal.Signals(signum).name)
            threading.Thread(target=self._stop_then, args=(on_stop,), daemon=True).start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _stop_then(self, on_stop: Callable[[], None] | None) -> None:
        self.stop()
        if on_stop is not None:
            on_stop()


def create_grpc_server(
    settings: Settings,
    *,
    name: str,
    port: int,
    register: Callable[[grpc.Server], None],
    health_services: Sequence[str],
    gated_methods: Collection[str] = (),
    server_threads: int | None = None,
) -> KindredServer:
    """Builds (but does not start) a server; `port=0` binds a free port, reported as `.port`.

    `gated_methods`: full paths of unary methods that only compute; at most
    `settings.compute_concurrency` of them run at once (kindred.compute_gate). `server_threads`: the
    worker threads: a service passes its role's (ServiceSpec.server_threads); without, the default of a
    process whose calls may wait (Settings.server_threads_for)."""
    threads = server_threads or settings.server_threads_for(computes_only=False)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name),
        # Server spans only when something records them (kindred.telemetry.tracing_enabled): without a
        # tracer provider the OpenTelemetry interceptor still builds a span and its metadata on every call.
        interceptors=[
            *([otel_server_interceptor()] if tracing_enabled() else []),
            ErrorInterceptor(make_gate(settings.compute_concurrency), gated_methods),
        ],
        options=[
            ("grpc.max_receive_message_length", settings.max_receive_bytes),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    register(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*health_services, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    bound = server.add_insecure_port(f"{settings.host}:{port}")
    if bound == 0:
        raise OSError(f"{name}: could not bind {settings.host}:{port}")
    log.info("%s listening on %s:%d", name, settings.host, bound)
    return KindredServer(server, bound, health_servicer, health_services, settings.shutdown_grace_s)
