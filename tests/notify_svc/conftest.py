"""Fixtures for the notification service tests: both state backends over one parametrised suite."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from notify_testkit import REDIS_URL, RETENTION, redis_client_or_skip

from notify_svc.state import EmbeddedNotifyState, NotifyState, RedisNotifyState

StoreOpener = Callable[[], NotifyState]


@pytest.fixture()
def redis_opener() -> Iterator[Callable[[], RedisNotifyState]]:
    """Opens Redis stores sharing one unique key prefix; deletes every key under it afterwards."""
    admin = redis_client_or_skip()
    prefix = f"kindred-test:notify:{uuid.uuid4().hex}:"
    opened: list[RedisNotifyState] = []

    def opener() -> RedisNotifyState:
        store = RedisNotifyState.from_url(REDIS_URL, RETENTION, prefix=prefix)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()
    keys = list(admin.scan_iter(match=prefix + "*", count=1000))
    if keys:
        admin.delete(*keys)
    admin.close()


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreOpener]:
    """Opens stores over one underlying storage; each call is a fresh instance (as after a restart)."""
    if request.param == "redis":
        yield request.getfixturevalue("redis_opener")
        return
    opened: list[NotifyState] = []

    def opener() -> NotifyState:
        store = EmbeddedNotifyState.open(tmp_path / "notify", RETENTION)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()  # idempotent, so stores a test already closed (restart) are fine


@pytest.fixture()
def store(open_store: StoreOpener) -> NotifyState:
    return open_store()
