"""Recommender domain with fakes: ranking order, fallbacks, validation; and the servicer on port 0."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import numpy as np
import pytest

from kindred.config import Settings
from kindred.errors import InvalidArgument, Unavailable
from kindred.features import RANKER_FEATURES
from kindred.v1 import ranking_pb2, ranking_pb2_grpc
from ranking_svc.domain import RetrievalResult, ScoredCandidate
from ranking_svc.recommender import Recommender
from ranking_svc.server import RankingDeps, create_server

TWO_TOWER = "CANDIDATE_SOURCE_TWO_TOWER"
POPULAR = "CANDIDATE_SOURCE_POPULAR"
TT_COLUMN = RANKER_FEATURES.index("cross.two_tower_score")


class FakeRetriever:
    """Returns fixed candidates, or raises Unavailable when `down`; records the k it was asked for."""

    def __init__(self, candidates: list[ScoredCandidate], down: bool = False) -> None:
        self.candidates = candidates
        self.down = down
        self.asked_k: list[int] = []

    def retrieve(self, fan_id: str, k: int, filters: Any, context: Any, timeout_s: float) -> RetrievalResult:
        self.asked_k.append(k)
        if self.down:
            raise Unavailable("retrieval is down")
        return RetrievalResult(
            [ScoredCandidate(c.item_id, c.source, list(c.sources), dict(c.scores)) for c in self.candidates],
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
