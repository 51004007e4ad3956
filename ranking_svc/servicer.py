"""RankingService servicer: proto → Recommender → proto. No logic of its own."""

from __future__ import annotations

import grpc

from kindred.data.schema import set_timestamp
from kindred.errors import FailedPrecondition, InvalidArgument
from kindred.grpc_client import deadline_from
from kindred.item_kinds import kind_to_proto
from kindred.v1 import common_pb2, ranking_pb2, ranking_pb2_grpc, retrieval_pb2
from ranking_svc.recommender import MAX_K, Recommender
from ranking_svc.retrieval_client import candidates_from_proto, fill_proto
from ranking_svc.search_ranked import SearchRanker, SearchResult


class RankingServicer(ranking_pb2_grpc.RankingServiceServicer):
    def __init__(
        self, recommender: Recommender, default_deadline_s: float, search: SearchRanker | None = None
    ) -> None:
        """`search`: None when retrieval is not reachable over gRPC (SearchRanked then refuses)."""
        self._recommender = recommender
        self._default_deadline_s = default_deadline_s
        self._search = search

    def SearchRanked(
        self, request: ranking_pb2.SearchRankedRequest, context: grpc.ServicerContext
    ) -> ranking_pb2.SearchRankedResponse:
        if self._search is None:
            raise FailedPrecondition("SearchRanked needs retrieval_svc over gRPC (KINDRED_RETRIEVAL_TARGET)")
        ctx = request.context
        result = self._search.search(
            request.query,
            request.fan_id,
            request.k,
            filters=request.filters if request.HasField("filters") else None,
            context=ctx if request.HasField("context") else None,
            now=ctx.request_time.ToSeconds() if ctx.HasField("request_time") else None,
            timeout_s=deadline_from(context, self._default_deadline_s),
        )
        response = ranking_pb2.SearchRankedResponse(
            encoder=common_pb2.ModelInfo(name="text_encoder", version=result.encoder_version),
            personalised=result.personalised,
        )
        for r in result.results:
            response.items.append(search_result_to_proto(r))
            response.details[r.item_id].CopyFrom(search_item_to_proto(r))
        return response

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
        response = ranking_pb2.RecommendResponse(
            ranker=common_pb2.ModelInfo(name="ranker", version=result.ranker_version),
            retriever=common_pb2.ModelInfo(name="two_tower_user", version=result.retriever_version),
            fallback=result.fallback,
        )
        add = response.items.add
        for c in result.items:
            fill_proto(add(), c)
        return response

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
        ranked = self._recommender.rank(request.fan_id, candidates_from_proto(request.candidates))
        if request.k:
            ranked = ranked[: request.k]
        response = ranking_pb2.RankResponse(
            ranker=common_pb2.ModelInfo(name="ranker", version=self._recommender.ranker_version)
        )
        add = response.items.add
        for c in ranked:
            fill_proto(add(), c)
        return response


def search_result_to_proto(r: SearchResult) -> common_pb2.Candidate:
    return common_pb2.Candidate(
        item_id=r.item_id,
        kind=kind_to_proto(r.kind),
        source=common_pb2.CANDIDATE_SOURCE_SEARCH_HYBRID,
        sources=r.sources,  # enum names
        scores=r.scores,
        reasons=r.reasons,
    )


def search_item_to_proto(r: SearchResult) -> retrieval_pb2.SearchItem:
    item = retrieval_pb2.SearchItem(
        kind=kind_to_proto(r.kind),
        creator_id=r.creator_id,
        title=r.title,
        category=r.category,
        language=r.language,
    )
    set_timestamp(item.published_at, r.published_at)
    return item
