"""SearchRanked: retrieval's hybrid search, re-ranked for one fan, every score explained.

    final = relevance                                  fused score / the list's best fused score, in [0, 1]
          + following  × [the item's creator is followed or supported by the fan]
          + engaged    × the fan's engagement with the creator (history weight / the fan's top weight)
          + affinity   × the fan's affinity to the item's category (share / the fan's top share)
          + language   × [the item is in the fan's language]
          + popularity × log(1 + the creator's fans) / the list's largest such value (no fan needed)
          + freshness  × exp(-age / half-life)           posts only: a creator has no age to speak of

Relevance leads (a weight of 1 on a [0, 1] scale): personalisation re-orders what the query matched,
it never brings in what it did not. The fan's features come from the online store's "fan" row (the
same rows Recommend reads): `following` (followed or member), `history` + `history_weights`,
`category_affinity` over kindred.data.schema.CATEGORIES and `language`; the creators' "creator" rows
give `n_fans`. Without a fan, or for a fan the store does not know, only popularity and freshness
move the list, and the response says it is not personalised.

Every term is computed by `term_values` and weighted by `term_weights`, one place, so the benchmark
that tunes the weights scores exactly what the service serves.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
from opentelemetry import trace

from kindred import telemetry_schema as schema
from kindred.data.schema import CATEGORIES
from kindred.errors import validate_count
from kindred.telemetry import get_meter, get_tracer
from ranking_svc.domain import FeatureReader

MAX_K: Final = 200
DEFAULT_K: Final = 10
# Ask retrieval for several times k so personalisation has room to re-order (capped by its MAX_K).
RETRIEVE_MULTIPLIER: Final = 4
MIN_RETRIEVE: Final = 50
DAY: Final = 86_400.0

log = logging.getLogger(__name__)
tracer = get_tracer(__name__)


@dataclasses.dataclass(frozen=True)
class SearchRankParams:
    """Weights of the terms next to relevance (1.0). Picked by bench/bench_search_personalisation.py on
    the demo platform's tuning week of searches (a grid over 0-0.6), and scored there on the held-out
    week: NDCG@10 0.169 (hybrid) → 0.184 with these weights."""

    following: float = 0.0  # measured: the fans' engagement with a creator carries the follow signal
    engaged: float = 0.2
    affinity: float = 0.2
    language: float = 0.4
    popularity: float = 0.4
    freshness: float = 0.05
    freshness_half_life_days: float = 14.0


TERMS: Final = ("relevance", "following", "engaged", "affinity", "language", "popularity", "freshness")
PERSONAL_TERMS: Final = ("following", "engaged", "affinity", "language")


def term_weights(params: SearchRankParams) -> npt.NDArray[np.float64]:
    """The weight of each of TERMS (relevance: 1, the scale everything else is measured against)."""
    return np.array([1.0, *(float(getattr(params, t)) for t in TERMS[1:])])


@dataclasses.dataclass
class SearchResult:
    """One hit as retrieval returned it (kind "creator" | "post"), then the scores added here."""

    item_id: str
    kind: str
    creator_id: str
    title: str
    category: str
    published_at: float
    scores: dict[str, float]
    reasons: list[str]
    sources: list[str] = dataclasses.field(default_factory=list)
    language: str = ""


@dataclasses.dataclass(frozen=True)
class SearchPage:
    results: list[SearchResult]
    encoder_version: str


@dataclasses.dataclass(frozen=True)
class RankedSearch:
    results: list[SearchResult]
    encoder_version: str
    personalised: bool


class TextSearcher(Protocol):
    def search(
        self, query: str, k: int, filters: Any, context: Any, fan_id: str, timeout_s: float
    ) -> SearchPage: ...


def validate_k(k: int) -> int:
    return validate_count(k, MAX_K, default=DEFAULT_K)


class SearchRanker:
    def __init__(
        self, searcher: TextSearcher, features: FeatureReader, params: SearchRankParams | None = None
    ) -> None:
        self._searcher = searcher
        self._features = features
        self.params = params or SearchRankParams()
        self._degraded = get_meter(__name__).create_counter(schema.METRIC_DEGRADED)

    def search(
        self,
        query: str,
        fan_id: str,
        k: int,
        *,
        filters: Any = None,
        context: Any = None,
        now: float | None = None,
        timeout_s: float = 2.0,
    ) -> RankedSearch:
        k = validate_k(k)
        with tracer.start_as_current_span(schema.SPAN_SEARCH_RANKED) as span:
            span.set_attribute(schema.FAN_ID, fan_id)
            depth = min(MAX_K, max(MIN_RETRIEVE, RETRIEVE_MULTIPLIER * k))
            page = self._searcher.search(query, depth, filters, context, fan_id, timeout_s)
            fan = self._fan_row(fan_id, span) if fan_id else None
            creators = self._creator_rows(page.results)
            ranked = rerank(page.results, fan, now if now is not None else time.time(), self.params, creators)
            span.set_attribute(schema.CANDIDATES, len(ranked))
        return RankedSearch(ranked[:k], page.encoder_version, personalised=fan is not None)

    def _creator_rows(self, results: Sequence[SearchResult]) -> dict[str, Mapping[str, Any]]:
        ids = sorted({r.creator_id for r in results if r.creator_id})
        if not ids:
            return {}
        try:
            with tracer.start_as_current_span(schema.SPAN_ONLINE_STORE_GET) as span:
                span.set_attribute(schema.ONLINE_STORE_NAMESPACE, "creator")
                rows = self._features.get("creator", ids)
        except Exception:
            log.warning("online store failed; search served without popularity", exc_info=True)
            self._degraded.add(1, {schema.FALLBACK: "features_unavailable"})
            return {}
        return {cid: row for cid, row in zip(ids, rows, strict=True) if row}

    def _fan_row(self, fan_id: str, span: trace.Span) -> Mapping[str, Any] | None:
        try:
            with tracer.start_as_current_span(schema.SPAN_ONLINE_STORE_GET) as get_span:
                get_span.set_attribute(schema.ONLINE_STORE_NAMESPACE, "fan")
                return self._features.get("fan", [fan_id])[0]
        except Exception:
            # The store being down costs personalisation, not the search.
            log.warning("online store failed; search served unpersonalised", exc_info=True)
            span.set_attribute(schema.FALLBACK, "features_unavailable")
            span.set_attribute(schema.DEGRADED, True)
            self._degraded.add(1, {schema.FALLBACK: "features_unavailable"})
            return None


@dataclasses.dataclass(frozen=True)
class FanTaste:
    """What personalisation reads from a fan row, normalised to [0, 1]."""

    following: frozenset[str]
    engaged: Mapping[str, float]
    affinity: Mapping[str, float]
    language: str = ""

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | None) -> FanTaste:
        if not row:
            return cls(frozenset(), {}, {})
        history = [str(c) for c in row.get("history") or []]
        weights = [float(w) for w in row.get("history_weights") or [1.0] * len(history)]
        top_w = max(weights, default=0.0)
        engaged = {c: w / top_w for c, w in zip(history, weights, strict=False)} if top_w > 0 else {}
        shares = [float(a) for a in row.get("category_affinity") or []]
        top_a = max(shares, default=0.0)
        affinity = (
            {cat: a / top_a for cat, a in zip(CATEGORIES, shares, strict=False) if a > 0} if top_a > 0 else {}
        )
        following = frozenset(str(c) for c in row.get("following") or [])
        return cls(following, engaged, affinity, str(row.get("language") or ""))


def term_values(
    results: Sequence[SearchResult],
    fan_row: Mapping[str, Any] | None,
    now: float,
    params: SearchRankParams,
    creator_rows: Mapping[str, Mapping[str, Any]] | None = None,
) -> npt.NDArray[np.float64]:
    """(len(results), len(TERMS)): each term of each result, in [0, 1]."""
    taste = FanTaste.from_row(fan_row)
    creator_rows = creator_rows or {}
    best = max((r.scores.get("fused", 0.0) for r in results), default=0.0)
    fans = {c: math.log1p(float(row.get("n_fans", 0) or 0)) for c, row in creator_rows.items()}
    most = max(fans.values(), default=0.0)
    decay = math.log(2) / params.freshness_half_life_days
    out = np.zeros((len(results), len(TERMS)))
    for i, r in enumerate(results):
        age_days = max(0.0, (now - r.published_at) / DAY)
        out[i] = (
            r.scores.get("fused", 0.0) / best if best > 0 else 0.0,
            1.0 if r.creator_id in taste.following else 0.0,
            taste.engaged.get(r.creator_id, 0.0),
            taste.affinity.get(r.category, 0.0),
            1.0 if taste.language and r.language == taste.language else 0.0,
            fans.get(r.creator_id, 0.0) / most if most > 0 else 0.0,
            math.exp(-age_days * decay) if r.kind == "post" else 0.0,
        )
    return out


def rerank(
    results: Sequence[SearchResult],
    fan_row: Mapping[str, Any] | None,
    now: float,
    params: SearchRankParams,
    creator_rows: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[SearchResult]:
    """Adds every term's score, the final score and reasons; returns the results best first (stable)."""
    if not results:
        return []
    values = term_values(results, fan_row, now, params, creator_rows)
    finals = values @ term_weights(params)
    for r, row, final in zip(results, values, finals, strict=True):
        terms = dict(zip(TERMS, (float(v) for v in row), strict=True))
        r.scores.update(terms)
        r.scores["final"] = float(final)
        age_days = max(0.0, (now - r.published_at) / DAY)
        r.reasons = personal_reasons(r, terms, age_days, params) + r.reasons
    return sorted(results, key=lambda r: -r.scores["final"])


def personal_reasons(
    r: SearchResult, s: Mapping[str, float], age_days: float, params: SearchRankParams
) -> list[str]:
    """Reasons for the terms that moved this result: a term weighted 0 changed nothing, so it gives none."""

    def moved(term: str, at_least: float) -> bool:
        return float(getattr(params, term)) > 0 and s[term] >= at_least

    reasons = []
    if moved("following", 0.5):
        reasons.append("you follow this creator" if r.kind == "creator" else "by a creator you follow")
    elif moved("engaged", 0.25):
        reasons.append("you often engage with this creator")
    if moved("affinity", 0.5) and r.category:
        reasons.append(f"you like {r.category}")
    if moved("popularity", 0.8):
        reasons.append("popular creator")
    if r.kind == "post" and moved("freshness", 0.5):
        reasons.append("posted today" if age_days < 1 else f"posted {age_days:.0f} days ago")
    return reasons


__all__ = [
    "MAX_K",
    "TERMS",
    "FanTaste",
    "RankedSearch",
    "SearchPage",
    "SearchRankParams",
    "SearchRanker",
    "SearchResult",
    "TextSearcher",
    "personal_reasons",
    "rerank",
    "term_values",
    "term_weights",
]
