"""Domain types of the ranking service (no grpc, no I/O)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np


@dataclasses.dataclass
class ScoredCandidate:
    """A candidate creator with its provenance and the score of every stage it went through."""

    item_id: str
    source: str  # CandidateSource name of the first source, e.g. "CANDIDATE_SOURCE_TWO_TOWER"
    sources: list[str] = dataclasses.field(default_factory=list)
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    reasons: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class RetrievalResult:
    candidates: list[ScoredCandidate]
    model_version: str
    degraded_sources: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class Recommendation:
    items: list[ScoredCandidate]
    ranker_version: str
    retriever_version: str
    # Empty when the normal path served the page; otherwise why a fallback did.
    fallback: str = ""


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
