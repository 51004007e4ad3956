"""Adapters behind the CandidateRetriever port: the retrieval service over gRPC (the mesh), or retrieval's
domain in this process (`KINDRED_RETRIEVAL_TARGET=inprocess`, see ranking_svc.server).

In-process retrieval skips one loopback hop and both protobuf conversions of ~100 candidates (each side
building or reading a map and two lists per candidate): less latency and CPU per request (measured side
by side in bench/RESULTS.md, "Recommend latency"). What it costs: ranking and retrieval scale, deploy
and fail together; all the Python work of a request shares one process's GIL, where the mesh spreads it
over two processes (so under concurrency the mesh can use both cores); the ranking process holds the
creator index and the user tower (its memory grows by retrieval's); and the index shard is locked by
the one process that opens it, so no separate retrieval_svc may serve the same index directory. The
mesh stays the default; co-location is for a single box or a latency-bound tier.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc

from kindred import telemetry_schema as schema
from kindred.errors import InvalidArgument, Unavailable
from kindred.telemetry import get_tracer
from kindred.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc
from ranking_svc.domain import RetrievalResult, ScoredCandidate

if TYPE_CHECKING:
    from retrieval_svc.serving import BundleSwitch

# Failures that mean "retrieval cannot answer now" (→ fallback), not "the request is wrong".
_UNAVAILABLE_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}

tracer = get_tracer(__name__)


def scope(request: Any, filters: Any, context: Any) -> None:
    """Copies the caller's filters and request context (either may be None) onto a retrieval request."""
    if filters is not None:
        request.filters.CopyFrom(filters)
    if context is not None:
        request.context.CopyFrom(context)


class GrpcRetriever:
    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)

    def retrieve(self, fan_id: str, k: int, filters: Any, context: Any, timeout_s: float) -> RetrievalResult:
        request = retrieval_pb2.RetrieveRequest(fan_id=fan_id, k=k)
        scope(request, filters, context)
        with tracer.start_as_current_span(schema.SPAN_RETRIEVAL_CALL):
            try:
                response = self._stub.Retrieve(request, timeout=timeout_s)
            except grpc.RpcError as exc:
                if exc.code() in _UNAVAILABLE_CODES:
                    raise Unavailable(f"retrieval: {exc.code().name}: {exc.details()}") from exc
                raise
        messages = response.candidates
        candidates = candidates_from_proto(messages, details=False)
        return RetrievalResult(
            candidates=candidates,
            model_version=response.model.version,
            degraded_sources=dict(response.degraded_sources),
            complete=_Details(messages, candidates),
        )


# Enum number → name, once: CandidateSource.Name() per call costs more than reading the rest of a candidate.
_SOURCE_NAMES: dict[int, str] = {v.number: v.name for v in common_pb2.CandidateSource.DESCRIPTOR.values}
_SOURCE_NUMBERS: dict[str, int] = {name: number for number, name in _SOURCE_NAMES.items()}


def source_name(number: int) -> str:
    name = _SOURCE_NAMES.get(number)
    return name if name is not None else common_pb2.CandidateSource.Name(number)  # raises for unknown


def candidates_from_proto(
    candidates: Iterable[common_pb2.Candidate], *, details: bool = True
) -> list[ScoredCandidate]:
    """The ScoredCandidates of Candidate messages, as one loop: ~100 per Recommend, so no call and no
    keyword arguments per candidate, and the enum names straight from the table (`source_name` only for a
    number it lacks, to raise the contract's error). `details=False` leaves `sources` and `reasons`
    empty, for `read_details` to fill in later (of the few candidates that need them)."""
    names = _SOURCE_NAMES
    out = []
    for c in candidates:
        try:
            source = names[c.source]
        except KeyError:
            source = source_name(c.source)  # raises the contract's error for a number it does not name
        scores = c.scores  # keys, then values by key: ~2x faster than the map's items() (a Python view)
        candidate = ScoredCandidate(c.item_id, source, [], {k: scores[k] for k in scores}, [])
        if details:
            read_details(candidate, c)
        out.append(candidate)
    return out


def read_details(candidate: ScoredCandidate, message: common_pb2.Candidate) -> None:
    """Sets `sources` and `reasons` of `candidate` from its message."""
    try:
        candidate.sources = list(map(_SOURCE_NAMES.__getitem__, message.sources))
    except KeyError:
        candidate.sources = [source_name(s) for s in message.sources]  # raises the contract's error
    candidate.reasons = message.reasons[:]  # a slice is a list made in C: faster than list()


class _Details:
    """A RetrievalResult's `complete` for candidates read without details: reads each one's `sources` and
    `reasons` from its message when first asked. A Recommend shows ~10 of the ~100 candidates retrieval
    returns, and nothing reads the others' (ranking reads `source` and `scores` of every candidate)."""

    def __init__(
        self, messages: Sequence[common_pb2.Candidate], candidates: Sequence[ScoredCandidate]
    ) -> None:
        self._messages = messages
        self._candidates = candidates
        self._done: set[int] = set()

    def __call__(self, positions: Iterable[int]) -> None:
        for i in positions:
            if i not in self._done:
                self._done.add(i)
                read_details(self._candidates[i], self._messages[i])


def to_proto(candidate: ScoredCandidate) -> common_pb2.Candidate:
    out = common_pb2.Candidate()
    fill_proto(out, candidate)
    return out


def fill_proto(out: common_pb2.Candidate, candidate: ScoredCandidate) -> None:
    """Writes `candidate` into an empty Candidate message, e.g. one a response's `items.add()` made in
    place (building a message and appending it copies it once more)."""
    out.item_id = candidate.item_id
    out.kind = common_pb2.ITEM_KIND_CREATOR
    out.source = source_number(candidate.source)
    out.sources.extend(source_number(s) for s in candidate.sources)
    out.reasons.extend(candidate.reasons)
    scores = out.scores  # item by item: faster than the constructor's generic map update
    for key, value in candidate.scores.items():
        scores[key] = value


def source_number(name: str) -> common_pb2.CandidateSource:
    """A CandidateSource name's number (a ValueError for a name the contract does not have)."""
    number = _SOURCE_NUMBERS.get(name)
    if number is None:
        number = common_pb2.CandidateSource.Value(name)
    return cast(common_pb2.CandidateSource, number)


class LocalRetriever:
    """Retrieval's domain (a BundleSwitch of retrieval_svc) called directly: same sources, quotas, filters
    and hot swap as the service, without the hop. Errors map as the gRPC adapter maps status codes: bad
    input stays InvalidArgument; anything else retrieval cannot answer is Unavailable (→ fallback)."""

    def __init__(self, serving: BundleSwitch) -> None:
        # Imported here: the mesh's ranking process never loads retrieval's modules (nor the engine).
        from retrieval_svc.servicer import retrieve_query, source_to_proto

        self._serving = serving
        self._query = retrieve_query
        self._source = source_to_proto

    def retrieve(self, fan_id: str, k: int, filters: Any, context: Any, timeout_s: float) -> RetrievalResult:
        request = retrieval_pb2.RetrieveRequest(fan_id=fan_id, k=k)
        scope(request, filters, context)
        with tracer.start_as_current_span(schema.SPAN_RETRIEVAL_CALL):
            try:
                with self._serving.acquire() as bundle:
                    result = bundle.retriever.retrieve(self._query(request))
            except (InvalidArgument, Unavailable):
                raise
            except Exception as exc:
                raise Unavailable(f"retrieval: {type(exc).__name__}: {exc}") from exc
        name = self._source
        return RetrievalResult(
            # Positional: ~100 a request. The scores and reasons are retrieval's own: nobody else holds them.
            candidates=[
                ScoredCandidate(c.item_id, name(c.source), [name(n) for n in c.sources], c.scores, c.reasons)
                for c in result.candidates
            ],
            model_version=result.model.version if result.model is not None else "",
            degraded_sources=result.degraded,
        )
