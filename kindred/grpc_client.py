"""gRPC client plumbing: channels made once and injected, retries from service config, deadlines.

Retries are declared in the channel's service config and only for UNAVAILABLE (a retried
INVALID_ARGUMENT can never succeed; a retried DEADLINE_EXCEEDED only adds load when we are slow).
A target naming several backends — several search replicas (retrieval_svc.search.replication) as
"ipv4:127.0.0.1:50051,127.0.0.1:50061" or "search-0.search:50051,search-1.search:50051" — gets one
channel per backend and least-request balancing across them (kindred.least_request: each call goes to
the backend with the fewest of this client's calls in flight). One target that resolves to several
addresses (a Kubernetes headless Service's DNS name) is balanced round-robin per call by gRPC; either way
calls spread over every backend, where gRPC's default (pick first) would send everything to one.
"""

from __future__ import annotations

import json
import subprocess
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.instrumentation.grpc import client_interceptor
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

from kindred.least_request import LeastRequestChannel, split_targets
from kindred.telemetry import tracing_enabled

_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],  # every method of every service on this channel
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)

# Leave this much of the caller's remaining deadline for our own work after the downstream call.
_DEADLINE_MARGIN_S = 0.002


def make_channel(target: str) -> grpc.Channel:
    """An insecure (loopback / mesh-internal) channel with retries and OTel client spans; least-request
    balanced over the backends when the target names several (see the module docstring)."""
    targets = split_targets(target)
    if len(targets) > 1:
        return LeastRequestChannel([round_robin_channel(t) for t in targets], targets)
    return round_robin_channel(target)


def round_robin_channel(target: str) -> grpc.Channel:
    """One gRPC channel for the whole target: gRPC balances round-robin over the addresses it names or
    resolves to (what make_channel does per backend, and did for several before least-request)."""
    channel = grpc.insecure_channel(
        target,
        options=[
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
        ],
    )
    if not tracing_enabled():  # no tracer provider: client spans would only cost CPU (grpc_server.py)
        return channel
    return intercept_channel(channel, client_interceptor())


def deadline_from(context: grpc.ServicerContext | None, default_s: float) -> float:
    """The timeout for a downstream call: what is left of the caller's deadline, capped by default_s."""
    if context is None:
        return default_s
    remaining = context.time_remaining()
    if remaining is None:
        return default_s
    return max(0.001, min(default_s, remaining - _DEADLINE_MARGIN_S))


def wait_until_serving(
    target: str, *, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 120.0
) -> None:
    """Polls the standard health service of `target` until SERVING.

    Raises ServiceExited if `proc` (the server's process) dies first, TimeoutError after `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise ServiceExited(f"service on {target} exited with code {proc.returncode} before serving")
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass  # not listening yet
            time.sleep(0.2)
    raise TimeoutError(f"service on {target} not SERVING after {timeout_s:.0f} s")


class ServiceExited(RuntimeError):
    """A server process ended while we waited for it to serve."""
