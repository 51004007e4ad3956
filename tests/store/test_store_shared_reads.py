"""`get_shared` and `version` on both backends (Redis marked `redis`): the rows the stores' caches hold,
with the namespace version they belong to — what ranking keys its derived creator vectors on."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kindred.store.embedded import EmbeddedOnlineStore

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """A reader and a writer on one backing (the writer stands for the trainer, another process)."""
    reader: Any
    writer: Any
    if request.param == "embedded":
        reader, writer = EmbeddedOnlineStore(tmp_path), EmbeddedOnlineStore(tmp_path)
        yield reader, writer
        reader.close()
        writer.close()
        return
    import redis

    from kindred.store.redis_store import RedisOnlineStore

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    prefix = f"kindred-test-{uuid.uuid4().hex}:"
    reader, writer = (
        RedisOnlineStore(REDIS_URL, key_prefix=prefix),
        RedisOnlineStore(REDIS_URL, key_prefix=prefix),
    )
    yield reader, writer
    client = redis.Redis.from_url(REDIS_URL)
    leftovers = list(client.scan_iter(match=f"{prefix}*"))
    if leftovers:
        client.delete(*leftovers)
    client.close()
    reader.close()
    writer.close()


def test_shared_rows_come_with_the_version_that_every_write_moves(stores: tuple[Any, Any]) -> None:
    reader, writer = stores
    assert reader.version("creator") == 0 and reader.get_shared("creator", ["a"]) == (0, [None])
    writer.put("creator", {"a": {"n": 1}, "b": {"n": 2}})
    v1, rows = reader.get_shared("creator", ["b", "a", "zz"])
    assert v1 >= 1 and rows == [{"n": 2}, {"n": 1}, None]
    assert reader.get_shared("creator", ["a"]) == (v1, [{"n": 1}])  # cached, same version
    writer.put("creator", {"a": {"n": 3}})
    v2, rows = reader.get_shared("creator", ["a", "b"])
    assert v2 > v1 and rows == [{"n": 3}, {"n": 2}]  # a reader never serves rows older than the version
    writer.delete_namespace("creator")
    assert reader.get_shared("creator", ["a"])[0] > v2 and reader.get_shared("creator", ["a"])[1] == [None]
    assert reader.version("fan") == 0  # per namespace


def test_shared_rows_are_the_cached_rows_and_get_still_hands_out_copies(stores: tuple[Any, Any]) -> None:
    reader, writer = stores
    writer.put("creator", {"a": {"n": 1}})
    first = reader.get_shared("creator", ["a"])[1][0]
    assert reader.get_shared("creator", ["a"])[1][0] is first  # no copy on the hot path
    copy = reader.get("creator", ["a"])[0]
    copy["n"] = 99  # a caller of get may change its copy...
    assert reader.get_shared("creator", ["a"])[1][0] == {"n": 1}  # ...without touching the cache
