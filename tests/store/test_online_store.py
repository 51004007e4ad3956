"""One suite, both backends: the embedded SQLite store and Redis (marked `redis`, real server)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kindred.config import Settings
from kindred.errors import Unavailable
from kindred.store import OnlineStore, open_online_store
from kindred.store.embedded import EmbeddedOnlineStore

REDIS_URL = "redis://127.0.0.1:6379/0"

StoreFactory = Callable[[], OnlineStore]


def _redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens stores on one shared backing (same directory / same key prefix), closing them all at the end."""
    opened: list[OnlineStore] = []
    if request.param == "embedded":
        settings = Settings.from_env({"KINDRED_DATA_DIR": str(tmp_path)})
        prefix = None
    else:
        _redis_or_skip()
        settings = Settings.from_env({"KINDRED_ONLINE_STORE": "redis", "KINDRED_REDIS_URL": REDIS_URL})
        prefix = f"kindred-test-{uuid.uuid4().hex}:"

    def open_store() -> OnlineStore:
        store = open_online_store(settings, key_prefix=prefix)
        opened.append(store)
        return store

    yield open_store
    if prefix is not None:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        leftovers = list(client.scan_iter(match=f"{prefix}*"))
        if leftovers:
            client.delete(*leftovers)
        client.close()
    for store in opened:
        store.close()


@pytest.fixture
def store(factory: StoreFactory) -> OnlineStore:
    return factory()


def test_the_factory_builds_a_store_of_the_configured_kind(store: OnlineStore) -> None:
    assert isinstance(store, OnlineStore)


def test_get_returns_rows_in_key_order_with_none_for_missing(store: OnlineStore) -> None:
    store.put("fan", {"f1": {"ctr": 0.25, "top": ["Music", "Art"]}, "f2": {"ctr": 0.5}})
    assert store.get("fan", ["f2", "nope", "f1", "f2"]) == [
        {"ctr": 0.5},
        None,
        {"ctr": 0.25, "top": ["Music", "Art"]},
        {"ctr": 0.5},
    ]
    assert store.get("fan", []) == []


def test_values_round_trip_exactly(store: OnlineStore) -> None:
    row = {
        "f": 0.1 + 0.2,
        "big": 1e300,
        "neg": -3,
        "s": "Café ☕ 日本",
        "l": [1.5, "x", [2]],
        "n": None,
        "b": True,
        "nested": {"k": [0.125]},
    }
    store.put("misc", {"k:with:colons": row, "ключ": {"x": 1}})
    assert store.get("misc", ["k:with:colons", "ключ"]) == [row, {"x": 1}]


def test_put_replaces_whole_rows(store: OnlineStore) -> None:
    store.put("fan", {"f1": {"a": 1, "b": 2}})
    assert store.get("fan", ["f1"]) == [{"a": 1, "b": 2}]
    store.put("fan", {"f1": {"b": 3}})
    assert store.get("fan", ["f1"]) == [{"b": 3}]
    store.put("fan", {})  # a no-op, not an error
    assert store.get("fan", ["f1"]) == [{"b": 3}]


def test_namespaces_are_isolated_and_deleted_alone(store: OnlineStore) -> None:
    store.put("fan", {"x": {"v": "fan"}})
    store.put("creator", {"x": {"v": "creator"}})
    store.put("fan2", {"x": {"v": "fan2"}})
    assert store.get("fan", ["x"]) == [{"v": "fan"}] and store.get("creator", ["x"]) == [{"v": "creator"}]
    store.delete_namespace("fan")
    assert store.get("fan", ["x"]) == [None]
    assert store.get("creator", ["x"]) == [{"v": "creator"}] and store.get("fan2", ["x"]) == [{"v": "fan2"}]
    store.put("fan", {"y": {"v": 1}})  # usable again after deletion
    assert store.get("fan", ["x", "y"]) == [None, {"v": 1}]


@pytest.mark.parametrize("bad", ["", "a:b", "with space", "star*", "x" * 65])
def test_bad_namespaces_are_refused(store: OnlineStore, bad: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        store.put(bad, {"k": {"v": 1}})
    with pytest.raises(ValueError, match="namespace"):
        store.get(bad, ["k"])


def test_large_batches(store: OnlineStore) -> None:
    rows = {f"c{i:05d}": {"pop": float(i), "emb": [i / 7.0] * 8} for i in range(2_500)}
    store.put("creator", rows)
    keys = [f"c{i:05d}" for i in range(0, 2_600, 3)]
    assert store.get("creator", keys) == [rows.get(k) for k in keys]
    store.delete_namespace("creator")
    assert store.get("creator", keys[:10]) == [None] * 10


def test_returned_rows_are_the_callers_to_change(store: OnlineStore) -> None:
    store.put("fan", {"f1": {"a": 1}})
    first = store.get("fan", ["f1"])[0]
    assert first is not None
    first["a"] = 99
    first["extra"] = True
    assert store.get("fan", ["f1"]) == [{"a": 1}]


def test_a_reader_sees_another_writers_puts_and_deletes(factory: StoreFactory) -> None:
    """Two independent stores on one backing, like a service reading what the trainer writes."""
    reader, writer = factory(), factory()
    writer.put("creator", {"c1": {"v": 1}, "c2": {"v": 2}})
    assert reader.get("creator", ["c1", "c2", "c3"]) == [{"v": 1}, {"v": 2}, None]  # now cached by the reader
    writer.put("creator", {"c1": {"v": 10}, "c3": {"v": 3}})
    assert reader.get("creator", ["c1", "c2", "c3"]) == [{"v": 10}, {"v": 2}, {"v": 3}]
    writer.delete_namespace("creator")
    assert reader.get("creator", ["c1", "c2"]) == [None, None]


def test_rows_survive_reopening(factory: StoreFactory) -> None:
    first = factory()
    first.put("fan", {"f1": {"a": [1, 2]}})
    first.close()
    assert factory().get("fan", ["f1"]) == [{"a": [1, 2]}]


def test_concurrent_readers_and_a_writer(store: OnlineStore) -> None:
    store.put("fan", {f"f{i}": {"v": 0} for i in range(50)})
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            keys = [f"f{i}" for i in range(50)]
            n = 0
            while not stop.is_set():
                n += 1
                store.get("fan", keys[n % 50 :])  # some keys cached, some not, at the next full read
                rows = store.get("fan", keys)
                # A put is atomic: a reader never sees a mix of two versions.
                assert len({json.dumps(r) for r in rows}) == 1
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for t in readers:
        t.start()
    for version in range(1, 30):
        store.put("fan", {f"f{i}": {"v": version} for i in range(50)})
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert store.get("fan", ["f0"]) == [{"v": 29}]


def test_embedded_store_is_readable_from_another_process(tmp_path: Path) -> None:
    writer = EmbeddedOnlineStore(tmp_path / "online")
    writer.put("fan", {"f1": {"v": 1}})
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from kindred.store.embedded import EmbeddedOnlineStore
        store = EmbeddedOnlineStore(Path(sys.argv[1]))
        print(json.dumps(store.get("fan", ["f1", "f2"])))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "online")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout) == [{"v": 1}, None]
    assert (tmp_path / "online" / "online.sqlite3-wal").exists()  # WAL mode
    writer.close()


def test_an_unreachable_redis_is_unavailable() -> None:
    from kindred.store.redis_store import RedisOnlineStore

    store = RedisOnlineStore("redis://127.0.0.1:1/0", timeout_s=0.5)
    with pytest.raises(Unavailable):
        store.get("fan", ["f1"])
    with pytest.raises(Unavailable):
        store.put("fan", {"f1": {"v": 1}})
    store.close()


def test_a_closed_embedded_store_is_unavailable(tmp_path: Path) -> None:
    store = EmbeddedOnlineStore(tmp_path)
    store.put("fan", {"f1": {"v": 1}})
    store.close()
    with pytest.raises(Unavailable, match="closed"):
        store.get("fan", ["f1"])
