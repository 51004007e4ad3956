"""Wiring of the notification service: policy parameters, the state store, the engine, the gRPC server."""

from __future__ import annotations

import dataclasses
import logging

from kindred.config import Settings
from kindred.grpc_server import KindredServer
from kindred.service import ServiceSpec, run_service
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


def make_servicer(settings: Settings, deps: NotifyDeps) -> NotifyServicer:
    return NotifyServicer(
        NotifyEngine(deps.state, deps.policy, max_future_skew=deps.params.max_future_skew, clock=deps.clock)
    )


SPEC: ServiceSpec[NotifyDeps] = ServiceSpec(
    name="notify",
    grpc_service=SERVICE_NAME,
    port=lambda settings: settings.notify_port,
    add_servicer=notify_pb2_grpc.add_NotifyServiceServicer_to_server,
    build_deps=build_deps,
    make_servicer=make_servicer,
    close_deps=lambda deps: deps.state.close(),
)


def create_server(
    settings: Settings, deps: NotifyDeps | None = None, *, port: int | None = None
) -> KindredServer:
    """A SERVING server around `deps` (built from settings if not given); the caller closes deps."""
    return SPEC.create_server(settings, deps, port=port)


def main() -> None:
    run_service(SPEC)
