"""Recommender domain with fakes: ranking order, re-ranking and explanations end to end, cold start,
fallbacks, validation; and the servicer on port 0."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from kindred.config import Settings
from kindred.errors import InvalidArgument, Unavailable
from kindred.features import RANKER_FEATURES
from kindred.v1 import common_pb2, ranking_pb2, ranking_pb2_grpc, retrieval_pb2
from ranking_svc.domain import RetrievalResult, ScoredCandidate
from ranking_svc.explain import ExplainParams
from ranking_svc.recommender import Recommender
from ranking_svc.rerank import CapParams, DiversityParams, RerankConfig, Reranker, Slate
from ranking_svc.server import RankingDeps, create_server, load_ranking_config

TWO_TOWER = "CANDIDATE_SOURCE_TWO_TOWER"
POPULAR = "CANDIDATE_SOURCE_POPULAR"
TT_COLUMN = RANKER_FEATURES.index("cross.two_tower_score")
INTEREST_COLUMN = RANKER_FEATURES.index("cross.category_interest")


class FakeRetriever:
    """Returns fixed candidates, or raises Unavailable when `down`; records the k it was asked for."""

    def __init__(self, candidates: list[ScoredCandidate], down: bool = False) -> None:
        self.candidates = candidates
        self.down = down
        self.asked_k: list[int] = []
        self.filters: list[Any] = []

    def retrieve(self, fan_id: str, k: int, filters: Any, context: Any, timeout_s: float) -> RetrievalResult:
        self.asked_k.append(k)
        self.filters.append(filters)
        if self.down:
            raise Unavailable("retrieval is down")
        return RetrievalResult(
            [
                ScoredCandidate(c.item_id, c.source, list(c.sources), dict(c.scores), list(c.reasons))
                for c in self.candidates
            ],
            "tt-v1",
            {},
        )


class DictStore:
    def __init__(self, data: dict[str, dict[str, dict[str, Any]]]) -> None:
        self.data = data

    def get(self, namespace: str, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        return [self.data.get(namespace, {}).get(k) for k in keys]


class TwoTowerScoreRanker:
    """A ranker that scores by the two-tower feature column: predictable, so order is checkable."""

    name = "ranker"
    version = "r-test"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.batches: list[int] = []

    def run(self, features: np.ndarray) -> np.ndarray:
        if self.fail:
            raise RuntimeError("onnxruntime exploded")
        assert features.shape[1] == len(RANKER_FEATURES)
        self.batches.append(features.shape[0])
        return features[:, TT_COLUMN].astype(np.float32)


def _candidates() -> list[ScoredCandidate]:
    return [
        ScoredCandidate("c1", TWO_TOWER, [TWO_TOWER], {"two_tower": 0.1, "retrieval": 0.1}),
        ScoredCandidate("c2", TWO_TOWER, [TWO_TOWER], {"two_tower": 0.9, "retrieval": 0.9}),
        ScoredCandidate("c3", POPULAR, [POPULAR], {"retrieval": 5.0}),
        ScoredCandidate("c4", TWO_TOWER, [TWO_TOWER], {"two_tower": 0.5, "retrieval": 0.5}),
    ]


STORE = DictStore(
    {
        "fan": {"f1": {"fan_id": "f1", "history": ["c9", "c3"], "following": ["c9"]}},
        "creator": {c: {"creator_id": c, "category": "Music"} for c in ["c1", "c2", "c3", "c4", "c9"]},
        "popular": {"global": {"creator_ids": ["c9", "c3", "c1"], "scores": [3.0, 2.0, 1.0]}},
    }
)


def test_ranks_by_model_score_and_records_stage_scores() -> None:
    ranker = TwoTowerScoreRanker()
    retriever = FakeRetriever(_candidates())
    result = Recommender(retriever, STORE, ranker).recommend("f1", 3, filters=None, context=None, timeout_s=1)
    assert [c.item_id for c in result.items] == ["c2", "c4", "c1"]
    assert all("ranker" in c.scores and "retrieval" in c.scores for c in result.items)
    assert result.fallback == "" and result.ranker_version == "r-test"
    assert retriever.asked_k == [100]  # retrieves more than it returns
    assert ranker.batches == [4]  # one batched model call


def test_retrieval_down_serves_popular_without_the_fans_history_and_says_so() -> None:
    result = Recommender(FakeRetriever([], down=True), STORE, TwoTowerScoreRanker()).recommend(
        "f1", 5, filters=None, context=None, timeout_s=1
    )
    assert result.fallback == "retrieval_unavailable"
    assert [c.item_id for c in result.items] == ["c3", "c1"]  # f1 already follows c9
    assert all(c.source == POPULAR for c in result.items)


def test_ranker_failure_keeps_retrieval_order_and_says_so() -> None:
    result = Recommender(FakeRetriever(_candidates()), STORE, TwoTowerScoreRanker(fail=True)).recommend(
        "f1", 2, filters=None, context=None, timeout_s=1
    )
    assert result.fallback == "ranker_failed"
    assert [c.item_id for c in result.items] == ["c1", "c2"]


@pytest.mark.parametrize(("fan", "k", "field"), [("", 5, "fan_id"), ("f1", 0, "k"), ("f1", 201, "k")])
def test_bad_requests_name_the_field(fan: str, k: int, field: str) -> None:
    recommender = Recommender(FakeRetriever(_candidates()), STORE, TwoTowerScoreRanker())
    with pytest.raises(InvalidArgument) as info:
        recommender.recommend(fan, k, filters=None, context=None, timeout_s=1)
    assert info.value.field == field


class InterestRanker:
    """Scores by the "category matches the fan's interests" feature; the two-tower score breaks ties."""

    name = "ranker"
    version = "r-interest"

    def run(self, features: np.ndarray) -> np.ndarray:
        return (features[:, INTEREST_COLUMN] + 0.1 * features[:, TT_COLUMN]).astype(np.float32)


CATEGORY_OF = {f"m{i}": "Music" for i in range(6)} | {f"k{i}": "Cooking" for i in range(6)}


def _catalogue_candidates() -> list[ScoredCandidate]:
    """Six Music creators ahead of six Cooking ones in two-tower order (m0 best ... k5 worst)."""
    ids = [f"m{i}" for i in range(6)] + [f"k{i}" for i in range(6)]
    return [
        ScoredCandidate(
            c,
            TWO_TOWER,
            [TWO_TOWER],
            {"two_tower": 1.0 - i / 20, "retrieval": 1.0 - i / 20},
            ["from retrieval"],
        )
        for i, c in enumerate(ids)
    ]


CATALOGUE = DictStore(
    {
        "fan": {
            "fan-with-row": {
                "fan_id": "fan-with-row",
                "history": ["m9"],
                "following": ["m9", "m8"],
                "language": "en",
            }
        },
        "creator": {
            **{
                c: {"creator_id": c, "category": cat, "language": "en", "n_followers": 500, "created_at": 0.0}
                for c, cat in CATEGORY_OF.items()
            },
            "m8": {"creator_id": "m8", "category": "Music"},
            "m9": {"creator_id": "m9", "category": "Music"},
            "x-mature": {"creator_id": "x-mature", "category": "Cooking", "mature": True},
        },
        "popular": {
            "global": {"creator_ids": ["m0", "x-mature", "k0", "m1"], "scores": [0.9, 0.8, 0.7, 0.6]},
            "category:Cooking": {"creator_ids": ["x-mature", "k3", "k4"], "scores": [0.9, 0.5, 0.4]},
        },
    }
)


def test_new_fans_onboarding_interests_personalise_the_first_page() -> None:
    retriever = FakeRetriever(_catalogue_candidates())
    recommender = Recommender(retriever, CATALOGUE, InterestRanker())
    pages = {}
    for interest in ("Music", "Cooking"):
        filters = common_pb2.Filters(categories=[interest])
        result = recommender.recommend(f"new-{interest}", 3, filters=filters, context=None, timeout_s=1)
        assert result.fallback == ""
        assert all(CATEGORY_OF[c.item_id] == interest for c in result.items)
        assert all(c.reasons[0] == f"matches your interest in {interest}" for c in result.items)
        assert retriever.filters[-1] is filters  # the filters reach retrieval unchanged
        pages[interest] = [c.item_id for c in result.items]
    assert pages == {"Music": ["m0", "m1", "m2"], "Cooking": ["k0", "k1", "k2"]}


def test_a_known_fans_categories_are_a_filter_not_interests() -> None:
    recommender = Recommender(FakeRetriever(_catalogue_candidates()), CATALOGUE, InterestRanker())
    filters = common_pb2.Filters(categories=["Cooking"])
    result = recommender.recommend("fan-with-row", 3, filters=filters, context=None, timeout_s=1)
    # The stored row has no interests: the interest feature stays off (were Cooking taken for an
    # interest, k0.. would lead), two-tower order decides.
    assert [c.item_id for c in result.items] == ["m0", "m1", "m2"]


def test_every_item_carries_source_stage_scores_rerank_trace_and_explanations() -> None:
    recommender = Recommender(
        FakeRetriever(_catalogue_candidates()),
        CATALOGUE,
        TwoTowerScoreRanker(),
        rerank=RerankConfig(cap=CapParams(max_per_category=2)),
    )
    result = recommender.recommend("fan-with-row", 4, filters=None, context=None, timeout_s=1)
    # Two-tower order is m0 m1 m2 ...; the cap of 2 per category lets the best Cooking creators in.
    assert [c.item_id for c in result.items] == ["m0", "m1", "k0", "k1"]
    for item in result.items:
        assert item.source == TWO_TOWER and item.sources == [TWO_TOWER]
        assert {"two_tower", "retrieval", "ranker", "relevance", "ranker_position", "final"} <= set(
            item.scores
        )
        assert "from retrieval" in item.reasons  # retrieval's reasons are kept
        assert "matches your language" in item.reasons  # and the ranker's added, from the rows
    assert result.items[0].reasons[0] == "you follow 2 creators in Music"
    assert result.items[2].scores["ranker_position"] == 7.0  # k0 was 7th in the ranker's order


def test_retrieval_returning_nothing_serves_popular_rather_than_an_empty_page() -> None:
    result = Recommender(FakeRetriever([]), STORE, TwoTowerScoreRanker()).recommend(
        "f1", 5, filters=None, context=None, timeout_s=1
    )
    assert result.fallback == "retrieval_empty"
    assert [c.item_id for c in result.items] == ["c3", "c1"]


def test_popular_fallback_leads_with_a_new_fans_interests_and_honours_filters() -> None:
    recommender = Recommender(FakeRetriever([], down=True), CATALOGUE, TwoTowerScoreRanker())
    filters = common_pb2.Filters(categories=["Cooking"], exclude_mature=True)
    result = recommender.recommend("brand-new", 4, filters=filters, context=None, timeout_s=1)
    assert result.fallback == "retrieval_unavailable"
    assert [c.item_id for c in result.items] == ["k3", "k4", "m0", "k0"]
    assert result.items[0].reasons == ["popular in Cooking"]
    assert result.items[2].reasons == ["popular on Kindred right now"]


class BrokenStep:
    name = "broken"

    def apply(self, slate: Slate, order: list[int], page: int) -> list[int]:
        raise RuntimeError("bug in a re-rank rule")

    def reasons(self, slate: Slate, items: list[int]) -> dict[int, str]:
        return {}


def test_a_failing_rerank_rule_serves_the_rankers_order_and_says_so() -> None:
    recommender = Recommender(
        FakeRetriever(_candidates()), STORE, TwoTowerScoreRanker(), rerank=Reranker([BrokenStep()])
    )
    result = recommender.recommend("f1", 3, filters=None, context=None, timeout_s=1)
    assert result.fallback == "rerank_failed"
    assert [c.item_id for c in result.items] == ["c2", "c4", "c1"]


class _OneResponseChannel:
    """Just enough of grpc.Channel for the retrieval stub: every Retrieve answers `response`."""

    def __init__(self, response: retrieval_pb2.RetrieveResponse) -> None:
        self.response = response

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return lambda request, timeout=None: self.response


class _Watched:
    """A retriever whose results record which positions the recommender asked it to complete."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.completed: list[int] = []

    def retrieve(self, *args: Any) -> RetrievalResult:
        result: RetrievalResult = self.inner.retrieve(*args)
        assert result.complete is not None and not any(c.reasons or c.sources for c in result.candidates)

        def complete(positions: Any) -> None:
            positions = list(positions)
            self.completed += positions
            assert result.complete is not None
            result.complete(positions)

        return dataclasses.replace(result, complete=complete)


@pytest.mark.parametrize(
    ("ranker", "rerank", "fallback"),
    [
        (TwoTowerScoreRanker(), RerankConfig(cap=CapParams(max_per_category=2)), ""),
        (TwoTowerScoreRanker(fail=True), RerankConfig(), "ranker_failed"),
        (TwoTowerScoreRanker(), Reranker([BrokenStep()]), "rerank_failed"),
    ],
)
def test_grpc_candidates_read_sources_and_reasons_for_the_page_only_and_serve_the_same_page(
    ranker: TwoTowerScoreRanker, rerank: RerankConfig | Reranker, fallback: str
) -> None:
    from ranking_svc.retrieval_client import GrpcRetriever, to_proto

    retrieved = _catalogue_candidates()
    retrieved[3].sources.append(POPULAR)
    retrieved[6].reasons.append("popular in Cooking")
    response = retrieval_pb2.RetrieveResponse(candidates=[to_proto(c) for c in retrieved])
    lazy = _Watched(GrpcRetriever(_OneResponseChannel(response)))  # type: ignore[arg-type]

    def page(retriever: Any) -> list[ScoredCandidate]:
        result = Recommender(retriever, CATALOGUE, ranker, rerank=rerank).recommend(
            "fan-with-row", 4, filters=None, context=None, timeout_s=1
        )
        assert result.fallback == fallback
        return result.items

    expected = page(FakeRetriever(retrieved))  # every candidate read in full
    got = page(lazy)
    assert got == expected and all(c.sources and c.reasons for c in got)
    # Only the page was read in full, each candidate once.
    ids = [c.item_id for c in retrieved]
    assert sorted(lazy.completed) == sorted(ids.index(c.item_id) for c in got)


def test_a_ranker_returning_garbage_counts_as_failing() -> None:
    class NaNRanker(TwoTowerScoreRanker):
        def run(self, features: np.ndarray) -> np.ndarray:
            return np.full(features.shape[0], np.nan, dtype=np.float32)

    result = Recommender(FakeRetriever(_candidates()), STORE, NaNRanker()).recommend(
        "f1", 2, filters=None, context=None, timeout_s=1
    )
    assert result.fallback == "ranker_failed" and [c.item_id for c in result.items] == ["c1", "c2"]


@pytest.fixture()
def stub() -> Iterator[ranking_pb2_grpc.RankingServiceStub]:
    deps = RankingDeps(retriever=FakeRetriever(_candidates()), features=STORE, ranker=TwoTowerScoreRanker())
    server = create_server(Settings.from_env({}), deps, port=0).start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield ranking_pb2_grpc.RankingServiceStub(channel)
    server.stop(0)


def test_servicer_recommend_and_rank_over_grpc(stub: ranking_pb2_grpc.RankingServiceStub) -> None:
    response = stub.Recommend(ranking_pb2.RecommendRequest(fan_id="f1", k=2), timeout=5)
    assert [i.item_id for i in response.items] == ["c2", "c4"]
    assert response.ranker.version == "r-test" and response.retriever.version == "tt-v1"
    ranked = stub.Rank(ranking_pb2.RankRequest(fan_id="f1", candidates=list(response.items)[::-1]), timeout=5)
    assert [i.item_id for i in ranked.items] == ["c2", "c4"]


def test_servicer_maps_bad_input_to_invalid_argument(stub: ranking_pb2_grpc.RankingServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Recommend(ranking_pb2.RecommendRequest(fan_id="f1", k=0), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "k" in (info.value.details() or "")
    with pytest.raises(grpc.RpcError) as info:
        stub.Rank(
            ranking_pb2.RankRequest(fan_id="f1", candidates=[ranking_pb2.RankRequest().candidates.add()]),
            timeout=5,
        )
    assert "candidates[0].item_id" in (info.value.details() or "")


def test_servicer_passes_onboarding_interests_through() -> None:
    deps = RankingDeps(
        retriever=FakeRetriever(_catalogue_candidates()), features=CATALOGUE, ranker=InterestRanker()
    )
    server = create_server(Settings.from_env({}), deps, port=0).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = ranking_pb2_grpc.RankingServiceStub(channel)
            request = ranking_pb2.RecommendRequest(
                fan_id="new-fan", k=2, filters=common_pb2.Filters(categories=["Cooking"])
            )
            response = stub.Recommend(request, timeout=5)
    finally:
        server.stop(0)
    assert [i.item_id for i in response.items] == ["k0", "k1"]
    assert response.items[0].reasons[0] == "matches your interest in Cooking"


def test_ranking_config_file_overrides_the_defaults_and_rejects_typos(tmp_path: Path) -> None:
    settings = Settings.from_env({"KINDRED_DATA_DIR": str(tmp_path)})
    assert load_ranking_config(settings) == (RerankConfig(), ExplainParams())  # no file: defaults
    path = tmp_path / "config" / "ranking.json"
    path.parent.mkdir()
    path.write_text(
        json.dumps({"rerank": {"diversity": {"lam": 0.5}, "exposure": None}, "explain": {"max_reasons": 1}})
    )
    rerank, explain = load_ranking_config(settings)
    assert rerank.diversity == DiversityParams(lam=0.5) and rerank.exposure is None
    # Naming diversity switches off the default calibration (they are alternatives); the rest keep defaults.
    assert rerank.calibration is None and rerank.freshness == RerankConfig().freshness
    assert rerank.cap == CapParams() and explain.max_reasons == 1
    path.write_text(json.dumps({"rerank": {"diversity": {"lamda": 0.5}}}))
    with pytest.raises(ValueError, match="lamda"):
        load_ranking_config(settings)


# ------------------------------------------------------ creator feature cache, in-process retrieval


def test_creator_vectors_are_built_once_per_store_version_and_rebuilt_when_rows_change(
    tmp_path: Path,
) -> None:
    from kindred.features import creator_tower_features
    from kindred.store.embedded import EmbeddedOnlineStore
    from ranking_svc.creator_features import CreatorFeatureCache

    store = EmbeddedOnlineStore(tmp_path)
    try:
        rows = {c: {"creator_id": c, "category": "Music", "n_followers": i} for i, c in enumerate(["a", "b"])}
        store.put("creator", rows)
        cache = CreatorFeatureCache(store)
        got, vectors = cache.read(["a", "b", "ghost"], 2)
        assert got[2] is None and vectors.shape == (2, len(creator_tower_features(None)))
        np.testing.assert_array_equal(vectors[1], creator_tower_features(rows["b"]))
        kept = cache._space.entries["a"]
        again_rows, again = cache.read(["a"])
        assert cache.cached == 3 and cache._space.entries["a"] is kept  # every id kept, none rebuilt
        assert again_rows == [rows["a"]]  # served from what is kept, at the version the store serves
        np.testing.assert_array_equal(again[0], vectors[0])

        # A write moves the namespace's version: every kept vector goes, the new row's is built.
        store.put("creator", {"a": {"creator_id": "a", "category": "Art", "n_followers": 50}})
        _, fresh = cache.read(["a"])
        np.testing.assert_array_equal(fresh[0], creator_tower_features(store.get("creator", ["a"])[0]))
        assert not np.array_equal(fresh[0], vectors[0]) and cache.cached == 1
    finally:
        store.close()


def test_creator_reads_of_kept_ids_read_only_the_version_and_match_a_fresh_read(tmp_path: Path) -> None:
    from kindred.features import creator_cross_facts, creator_tower_features
    from kindred.store.embedded import EmbeddedOnlineStore
    from ranking_svc.creator_features import CreatorFeatureCache
    from ranking_svc.rerank import _number_columns, slate_facts

    class Counting(EmbeddedOnlineStore):
        shared_reads = 0

        def get_shared(self, namespace: str, keys: Sequence[str]) -> Any:
            self.shared_reads += 1
            return super().get_shared(namespace, keys)

    store = Counting(tmp_path)
    try:
        rows = {
            "a": {
                "creator_id": "a",
                "category": "Music",
                "n_followers": 3,
                "created_at": 10.0,
                "as_of": 99.0,
            },
            "b": {"creator_id": "b", "category": "Art", "trend": 0.5},
            "odd": {"creator_id": "odd", "category": "Art", "n_followers": "many"},  # malformed number
        }
        store.put("creator", rows)
        cache = CreatorFeatureCache(store)
        first = cache.read_batch(["a", "b", "ghost", "a"], 3)
        assert store.shared_reads == 1
        again = cache.read_batch(["b", "a", "ghost"], 2)
        assert store.shared_reads == 1  # all kept: the version alone was read
        assert again.rows == [rows["b"], rows["a"], None] and first.rows == [
            rows["a"],
            rows["b"],
            None,
            rows["a"],
        ]
        plain = [rows["b"], rows["a"]]
        np.testing.assert_array_equal(again.vectors, np.array([creator_tower_features(r) for r in plain]))
        assert again.cross == [creator_cross_facts(r) for r in plain]
        assert again.slate == [slate_facts(r) for r in plain]
        assert again.numbers is not None
        np.testing.assert_array_equal(
            again.numbers, np.array(_number_columns(again.slate)).T
        )  # NaN where a row says nothing: equal as arrays
        # A malformed number: no numbers for the batch (re-ranking then reads the facts column by column).
        assert (
            cache.read_batch(["a", "odd"]).numbers is None
            and cache.read_batch(["odd"], 0).numbers is not None
        )
        store.put("creator", {"b": {"creator_id": "b", "category": "Food"}})
        moved = cache.read_batch(["b", "a"])
        assert store.shared_reads == 3 and moved.rows[0] == {"creator_id": "b", "category": "Food"}
        assert moved.cross[0].category == "Food"
    finally:
        store.close()


def test_creator_vectors_without_a_versioned_store_are_built_per_read() -> None:
    from kindred.features import creator_tower_features
    from ranking_svc.creator_features import CreatorFeatureCache

    store = DictStore({"creator": {"c1": {"creator_id": "c1", "category": "Music"}}})
    cache = CreatorFeatureCache(store)
    rows, vectors = cache.read(["c1", "c2"])
    assert rows[1] is None and cache.cached == 0
    np.testing.assert_array_equal(vectors[0], creator_tower_features(store.data["creator"]["c1"]))
    store.data["creator"]["c1"] = {"creator_id": "c1", "category": "Art"}
    np.testing.assert_array_equal(
        cache.read(["c1"])[1][0], creator_tower_features(store.data["creator"]["c1"])
    )


class _Source:
    def __init__(self, name: str, ids: Sequence[str], error: Exception | None = None) -> None:
        self.name, self.ids, self.error = name, list(ids), error

    def retrieve(self, request: Any) -> list[Any]:
        from retrieval_svc.sources import SourceHit

        if self.error is not None:
            raise self.error
        return [SourceHit(i, 1.0 / (r + 1), f"from {self.name}") for r, i in enumerate(self.ids[: request.n])]


def _local_retriever(sources: Sequence[_Source]) -> Any:
    from ranking_svc.retrieval_client import LocalRetriever
    from retrieval_svc.creators import CreatorCatalogue
    from retrieval_svc.retriever import ModelRef, Retriever
    from retrieval_svc.serving import BundleSwitch, ServingBundle

    retriever = Retriever(
        sources, STORE, quota_shares={s.name: 1.0 for s in sources}, model=ModelRef("two_tower_user", "tt-9")
    )
    bundle = ServingBundle("idx-9", "tt-9", retriever, CreatorCatalogue(None))  # type: ignore[arg-type]
    return LocalRetriever(BundleSwitch(bundle))


def test_in_process_retrieval_hands_the_ranker_what_the_grpc_hop_would() -> None:
    local = _local_retriever([_Source("two_tower", ["c1", "c2"]), _Source("social", ["c4"])])
    result = local.retrieve("f1", 3, None, None, 1.0)
    assert result.model_version == "tt-9" and result.degraded_sources == {}
    by_id = {c.item_id: c for c in result.candidates}
    assert by_id["c1"].source == TWO_TOWER and by_id["c4"].sources == ["CANDIDATE_SOURCE_SOCIAL"]
    assert by_id["c2"].scores["retrieval"] == 0.5 and by_id["c2"].reasons == ["from two_tower"]

    page = Recommender(local, STORE, TwoTowerScoreRanker()).recommend(
        "f1", 2, filters=None, context=None, timeout_s=1
    )
    assert len(page.items) == 2 and page.fallback == "" and page.retriever_version == "tt-9"


def test_in_process_retrieval_errors_map_like_the_grpc_hop() -> None:
    with pytest.raises(InvalidArgument) as info:
        _local_retriever([_Source("two_tower", ["c1"])]).retrieve("", 3, None, None, 1.0)
    assert info.value.field == "fan_id"
    broken = _local_retriever([_Source("two_tower", [], error=RuntimeError("engine gone"))])
    with pytest.raises(Unavailable):
        broken.retrieve("f1", 3, None, None, 1.0)
    # ...and the recommender serves its fallback for it, as it does when the service is down.
    result = Recommender(broken, STORE, TwoTowerScoreRanker()).recommend(
        "f1", 2, filters=None, context=None, timeout_s=1
    )
    assert result.fallback == "retrieval_unavailable" and result.items


def test_retrievals_facts_on_any_candidate_reach_the_ranker() -> None:
    co, friends = RANKER_FEATURES.index("cross.co_engagement"), RANKER_FEATURES.index("cross.social_friends")

    class FactsRanker:
        name, version = "ranker", "r-facts"

        def __init__(self) -> None:
            self.seen: np.ndarray | None = None

        def run(self, features: np.ndarray) -> np.ndarray:
            self.seen = features[:, [co, friends]].copy()
            return features[:, co].astype(np.float32)

    candidates = _candidates()
    # Two-tower and popular candidates carrying item-to-item's and social's facts (retriever.annotate).
    candidates[0].scores |= {"co_engagement": 3.0, "social_friends": 1.0}
    candidates[2].scores |= {"co_engagement": 1.0}
    ranker = FactsRanker()
    result = Recommender(FakeRetriever(candidates), STORE, ranker).recommend(
        "f1", 2, filters=None, context=None, timeout_s=1
    )
    assert ranker.seen is not None
    np.testing.assert_allclose(ranker.seen, [[0.75, 0.5], [0.0, 0.0], [0.5, 0.0], [0.0, 0.0]], rtol=1e-6)
    assert [c.item_id for c in result.items] == ["c1", "c3"]


def test_the_default_calibration_follows_each_fans_own_mix_of_categories() -> None:
    data = {namespace: dict(rows) for namespace, rows in CATALOGUE.data.items()}
    data["fan"]["cooking-fan"] = {"fan_id": "cooking-fan", "following": ["k8", "k9"], "language": "en"}
    data["creator"].update({c: {"creator_id": c, "category": "Cooking"} for c in ("k8", "k9")})
    recommender = Recommender(FakeRetriever(_catalogue_candidates()), DictStore(data), TwoTowerScoreRanker())

    def page(fan: str) -> list[ScoredCandidate]:
        return recommender.recommend(fan, 4, filters=None, context=None, timeout_s=1).items

    # Same candidates, same ranker order (every Music creator ahead of every Cooking one): the Music
    # fan keeps it; for the fan who follows only Cooking creators, the best of them (k0, 7th by the
    # ranker, relevance 0.45 against m0's 1.0) comes onto the page, the move explained from its follows.
    assert [c.item_id for c in page("fan-with-row")] == ["m0", "m1", "m2", "m3"]
    cooking = page("cooking-fan")
    assert {c.item_id for c in cooking} == {"k0", "m0", "m1", "m2"}
    k0 = next(c for c in cooking if c.item_id == "k0")
    assert k0.scores["ranker_position"] == 7.0
    assert "balance: 100% of the creators you follow are in Cooking" in k0.reasons


def test_calibration_for_a_new_fan_follows_its_onboarding_interests_and_says_so() -> None:
    recommender = Recommender(FakeRetriever(_catalogue_candidates()), CATALOGUE, TwoTowerScoreRanker())
    filters = common_pb2.Filters(categories=["Music", "Cooking"])
    page = recommender.recommend("new-fan", 4, filters=filters, context=None, timeout_s=1).items
    # Half the target on each interest: the best Cooking creator (7th by the ranker) joins three Music ones.
    assert [c.item_id for c in page] == ["m0", "m1", "m2", "k0"]
    assert "balance: Cooking is one of your interests" in page[3].reasons
