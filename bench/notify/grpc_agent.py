"""Drives a running notify_svc through gRPC: DecideBatch for each simulated hour, RecordOutcome for events.

The service decides at its own wall clock, not the simulated one, so a DELAY_UNTIL is mapped back
into simulated time by its offset from the service's "now" — an integration check of the whole path
(protos, validation, state, policy), not a faithful replay of the comparison (quiet hours, for one,
are judged at the service's real local time). Notification ids carry a run prefix so a second run
against the same service is not answered from the idempotency records of the first.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
from google.protobuf.timestamp_pb2 import Timestamp

from bench.notify.sim import Choice, to_candidate
from bench.notify.world import World
from kindred.grpc_client import make_channel
from kindred.v1 import notify_pb2, notify_pb2_grpc
from notify_svc.domain import Action

_CHUNK = 1000


def _ts(instant: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(instant.astimezone(UTC).replace(tzinfo=None))
    return out


def candidate_proto(
    world: World, index: int, prefix: str, created_at: Timestamp
) -> notify_pb2.NotificationCandidate:
    """Candidate `index` as the wire message, with the relationship the producer knows (the model's
    is_member / tier features: without them the service would score every fan as a non-member)."""
    c = to_candidate(world, index)
    fan, creator = int(world.candidates.fan[index]), int(world.candidates.creator[index])
    return notify_pb2.NotificationCandidate(
        notification_id=prefix + c.notification_id,
        fan_id=c.fan_id,
        creator_id=c.creator_id,
        post_id=c.post_id,
        trigger=int(c.trigger),  # type: ignore[arg-type]
        channel=int(c.channel),  # type: ignore[arg-type]
        created_at=created_at,
        fan_time_zone=c.fan_time_zone,
        fan_is_member=bool(world.member[fan, creator]),
        membership_tier=int(world.tier[fan, creator]),
    )


class GrpcAgent:
    def __init__(self, world: World, target: str, *, deadline_s: float = 30.0) -> None:
        self.w = world
        self.channel = make_channel(target)
        self.stub = notify_pb2_grpc.NotifyServiceStub(self.channel)
        self.deadline_s = deadline_s
        self.prefix = f"sim{int(time.time())}-"

    def _id(self, index: int) -> str:
        return self.prefix + to_candidate(self.w, index).notification_id

    def decide(self, now: datetime, indices: npt.NDArray[np.int64]) -> list[Choice]:
        server_now = datetime.now(UTC)
        created_at = _ts(server_now)
        protos = [candidate_proto(self.w, int(i), self.prefix, created_at) for i in indices]
        requests = [
            notify_pb2.DecideBatchRequest(candidates=protos[start : start + _CHUNK])
            for start in range(0, len(protos), _CHUNK)
        ]
        out: list[Choice] = []
        for response in self.stub.DecideBatch(iter(requests), timeout=self.deadline_s):
            for d in response.decisions:
                action = Action(d.action)
                at = None
                if d.HasField("deliver_at"):
                    at = now + (d.deliver_at.ToDatetime(tzinfo=UTC) - server_now)
                elif action is Action.SEND_NOW:
                    at = now
                out.append(Choice(action, at))
        if len(out) != len(protos):
            raise RuntimeError(f"DecideBatch answered {len(out)} decisions for {len(protos)} candidates")
        return out

    def _record(self, index: int, outcome: notify_pb2.Outcome) -> None:
        c = to_candidate(self.w, index)
        self.stub.RecordOutcome(
            notify_pb2.RecordOutcomeRequest(
                notification_id=self.prefix + c.notification_id, fan_id=c.fan_id, outcome=outcome
            ),
            timeout=self.deadline_s,
        )

    def delivered(self, index: int, at: datetime) -> None:
        self._record(index, notify_pb2.OUTCOME_DELIVERED)

    def opened(self, index: int, at: datetime) -> None:
        self._record(index, notify_pb2.OUTCOME_OPENED)

    def disabled(self, index: int, at: datetime) -> None:
        self._record(index, notify_pb2.OUTCOME_DISABLED)
