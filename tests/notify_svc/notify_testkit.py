"""Helpers shared by the notification service tests: a settable clock, candidate builders, Redis access."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notify_svc.domain import CandidateFields, Trigger
from notify_svc.state import Retention

REDIS_URL = "redis://127.0.0.1:6379/0"
# A Monday, 13:00 in London and 08:00 in New York: outside the default quiet hours in both.
T0 = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)
RETENTION = Retention(history=timedelta(days=7), dedupe=timedelta(hours=24), idempotency=timedelta(days=7))


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


def fields(
    notification_id: str,
    fan_id: str = "fan-1",
    trigger: Trigger | int = Trigger.NEW_POST,
    *,
    creator_id: str = "creator-1",
    post_id: str | None = None,
    zone: str = "Europe/London",
    created_at: datetime | None = None,
) -> CandidateFields:
    return CandidateFields(
        notification_id=notification_id,
        fan_id=fan_id,
        creator_id=creator_id,
        post_id=post_id if post_id is not None else f"post-{notification_id}",
        trigger=int(trigger),
        channel=1,
        created_at=created_at,
        fan_time_zone=zone,
    )


def redis_client_or_skip() -> Any:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(
        REDIS_URL, decode_responses=True, socket_connect_timeout=0.5, socket_timeout=2
    )
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL} ({exc}); start it to run the redis variant")
    return client
