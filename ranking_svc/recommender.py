"""Recommend: retrieve candidates, join online features, score with the learned ranker, take the top k.

Fallbacks keep a fan with history from ever seeing an empty page: if retrieval is down we serve the
popular list from the online store; if the ranker fails we keep retrieval's order. Either way the
response says which fallback served it, and the trace and metrics record it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from opentelemetry import trace

from kindred import telemetry_schema as schema
from kindred.errors import InvalidArgument, Unavailable
from kindred.features import ranker_features_batch
from kindred.telemetry import get_meter, get_tracer
from ranking_svc.domain import (
    CandidateRetriever,
    FeatureReader,
    Recommendation,
    ScoredCandidate,
    ScoringModel,
)

log = logging.getLogger(__name__)
tracer = get_tracer(__name__)

MAX_K = 200
# Retrieve several times what we return so the ranker has real choices to make.
RETRIEVAL_MULTIPLIER = 5
MIN_RETRIEVE = 100
POPULAR_SOURCE = "CANDIDATE_SOURCE_POPULAR"


class Recommender:
    def __init__(self, retriever: CandidateRetriever, features: FeatureReader, ranker: ScoringModel) -> None:
        self._retriever = retriever
        self._features = features
        self._ranker = ranker
        self._degraded = get_meter(__name__).create_counter(schema.METRIC_DEGRADED)

    @property
    def ranker_version(self) -> str:
        return self._ranker.version

    def recommend(
        self, fan_id: str, k: int, *, filters: Any, context: Any, timeout_s: float
    ) -> Recommendation:
        if not fan_id:
            raise InvalidArgument("fan_id", "is required")
        if not 1 <= k <= MAX_K:
            raise InvalidArgument("k", f"must be between 1 and {MAX_K}, got {k}")
        want = max(MIN_RETRIEVE, k * RETRIEVAL_MULTIPLIER)
        try:
            retrieved = self._retriever.retrieve(fan_id, want, filters, context, timeout_s)
        except Unavailable as exc:
            log.warning("retrieval unavailable, serving popular: %s", exc)
            return self._fallback_popular(fan_id, k, reason="retrieval_unavailable")
        if not retrieved.candidates:
            return Recommendation([], self._ranker.version, retrieved.model_version)
        try:
            ranked = self.rank(fan_id, retrieved.candidates)
            fallback = ""
        except Exception:
            log.exception("ranker failed; serving retrieval order")
            ranked = retrieved.candidates
            fallback = "ranker_failed"
            self._record_fallback(fallback)
        return Recommendation(ranked[:k], self._ranker.version, retrieved.model_version, fallback)

    def rank(self, fan_id: str, candidates: list[ScoredCandidate]) -> list[ScoredCandidate]:
        """Scores candidates with the ONNX ranker and sorts them, best first."""
        with tracer.start_as_current_span(schema.SPAN_ONLINE_STORE_GET) as span:
            span.set_attribute(schema.CANDIDATES, len(candidates))
            fan_row = self._features.get("fan", [fan_id])[0] or {}
            creator_rows = self._features.get("creator", [c.item_id for c in candidates])
        # Two-tower score is absent for candidates from other sources: None tells the model so.
        matrix = ranker_features_batch(
            fan_row,
            creator_rows,
            two_tower_scores=[c.scores.get("two_tower") for c in candidates],
            retrieval_scores=[c.scores.get("retrieval", 0.0) for c in candidates],
            sources=[c.source for c in candidates],
        )
        with tracer.start_as_current_span(schema.SPAN_ONNX_RUN) as span:
            span.set_attribute(schema.MODEL_NAME, self._ranker.name)
            span.set_attribute(schema.MODEL_VERSION, self._ranker.version)
            span.set_attribute(schema.BATCH_SIZE, len(candidates))
            scores = np.asarray(self._ranker.run(matrix), dtype=np.float64).reshape(-1)
        for candidate, score in zip(candidates, scores, strict=True):
            candidate.scores["ranker"] = float(score)
            candidate.scores["final"] = float(score)
        order = np.argsort(-scores, kind="stable")
        return [candidates[i] for i in order]

    def _fallback_popular(self, fan_id: str, k: int, *, reason: str) -> Recommendation:
        self._record_fallback(reason)
        row = self._features.get("popular", ["global"])[0] or {}
        following = set((self._features.get("fan", [fan_id])[0] or {}).get("following", []))
        items = [
            ScoredCandidate(
                item_id=creator_id,
                source=POPULAR_SOURCE,
                sources=[POPULAR_SOURCE],
                scores={"popularity": float(score), "final": float(score)},
                reasons=["popular on Kindred right now"],
            )
            for creator_id, score in zip(row.get("creator_ids", []), row.get("scores", []), strict=False)
            if creator_id not in following
        ]
        return Recommendation(items[:k], self._ranker.version, "", reason)

    def _record_fallback(self, reason: str) -> None:
        self._degraded.add(1, {schema.FALLBACK: reason})
        span = trace.get_current_span()
        span.set_attribute(schema.FALLBACK, reason)
        span.set_attribute(schema.DEGRADED, True)
