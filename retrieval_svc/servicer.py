"""RetrievalService: proto → domain → proto, nothing else."""

from __future__ import annotations

from typing import Any

import grpc

from kindred.errors import Unimplemented
from kindred.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc
from kindred.vectorstore import PayloadFilter
from retrieval_svc.creators import SIMILAR_SOURCE
from retrieval_svc.retriever import Candidate, RetrieveQuery
from retrieval_svc.serving import BundleSwitch

SIMILAR_REASON = "similar to this creator"


def filter_from_proto(filters: common_pb2.Filters) -> PayloadFilter:
    return PayloadFilter.build(
        languages=filters.languages,
        categories=filters.categories,
        exclude_ids=filters.exclude_item_ids,
        exclude_mature=filters.exclude_mature,
    )


def wants_creators(filters: common_pb2.Filters) -> bool:
    return not filters.kinds or common_pb2.ITEM_KIND_CREATOR in filters.kinds


def source_to_proto(name: str) -> str:
    """ "two_tower" → "CANDIDATE_SOURCE_TWO_TOWER" (message constructors accept enum names)."""
    full = f"CANDIDATE_SOURCE_{name.upper()}"
    common_pb2.CandidateSource.Value(full)  # fails loudly for a source the contract does not name
    return full


def candidate_to_proto(c: Candidate) -> common_pb2.Candidate:
    return common_pb2.Candidate(
        item_id=c.item_id,
        kind=common_pb2.ITEM_KIND_CREATOR,
        source=source_to_proto(c.source),
        sources=[source_to_proto(s) for s in c.sources],
        scores=c.scores,
        reasons=c.reasons,
    )


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServiceServicer):
    def __init__(self, serving: BundleSwitch) -> None:
        """Every call runs on the bundle current when it started (see retrieval_svc.serving)."""
        self._serving = serving

    def Retrieve(
        self, request: retrieval_pb2.RetrieveRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.RetrieveResponse:
        ctx = request.context
        query = RetrieveQuery(
            fan_id=request.fan_id,
            k=request.k,
            filter=filter_from_proto(request.filters),
            source_quotas=dict(request.source_quotas),
            now=ctx.request_time.ToSeconds() if ctx.HasField("request_time") else None,
            want_creators=wants_creators(request.filters),
        )
        with self._serving.acquire() as bundle:
            result = bundle.retriever.retrieve(query)
        response = retrieval_pb2.RetrieveResponse(
            candidates=[candidate_to_proto(c) for c in result.candidates],
            degraded_sources=result.degraded,
        )
        if result.model is not None:
            response.model.name = result.model.name
            response.model.version = result.model.version
        return response

    def Search(self, request: retrieval_pb2.SearchRequest, context: grpc.ServicerContext) -> Any:
        raise Unimplemented(
            "Search is not implemented yet: text search (dense + BM25 hybrid over creators and posts) "
            "arrives with the search issue"
        )

    def SimilarCreators(
        self, request: retrieval_pb2.SimilarCreatorsRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.SimilarCreatorsResponse:
        if not wants_creators(request.filters):
            return retrieval_pb2.SimilarCreatorsResponse()
        with self._serving.acquire() as bundle:
            hits = bundle.creators.similar(request.creator_id, request.k, filter_from_proto(request.filters))
        source = source_to_proto(SIMILAR_SOURCE)
        return retrieval_pb2.SimilarCreatorsResponse(
            candidates=[
                common_pb2.Candidate(
                    item_id=h.point_id,
                    kind=common_pb2.ITEM_KIND_CREATOR,
                    source=source,
                    sources=[source],
                    scores={"retrieval": h.score, SIMILAR_SOURCE: h.score},
                    reasons=[SIMILAR_REASON],
                )
                for h in hits
            ]
        )

    def UpsertCreators(
        self, request: retrieval_pb2.UpsertCreatorsRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.UpsertCreatorsResponse:
        updates = [
            {
                "creator_id": c.creator_id,
                "name": c.name,
                "category": c.category,
                "language": c.language,
                "tags": list(c.tags),
                "mature": c.mature,
            }
            for c in request.creators
        ]
        with self._serving.acquire() as bundle:
            return retrieval_pb2.UpsertCreatorsResponse(upserted=bundle.creators.update_payloads(updates))

    def UpsertPosts(self, request: retrieval_pb2.UpsertPostsRequest, context: grpc.ServicerContext) -> Any:
        raise Unimplemented(
            "UpsertPosts is not implemented yet: the post index (dense + BM25) arrives with the search issue"
        )

    def DeleteItems(
        self, request: retrieval_pb2.DeleteItemsRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.DeleteItemsResponse:
        if request.kind == common_pb2.ITEM_KIND_POST:
            raise Unimplemented("deleting posts is not implemented yet: there is no post index before search")
        with self._serving.acquire() as bundle:
            return retrieval_pb2.DeleteItemsResponse(deleted=bundle.creators.delete(list(request.item_ids)))
