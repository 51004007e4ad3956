"""RetrievalService in-process on port 0: a tiny real edge index, a real ONNX user tower, a fake store."""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rs_helpers import (
    FakeStore,
    candidate_tables,
    fan_row,
    popular_lists,
    tiny_catalogue,
    tiny_mf,
    user_tower_weights,
    write_user_tower,
)

from kindred.config import Settings
from kindred.errors import ModelMismatch
from kindred.features import USER_TOWER_FEATURES
from kindred.grpc_server import KindredServer
from kindred.models import load_model
from kindred.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc
from kindred.vectorstore import index_creators, open_creator_index
from retrieval_svc.retriever import DEFAULT_QUOTA_SHARES, resolve_quotas
from retrieval_svc.server import RetrievalDeps, create_server

N = 80
TT = common_pb2.CANDIDATE_SOURCE_TWO_TOWER
POP = common_pb2.CANDIDATE_SOURCE_POPULAR
I2I = common_pb2.CANDIDATE_SOURCE_ITEM_TO_ITEM
SOC = common_pb2.CANDIDATE_SOURCE_SOCIAL
TR = common_pb2.CANDIDATE_SOURCE_TRENDING
MF = common_pb2.CANDIDATE_SOURCE_MF
ENUM = {"two_tower": TT, "mf": MF, "item_to_item": I2I, "social": SOC, "trending": TR, "popular": POP}


def default_split(k: int) -> Counter[int]:
    return Counter({ENUM[n]: q for n, q in resolve_quotas(k, DEFAULT_QUOTA_SHARES, {}).items() if q})


@dataclass
class Served:
    server: KindredServer
    stub: retrieval_pb2_grpc.RetrievalServiceStub
    channel: grpc.Channel
    store: FakeStore
    payloads: dict[str, dict]  # type: ignore[type-arg]
    spans: InMemorySpanExporter


@contextlib.contextmanager
def _serve(data_dir: Path, spans: InMemorySpanExporter) -> Iterator[Served]:
    settings = Settings(data_dir=data_dir)
    ids, vectors, payloads = tiny_catalogue(N)
    index_creators(settings, "v1", ids, vectors, payloads)
    write_user_tower(settings.resolved_models_dir, "v1", user_tower_weights(), mf=tiny_mf(ids))
    store = FakeStore(
        {
            "fan": {"f1": fan_row("f1", ["c001", "c002", "c003"], interests=["Music"])},
            "popular": popular_lists(ids, payloads),
            **candidate_tables(ids, payloads),
        }
    )
    index = open_creator_index(settings)
    model = load_model(settings.resolved_models_dir, "two_tower_user", expected_features=USER_TOWER_FEATURES)
    # No popular cache: tests change the store between calls and expect the change to show.
    deps = RetrievalDeps(
        index=index, user_tower=model, store=store, closers=[index.close], popular_cache_ttl_s=0.0
    )
    server = create_server(settings, deps, port=0).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Served(
            server,
            retrieval_pb2_grpc.RetrievalServiceStub(channel),
            channel,
            store,
            dict(zip(ids, payloads, strict=True)),
            spans,
        )
    finally:
        channel.close()
        server.stop(0)
        deps.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, spans: InMemorySpanExporter) -> Iterator[Served]:
    """One server for the tests that only read (building an index costs ~1 s on a busy machine)."""
    with _serve(tmp_path_factory.mktemp("served"), spans) as s:
        yield s


@pytest.fixture()
def served(shared: Served) -> Iterator[Served]:
    shared.spans.clear()
    saved = {ns: dict(rows) for ns, rows in shared.store.data.items()}
    yield shared
    shared.store.data = saved


@pytest.fixture()
def own_server(tmp_path: Path, spans: InMemorySpanExporter) -> Iterator[Served]:
    """A server of its own, for a test that writes to the index."""
    with _serve(tmp_path, spans) as s:
        yield s


def _retrieve(s: Served, **kwargs: object) -> retrieval_pb2.RetrieveResponse:
    return s.stub.Retrieve(retrieval_pb2.RetrieveRequest(**kwargs), timeout=5)  # type: ignore[arg-type]


def test_serving_with_every_source_tagged_and_no_duplicates(served: Served) -> None:
    health = health_pb2_grpc.HealthStub(served.channel)
    status = health.Check(
        health_pb2.HealthCheckRequest(service="kindred.v1.RetrievalService"), timeout=5
    ).status
    assert status == health_pb2.HealthCheckResponse.SERVING

    response = _retrieve(served, fan_id="f1", k=20)

    ids = [c.item_id for c in response.candidates]
    assert len(ids) == len(set(ids)) == 20
    assert Counter(c.source for c in response.candidates) == default_split(20)
    assert set(default_split(20)) == {TT, MF, I2I, SOC, TR, POP}
    assert not {"c001", "c002", "c003"} & set(ids)  # the fan's history is excluded
    for c in response.candidates:
        assert c.sources[0] == c.source and len(set(c.sources)) == len(c.sources)
        assert c.kind == common_pb2.ITEM_KIND_CREATOR and c.reasons
        assert "retrieval" in c.scores and "mf_score" in c.scores  # the mf fact, whoever proposed it
        if TT in c.sources:
            assert -1.0 <= c.scores["two_tower"] <= 1.0
        if SOC in c.sources:
            assert c.scores["social_friends"] >= 1 and any(
                "of your friends" in r or "a friend" in r for r in c.reasons
            )
        if I2I in c.sources:
            assert c.scores["item_to_item_seeds"] >= 1 and any(
                "creators you follow" in r or "a creator you follow" in r for r in c.reasons
            )
    assert (response.model.name, response.model.version) == ("two_tower_user", "v1")
    assert dict(response.degraded_sources) == {}

    names = [sp.name for sp in served.spans.get_finished_spans()]
    for expected in [
        "retrieval.retrieve",
        "retrieval.source.two_tower",
        "retrieval.source.popular",
        "retrieval.source.item_to_item",
        "retrieval.source.social",
        "retrieval.source.trending",
        "retrieval.source.mf",
        "mf.score",
        "onnx.run",
        "qdrant.query",
        "online_store.get",
    ]:
        assert expected in names


def test_an_item_both_sources_propose_appears_once_tagged_with_both(served: Served) -> None:
    # 77 eligible creators, each source asked for 60: by pigeonhole they must agree on some.
    response = _retrieve(served, fan_id="f1", k=60)
    ids = [c.item_id for c in response.candidates]
    assert len(ids) == len(set(ids)) == 60
    both = [c for c in response.candidates if set(c.sources) == {TT, POP}]
    assert both
    for c in both:
        assert {"two_tower", "popular", "retrieval"} <= set(c.scores)
        assert c.scores["retrieval"] == c.scores["two_tower" if c.source == TT else "popular"]


def test_request_quotas_and_filters_are_honoured(served: Served) -> None:
    filters = common_pb2.Filters(
        languages=["fr"], categories=["Art", "Gaming"], exclude_mature=True, exclude_item_ids=["c005"]
    )
    quotas = {"CANDIDATE_SOURCE_POPULAR": 6, "two_tower": 2}  # the others get the rest: none
    response = _retrieve(served, fan_id="f1", k=8, filters=filters, source_quotas=quotas)
    assert Counter(c.source for c in response.candidates) == {POP: 6, TT: 2}
    for c in response.candidates:
        p = served.payloads[c.item_id]
        assert p["language"] == "fr" and p["category"] in {"Art", "Gaming"} and not p["mature"]
        assert c.item_id != "c005"


def test_a_new_fan_gets_trending_and_popular_candidates_and_the_personal_sources_are_reported(
    served: Served,
) -> None:
    response = _retrieve(served, fan_id="someone-new", k=10)
    assert len(response.candidates) == 10
    assert {c.source for c in response.candidates} == {TR, POP}
    assert set(response.degraded_sources) == {"two_tower", "mf", "item_to_item", "social"}
    assert all("new fan" in reason for reason in response.degraded_sources.values())


def test_a_new_fans_onboarding_categories_come_as_the_category_filter(served: Served) -> None:
    filters = common_pb2.Filters(categories=["Podcasts"])
    response = _retrieve(served, fan_id="someone-new", k=10, filters=filters)
    assert len(response.candidates) == 10
    assert {served.payloads[c.item_id]["category"] for c in response.candidates} == {"Podcasts"}
    reasons = {r for c in response.candidates for r in c.reasons}
    assert {"trending in Podcasts", "popular in Podcasts"} <= reasons


def test_a_failing_source_degrades_instead_of_failing_the_request(served: Served) -> None:
    del served.store.data["popular"]
    response = _retrieve(served, fan_id="f1", k=10)
    assert len(response.candidates) == 10 and POP not in {c.source for c in response.candidates}
    assert "run the trainer" in response.degraded_sources["popular"]
    assert set(response.degraded_sources) == {"popular"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"fan_id": "", "k": 10}, "fan_id"),
        ({"fan_id": "f1", "k": 0}, "k"),
        ({"fan_id": "f1", "k": 1001}, "k"),
        ({"fan_id": "f1", "k": 5, "source_quotas": {"CANDIDATE_SOURCE_SOCIAL_X": 1}}, "source_quotas"),
    ],
)
def test_invalid_requests_name_the_field(served: Served, kwargs: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(grpc.RpcError) as info:
        _retrieve(served, **kwargs)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(field)


def test_similar_creators_upsert_and_delete(own_server: Served) -> None:
    served = own_server
    similar = served.stub.SimilarCreators(
        retrieval_pb2.SimilarCreatorsRequest(creator_id="c010", k=5), timeout=5
    )
    similar_ids = [c.item_id for c in similar.candidates]
    assert len(similar_ids) == 5 and "c010" not in similar_ids
    assert all(c.source == common_pb2.CANDIDATE_SOURCE_ITEM_TO_ITEM for c in similar.candidates)
    with pytest.raises(grpc.RpcError) as info:
        served.stub.SimilarCreators(retrieval_pb2.SimilarCreatorsRequest(creator_id="nope", k=5), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    # Flag the nearest one mature: the engine filter must drop it at once.
    top = similar_ids[0]
    creator = common_pb2.Creator(
        creator_id=top,
        name="x",
        category=served.payloads[top]["category"],
        language=served.payloads[top]["language"],
        mature=True,
    )
    assert (
        served.stub.UpsertCreators(
            retrieval_pb2.UpsertCreatorsRequest(creators=[creator]), timeout=5
        ).upserted
        == 1
    )
    again = served.stub.SimilarCreators(
        retrieval_pb2.SimilarCreatorsRequest(
            creator_id="c010", k=5, filters=common_pb2.Filters(exclude_mature=True)
        ),
        timeout=5,
    )
    assert top not in [c.item_id for c in again.candidates]
    with pytest.raises(grpc.RpcError) as info:
        served.stub.UpsertCreators(
            retrieval_pb2.UpsertCreatorsRequest(creators=[common_pb2.Creator(creator_id="brand-new")]),
            timeout=5,
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "trainer" in (info.value.details() or "")

    deleted = served.stub.DeleteItems(
        retrieval_pb2.DeleteItemsRequest(item_ids=[similar_ids[1], "ghost"]), timeout=5
    )
    assert deleted.deleted == 1
    after = served.stub.SimilarCreators(
        retrieval_pb2.SimilarCreatorsRequest(creator_id="c010", k=10), timeout=5
    )
    assert similar_ids[1] not in [c.item_id for c in after.candidates]


def test_without_a_text_encoder_search_and_posts_say_how_to_enable_them(served: Served) -> None:
    for call, request in [
        (served.stub.Search, retrieval_pb2.SearchRequest(query="jazz", k=5)),
        (served.stub.UpsertPosts, retrieval_pb2.UpsertPostsRequest()),
        (
            served.stub.DeleteItems,
            retrieval_pb2.DeleteItemsRequest(item_ids=["p1"], kind=common_pb2.ITEM_KIND_POST),
        ),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "text_encoder export" in (info.value.details() or "")


def test_a_user_tower_that_does_not_fit_the_index_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    ids, vectors, payloads = tiny_catalogue(10)
    index_creators(settings, "v1", ids, vectors[:, :4].copy(), payloads)  # 4-d index, 8-d tower
    write_user_tower(settings.resolved_models_dir, "v1", user_tower_weights())
    index = open_creator_index(settings)
    try:
        model = load_model(
            settings.resolved_models_dir, "two_tower_user", expected_features=USER_TOWER_FEATURES
        )
        with pytest.raises(ModelMismatch, match="4"):
            create_server(settings, RetrievalDeps(index=index, user_tower=model, store=FakeStore()), port=0)
    finally:
        index.close()


def _platform(tmp_path: Path) -> Settings:
    """A data dir with an index, a promoted user tower (with mf) and the online store's rows."""
    from kindred.store.online import open_online_store

    settings = Settings(data_dir=tmp_path)
    ids, vectors, payloads = tiny_catalogue(40)
    index_creators(settings, "v7", ids, vectors, payloads)
    write_user_tower(settings.resolved_models_dir, "v7", user_tower_weights(), mf=tiny_mf(ids))
    writer = open_online_store(settings)
    writer.put("fan", {"f1": fan_row("f1", ["c000"])})
    writer.put("popular", popular_lists(ids, payloads))
    for namespace, rows in candidate_tables(ids, payloads).items():
        writer.put(namespace, rows)
    writer.close()
    return settings


def _retrieve_from_settings(settings: Settings, k: int) -> retrieval_pb2.RetrieveResponse:
    """One Retrieve for f1 through the production wiring: build_deps, create_server, gRPC."""
    from retrieval_svc.server import build_deps

    deps = build_deps(settings)
    server = create_server(settings, deps, port=0).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            return stub.Retrieve(retrieval_pb2.RetrieveRequest(fan_id="f1", k=k), timeout=5)
    finally:
        server.stop(0)
        deps.close()


def test_create_server_from_settings_alone_with_the_embedded_store(tmp_path: Path) -> None:
    """The production wiring: build_deps opens the index, the promoted model and the online store."""
    response = _retrieve_from_settings(_platform(tmp_path), 10)
    assert Counter(c.source for c in response.candidates) == default_split(10)
    assert "c000" not in {c.item_id for c in response.candidates}
    assert response.model.version == "v7"


def test_a_deployments_retrieval_json_sets_the_source_shares(tmp_path: Path) -> None:
    settings = _platform(tmp_path)
    config = tmp_path / "config" / "retrieval.json"
    config.parent.mkdir()
    unnamed_off = dict.fromkeys(["item_to_item", "social", "trending", "popular"], 0)
    config.write_text(
        json.dumps({"quota_shares": {"CANDIDATE_SOURCE_TWO_TOWER": 0.5, "mf": 0.5} | unnamed_off})
    )
    response = _retrieve_from_settings(settings, 10)
    assert Counter(c.source for c in response.candidates) == Counter({ENUM["two_tower"]: 5, ENUM["mf"]: 5})


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ('{"quota_share": {}}', "expected an object with the keys"),
        ('{"quota_shares": {"mff": 0.5}}', "unknown source 'mff'"),
        ('{"quota_shares": {"mf": -1}}', "quota_shares.mf: expected a number >= 0"),
        ('{"quota_shares": {"mf": true}}', "quota_shares.mf: expected a number >= 0"),
        ('{"quota_shares": [1]}', "expected an object of source name"),
        ('{"trending_new_share": 2}', "trending_new_share: expected a number in [0, 1]"),
        ("{not json", "retrieval.json"),
    ],
)
def test_a_bad_retrieval_json_fails_the_start_naming_the_file_and_the_field(
    tmp_path: Path, content: str, complaint: str
) -> None:
    from retrieval_svc.server import load_retrieval_config

    config = tmp_path / "config" / "retrieval.json"
    config.parent.mkdir()
    config.write_text(content)
    with pytest.raises(ValueError, match=re.escape(complaint)) as caught:
        load_retrieval_config(Settings(data_dir=tmp_path))
    assert str(config) in str(caught.value)


def test_a_retrieval_json_that_switches_every_source_off_fails_the_start(tmp_path: Path) -> None:
    from retrieval_svc.server import load_retrieval_config

    config = tmp_path / "config" / "retrieval.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"quota_shares": dict.fromkeys(DEFAULT_QUOTA_SHARES, 0)}))
    with pytest.raises(ValueError, match="at least one source"):
        load_retrieval_config(Settings(data_dir=tmp_path))


def test_the_mf_source_honours_a_delete_at_once(own_server: Served) -> None:
    """The mf model knows every creator it was trained on; the engine's verdict, not the model, says
    which still exist."""
    only_mf = {name: 0 for name in DEFAULT_QUOTA_SHARES} | {"mf": 10}
    first = _retrieve(own_server, fan_id="f1", k=10, source_quotas=only_mf)
    ids = [c.item_id for c in first.candidates]
    assert len(ids) == 10 and {c.source for c in first.candidates} == {MF}
    deleted = own_server.stub.DeleteItems(retrieval_pb2.DeleteItemsRequest(item_ids=[ids[0]]), timeout=5)
    assert deleted.deleted == 1
    again = [c.item_id for c in _retrieve(own_server, fan_id="f1", k=10, source_quotas=only_mf).candidates]
    assert ids[0] not in again and again[:9] == ids[1:]
