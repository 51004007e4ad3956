"""Domain types of the ranking service (no grpc, no I/O)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from kindred.features import fan_language

# Onboarding interests beyond this many say nothing more about a new fan (and bound the work).
MAX_ONBOARDING_INTERESTS = 12


@dataclasses.dataclass
class ScoredCandidate:
    """A candidate with its provenance and the score of every stage it went through."""

    item_id: str
    source: str  # CandidateSource name of the first source, e.g. "CANDIDATE_SOURCE_TWO_TOWER"
    sources: list[str] = dataclasses.field(default_factory=list)
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    reasons: list[str] = dataclasses.field(default_factory=list)
    # "creator" today; "post" when retrieval yields posts (re-ranking then caps per creator).
    kind: str = "creator"


@dataclasses.dataclass(frozen=True)
class RetrievalResult:
    candidates: list[ScoredCandidate]
    model_version: str
    degraded_sources: Mapping[str, str]
    # Set by an adapter that leaves the candidates' `sources` and `reasons` empty until asked (the gRPC
    # one: ~100 candidates come back, ~10 reach a page): fills them in for the candidates at these
    # positions of `candidates`, once each. None: every candidate has them already.
    complete: Callable[[Iterable[int]], None] | None = None

    def completed(self, positions: Iterable[int]) -> None:
        """Makes sure the candidates at `positions` carry their `sources` and `reasons`."""
        if self.complete is not None:
            self.complete(positions)


@dataclasses.dataclass(frozen=True)
class Recommendation:
    items: list[ScoredCandidate]
    ranker_version: str
    retriever_version: str
    # Empty when the normal path served the page; otherwise why a fallback did.
    fallback: str = ""


@dataclasses.dataclass(frozen=True)
class RequestHints:
    """What a request says about a fan the online store may not know yet.

    `interests`: the request's `Filters.categories`. For a fan *without* a "fan" row they are the
    onboarding interests the sign-up flow collected, and ranking builds a stand-in fan row from them
    so the ranker's interest features fire on the very first request (retrieval reads them the same
    way). For a fan with a row they are only the filter they always were.
    `language`: the first requested language, else the context locale's language.
    """

    interests: tuple[str, ...] = ()
    language: str = ""

    @classmethod
    def from_request(cls, filters: Any, context: Any) -> RequestHints:
        """From the request's Filters and RequestContext messages (read by attribute; either may be None)."""
        raw = getattr(filters, "categories", None) or ()
        interests = tuple(dict.fromkeys(str(c).strip() for c in raw if str(c).strip()))
        languages = [
            str(x).strip().lower() for x in getattr(filters, "languages", None) or () if str(x).strip()
        ]
        language = languages[0] if languages else fan_language(str(getattr(context, "locale", "") or ""))
        return cls(interests[:MAX_ONBOARDING_INTERESTS], language)

    def onboarding_row(self, fan_id: str) -> dict[str, Any] | None:
        """A stand-in "fan" row for a fan the store does not know; None when the request says nothing."""
        if not self.interests and not self.language:
            return None
        # Keys the feature builder reads (plus a marker for whoever debugs it); everything else takes
        # the builder's "new fan" default: no history, no affinity.
        return {
            "fan_id": fan_id,
            "interests": list(self.interests),
            "language": self.language,
            "onboarding": True,
        }


class CandidateRetriever(Protocol):
    """Port to the retrieval service. Raises kindred.errors.Unavailable when it cannot answer."""

    def retrieve(
        self, fan_id: str, k: int, filters: Any, context: Any, timeout_s: float
    ) -> RetrievalResult: ...


class FeatureReader(Protocol):
    """Port to the online feature store (the kindred.store.online.OnlineStore shape)."""

    def get(self, namespace: str, keys: Sequence[str]) -> list[dict[str, Any] | None]: ...


class ScoringModel(Protocol):
    """Port to the ONNX ranker: a (B, F) float32 matrix in, (B,) scores out."""

    name: str
    version: str

    def run(self, features: np.ndarray) -> np.ndarray: ...
