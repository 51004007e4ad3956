"""Recommend: retrieve candidates, join online features, score, re-rank, explain, take the top k.

Stages, each leaving its mark on the candidates: retrieval (`source`, `sources`, `scores["retrieval"]`
and one score per source, retrieval's reasons) → the learned ranker (`scores["ranker"]`) → re-ranking
(ranking_svc.rerank: freshness, diversity, exposure budget, per-group cap; `scores["final"]`) →
explanations (ranking_svc.explain: the strongest fan/creator facts in words, first in `reasons`).

Cold start: a fan the online store does not know yet, whose request carries onboarding interests in
`Filters.categories` (and a locale or language), is ranked with a stand-in fan row built from them
(`RequestHints.onboarding_row`), so the ranker's interest and language features fire on the first
request. The filters themselves go to retrieval unchanged.

Fallbacks keep a fan with history from ever seeing an empty page: if retrieval is down or returns
nothing we serve the popular lists from the online store (the fan's interest categories first); if
the ranker fails we keep retrieval's order; if re-ranking or explaining fails we keep the ranker's
order. Each time the response says which fallback served it, and the trace and metrics record it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from opentelemetry import trace

from kindred import telemetry_schema as schema
from kindred.errors import InvalidArgument, Unavailable, validate_count
from kindred.features import CO_ENGAGEMENT_KEY, SOCIAL_FRIENDS_KEY, ranker_features_batch
from kindred.mf import MF_SCORE_KEY
from kindred.telemetry import get_meter, get_tracer
from ranking_svc.creator_features import CreatorBatch, CreatorFeatureCache
from ranking_svc.domain import (
    CandidateRetriever,
    FeatureReader,
    Recommendation,
    RequestHints,
    ScoredCandidate,
    ScoringModel,
)
from ranking_svc.explain import ExplainParams, FanProfile, explain, following_to_read
from ranking_svc.objectives import score_objectives
from ranking_svc.rerank import RerankConfig, Reranker, Slate

log = logging.getLogger(__name__)
tracer = get_tracer(__name__)

MAX_K = 200
# Retrieve several times what we return so the ranker has real choices to make.
RETRIEVAL_MULTIPLIER = 5
MIN_RETRIEVE = 100
POPULAR_SOURCE = "CANDIDATE_SOURCE_POPULAR"
# Popular ids read per fallback page, before the request's filters drop some.
FALLBACK_READ_MULTIPLIER = 4

Row = Mapping[str, Any]


class Recommender:
    def __init__(
        self,
        retriever: CandidateRetriever,
        features: FeatureReader,
        ranker: ScoringModel,
        *,
        rerank: RerankConfig | Reranker | None = None,
        explain: ExplainParams | None = None,
    ) -> None:
        """`rerank`: parameters of the standard steps (default: their documented defaults) or a
        ready `Reranker` with steps of its own."""
        self._retriever = retriever
        self._features = features
        self._creators = CreatorFeatureCache(features)
        self._ranker = ranker
        if not isinstance(rerank, Reranker):
            rerank = Reranker.from_config(rerank if rerank is not None else RerankConfig())
        self._reranker = rerank
        self._explain = explain if explain is not None else ExplainParams()
        self._degraded = get_meter(__name__).create_counter(schema.METRIC_DEGRADED)

    @property
    def ranker_version(self) -> str:
        return self._ranker.version

    def recommend(
        self, fan_id: str, k: int, *, filters: Any, context: Any, timeout_s: float
    ) -> Recommendation:
        if not fan_id:
            raise InvalidArgument("fan_id", "is required")
        validate_count(k, MAX_K)
        hints = RequestHints.from_request(filters, context)
        want = max(MIN_RETRIEVE, k * RETRIEVAL_MULTIPLIER)
        try:
            retrieved = self._retriever.retrieve(fan_id, want, filters, context, timeout_s)
        except Unavailable as exc:
            log.warning("retrieval unavailable, serving popular: %s", exc)
            return self._fallback_popular(fan_id, k, filters, hints, reason="retrieval_unavailable")
        if not retrieved.candidates:
            # Every source came back empty or skipped: popular, filtered the same way, beats nothing.
            return self._fallback_popular(
                fan_id, k, filters, hints, reason="retrieval_empty", retriever_version=retrieved.model_version
            )
        candidates = retrieved.candidates
        try:
            fan_row, creators, following_rows = self._read_rows(fan_id, candidates, hints)
            ranked, order = self._score(fan_row, candidates, creators)
        except Exception:
            log.exception("ranker failed; serving retrieval order")
            self._record_fallback("ranker_failed")
            retrieved.completed(range(min(k, len(candidates))))
            return Recommendation(
                candidates[:k], self._ranker.version, retrieved.model_version, "ranker_failed"
            )
        try:
            page = self._rerank_and_explain(
                ranked, order, creators, fan_row, following_rows, k, retrieved.completed
            )
            fallback = ""
        except Exception:
            log.exception("re-ranking failed; serving the ranker's order")
            retrieved.completed(order[:k])
            page, fallback = ranked[:k], "rerank_failed"
            self._record_fallback(fallback)
        return Recommendation(page, self._ranker.version, retrieved.model_version, fallback)

    def rank(
        self, fan_id: str, candidates: list[ScoredCandidate], *, k: int | None = None
    ) -> list[ScoredCandidate]:
        """Scores, re-ranks and explains `candidates`; the first `k` (default: all) form the page."""
        if not candidates:
            return []
        fan_row, creators, following_rows = self._read_rows(fan_id, candidates, RequestHints())
        ranked, order = self._score(fan_row, candidates, creators)
        page = len(ranked) if k is None else k
        return self._rerank_and_explain(ranked, order, creators, fan_row, following_rows, page)

    def _read_rows(
        self, fan_id: str, candidates: Sequence[ScoredCandidate], hints: RequestHints
    ) -> tuple[Row | None, CreatorBatch, list[Row | None]]:
        """The fan row (or its onboarding stand-in), the candidates' creator rows with what is derived
        from them (cached per creator: ranking_svc.creator_features), and rows of creators it follows."""
        with tracer.start_as_current_span(schema.SPAN_ONLINE_STORE_GET) as span:
            span.set_attribute(schema.CANDIDATES, len(candidates))
            fan_row: Row | None = self._features.get("fan", [fan_id])[0]
            if fan_row is None:
                fan_row = hints.onboarding_row(fan_id)
            follows = following_to_read(fan_row)
            # One read for both: the explanations' "you follow 2 creators in Podcasts" needs categories.
            batch = self._creators.read_batch([c.item_id for c in candidates] + follows, len(candidates))
        return fan_row, batch, batch.rows[len(candidates) :]

    def _score(
        self, fan_row: Row | None, candidates: Sequence[ScoredCandidate], creators: CreatorBatch
    ) -> tuple[list[ScoredCandidate], list[int]]:
        """Candidates sorted by the ranker (best first) with scores["ranker"], and the sorting order."""
        # Two-tower score is absent for candidates from other sources: None tells the model so.
        matrix = ranker_features_batch(
            fan_row,
            creators.rows[: len(candidates)],
            two_tower_scores=[c.scores.get("two_tower") for c in candidates],
            retrieval_scores=[c.scores.get("retrieval", 0.0) for c in candidates],
            sources=[c.source for c in candidates],
            creator_vectors=creators.vectors,
            creator_facts=creators.cross,
            co_engagement=[c.scores.get(CO_ENGAGEMENT_KEY, 0.0) for c in candidates],
            social_friends=[c.scores.get(SOCIAL_FRIENDS_KEY, 0.0) for c in candidates],
            mf_scores=[c.scores.get(MF_SCORE_KEY, 0.0) for c in candidates],
        )
        with tracer.start_as_current_span(schema.SPAN_ONNX_RUN) as span:
            span.set_attribute(schema.MODEL_NAME, self._ranker.name)
            span.set_attribute(schema.MODEL_VERSION, self._ranker.version)
            span.set_attribute(schema.BATCH_SIZE, len(candidates))
            # A multi-objective ranker also gives each head's in-list probability (ranking_svc.objectives).
            raw, per_objective = score_objectives(self._ranker, matrix)
            scores = np.asarray(raw, dtype=np.float64).reshape(-1)
        if scores.shape != (len(candidates),) or not np.all(np.isfinite(scores)):
            raise ValueError(f"ranker returned {scores.shape} scores (finite: {np.isfinite(scores).all()})")
        # Plain floats in one C call per column (indexing numpy scalars one by one costs ~10x more), and
        # written column by column: a plain store per value is ~3x faster than a dict.update of zipped
        # (key, value) pairs per candidate, and each candidate still gets its keys in the same order.
        plain = scores.tolist()
        columns = {"ranker": plain, "final": plain}
        columns.update((key, np.asarray(values).tolist()) for key, values in per_objective.items())
        short = [key for key, values in columns.items() if len(values) != len(candidates)]
        if short:
            raise ValueError(f"ranker returned {short} for other than {len(candidates)} candidates")
        tables = [c.scores for c in candidates]
        for key, values in columns.items():
            for table, value in zip(tables, values, strict=True):
                table[key] = value
        order: list[int] = np.argsort(-scores, kind="stable").tolist()
        return [candidates[i] for i in order], order

    def _rerank_and_explain(
        self,
        ranked: list[ScoredCandidate],
        order: Sequence[int],
        creators: CreatorBatch,
        fan_row: Row | None,
        following_rows: Sequence[Row | None],
        page: int,
        complete: Callable[[Iterable[int]], None] | None = None,
    ) -> list[ScoredCandidate]:
        """`ranked[j]` is the candidate whose creator facts sit at `order[j]` of `creators` (and which
        retrieval returned at position `order[j]`: `complete` gives the page's candidates their sources and
        reasons before re-ranking writes into them, when retrieval left them out)."""
        with tracer.start_as_current_span(schema.SPAN_RERANK) as span:
            span.set_attribute(schema.CANDIDATES, len(ranked))
            # Gathers in C (map over a bound method): ~100 candidates each.
            creator_rows = list(map(creators.rows.__getitem__, order))
            row_of = {c.item_id: r for c, r in zip(ranked, creator_rows, strict=True)}
            facts = list(map(creators.slate.__getitem__, order))
            numbers = creators.numbers[order] if creators.numbers is not None else None
            fan = FanProfile.build(fan_row, following_rows)
            slate = Slate.from_rows(
                ranked,
                creator_rows,
                facts,
                numbers,
                interests=fan.category_weights(),
                interests_from_follows=fan.categories_from_follows,
            )
            chosen = self._reranker.choose(slate, page)
            if complete is not None:
                complete([order[j] for j in chosen])
            out = self._reranker.annotate(slate, chosen)
            # Only the page is explained: the rest is never shown.
            explain(
                out,
                [row_of[c.item_id] for c in out],
                fan,
                self._explain,
            )
            return out

    def _fallback_popular(
        self,
        fan_id: str,
        k: int,
        filters: Any,
        hints: RequestHints,
        *,
        reason: str,
        retriever_version: str = "",
    ) -> Recommendation:
        """The popular lists, honouring the request's filters; category lists first, interleaved.

        Categories: the request's (for a known fan a filter, for a new one onboarding interests that
        only lead), else the fan row's interests; the global list follows.
        """
        self._record_fallback(reason)
        fan = self._features.get("fan", [fan_id])[0]
        onboarding = fan is None
        categories = list(hints.interests) or [str(c) for c in (fan or {}).get("interests") or ()]
        lists = self._features.get("popular", [f"category:{c}" for c in categories] + ["global"])
        labels = [f"popular in {c}" for c in categories] + ["popular on Kindred right now"]
        ranked_lists = [
            list(zip((row or {}).get("creator_ids", []), (row or {}).get("scores", []), strict=False))
            for row in lists
        ]
        merged: dict[str, tuple[float, str]] = {}
        for depth in range(max((len(x) for x in ranked_lists[:-1]), default=0)):
            for entries, label in zip(ranked_lists[:-1], labels, strict=False):
                if depth < len(entries):
                    merged.setdefault(str(entries[depth][0]), (float(entries[depth][1]), label))
        for creator_id, score in ranked_lists[-1]:
            merged.setdefault(str(creator_id), (float(score), labels[-1]))
        known = set((fan or {}).get("following") or ()) | set(
            getattr(filters, "exclude_item_ids", None) or ()
        )
        ids = [c for c in merged if c not in known][: k * FALLBACK_READ_MULTIPLIER]
        check = _RowFilter.of(filters, categories_filter=not onboarding)
        rows = self._features.get("creator", ids) if check.needs_rows else [None] * len(ids)
        items = [
            ScoredCandidate(
                item_id=creator_id,
                source=POPULAR_SOURCE,
                sources=[POPULAR_SOURCE],
                scores={"popularity": merged[creator_id][0], "final": merged[creator_id][0]},
                reasons=[merged[creator_id][1]],
            )
            for creator_id, row in zip(ids, rows, strict=True)
            if check.passes(row)
        ]
        return Recommendation(items[:k], self._ranker.version, retriever_version, reason)

    def _record_fallback(self, reason: str) -> None:
        self._degraded.add(1, {schema.FALLBACK: reason})
        span = trace.get_current_span()
        span.set_attribute(schema.FALLBACK, reason)
        span.set_attribute(schema.DEGRADED, True)


@dataclasses.dataclass(frozen=True)
class _RowFilter:
    """The request's payload filters applied to creator rows (the popular lists carry no payloads)."""

    languages: frozenset[str]
    categories: frozenset[str]
    exclude_mature: bool

    @classmethod
    def of(cls, filters: Any, *, categories_filter: bool) -> _RowFilter:
        return cls(
            frozenset(getattr(filters, "languages", None) or ()),
            frozenset(getattr(filters, "categories", None) or ()) if categories_filter else frozenset(),
            bool(getattr(filters, "exclude_mature", False)),
        )

    @property
    def needs_rows(self) -> bool:
        return bool(self.languages or self.categories or self.exclude_mature)

    def passes(self, row: Row | None) -> bool:
        if not self.needs_rows:
            return True
        if row is None:
            return False  # cannot show that it is allowed
        if self.languages and str(row.get("language") or "") not in self.languages:
            return False
        if self.categories and str(row.get("category") or "") not in self.categories:
            return False
        return not (self.exclude_mature and row.get("mature"))
