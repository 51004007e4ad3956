"""Adapter: the retrieval service over gRPC, behind the CandidateRetriever port."""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry import trace

from kindred import telemetry_schema as schema
from kindred.errors import Unavailable
from kindred.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc
from ranking_svc.domain import RetrievalResult, ScoredCandidate

# Failures that mean "retrieval cannot answer now" (→ fallback), not "the request is wrong".
_UNAVAILABLE_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}

tracer = trace.get_tracer(__name__)


class GrpcRetriever:
    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)

    def retrieve(self, fan_id: str, k: int, filters: Any, context: Any, timeout_s: float) -> RetrievalResult:
        request = retrieval_pb2.RetrieveRequest(fan_id=fan_id, k=k)
        if filters is not None:
            request.filters.CopyFrom(filters)
        if context is not None:
            request.context.CopyFrom(context)
        with tracer.start_as_current_span(schema.SPAN_RETRIEVAL_CALL):
            try:
                response = self._stub.Retrieve(request, timeout=timeout_s)
            except grpc.RpcError as exc:
                if exc.code() in _UNAVAILABLE_CODES:
                    raise Unavailable(f"retrieval: {exc.code().name}: {exc.details()}") from exc
                raise
        return RetrievalResult(
            candidates=[from_proto(c) for c in response.candidates],
            model_version=response.model.version,
            degraded_sources=dict(response.degraded_sources),
        )


def from_proto(candidate: common_pb2.Candidate) -> ScoredCandidate:
    return ScoredCandidate(
        item_id=candidate.item_id,
        source=common_pb2.CandidateSource.Name(candidate.source),
        sources=[common_pb2.CandidateSource.Name(s) for s in candidate.sources],
        scores=dict(candidate.scores),
        reasons=list(candidate.reasons),
    )


def to_proto(candidate: ScoredCandidate) -> common_pb2.Candidate:
    return common_pb2.Candidate(
        item_id=candidate.item_id,
        kind=common_pb2.ITEM_KIND_CREATOR,
        source=candidate.source,  # proto enums accept their names
        sources=candidate.sources,
        scores=candidate.scores,
        reasons=candidate.reasons,
    )
