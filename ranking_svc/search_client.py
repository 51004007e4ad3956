"""Adapter: RetrievalService/Search over gRPC, behind the TextSearcher port of ranking_svc.search_ranked."""

from __future__ import annotations

from typing import Any

import grpc

from kindred import telemetry_schema as schema
from kindred.errors import FailedPrecondition, InvalidArgument, Unavailable
from kindred.item_kinds import KIND_NAMES
from kindred.telemetry import get_tracer
from kindred.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc
from ranking_svc.retrieval_client import scope
from ranking_svc.search_ranked import SearchPage, SearchResult

tracer = get_tracer(__name__)


class GrpcSearcher:
    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)

    def search(
        self, query: str, k: int, filters: Any, context: Any, fan_id: str, timeout_s: float
    ) -> SearchPage:
        request = retrieval_pb2.SearchRequest(query=query, k=k, fan_id=fan_id)
        scope(request, filters, context)
        with tracer.start_as_current_span(schema.SPAN_RETRIEVAL_CALL):
            try:
                response = self._stub.Search(request, timeout=timeout_s)
            except grpc.RpcError as exc:
                raise _domain_error(exc) from exc
        return SearchPage(
            results=[result_from_proto(c, response.items[c.item_id]) for c in response.candidates],
            encoder_version=response.model.version,
        )


def result_from_proto(c: common_pb2.Candidate, item: retrieval_pb2.SearchItem) -> SearchResult:
    return SearchResult(
        item_id=c.item_id,
        kind=KIND_NAMES.get(c.kind, ""),
        creator_id=item.creator_id,
        title=item.title,
        category=item.category,
        published_at=item.published_at.seconds + item.published_at.nanos / 1e9,
        scores=dict(c.scores),
        reasons=list(c.reasons),
        sources=[common_pb2.CandidateSource.Name(s) for s in c.sources],
        language=item.language,
    )


def _domain_error(exc: grpc.RpcError) -> Exception:
    """Retrieval's verdict as the same domain error, so the caller sees the field it got wrong."""
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field, _, message = details.partition(": ")
        return InvalidArgument(field or "query", message or details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(f"retrieval: {details}")
    return Unavailable(f"retrieval search: {code.name}: {details}")
