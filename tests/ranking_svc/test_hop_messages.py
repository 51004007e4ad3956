"""The retrieval hop's messages, built and read the fast way (in place, one loop), against the plain
message constructors they replaced: the same messages, the same candidates on either side, and the
contract's errors for a source it does not name."""

from __future__ import annotations

import pytest

from kindred.v1 import common_pb2, ranking_pb2, retrieval_pb2
from ranking_svc.domain import ScoredCandidate
from ranking_svc.retrieval_client import candidates_from_proto, fill_proto, read_details, to_proto
from retrieval_svc.retriever import Candidate, ModelRef, RetrieveResult
from retrieval_svc.servicer import candidate_to_proto, retrieve_response, source_to_proto

CANDIDATES = [
    Candidate("c1", "two_tower", ["two_tower"], {"two_tower": 0.9, "retrieval": 0.9}, ["close to you"]),
    Candidate(
        "c2",
        "social",
        ["social", "item_to_item", "popular"],
        {"social": 0.75, "item_to_item": 0.5, "social_friends": 3.0, "retrieval": 0.75},
        ["followed by 3 of your friends", "similar to a creator you follow"],
    ),
    Candidate("c3", "trending", ["trending"], {"trending": 0.2, "trending_new": 1.0, "retrieval": 0.2}, []),
]


def _constructed(c: Candidate) -> common_pb2.Candidate:
    """The message as the constructor builds it (the reference)."""
    return common_pb2.Candidate(
        item_id=c.item_id,
        kind=common_pb2.ITEM_KIND_CREATOR,
        source=source_to_proto(c.source),
        sources=[source_to_proto(s) for s in c.sources],
        scores=c.scores,
        reasons=c.reasons,
    )


def test_retrieve_response_is_what_the_constructors_build() -> None:
    result = RetrieveResult(CANDIDATES, {"popular": "skipped: no list"}, ModelRef("two_tower_user", "v3"))
    expected = retrieval_pb2.RetrieveResponse(
        candidates=[_constructed(c) for c in CANDIDATES],
        degraded_sources={"popular": "skipped: no list"},
        model=common_pb2.ModelInfo(name="two_tower_user", version="v3"),
    )
    assert retrieve_response(result) == expected
    assert [candidate_to_proto(c) for c in CANDIDATES] == list(expected.candidates)
    assert not retrieve_response(RetrieveResult([], {}, None)).HasField("model")
    # A name spelled otherwise still maps (as source_to_proto does); one the contract lacks fails loudly.
    shouted = Candidate("c4", "Two_Tower", ["Two_Tower", "popular"], {}, [])
    assert candidate_to_proto(shouted) == _constructed(
        Candidate("c4", "two_tower", ["two_tower", "popular"], {}, [])
    )
    with pytest.raises(ValueError):
        candidate_to_proto(Candidate("c5", "two_tower", ["two_tower", "not_a_source"], {}, []))


def test_both_sides_of_the_hop_hand_ranking_the_same_candidates() -> None:
    wire = retrieve_response(RetrieveResult(CANDIDATES, {}, None)).SerializeToString()
    parsed = retrieval_pb2.RetrieveResponse.FromString(wire).candidates
    read = candidates_from_proto(parsed)
    assert read == [  # the plain reading, field by field
        ScoredCandidate(
            c.item_id,
            common_pb2.CandidateSource.Name(c.source),
            [common_pb2.CandidateSource.Name(s) for s in c.sources],
            dict(c.scores),
            list(c.reasons),
        )
        for c in parsed
    ]
    # What the in-process adapter builds from the same domain candidates (LocalRetriever).
    local = [
        ScoredCandidate(
            c.item_id, source_to_proto(c.source), [source_to_proto(s) for s in c.sources], c.scores, c.reasons
        )
        for c in CANDIDATES
    ]
    assert read == local
    assert [list(c.scores) for c in read] and all(isinstance(c.reasons, list) for c in read)


def test_an_unknown_source_number_fails_as_the_contract_says() -> None:
    for source, sources in ((99, []), (common_pb2.CANDIDATE_SOURCE_POPULAR, [98])):
        odd = common_pb2.Candidate(item_id="c9")
        odd.source = source  # type: ignore[assignment]  # an open enum: a newer peer may send any number
        odd.sources.extend(sources)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="no name"):
            candidates_from_proto([odd])


def test_candidates_read_without_details_get_the_same_ones_when_asked() -> None:
    wire = retrieve_response(RetrieveResult(CANDIDATES, {}, None)).SerializeToString()
    parsed = retrieval_pb2.RetrieveResponse.FromString(wire).candidates
    full = candidates_from_proto(parsed)
    light = candidates_from_proto(parsed, details=False)
    assert all(c.sources == [] and c.reasons == [] for c in light)
    assert [(c.item_id, c.source, c.scores) for c in light] == [(c.item_id, c.source, c.scores) for c in full]
    for candidate, message in zip(light, parsed, strict=True):
        read_details(candidate, message)
    assert light == full
    odd = common_pb2.Candidate(item_id="c9", source=common_pb2.CANDIDATE_SOURCE_POPULAR)
    odd.sources.extend([98])  # type: ignore[list-item]  # an open enum: a newer peer may send any number
    (unread,) = candidates_from_proto([odd], details=False)  # the source it reads is known
    with pytest.raises(ValueError, match="no name"):
        read_details(unread, odd)


def test_page_items_are_what_the_constructor_builds() -> None:
    page = [
        ScoredCandidate(
            "c2",
            "CANDIDATE_SOURCE_SOCIAL",
            ["CANDIDATE_SOURCE_SOCIAL", "CANDIDATE_SOURCE_POPULAR"],
            {"ranker": 1.5, "final": 1.6, "social_friends": 2.0},
            ["followed by 2 of your friends", "boosted: new creator"],
        ),
        ScoredCandidate("c5", "CANDIDATE_SOURCE_POPULAR", [], {}, []),
    ]
    for c in page:
        expected = common_pb2.Candidate(
            item_id=c.item_id,
            kind=common_pb2.ITEM_KIND_CREATOR,
            source=c.source,
            sources=c.sources,
            scores=c.scores,
            reasons=c.reasons,
        )
        assert to_proto(c) == expected
        response = ranking_pb2.RecommendResponse()
        fill_proto(response.items.add(), c)
        assert response.items[0] == expected
    with pytest.raises(ValueError):
        to_proto(ScoredCandidate("c6", "CANDIDATE_SOURCE_NOT_A_SOURCE"))
