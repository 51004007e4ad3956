"""SearchRanked: the personal re-ranking on its own (domain, fake searcher), then through gRPC end to
end: ranking_svc → retrieval_svc Search over a real qdrant-edge shard and a real (tiny) ONNX encoder."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from kindred.config import Settings
from kindred.data.schema import CATEGORIES
from kindred.errors import InvalidArgument
from kindred.v1 import ranking_pb2, ranking_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc
from ranking_svc.search_ranked import (
    SearchPage,
    SearchRanker,
    SearchRankParams,
    SearchResult,
    rerank,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "retrieval_svc"))
from rs_helpers import FakeStore, tiny_catalogue, user_tower_weights, write_user_tower
from search_testkit import creators, posts, write_tiny_encoder

NOW = 1_760_000_000.0 + 10 * 86_400.0


def result(
    item_id: str, fused: float, creator: str, category: str = "Music", age_days: float = 3.0
) -> SearchResult:
    return SearchResult(
        item_id=item_id,
        kind="post",
        creator_id=creator,
        title=item_id,
        category=category,
        published_at=NOW - age_days * 86_400.0,
        scores={"fused": fused},
        reasons=["contains the words searched"],
    )


def fan(following: Sequence[str] = (), likes: str | None = None) -> dict[str, Any]:
    affinity = [1.0 if c == likes else 0.0 for c in CATEGORIES]
    return {
        "fan_id": "f1",
        "following": list(following),
        "history": list(following),
        "history_weights": [1.0] * len(following),
        "category_affinity": affinity,
    }


def test_a_reason_is_given_only_for_a_term_that_is_weighted() -> None:
    def results() -> list[SearchResult]:  # fresh each time: rerank adds its reasons to the results
        return [result("p1", 0.033, "cA"), result("p2", 0.032, "cC")]

    unweighted = rerank(results(), fan(following=["cC"]), NOW, SearchRankParams(following=0.0, engaged=0.0))
    weighted = rerank(results(), fan(following=["cC"]), NOW, SearchRankParams(following=0.3, engaged=0.0))
    followed = {r.item_id: r for r in unweighted}["p2"]
    assert followed.scores["following"] == 1.0 and "by a creator you follow" not in followed.reasons
    assert "you often engage with this creator" not in followed.reasons
    assert weighted[0].item_id == "p2" and weighted[0].reasons[0] == "by a creator you follow"


def test_a_followed_creators_post_moves_up_among_equally_relevant_ones() -> None:
    results = [result("p1", 0.033, "cA"), result("p2", 0.032, "cB"), result("p3", 0.031, "cC")]
    ranked = rerank(results, fan(following=["cC"]), NOW, SearchRankParams())
    assert [r.item_id for r in ranked] == ["p3", "p1", "p2"]
    top = ranked[0]
    assert top.scores["following"] == 1.0 and top.scores["final"] > top.scores["relevance"]
    # The default weights carry the follow through engagement (following's weight is 0), so the reason
    # names what moved the score.
    assert (
        top.reasons[0] == "you often engage with this creator"
        and "contains the words searched" in top.reasons
    )
    assert "by a creator you follow" not in top.reasons
    for r in ranked:
        assert {"fused", "relevance", "following", "engaged", "affinity", "freshness", "final"} <= set(
            r.scores
        )


def test_relevance_leads_personalisation_never_lifts_a_weak_match_over_a_strong_one() -> None:
    results = [result("strong", 0.05, "cA"), result("weak", 0.01, "cB", category="Art")]
    ranked = rerank(results, fan(following=["cB"], likes="Art"), NOW, SearchRankParams())
    assert ranked[0].item_id == "strong"


def test_category_affinity_and_freshness_break_ties_with_reasons() -> None:
    by_taste = rerank(
        [result("music", 0.03, "cA"), result("art", 0.03, "cB", category="Art")],
        fan(likes="Art"),
        NOW,
        SearchRankParams(),
    )
    assert by_taste[0].item_id == "art" and "you like Art" in by_taste[0].reasons
    by_age = rerank(
        [result("old", 0.03, "cA", age_days=60), result("new", 0.03, "cA", age_days=0.2)],
        None,
        NOW,
        SearchRankParams(),
    )
    assert by_age[0].item_id == "new" and "posted today" in by_age[0].reasons
    assert by_age[0].scores["following"] == 0.0


class FakeSearcher:
    def __init__(self, results: list[SearchResult]) -> None:
        self.results = results
        self.asked: list[int] = []

    def search(
        self, query: str, k: int, filters: Any, context: Any, fan_id: str, timeout_s: float
    ) -> SearchPage:
        self.asked.append(k)
        return SearchPage([dataclass_copy(r) for r in self.results[:k]], "enc-1")


def dataclass_copy(r: SearchResult) -> SearchResult:
    return SearchResult(**{**r.__dict__, "scores": dict(r.scores), "reasons": list(r.reasons)})


class BrokenStore:
    def get(self, namespace: str, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        raise ConnectionError("store down")


def test_ranker_asks_for_more_than_k_and_cuts_to_k() -> None:
    searcher = FakeSearcher([result(f"p{i}", 0.03 - i * 1e-4, f"c{i}") for i in range(80)])
    ranked = SearchRanker(searcher, FakeStore({"fan": {"f1": fan(["c40"])}})).search(
        "jazz", "f1", 10, now=NOW
    )
    assert searcher.asked == [50] and len(ranked.results) == 10 and ranked.personalised
    assert ranked.results[0].item_id == "p40"  # found deep in retrieval's list, lifted by the follow


def test_no_fan_unknown_fan_or_a_failing_store_still_answer_unpersonalised() -> None:
    searcher = FakeSearcher([result("p1", 0.03, "cA"), result("p2", 0.02, "cB")])
    for fan_id, store in [("", FakeStore({})), ("ghost", FakeStore({})), ("f1", BrokenStore())]:
        ranked = SearchRanker(searcher, store).search("jazz", fan_id, 5, now=NOW)  # type: ignore[arg-type]
        assert not ranked.personalised and [r.item_id for r in ranked.results] == ["p1", "p2"]


def test_k_out_of_bounds_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as info:
        SearchRanker(FakeSearcher([]), FakeStore({})).search("jazz", "", 500)
    assert info.value.field == "k"


# -- through gRPC ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ranking_pb2_grpc.RankingServiceStub, Mapping[str, Any]]]:
    from kindred.features import USER_TOWER_FEATURES
    from kindred.grpc_client import make_channel
    from kindred.models import load_model
    from kindred.vectorstore import index_creators, open_creator_index
    from ranking_svc import server as ranking_server
    from ranking_svc.retrieval_client import GrpcRetriever
    from retrieval_svc import server as retrieval_server

    settings = Settings(data_dir=tmp_path_factory.mktemp("mesh"))
    ids, vectors, payloads = tiny_catalogue(10)
    index_creators(settings, "v1", ids, vectors, payloads)
    write_user_tower(settings.resolved_models_dir, "v1", user_tower_weights())
    write_tiny_encoder(settings.resolved_models_dir)
    search = retrieval_server.open_search(settings)
    assert search is not None
    index = open_creator_index(settings)
    tower = load_model(settings.resolved_models_dir, "two_tower_user", expected_features=USER_TOWER_FEATURES)
    rdeps = retrieval_server.RetrievalDeps(
        index=index, user_tower=tower, store=FakeStore({}), closers=[index.close, search.close], search=search
    )
    rserver = retrieval_server.create_server(settings, rdeps, port=0).start()
    rchannel = grpc.insecure_channel(f"127.0.0.1:{rserver.port}")
    rstub = retrieval_pb2_grpc.RetrievalServiceStub(rchannel)
    rstub.UpsertCreators(
        retrieval_pb2.UpsertCreatorsRequest(creators=[c.to_proto() for c in creators()]), timeout=10
    )
    rstub.UpsertPosts(retrieval_pb2.UpsertPostsRequest(posts=[p.to_proto() for p in posts()]), timeout=10)
    # The fan follows the second Music creator (c01) and likes Music.
    store = FakeStore({"fan": {"f1": fan(following=["c01"], likes="Music")}})
    channel = make_channel(f"127.0.0.1:{rserver.port}")

    class NoRanker:
        name = "ranker"
        version = "none"
        manifest: Mapping[str, Any] = {}  # read-only

        def run(self, features: Any) -> Any:
            raise AssertionError("SearchRanked must not need the Recommend ranker")

    kdeps = ranking_server.RankingDeps(
        retriever=GrpcRetriever(channel), features=store, ranker=NoRanker(), channel=channel
    )
    kserver = ranking_server.create_server(settings, kdeps, port=0).start()
    kchannel = grpc.insecure_channel(f"127.0.0.1:{kserver.port}")
    try:
        yield ranking_pb2_grpc.RankingServiceStub(kchannel), {"posts": {p.post_id: p for p in posts()}}
    finally:
        kchannel.close()
        kserver.stop(0)
        rchannel.close()
        rserver.stop(0)
        kdeps.channel = None
        kdeps.close()
        channel.close()
        rdeps.close()


def test_search_ranked_personalises_through_grpc_and_explains(mesh: tuple[Any, Mapping[str, Any]]) -> None:
    stub, _ = mesh
    query = "jazz piano chords album"
    plain = stub.SearchRanked(ranking_pb2.SearchRankedRequest(query=query, k=6), timeout=5)
    personal = stub.SearchRanked(ranking_pb2.SearchRankedRequest(query=query, fan_id="f1", k=6), timeout=5)
    assert not plain.personalised and personal.personalised
    assert plain.items and personal.items and personal.encoder.version == "tiny-v1"
    top = personal.items[0]
    assert personal.details[top.item_id].creator_id == "c01"
    assert "you often engage with this creator" in top.reasons
    assert top.scores["final"] >= top.scores["relevance"] and "fused" in top.scores
    # c00 and c01 are both Music creators whose i-th posts say the same words, so retrieval alone
    # cannot tell such a pair apart (a tie); for a fan who follows c01, c01's post of each pair wins.
    assert all(it.scores["following"] == 0.0 for it in plain.items)
    order = [it.item_id for it in personal.items]
    pairs = [(f"pc01{i}", f"pc00{i}") for i in range(3) if f"pc01{i}" in order and f"pc00{i}" in order]
    assert pairs and all(order.index(mine) < order.index(other) for mine, other in pairs)


def test_search_ranked_names_the_bad_field(mesh: tuple[Any, Mapping[str, Any]]) -> None:
    stub, _ = mesh
    for request, field in [
        (ranking_pb2.SearchRankedRequest(query="", k=5), "query"),
        (ranking_pb2.SearchRankedRequest(query="z" * 600, k=5), "query"),
        (ranking_pb2.SearchRankedRequest(query="jazz", k=999), "k"),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            stub.SearchRanked(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith(field)


def test_search_ranked_no_match_is_empty(mesh: tuple[Any, Mapping[str, Any]]) -> None:
    stub, _ = mesh
    response = stub.SearchRanked(ranking_pb2.SearchRankedRequest(query="qqqxv wwwkz", fan_id="f1"), timeout=5)
    assert list(response.items) == []
