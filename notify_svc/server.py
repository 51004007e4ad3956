"""Wiring of the notification service: policy parameters, the state store, the engine, the gRPC server."""

from __future__ import annotations

import dataclasses
import logging

from kindred.config import Settings
from kindred.grpc_server import KindredServer, create_grpc_server
from kindred.telemetry import configure_telemetry, shutdown_telemetry
from kindred.v1 import notify_pb2_grpc
from notify_svc.engine import Clock, NotifyEngine, utc_now
from notify_svc.policy import DecisionPolicy, PolicyParams, RulePolicy
from notify_svc.servicer import NotifyServicer
from notify_svc.state import EmbeddedNotifyState, NotifyState, RedisNotifyState, Retention

SERVICE_NAME = "kindred.v1.NotifyService"
log = logging.getLogger(__name__)


@dataclasses.dataclass
class NotifyDeps:
    state: NotifyState
    policy: DecisionPolicy
    params: PolicyParams = dataclasses.field(default_factory=PolicyParams)
    clock: Clock = utc_now


def open_state(settings: Settings, params: PolicyParams) -> NotifyState:
    """The store chosen by `settings.online_store`, the same switch the feature store uses."""
    retention = Retention.for_policy(params.history_window, params.dedupe_window)
    if settings.online_store == "redis":
        return RedisNotifyState.from_url(settings.redis_url, retention)
    return EmbeddedNotifyState.open(settings.data_dir / "notify", retention)


def build_deps(settings: Settings, params: PolicyParams | None = None) -> NotifyDeps:
    params = params or PolicyParams()
    return NotifyDeps(state=open_state(settings, params), policy=RulePolicy(params), params=params)


def create_server(
    settings: Settings, deps: NotifyDeps | None = None, *, port: int | None = None
) -> KindredServer:
    """Builds (not starts) the server; the caller owns `deps.state` and closes it after stopping."""
    deps = deps or build_deps(settings)
    engine = NotifyEngine(
        deps.state, deps.policy, max_future_skew=deps.params.max_future_skew, clock=deps.clock
    )
    servicer = NotifyServicer(engine)
    server = create_grpc_server(
        settings,
        name="notify",
        port=settings.notify_port if port is None else port,
        register=lambda s: notify_pb2_grpc.add_NotifyServiceServicer_to_server(servicer, s),
        health_services=[SERVICE_NAME],
    )
    server.set_serving(True)  # the rule policy needs nothing loaded; the store opened above
    return server


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s notify %(levelname)s %(message)s")
    settings = Settings.from_env()
    configure_telemetry("notify_svc", settings)
    deps = build_deps(settings)
    server = create_server(settings, deps).start()

    def on_stop() -> None:
        deps.state.close()
        shutdown_telemetry()

    server.stop_on_signals(on_stop=on_stop)
    server.wait()
