"""RetrievalService: proto → domain → proto, nothing else."""

from __future__ import annotations

import functools
from typing import cast

import grpc

from kindred.data.schema import Creator, Post, set_timestamp
from kindred.errors import FailedPrecondition
from kindred.item_kinds import KIND_NAMES, kind_to_proto
from kindred.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc
from kindred.vectorstore import PayloadFilter
from retrieval_svc.creators import SIMILAR_SOURCE
from retrieval_svc.retriever import Candidate, RetrieveQuery, RetrieveResult
from retrieval_svc.search.documents import ACCESS_KEY, CREATOR_KEY, PUBLISHED_KEY, TITLE_KEY
from retrieval_svc.search.index import SearchFilter
from retrieval_svc.search.query import SearchHit
from retrieval_svc.search.service import SearchService
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


ACCESS_TO_PROTO = {
    "public": common_pb2.ACCESS_LEVEL_PUBLIC,
    "members": common_pb2.ACCESS_LEVEL_MEMBERS,
    "tier": common_pb2.ACCESS_LEVEL_TIER,
}
# Which CandidateSource each search retriever reports as (name trigrams are a sparse vector too).
RETRIEVER_SOURCES = {"dense": "search_dense", "bm25": "search_sparse", "name": "search_sparse"}
SEARCH_ONLY = (
    "this process is a search replica (KINDRED_SEARCH_REPLICA): it serves Search, UpsertCreators, "
    "UpsertPosts and DeleteItems for search only; recommendations come from the retrieval service"
)
NO_SEARCH = (
    "search is not available: no text encoder was exported "
    "(python -m trainer.text_encoder export --out <models dir> --promote) or the search index failed to open"
)


def search_filter_from_proto(filters: common_pb2.Filters) -> SearchFilter:
    return SearchFilter(
        base=filter_from_proto(filters),
        kinds=frozenset(KIND_NAMES[k] for k in filters.kinds if k in KIND_NAMES),
    )


def search_hit_to_proto(hit: SearchHit) -> tuple[common_pb2.Candidate, retrieval_pb2.SearchItem]:
    sources = list(
        dict.fromkeys(source_to_proto(RETRIEVER_SOURCES[r]) for r in hit.scores if r in RETRIEVER_SOURCES)
    )
    kind = kind_to_proto(hit.kind)
    candidate = common_pb2.Candidate(
        item_id=hit.item_id,
        kind=kind,
        source=source_to_proto("search_hybrid"),
        sources=sources,
        scores={**hit.scores, "retrieval": hit.scores["fused"]},
        reasons=hit.reasons,
    )
    p = hit.payload
    item = retrieval_pb2.SearchItem(
        kind=kind,
        creator_id=str(p.get(CREATOR_KEY, "")),
        title=str(p.get(TITLE_KEY, "")),
        category=str(p.get("category", "")),
        language=str(p.get("language", "")),
        access_level=ACCESS_TO_PROTO.get(str(p.get(ACCESS_KEY, "")), common_pb2.ACCESS_LEVEL_UNSPECIFIED),
    )
    set_timestamp(item.published_at, float(p.get(PUBLISHED_KEY, 0.0)))
    return candidate, item


@functools.cache  # a handful of names, on every candidate of every Retrieve
def source_to_proto(name: str) -> str:
    """ "two_tower" → "CANDIDATE_SOURCE_TWO_TOWER" (message constructors accept enum names)."""
    full = f"CANDIDATE_SOURCE_{name.upper()}"
    common_pb2.CandidateSource.Value(full)  # fails loudly for a source the contract does not name
    return full


# "two_tower" → its CandidateSource number, for every source the contract names: ~100 candidates a
# Retrieve, each with a source and the sources that proposed it (a dict read; source_number reads it too).
_SOURCE_NUMBERS: dict[str, common_pb2.CandidateSource] = {
    v.name.removeprefix("CANDIDATE_SOURCE_").lower(): cast(common_pb2.CandidateSource, v.number)
    for v in common_pb2.CandidateSource.DESCRIPTOR.values
}


def source_number(name: str) -> common_pb2.CandidateSource:
    """ "two_tower" → CANDIDATE_SOURCE_TWO_TOWER's number (fails loudly for a source the contract lacks)."""
    number = _SOURCE_NUMBERS.get(name)
    if number is None:  # another spelling ("Two_Tower"), or a name the contract lacks: Value raises
        number = cast(common_pb2.CandidateSource, common_pb2.CandidateSource.Value(source_to_proto(name)))
    return number


def candidate_to_proto(c: Candidate) -> common_pb2.Candidate:
    out = common_pb2.Candidate()
    fill_candidate(out, c)
    return out


def fill_candidate(out: common_pb2.Candidate, c: Candidate) -> None:
    """Writes `c` into an empty Candidate message (e.g. one `candidates.add()` made in place: building
    a message and then appending it copies it once more)."""
    numbers = _SOURCE_NUMBERS
    out.item_id = c.item_id
    out.kind = common_pb2.ITEM_KIND_CREATOR
    try:
        out.source = numbers[c.source]
        # A list, not a generator: extend takes it faster. Built before extend, so a miss adds nothing.
        out.sources.extend([numbers[s] for s in c.sources])
    except KeyError:  # a name spelled otherwise, or one the contract lacks (source_number raises)
        out.source = source_number(c.source)
        out.sources.extend([source_number(s) for s in c.sources])
    out.reasons.extend(c.reasons)
    # Item by item: a map passed to the constructor goes through a slower generic update (~100 per call).
    scores = out.scores
    for key, value in c.scores.items():
        scores[key] = value


def retrieve_response(result: RetrieveResult) -> retrieval_pb2.RetrieveResponse:
    """The RetrieveResponse of a domain result; candidates built in place (see `fill_candidate`)."""
    response = retrieval_pb2.RetrieveResponse(degraded_sources=result.degraded)
    add = response.candidates.add
    for c in result.candidates:
        fill_candidate(add(), c)
    if result.model is not None:
        response.model.name = result.model.name
        response.model.version = result.model.version
    return response


def retrieve_query(request: retrieval_pb2.RetrieveRequest) -> RetrieveQuery:
    """The domain query of a RetrieveRequest (also used by ranking when retrieval runs in its process)."""
    ctx = request.context
    return RetrieveQuery(
        fan_id=request.fan_id,
        k=request.k,
        filter=filter_from_proto(request.filters),
        source_quotas=dict(request.source_quotas),
        now=ctx.request_time.ToSeconds() if ctx.HasField("request_time") else None,
        want_creators=wants_creators(request.filters),
    )


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServiceServicer):
    def __init__(self, serving: BundleSwitch | None, search: SearchService | None = None) -> None:
        """Every call runs on the bundle current when it started (see retrieval_svc.serving).

        `search`: the text search index and encoder; None when no encoder is exported (Search and post
        writes then answer FAILED_PRECONDITION, everything else works). `serving` None: a search replica
        (KINDRED_SEARCH_REPLICA), serving Search and the search writes only."""
        self._serving = serving
        self._search = search

    def _bundles(self) -> BundleSwitch:
        if self._serving is None:
            raise FailedPrecondition(SEARCH_ONLY)
        return self._serving

    def _require_search(self) -> SearchService:
        if self._search is None:
            raise FailedPrecondition(NO_SEARCH)
        return self._search

    def Retrieve(
        self, request: retrieval_pb2.RetrieveRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.RetrieveResponse:
        query = retrieve_query(request)
        with self._bundles().acquire() as bundle:
            result = bundle.retriever.retrieve(query)
        return retrieve_response(result)

    def Search(
        self, request: retrieval_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.SearchResponse:
        search = self._require_search()
        outcome = search.search(request.query, request.k, search_filter_from_proto(request.filters))
        response = retrieval_pb2.SearchResponse(
            model=common_pb2.ModelInfo(name="text_encoder", version=outcome.encoder_version)
        )
        for hit in outcome.hits:
            candidate, item = search_hit_to_proto(hit)
            response.candidates.append(candidate)
            response.items[hit.item_id].CopyFrom(item)
        return response

    def SimilarCreators(
        self, request: retrieval_pb2.SimilarCreatorsRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.SimilarCreatorsResponse:
        if not wants_creators(request.filters):
            return retrieval_pb2.SimilarCreatorsResponse()
        with self._bundles().acquire() as bundle:
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
        if self._search is None:
            with self._bundles().acquire() as bundle:
                return retrieval_pb2.UpsertCreatorsResponse(upserted=bundle.creators.update_payloads(updates))
        # Searchable by name and profile at once; recommendable (two-tower) once the trainer has embedded
        # them, so only creators already in the creator index get their payload updated there.
        upserted = self._search.upsert_creators([Creator.from_proto(c) for c in request.creators])
        if self._serving is not None:  # a search replica holds no creator index
            with self._serving.acquire() as bundle:
                bundle.creators.update_payloads(updates, skip_unknown=True)
        return retrieval_pb2.UpsertCreatorsResponse(upserted=upserted)

    def UpsertPosts(
        self, request: retrieval_pb2.UpsertPostsRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.UpsertPostsResponse:
        search = self._require_search()
        upserted = search.upsert_posts([Post.from_proto(p) for p in request.posts])
        return retrieval_pb2.UpsertPostsResponse(upserted=upserted)

    def DeleteItems(
        self, request: retrieval_pb2.DeleteItemsRequest, context: grpc.ServicerContext
    ) -> retrieval_pb2.DeleteItemsResponse:
        ids = list(request.item_ids)
        if request.kind == common_pb2.ITEM_KIND_POST:
            return retrieval_pb2.DeleteItemsResponse(deleted=self._require_search().delete(ids, kind="post"))
        searchable = 0
        if self._search is not None:
            kind = "creator" if request.kind == common_pb2.ITEM_KIND_CREATOR else None
            searchable = self._search.delete(ids, kind=kind)
        if self._serving is None:  # a search replica holds no creator index
            return retrieval_pb2.DeleteItemsResponse(deleted=searchable)
        with self._serving.acquire() as bundle:
            recommendable = bundle.creators.delete(ids) if request.kind != common_pb2.ITEM_KIND_POST else 0
        # An item may be in both indexes (a creator): count it once.
        return retrieval_pb2.DeleteItemsResponse(deleted=max(searchable, recommendable))
