"""Candidate retrieval for one fan: run every source, merge with quotas and de-duplication.

Membership is decided by per-source quotas: each source first fills its own slots (default shares of
k, or the request's absolute overrides), then slots a source could not fill go to the others'
remaining hits, so a new fan without two-tower input still gets k candidates. An item proposed by
several sources appears once; `source` is the source whose slot it took and `sources` lists every
source that proposed it. The final order is a reciprocal-rank fusion over the sources (an item two
sources agree on rises), but the scores passed on are each source's own: `scores["retrieval"]` is the
claiming source's score (what the ranker was trained with), `scores[<source>]` each proposer's, and
each proposer's named facts (`SourceHit.extra`, e.g. `scores["social_friends"] = 3`) ride along for the
ranker and the explanations; `reasons` collects every proposer's reason.

A source that fails or does not apply is reported in `degraded` and the others still answer; only
when no source could answer at all is the request UNAVAILABLE.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from kindred import telemetry_schema as schema
from kindred.errors import InvalidArgument, Unavailable, validate_count
from kindred.telemetry import get_tracer
from kindred.vectorstore import PayloadFilter
from retrieval_svc.sources import (
    CandidateSource,
    FactRecorder,
    FeatureReader,
    ItemFacts,
    SourceHit,
    SourceRequest,
    SourceSkipped,
)

log = logging.getLogger(__name__)

MAX_K = 1000
FAN_NAMESPACE = "fan"
# Default share of k per source, in priority order (why these: retrieval_svc.server's docstring).
DEFAULT_QUOTA_SHARES: Mapping[str, float] = {
    "two_tower": 0.25,
    "mf": 0.45,
    "item_to_item": 0.15,
    "social": 0.05,
    "trending": 0.05,
    "popular": 0.05,
}
RRF_K = 60  # the usual reciprocal-rank-fusion constant: damps the difference between top ranks
MIN_SLACK = 8  # extra items asked of each source beyond its quota, to survive de-duplication
SOURCE_PREFIX = "candidate_source_"


@dataclasses.dataclass(frozen=True)
class ModelRef:
    name: str
    version: str


@dataclasses.dataclass(frozen=True)
class RetrieveQuery:
    fan_id: str
    k: int
    filter: PayloadFilter = dataclasses.field(default_factory=PayloadFilter)
    source_quotas: Mapping[str, int] = dataclasses.field(default_factory=dict)
    now: float | None = None
    # False when the caller asked only for item kinds retrieval does not produce yet (posts).
    want_creators: bool = True


@dataclasses.dataclass
class Candidate:
    item_id: str
    source: str
    sources: list[str]
    scores: dict[str, float]
    reasons: list[str]


@dataclasses.dataclass(frozen=True)
class RetrieveResult:
    candidates: list[Candidate]
    degraded: dict[str, str]
    model: ModelRef | None


def normalize_source_name(name: str) -> str:
    """ "CANDIDATE_SOURCE_TWO_TOWER" or "two_tower" → "two_tower"."""
    return name.strip().lower().removeprefix(SOURCE_PREFIX)


class Retriever:
    def __init__(
        self,
        sources: Sequence[CandidateSource],
        store: FeatureReader,
        *,
        quota_shares: Mapping[str, float] | None = None,
        model: ModelRef | None = None,
    ) -> None:
        """`sources` in priority order (first fills its quota first and wins ties)."""
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate source names: {names}")
        self._sources = list(sources)
        self._store = store
        shares = dict(DEFAULT_QUOTA_SHARES if quota_shares is None else quota_shares)
        self._shares = {n: float(shares.get(n, 0.0)) for n in names}
        self._model = model
        self._tracer = get_tracer(__name__)

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self._sources]

    def validate(self, query: RetrieveQuery) -> dict[str, int]:
        """Checks the query; returns the resolved per-source quotas."""
        if not query.fan_id.strip():
            raise InvalidArgument("fan_id", "is required")
        validate_count(query.k, MAX_K)
        overrides: dict[str, int] = {}
        for raw, value in query.source_quotas.items():
            name = normalize_source_name(raw)
            if name not in self._shares:
                known = ", ".join(self.source_names)
                raise InvalidArgument("source_quotas", f"unknown source {raw!r}; this service has: {known}")
            if value < 0:
                raise InvalidArgument("source_quotas", f"quota for {raw!r} must be >= 0, got {value}")
            overrides[name] = min(int(value), query.k)
        return resolve_quotas(query.k, self._shares, overrides)

    def retrieve(self, query: RetrieveQuery) -> RetrieveResult:
        quotas = self.validate(query)
        with self._tracer.start_as_current_span(schema.SPAN_RETRIEVE) as span:
            span.set_attribute(schema.FAN_ID, query.fan_id)
            if not query.want_creators:
                return RetrieveResult([], {}, self._model)
            fan, fan_error = self._fan_row(query.fan_id)
            flt = query.filter
            if fan:
                # Exclude what the fan already follows or supports, not everything they viewed: a creator
                # viewed but not yet followed is exactly what discovery should still surface.
                flt = flt.excluding(str(c) for c in fan.get("following") or ())
            hits: dict[str, list[SourceHit]] = {}
            asked: dict[str, int] = {}
            degraded: dict[str, str] = {}
            facts: ItemFacts = {}
            failed = 0
            for source in self._sources:
                if quotas[source.name] == 0:  # switched off by the request: not a degradation
                    if isinstance(source, FactRecorder):  # but the ranker still reads its facts
                        request = SourceRequest(query.fan_id, fan, flt, 0, query.now, fan_error, facts)
                        self._record_facts(source, request, degraded)
                    continue
                # Ask for the quota plus slack for duplicates, not for k: ANN cost grows with the limit.
                n = min(query.k, quotas[source.name] + max(MIN_SLACK, quotas[source.name] // 4))
                request = SourceRequest(query.fan_id, fan, flt, n, query.now, fan_error, facts)
                try:
                    hits[source.name] = self._run(source, request)
                    asked[source.name] = n
                except SourceSkipped as exc:
                    degraded[source.name] = f"skipped: {exc}"
                except Exception as exc:
                    log.warning("candidate source %s failed", source.name, exc_info=True)
                    degraded[source.name] = f"failed: {type(exc).__name__}: {exc}"
                    failed += 1
            if failed and not hits:
                raise Unavailable(f"no candidate source could answer: {degraded}")
            candidates = merge(hits, quotas, query.k)
            if len(candidates) < query.k:
                # Some slots are unfilled (a source skipped, failed or ran dry): ask the sources that
                # may have more for up to k, so the others can backfill.
                refilled = False
                for source in self._sources:
                    may_have_more = source.name in hits and len(hits[source.name]) >= asked[source.name]
                    if may_have_more and asked[source.name] < query.k:
                        request = SourceRequest(query.fan_id, fan, flt, query.k, query.now, fan_error, facts)
                        try:
                            hits[source.name] = self._run(source, request)
                            refilled = True
                        except Exception:
                            log.warning("backfill from %s failed", source.name, exc_info=True)
                if refilled:
                    candidates = merge(hits, quotas, query.k)
            annotate(candidates, facts)
            span.set_attribute(schema.CANDIDATES, len(candidates))
            span.set_attribute(schema.DEGRADED, bool(degraded))
            return RetrieveResult(candidates, degraded, self._model)

    def _fan_row(self, fan_id: str) -> tuple[dict[str, Any] | None, str | None]:
        with self._tracer.start_as_current_span(schema.SPAN_ONLINE_STORE_GET) as span:
            span.set_attribute(schema.ONLINE_STORE_NAMESPACE, FAN_NAMESPACE)
            try:
                return self._store.get(FAN_NAMESPACE, [fan_id])[0], None
            except Exception as exc:
                log.warning("reading fan %s from the online store failed", fan_id, exc_info=True)
                return None, f"{type(exc).__name__}: {exc}"

    def _record_facts(self, source: FactRecorder, request: SourceRequest, degraded: dict[str, str]) -> None:
        """A switched-off source's facts alone; a failure leaves them out (reported, the page unharmed)."""
        name = getattr(source, "name", type(source).__name__)
        with self._tracer.start_as_current_span(f"{schema.SPAN_SOURCE}.{name}") as span:
            span.set_attribute(schema.SOURCE, name)
            span.set_attribute(schema.FACTS_ONLY, True)
            try:
                source.record_facts(request)
            except SourceSkipped:
                pass  # a new fan: no facts, as when the source runs
            except Exception as exc:
                log.warning("facts of candidate source %s failed", name, exc_info=True)
                degraded[name] = f"facts failed: {type(exc).__name__}: {exc}"

    def _run(self, source: CandidateSource, request: SourceRequest) -> list[SourceHit]:
        with self._tracer.start_as_current_span(f"{schema.SPAN_SOURCE}.{source.name}") as span:
            span.set_attribute(schema.SOURCE, source.name)
            out = source.retrieve(request)
            span.set_attribute(schema.CANDIDATES, len(out))
            return out


def annotate(candidates: Sequence[Candidate], facts: ItemFacts) -> None:
    """Writes each source's facts into every candidate's scores (0 where the source knows nothing of
    it), so a candidate of any source carries them; a fact no source recorded (skipped, failed) is left
    out, as unknown."""
    for name, values in facts.items():
        get_many = getattr(values, "get_many", None)  # a lookup that computes its values (mf) batches them
        if get_many is not None:
            for c, value in zip(candidates, get_many([c.item_id for c in candidates], 0.0), strict=True):
                c.scores[name] = value
            continue
        get = values.get
        for c in candidates:
            c.scores[name] = get(c.item_id, 0.0)


def resolve_quotas(k: int, shares: Mapping[str, float], overrides: Mapping[str, int]) -> dict[str, int]:
    """Slots per source: overrides as given, the rest split by share (largest remainder, sums to k).

    When the budget has room for all of them, every source with a positive share gets at least one
    slot (taken from the largest quota): a small share must not silently switch a source off at small
    k — popular, the source that always answers, has a small share by default.
    """
    quotas = {n: overrides[n] for n in shares if n in overrides}
    rest = [n for n in shares if n not in overrides]
    total_share = sum(shares[n] for n in rest)
    budget = max(0, k - sum(quotas.values()))
    if rest and total_share > 0:
        exact = {n: budget * shares[n] / total_share for n in rest}
        base = {n: math.floor(v) for n, v in exact.items()}
        leftover = budget - sum(base.values())
        for n in sorted(rest, key=lambda n: base[n] - exact[n])[:leftover]:
            base[n] += 1
        positive = [n for n in rest if shares[n] > 0]
        if budget >= len(positive):
            for n in positive:
                if base[n] == 0:
                    donor = max(positive, key=lambda m: base[m])  # first of the largest, in order
                    base[donor] -= 1
                    base[n] += 1
        quotas.update(base)
    else:
        quotas.update({n: 0 for n in rest})
    return quotas


def merge(hits: Mapping[str, Sequence[SourceHit]], quotas: Mapping[str, int], k: int) -> list[Candidate]:
    """Quota-based membership, de-duplicated, ordered by reciprocal-rank fusion (see module docstring)."""
    order = [n for n in quotas if n in hits]  # priority order
    # Runs on every Retrieve over ~150 hits: plain dict operations, no per-hit helper calls.
    proposals: dict[str, dict[str, tuple[int, SourceHit]]] = {}
    for name in order:
        for rank, hit in enumerate(hits[name]):
            entry = proposals.get(hit.item_id)
            if entry is None:
                proposals[hit.item_id] = {name: (rank, hit)}
            elif name not in entry:
                entry[name] = (rank, hit)

    claimed: dict[str, str] = {}  # item → the source whose slot it took, in claim order
    for name in order:  # each source fills its own slots
        taken = 0
        for hit in hits[name]:
            if taken >= quotas[name] or len(claimed) >= k:
                break
            if hit.item_id not in claimed:
                claimed[hit.item_id] = name
                taken += 1
    for name in order:  # slots a source could not fill go to the others' remaining hits
        for hit in hits[name]:
            if len(claimed) >= k:
                break
            if quotas[name] > 0:
                claimed.setdefault(hit.item_id, name)

    priority = {n: i for i, n in enumerate(order)}
    candidates: list[Candidate] = []
    keys: list[tuple[float, int, int]] = []
    for item_id, source in claimed.items():
        proposed = proposals[item_id]
        rank, own = proposed[source]
        if len(proposed) == 1:  # the common case: one source proposed it
            names = [source]
            scores = {source: own.score}
            if own.extra:
                scores.update(own.extra)
            reasons = [own.reason] if own.reason else []
            fused = 1.0 / (RRF_K + rank + 1)
        else:  # plain loops: generator expressions cost more than the work at these sizes
            names = [source]
            for n in order:
                if n != source and n in proposed:
                    names.append(n)
            scores = {}
            fused = 0.0
            reasons = []
            for n in names:
                n_rank, n_hit = proposed[n]
                scores[n] = n_hit.score
                fused += 1.0 / (RRF_K + n_rank + 1)
                if n_hit.reason and n_hit.reason not in reasons:
                    reasons.append(n_hit.reason)
            for n in reversed(names):  # the claiming source's facts win a name clash
                scores.update(proposed[n][1].extra)
        scores["retrieval"] = own.score
        keys.append((-fused, priority[source], len(candidates)))  # the index: ties keep claim order
        candidates.append(Candidate(item_id, source, names, scores, reasons))
    return [candidates[key[2]] for key in sorted(keys)]
