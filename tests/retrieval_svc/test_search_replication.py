"""Search replicas (retrieval_svc.search.replication) through gRPC: two retrieval processes' worth of
search replicas in-process, each on its own copy of a real qdrant-edge search index, kept equal by the
write log in the real Redis at 127.0.0.1:6379 (skipped if it is not running)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from search_testkit import build_index, write_tiny_encoder

from kindred.config import Settings
from kindred.data.schema import Post
from kindred.grpc_server import KindredServer
from kindred.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc
from retrieval_svc.search.index import search_index_root
from retrieval_svc.search.replication import STATE_FILE, entry_key, search_replicas_dir
from retrieval_svc.search.service import SearchService
from retrieval_svc.server import SEARCH_REPLICA_SPEC

pytestmark = pytest.mark.redis
POST = common_pb2.ITEM_KIND_POST
REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Replica:
    search: SearchService
    server: KindredServer
    channel: grpc.Channel
    stub: retrieval_pb2_grpc.RetrievalServiceStub

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0)
        self.search.close()


@pytest.fixture
def redis_client() -> Iterator[Any]:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL} ({exc})")
    yield client
    client.close()


@pytest.fixture
def settings(tmp_path: Path, redis_client: Any) -> Iterator[Settings]:
    """A data dir with a bulk-built search index, and a write log of its own in Redis."""
    base = Settings(
        data_dir=tmp_path, redis_url=REDIS_URL, search_write_log=f"kindred:test:{uuid.uuid4().hex}"
    )
    encoder = write_tiny_encoder(base.resolved_models_dir)
    build_index(search_index_root(base), encoder).close()
    yield base
    redis_client.delete(base.search_write_log, f"{base.search_write_log}:replicas")


def start(settings: Settings, name: str) -> Replica:
    replica_settings = settings.replace(search_replica=name)
    search = SEARCH_REPLICA_SPEC.build_deps(replica_settings)
    server = SEARCH_REPLICA_SPEC.create_server(replica_settings, search, port=0).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    return Replica(search, server, channel, retrieval_pb2_grpc.RetrievalServiceStub(channel))


@pytest.fixture
def pair(settings: Settings) -> Iterator[tuple[Replica, Replica]]:
    a, b = start(settings, "a"), start(settings, "b")
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def post(post_id: str, title: str, text: str) -> common_pb2.Post:
    return Post(
        post_id=post_id,
        creator_id="c00",
        title=title,
        text=text,
        access_level="public",
        published_at=1_760_000_000.0,
        category="Music",
        language="en",
    ).to_proto()


def found(replica: Replica, query: str) -> list[str]:
    response = replica.stub.Search(retrieval_pb2.SearchRequest(query=query, k=50), timeout=5)
    return [c.item_id for c in response.candidates]


def test_a_write_to_one_replica_is_seen_by_every_replica_when_it_returns(
    pair: tuple[Replica, Replica],
) -> None:
    a, b = pair
    assert "p-zebra" not in found(b, "zebra sunday")
    a.stub.UpsertPosts(retrieval_pb2.UpsertPostsRequest(posts=[post("p-zebra", "zebra sunday", "zebra")]))
    assert "p-zebra" in found(b, "zebra sunday") and "p-zebra" in found(a, "zebra sunday")  # no polling
    deleted = b.stub.DeleteItems(retrieval_pb2.DeleteItemsRequest(item_ids=["p-zebra", "p-none"], kind=POST))
    assert deleted.deleted == 1
    assert "p-zebra" not in found(a, "zebra sunday") and "p-zebra" not in found(b, "zebra sunday")


def test_concurrent_writes_to_one_item_leave_the_copies_equal(pair: tuple[Replica, Replica]) -> None:
    """Writes are applied in the log's order everywhere, not in the order each replica received them."""
    a, b = pair
    errors: list[BaseException] = []

    def write(replica: Replica, word: str) -> None:
        try:
            for i in range(8):
                replica.stub.UpsertPosts(
                    retrieval_pb2.UpsertPostsRequest(posts=[post("p-race", f"{word} {i}", word)]), timeout=10
                )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(a, "zebra")),
        threading.Thread(target=write, args=(b, "fresh")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    titles = [r.search.index.fetch(["p-race"])[0].payload["title"] for r in (a, b)]
    assert titles[0] == titles[1]
    assert a.search.write_log is not None and b.search.write_log is not None
    assert a.search.write_log.applied == b.search.write_log.applied


def test_a_restarted_replica_catches_up_and_a_new_one_replays_the_log(settings: Settings) -> None:
    a, b = start(settings, "a"), start(settings, "b")
    try:
        b.close()  # gone: writes no longer wait for it
        t0 = time.monotonic()
        a.stub.UpsertPosts(retrieval_pb2.UpsertPostsRequest(posts=[post("p-late", "zebra notes", "zebra")]))
        assert time.monotonic() - t0 < 1.5
        a.stub.DeleteItems(retrieval_pb2.DeleteItemsRequest(item_ids=["pc000"], kind=POST))
        b = start(settings, "b")  # its copy still lacks both writes: applied from the log before serving
        c = start(settings, "c")  # a new copy of the bulk index, plus the whole log
        try:
            for replica in (b, c):
                assert "p-late" in found(replica, "zebra notes")
                assert replica.search.index.fetch(["pc000"]) == []
            state = json.loads((search_replicas_dir(settings) / "b" / STATE_FILE).read_text())
            assert a.search.write_log is not None
            assert entry_key(state["applied"]) == entry_key(a.search.write_log.applied)
        finally:
            c.close()
    finally:
        a.close()
        b.close()


def test_a_replica_rejects_bad_writes_before_logging_and_serves_no_recommendations(
    pair: tuple[Replica, Replica], settings: Settings, redis_client: Any
) -> None:
    a, _ = pair
    before = redis_client.xlen(settings.search_write_log)
    with pytest.raises(grpc.RpcError) as bad:
        a.stub.UpsertPosts(retrieval_pb2.UpsertPostsRequest(posts=[post("p-empty", "", "")]))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "posts[0].text" in str(
        bad.value.details()
    )
    assert redis_client.xlen(settings.search_write_log) == before  # nothing logged
    with pytest.raises(grpc.RpcError) as rec:
        a.stub.Retrieve(retrieval_pb2.RetrieveRequest(fan_id="f1", k=5))
    assert rec.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "search replica" in str(
        rec.value.details()
    )


def test_one_channel_to_several_replicas_spreads_calls_over_all(
    pair: tuple[Replica, Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    """kindred.grpc_client.make_channel balances over every replica (least-request; an idle client
    alternates): with gRPC's default (pick first) every call would reach the first address."""
    from kindred.grpc_client import make_channel

    calls = {"a": 0, "b": 0}
    for name, replica in zip("ab", pair, strict=True):
        inner = replica.search.search

        def counted(*args: Any, _name: str = name, _inner: Any = inner, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _inner(*args, **kwargs)

        monkeypatch.setattr(replica.search, "search", counted)
    target = f"ipv4:127.0.0.1:{pair[0].server.port},127.0.0.1:{pair[1].server.port}"
    with make_channel(target) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        for _ in range(20):
            stub.Search(retrieval_pb2.SearchRequest(query="jazz", k=5), timeout=5)
    assert calls["a"] + calls["b"] == 20 and min(calls.values()) >= 8, calls


def test_a_replica_whose_write_log_is_unreachable_answers_unavailable_counts_it_and_writes_nothing(
    tmp_path: Path,
) -> None:
    """No Redis at the log's address: the write is refused as UNAVAILABLE (retry-safe) before it
    touches the index. Needs no Redis itself."""
    from kindred.errors import Unavailable
    from retrieval_svc.search.replication import WriteLog

    encoder = write_tiny_encoder(tmp_path / "models")
    index = build_index(tmp_path / "search", encoder)
    search = SearchService(index, encoder)
    count = index.count()
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from kindred import telemetry_schema as schema

    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    root = tmp_path / "search"
    search.replicate(
        WriteLog("redis://127.0.0.1:1/0", "kindred:test:nowhere", "a", root, search.apply, meter=meter)
    )
    try:
        with pytest.raises(Unavailable, match="unreachable"):
            search.upsert_posts([Post.from_proto(post("p-lost", "zebra", "zebra"))])
        with pytest.raises(Unavailable):
            search.delete(["pc000"], kind="post")
        assert index.count() == count
        data = reader.get_metrics_data()
        assert data is not None
        points = [
            point
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == schema.METRIC_SEARCH_REPLICATION
            for point in metric.data.data_points
        ]
        assert [(dict(point.attributes or {}), getattr(point, "value", None)) for point in points] == [
            ({schema.REPLICATION_EVENT: "log_unreachable"}, 2)
        ]
    finally:
        search.close()


def test_replica_names_that_could_leave_the_replicas_directory_are_refused(tmp_path: Path) -> None:
    from retrieval_svc.search.replication import replica_root

    for bad in ("", "../x", "a/b", ".hidden", "a:b"):
        with pytest.raises(ValueError, match="search replica name"):
            replica_root(tmp_path / "replicas", bad, tmp_path / "base")
    assert replica_root(tmp_path / "replicas", "r-1.a_b", tmp_path / "base").is_dir()


def test_search_ranked_reaches_the_replicas_through_the_search_target(pair: tuple[Replica, Replica]) -> None:
    """KINDRED_SEARCH_TARGET: ranking's SearchRanked calls Search on the replicas (which refuse
    Retrieve), while its retrieval channel may point elsewhere."""
    from rs_helpers import FakeStore

    from kindred.grpc_client import make_channel
    from kindred.v1 import ranking_pb2, ranking_pb2_grpc
    from ranking_svc import server as ranking_server
    from ranking_svc.retrieval_client import GrpcRetriever

    target = f"ipv4:127.0.0.1:{pair[0].server.port},127.0.0.1:{pair[1].server.port}"
    settings = Settings(retrieval_target="127.0.0.1:1", search_target=target)
    assert settings.resolved_search_target == target
    assert Settings(retrieval_port=50999).resolved_search_target == "127.0.0.1:50999"  # default: retrieval
    nowhere = make_channel(settings.resolved_retrieval_target)
    deps = ranking_server.RankingDeps(
        retriever=GrpcRetriever(nowhere),
        features=FakeStore({}),
        ranker=None,  # type: ignore[arg-type]  # SearchRanked does not rank with it
        channel=nowhere,
        search_channel=make_channel(settings.resolved_search_target),
    )
    server = ranking_server.create_server(settings, deps, port=0).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = ranking_pb2_grpc.RankingServiceStub(channel)
            page = stub.SearchRanked(ranking_pb2.SearchRankedRequest(query="jazz piano", k=5), timeout=5)
        assert page.items and page.encoder.version == "tiny-v1"
    finally:
        server.stop(0)
        deps.close()


def test_the_demo_gives_each_replica_its_port_and_a_fresh_copy_and_log(
    tmp_path: Path, redis_client: Any
) -> None:
    from kindred.demo import _replica_envs

    settings = Settings(data_dir=tmp_path, redis_url=REDIS_URL, retrieval_port=50051)
    key = f"kindred:test:{uuid.uuid4().hex}"
    stale = search_replicas_dir(settings) / "r0"
    stale.mkdir(parents=True)
    redis_client.xadd(key, {"op": "{}"})
    try:
        envs = _replica_envs(settings, {"KINDRED_DATA_DIR": str(tmp_path)}, 2, log_key=key)
        assert [e["KINDRED_SEARCH_REPLICA"] for e in envs] == ["r0", "r1"]
        assert [e["KINDRED_RETRIEVAL_PORT"] for e in envs] == ["50061", "50062"]
        assert {e["KINDRED_SEARCH_WRITE_LOG"] for e in envs} == {key}
        assert not stale.exists() and redis_client.xlen(key) == 0
        assert _replica_envs(settings, {}, 0, log_key=key) == []
    finally:
        redis_client.delete(key)
