"""RetrievalService Search / UpsertPosts / UpsertCreators / DeleteItems through gRPC, in-process on
port 0, over a real qdrant-edge search shard and a real (tiny) ONNX encoder."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rs_helpers import FakeStore, tiny_catalogue, user_tower_weights, write_user_tower
from search_testkit import creators, posts, write_tiny_encoder

from kindred import telemetry_schema as schema
from kindred.config import Settings
from kindred.data.schema import Post
from kindred.features import USER_TOWER_FEATURES
from kindred.models import load_model
from kindred.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc
from kindred.vectorstore import index_creators, open_creator_index
from retrieval_svc.search.index import SearchIndex, search_index_root
from retrieval_svc.search.service import SearchService
from retrieval_svc.server import RetrievalDeps, create_server, open_search

POST = common_pb2.ITEM_KIND_POST
CREATOR = common_pb2.ITEM_KIND_CREATOR


@dataclass
class Served:
    stub: retrieval_pb2_grpc.RetrievalServiceStub
    spans: InMemorySpanExporter


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    spans = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(SimpleSpanProcessor(spans))
    settings = Settings(data_dir=tmp_path_factory.mktemp("search-svc"))
    ids, vectors, payloads = tiny_catalogue(20)
    index_creators(settings, "v1", ids, vectors, payloads)
    write_user_tower(settings.resolved_models_dir, "v1", user_tower_weights())
    write_tiny_encoder(settings.resolved_models_dir)
    search = open_search(settings)  # the production wiring: promoted encoder + an empty search index
    assert search is not None and search.index.count() == 0
    index = open_creator_index(settings)
    model = load_model(settings.resolved_models_dir, "two_tower_user", expected_features=USER_TOWER_FEATURES)
    deps = RetrievalDeps(
        index=index, user_tower=model, store=FakeStore({}), closers=[index.close, search.close], search=search
    )
    server = create_server(settings, deps, port=0).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    stub.UpsertCreators(
        retrieval_pb2.UpsertCreatorsRequest(creators=[c.to_proto() for c in creators()]), timeout=10
    )
    stub.UpsertPosts(retrieval_pb2.UpsertPostsRequest(posts=[p.to_proto() for p in posts()]), timeout=10)
    try:
        yield Served(stub, spans)
    finally:
        channel.close()
        server.stop(0)
        deps.close()


def search(served: Served, query: str, k: int = 10, **filters: Any) -> retrieval_pb2.SearchResponse:
    return served.stub.Search(
        retrieval_pb2.SearchRequest(query=query, k=k, filters=common_pb2.Filters(**filters)),
        timeout=5,  # type: ignore[arg-type]
    )


def test_search_returns_explained_hybrid_candidates_with_item_details(served: Served) -> None:
    response = search(served, "jazz piano chords")
    assert response.candidates and response.model.version == "tiny-v1"
    for c in response.candidates:
        assert c.source == common_pb2.CANDIDATE_SOURCE_SEARCH_HYBRID
        assert c.sources and c.reasons and c.scores["retrieval"] == c.scores["fused"]
        item = response.items[c.item_id]
        assert item.kind == c.kind and item.title and item.creator_id
    top = response.items[response.candidates[0].item_id]
    assert top.category == "Music"
    posts_found = [c for c in response.candidates if c.kind == POST]
    assert posts_found and response.items[posts_found[0].item_id].published_at.seconds > 0


def test_an_upserted_post_is_searchable_within_a_second_and_a_delete_is_immediate(served: Served) -> None:
    post = Post(
        post_id="p-live-1",
        creator_id="c00",
        title="Sunday vinyl guide",
        text="vinyl melody drums vinyl",
        access_level="public",
        published_at=time.time(),
        category="Music",
        language="en",
    )
    t0 = time.monotonic()
    served.stub.UpsertPosts(retrieval_pb2.UpsertPostsRequest(posts=[post.to_proto()]), timeout=5)
    found_after = None
    while time.monotonic() - t0 < 1.0:
        if "p-live-1" in [c.item_id for c in search(served, "sunday vinyl guide", kinds=[POST]).candidates]:
            found_after = time.monotonic() - t0
            break
    assert found_after is not None, "an upserted post must be searchable within a second"

    deleted = served.stub.DeleteItems(
        retrieval_pb2.DeleteItemsRequest(item_ids=["p-live-1", "p-ghost"], kind=POST), timeout=5
    )
    assert deleted.deleted == 1
    # The very next search no longer sees it: no polling.
    assert "p-live-1" not in [c.item_id for c in search(served, "sunday vinyl guide", k=50).candidates]


def test_an_upserted_creator_is_found_by_a_misspelt_name(served: Served) -> None:
    creator = common_pb2.Creator(
        creator_id="c-new", name="Copper Lantern Harbor", category="Art", language="en", description="ink"
    )
    served.stub.UpsertCreators(retrieval_pb2.UpsertCreatorsRequest(creators=[creator]), timeout=5)
    top = search(served, "coper lanter harbour", k=3).candidates
    assert top[0].item_id == "c-new" and top[0].kind == CREATOR
    assert common_pb2.CANDIDATE_SOURCE_SEARCH_SPARSE in top[0].sources
    served.stub.DeleteItems(retrieval_pb2.DeleteItemsRequest(item_ids=["c-new"], kind=CREATOR), timeout=5)
    assert "c-new" not in [c.item_id for c in search(served, "coper lanter harbour", k=3).candidates]


def test_filters_reach_the_engine(served: Served) -> None:
    response = search(served, "jazz pasta watercolor speedrun", k=20, kinds=[POST], languages=["es"])
    assert response.candidates
    assert all(response.items[c.item_id].kind == POST for c in response.candidates)
    assert all(response.items[c.item_id].language == "es" for c in response.candidates)
    mature_free = search(served, "jazz pasta watercolor speedrun", k=50, exclude_mature=True)
    mature_creators = {c.creator_id for c in creators() if c.mature}
    assert mature_free.candidates
    assert not {mature_free.items[c.item_id].creator_id for c in mature_free.candidates} & mature_creators


def test_no_match_is_an_empty_response(served: Served) -> None:
    assert list(search(served, "qqqxv wwwkz").candidates) == []


@pytest.mark.parametrize("query", ["", "y" * 600, "\x00\x01", "!!! ???"])
def test_bad_queries_are_invalid_argument_naming_query(served: Served, query: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        search(served, query)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("query")


def test_bad_k_and_bad_posts_are_invalid_argument(served: Served) -> None:
    with pytest.raises(grpc.RpcError) as info:
        search(served, "jazz", k=1000)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "k" in (info.value.details() or "")
    bad = common_pb2.Post(post_id="", creator_id="c00", title="jazz")
    with pytest.raises(grpc.RpcError) as info:
        served.stub.UpsertPosts(retrieval_pb2.UpsertPostsRequest(posts=[bad]), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("posts[0].post_id")


def test_search_shows_in_the_trace(served: Served) -> None:
    served.spans.clear()
    search(served, "guitar album")
    names = {s.name for s in served.spans.get_finished_spans()}
    if names:  # a tracer provider is configured in this session
        assert {schema.SPAN_SEARCH, schema.SPAN_QDRANT_QUERY, schema.SPAN_ONNX_RUN} <= names


def test_the_index_survives_a_restart(tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = Settings(data_dir=tmp_path_factory.mktemp("restart"))
    encoder = write_tiny_encoder(settings.resolved_models_dir)
    first = SearchService(
        SearchIndex.open_or_create(
            search_index_root(settings), dim=encoder.dim, encoder_version=encoder.version
        ),
        encoder,
    )
    first.upsert_posts(posts()[:3])
    first.close()
    again = open_search(settings)
    assert again is not None
    try:
        assert again.index.count() == 3
    finally:
        again.close()


def test_a_search_index_held_by_another_owner_disables_search_not_the_service(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = Settings(data_dir=tmp_path_factory.mktemp("locked"))
    encoder = write_tiny_encoder(settings.resolved_models_dir)
    holder = SearchIndex.open_or_create(search_index_root(settings), dim=encoder.dim, encoder_version="x")
    try:
        assert open_search(settings) is None
    finally:
        holder.close()
