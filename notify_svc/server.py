"""Wiring of the notification service: the policy, the state store, the engine, the gRPC server.

The policy: the learned policy over the promoted `notify_outcomes` model when the settings' models
directory has one (the volume controller, if configured, drives its threshold), else the rule policy.
Which one serves, and why, is logged at start and set on every decide span (`kindred.notify.policy`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime, timedelta
from pathlib import Path

from kindred.config import Settings
from kindred.errors import FailedPrecondition
from kindred.grpc_server import KindredServer
from kindred.models import current_version
from kindred.service import ServiceSpec, run_service
from kindred.v1 import notify_pb2_grpc
from notify_svc.controller import ControllerParams, Thresholded, VolumeController
from notify_svc.engine import Clock, NotifyEngine, utc_now
from notify_svc.features import EngagementJournal
from notify_svc.learned import MODEL_NAME, LearnedParams, LearnedPolicy
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
    controller: VolumeController | None = None


def open_state(settings: Settings, params: PolicyParams) -> NotifyState:
    """The store chosen by `settings.online_store`, the same switch the feature store uses."""
    retention = Retention.for_policy(params.history_window, params.dedupe_window)
    if settings.online_store == "redis":
        return RedisNotifyState.from_url(settings.redis_url, retention)
    return EmbeddedNotifyState.open(settings.data_dir / "notify", retention)


CONTROLLER_KEYS = {"target_sends_per_minute", "interval_s", "kp", "ki", "low", "high"}


def controller_config_path(settings: Settings) -> Path:
    return settings.data_dir / "config" / "notify.json"


def load_controller(path: Path, policy: DecisionPolicy) -> VolumeController | None:
    """The volume controller configured in `path` (JSON, keys CONTROLLER_KEYS), or None if absent.

    Unknown keys, or a target for a policy without a threshold to drive, fail the start.
    """
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    unknown = set(config) - CONTROLLER_KEYS
    if unknown or "target_sends_per_minute" not in config:
        raise ValueError(f"{path}: needs target_sends_per_minute; unknown keys {sorted(unknown)}")
    if not isinstance(policy, Thresholded):
        raise ValueError(f"{path}: a volume target needs a policy with a threshold (the learned policy)")
    defaults = ControllerParams(target_per_minute=float(config["target_sends_per_minute"]))
    params = dataclasses.replace(
        defaults,
        interval=timedelta(seconds=float(config.get("interval_s", defaults.interval.total_seconds()))),
        kp=float(config.get("kp", defaults.kp)),
        ki=float(config.get("ki", defaults.ki)),
        low=float(config.get("low", defaults.low)),
        high=float(config.get("high", defaults.high)),
    )
    log.info("volume controller: target %.1f sends/min", params.target_per_minute)
    return VolumeController(params, initial_threshold=policy.threshold)


def choose_policy(
    settings: Settings, params: PolicyParams | None = None, learned: LearnedParams | None = None
) -> tuple[DecisionPolicy, PolicyParams]:
    """(policy, its guardrail params): learned over a promoted model, else the rules.

    `params`, if given, are the guardrails of either policy; else each policy's own defaults.
    A promoted model that fails to load (hash or feature-order mismatch) is logged and the rules
    serve: the service stays up with the policy that needs no model.
    """
    models_dir = settings.resolved_models_dir
    version = current_version(models_dir, MODEL_NAME)
    if version is None:
        log.info("notify policy: rules (no promoted %s model in %s)", MODEL_NAME, models_dir)
        rules = params or PolicyParams()
        return RulePolicy(rules), rules
    learned = learned or LearnedParams()
    if params is not None:
        learned = dataclasses.replace(learned, guard=params)
    try:
        policy = LearnedPolicy.load(models_dir, learned)
    except FailedPrecondition as exc:
        log.error("notify policy: rules, because %s %s in %s does not load: %s", MODEL_NAME, version,
                  models_dir, exc)  # fmt: skip
        rules = params or PolicyParams()
        return RulePolicy(rules), rules
    log.info("notify policy: %s (promoted %s in %s)", policy_label(policy), MODEL_NAME, models_dir)
    return policy, learned.guard


def policy_label(policy: DecisionPolicy) -> str:
    """What serves, as logged and set on decide spans: "rules" or "learned:<model version>"."""
    if isinstance(policy, LearnedPolicy):
        return f"learned:{policy.model_version}"
    return "rules" if isinstance(policy, RulePolicy) else type(policy).__name__


def build_deps(
    settings: Settings, params: PolicyParams | None = None, learned: LearnedParams | None = None
) -> NotifyDeps:
    policy, params = choose_policy(settings, params, learned)
    controller = load_controller(controller_config_path(settings), policy)  # before opening anything
    state = open_state(settings, params)
    attach_engagement_journal(policy, state, utc_now())
    return NotifyDeps(state=state, policy=policy, params=params, controller=controller)


def attach_engagement_journal(policy: DecisionPolicy, state: NotifyState, now: datetime) -> None:
    """The learned policy's fan history: rebuilt from the store's journal, then persisted there."""
    if isinstance(policy, LearnedPolicy) and isinstance(state, EngagementJournal):
        replayed = policy.attach_journal(state, now)
        log.info("notify policy: engagement history rebuilt from %d journal records", replayed)


def make_servicer(settings: Settings, deps: NotifyDeps) -> NotifyServicer:
    return NotifyServicer(
        NotifyEngine(
            deps.state,
            deps.policy,
            max_future_skew=deps.params.max_future_skew,
            clock=deps.clock,
            controller=deps.controller,
            feedback=True,  # the learned policy's fan features follow sends, acks and outcomes
            policy_label=policy_label(deps.policy),
        )
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
