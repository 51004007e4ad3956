"""How every Kindred service process runs: listen first, load, then report SERVING.

The server starts listening at once with health NOT_SERVING and a stand-in servicer that answers
UNAVAILABLE, so probes and callers see "alive, not ready" while models and indexes load (which may
mean waiting for the trainer to publish them). Once `load` returns, the real servicer takes over and
health flips to SERVING. SIGTERM/SIGINT during loading exits at once; after it, the server drains
gracefully (NOT_SERVING, in-flight calls finish, then dependencies are closed).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import signal
from collections.abc import Callable, Collection
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf import descriptor_pool

from kindred.config import Settings
from kindred.errors import Unavailable
from kindred.grpc_server import KindredServer, create_grpc_server
from kindred.telemetry import configure_telemetry, shutdown_telemetry

log = logging.getLogger(__name__)


class PendingServicer:
    """Stands in for a servicer until `ready()`: every method answers UNAVAILABLE (retryable)."""

    def __init__(self) -> None:
        self._target: Any = None

    def ready(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(request: Any, context: grpc.ServicerContext) -> Any:
            target = self._target
            if target is None:
                raise Unavailable(f"{method}: the service is still loading its models and indexes")
            return getattr(target, method)(request, context)

        return call


Deps = TypeVar("Deps")


@dataclasses.dataclass(frozen=True)
class ServiceSpec(Generic[Deps]):
    """What differs between services; everything else about running one is shared."""

    name: str  # short name: "retrieval", also the OTel service name prefix
    grpc_service: str  # full name for health and reflection, e.g. "kindred.v1.RetrievalService"
    port: Callable[[Settings], int]
    add_servicer: Callable[[Any, grpc.Server], None]  # the generated add_*Servicer_to_server
    build_deps: Callable[[Settings], Deps]  # opens models, indexes, stores (may wait for them)
    make_servicer: Callable[[Settings, Deps], Any]
    close_deps: Callable[[Deps], None]
    # Methods (short names) that only compute — never wait on another service — so they pass the compute
    # gate (kindred.compute_gate), given the settings (e.g. ranking's Recommend only when co-located).
    gated_methods: Callable[[Settings], Collection[str]] = lambda _settings: ()
    # True when none of its calls wait on another service (retrieval; ranking when co-located): it then
    # runs 2 worker threads unless KINDRED_SERVER_THREADS says otherwise (Settings.server_threads_for).
    computes_only: Callable[[Settings], bool] = lambda _settings: False

    def server_threads(self, settings: Settings) -> int:
        return settings.server_threads_for(computes_only=self.computes_only(settings))

    def gated_paths(self, settings: Settings) -> list[str]:
        """The gated methods as full paths; a name the service does not have is a programming error."""
        names = sorted(self.gated_methods(settings))
        known = descriptor_pool.Default().FindServiceByName(self.grpc_service).methods_by_name
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"{self.grpc_service} has no method {', '.join(unknown)} to gate")
        return [f"/{self.grpc_service}/{n}" for n in names]

    def create_server(
        self, settings: Settings, deps: Deps | None = None, *, port: int | None = None
    ) -> KindredServer:
        """A SERVING server around `deps` (built from settings if not given); the caller closes deps.

        For in-process use and tests; a service process runs through `run_service`.
        """
        deps = self.build_deps(settings) if deps is None else deps
        servicer = self.make_servicer(settings, deps)
        server = create_grpc_server(
            settings,
            name=self.name,
            port=self.port(settings) if port is None else port,
            register=lambda s: self.add_servicer(servicer, s),
            health_services=[self.grpc_service],
            gated_methods=self.gated_paths(settings),
            server_threads=self.server_threads(settings),
        )
        server.set_serving(True)
        return server


# Container allocations (net) between young-generation collections; CPython's default is 700.
GC_THRESHOLD0 = 50_000


def tune_gc_for_serving() -> None:
    """Keeps the cyclic garbage collector off the request path once models and indexes are loaded.

    A serving process holds large, long-lived caches (decoded feature rows, filter verdicts) and makes
    little cyclic garbage, yet with the default thresholds full collections still come periodically
    and walk all of it, stalling every request in flight (seen while profiling Recommend at 100k
    creators; not a recorded benchmark). Frozen start-up objects (modules, models, clients) are never
    walked again, and a high first threshold makes collections rare; memory stays bounded by the
    caches' own limits.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD0, *gc.get_threshold()[1:])


def run_service(spec: ServiceSpec[Any], settings: Settings | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {spec.name} %(levelname)s %(message)s")
    settings = settings or Settings.from_env()
    configure_telemetry(f"{spec.name}_svc", settings)
    pending = PendingServicer()
    server = create_grpc_server(
        settings,
        name=spec.name,
        port=spec.port(settings),
        register=lambda s: spec.add_servicer(pending, s),
        health_services=[spec.grpc_service],
        gated_methods=spec.gated_paths(settings),
        server_threads=spec.server_threads(settings),
    ).start()

    def exit_while_loading(signum: int, _frame: object) -> None:
        log.info("%s during start-up: exiting", signal.Signals(signum).name)
        server.stop(0)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, exit_while_loading)
    signal.signal(signal.SIGINT, exit_while_loading)
    log.info("%s listening on port %d (NOT_SERVING while loading)", spec.name, server.port)
    deps = spec.build_deps(settings)
    servicer = spec.make_servicer(settings, deps)
    tune_gc_for_serving()

    def on_stop() -> None:
        spec.close_deps(deps)
        shutdown_telemetry()

    server.stop_on_signals(on_stop=on_stop)
    pending.ready(servicer)
    server.set_serving(True)
    log.info("%s SERVING", spec.name)
    server.wait()
