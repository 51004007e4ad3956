"""RankingService servicer: proto → Recommender → proto. No logic of its own."""

from __future__ import annotations

import grpc

from kindred.errors import InvalidArgument
from kindred.grpc_client import deadline_from
from kindred.v1 import common_pb2, ranking_pb2, ranking_pb2_grpc
from ranking_svc.recommender import MAX_K, Recommender
from ranking_svc.retrieval_client import from_proto, to_proto


class RankingServicer(ranking_pb2_grpc.RankingServiceServicer):
    def __init__(self, recommender: Recommender, default_deadline_s: float) -> None:
        self._recommender = recommender
        self._default_deadline_s = default_deadline_s

    def Recommend(
        self, request: ranking_pb2.RecommendRequest, context: grpc.ServicerContext
    ) -> ranking_pb2.RecommendResponse:
        result = self._recommender.recommend(
            request.fan_id,
            request.k,
            filters=request.filters if request.HasField("filters") else None,
            context=request.context if request.HasField("context") else None,
            timeout_s=deadline_from(context, self._default_deadline_s),
        )
        return ranking_pb2.RecommendResponse(
            items=[to_proto(c) for c in result.items],
            ranker=common_pb2.ModelInfo(name="ranker", version=result.ranker_version),
            retriever=common_pb2.ModelInfo(name="two_tower_user", version=result.retriever_version),
            fallback=result.fallback,
        )

    def Rank(
        self, request: ranking_pb2.RankRequest, context: grpc.ServicerContext
    ) -> ranking_pb2.RankResponse:
        if not request.fan_id:
            raise InvalidArgument("fan_id", "is required")
        if not 0 <= request.k <= MAX_K:
            raise InvalidArgument("k", f"must be between 0 and {MAX_K}, got {request.k}")
        for i, candidate in enumerate(request.candidates):
            if not candidate.item_id:
                raise InvalidArgument(f"candidates[{i}].item_id", "is required")
        ranked = self._recommender.rank(request.fan_id, [from_proto(c) for c in request.candidates])
        if request.k:
            ranked = ranked[: request.k]
        return ranking_pb2.RankResponse(
            items=[to_proto(c) for c in ranked],
            ranker=common_pb2.ModelInfo(name="ranker", version=self._recommender.ranker_version),
        )
