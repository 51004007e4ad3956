"""Popularity: the trainer's ordered popular lists, filtered inside the vector engine.

The online store's "popular" namespace holds `{"creator_ids": [...], "scores": [...]}` under "global",
"category:<c>" and "language:<l>". The request's categories and the fan's onboarding interests select
category lists first ("popular in Music"), requested languages their language lists, then comes the
global list: a selective filter still finds enough items near the top of some list. The lists carry
no payloads, so the request filter is applied by asking the vector index which of the listed ids pass
it: one filter semantics for every source, evaluated by the engine.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from kindred import telemetry_schema as schema
from kindred.telemetry import get_tracer
from kindred.vectorstore import VectorIndex
from retrieval_svc.sources import FanRow, FeatureReader, SourceHit, SourceRequest
from retrieval_svc.sources.ranked_lists import ListCache, first_passing

NAME = "popular"
NAMESPACE = "popular"
GLOBAL_KEY = "global"
REASON_GLOBAL = "popular on Kindred"


class PopularSource:
    """Popular creators passing the request filter.

    Popular lists change when the trainer runs, not per request, so each list (global, category:<c>,
    language:<l>) is cached with the engine's verdict on its prefix per (list key, request filter without
    the fan's excluded ids) for `cache_ttl_s` (`ranked_lists.ListCache`): fans with other interests or
    histories share the entries; a request merges its lists and drops its excluded ids (history, request
    exclusions) in Python. `invalidate()` drops the cache after index writes.
    """

    def __init__(
        self,
        store: FeatureReader,
        index: VectorIndex,
        *,
        max_interest_lists: int = 3,
        cache_ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._index = index
        self._max_interest_lists = max_interest_lists
        self._cache = ListCache(cache_ttl_s, clock)
        self._tracer = get_tracer(__name__)

    @property
    def name(self) -> str:
        return NAME

    def invalidate(self) -> None:
        self._cache.invalidate()

    def retrieve(self, request: SourceRequest) -> list[SourceHit]:
        flt = request.filter
        engine_flt = dataclasses.replace(flt, exclude_ids=frozenset())
        categories = interest_categories(sorted(flt.categories), request.fan, self._max_interest_lists)
        lists = [(f"category:{c}", f"popular in {c}") for c in categories]
        lists += [(f"language:{lang}", REASON_GLOBAL) for lang in sorted(flt.languages)]
        lists.append((GLOBAL_KEY, REASON_GLOBAL))
        cached = self._cache.lists([key for key, _ in lists], engine_flt, self._read, _ranked)
        passing = first_passing(self._index, cached, flt, engine_flt, request.n, source=NAME)
        return [SourceHit(cached[j].ids[r], cached[j].scores[r], lists[j][1]) for j, r in passing]

    def _read(self, keys: list[str]) -> Sequence[Mapping[str, Any] | None]:
        with self._tracer.start_as_current_span(schema.SPAN_ONLINE_STORE_GET) as span:
            span.set_attribute(schema.ONLINE_STORE_NAMESPACE, NAMESPACE)
            rows = self._store.get(NAMESPACE, keys)
        if GLOBAL_KEY in keys and rows[keys.index(GLOBAL_KEY)] is None:
            raise LookupError(f"no {NAMESPACE!r}/{GLOBAL_KEY!r} list in the online store (run the trainer)")
        return rows


def _ranked(row: Mapping[str, Any] | None) -> list[tuple[str, float]]:
    """(id, score) pairs of a stored list, as `_hits` reads them (no hit built per listed id)."""
    ids, scores = _columns(row or {})
    return list(zip(ids, scores, strict=True))


def interest_categories(requested: Sequence[str], fan: FanRow | None, max_lists: int = 3) -> list[str]:
    """Requested categories first (they constrain the result), then the fan's stated interests."""
    wanted = sorted(requested)
    if fan:
        wanted += [str(c) for c in fan.get("interests") or () if c]
    if requested:
        wanted = [c for c in wanted if c in requested]
    return list(dict.fromkeys(wanted))[:max_lists]


def merge_lists(rows: Sequence[dict[str, Any] | None], reasons: Sequence[str]) -> list[SourceHit]:
    """The specific lists interleaved (each gets its top slots), then the global (last) one; no repeats."""
    seen: set[str] = set()
    out = []
    specific = [_hits(row, reason) for row, reason in zip(rows[:-1], reasons[:-1], strict=True) if row]
    for hit in [*_interleave(specific), *_hits(rows[-1] or {}, reasons[-1])]:
        if hit.item_id not in seen:
            seen.add(hit.item_id)
            out.append(hit)
    return out


def _hits(row: Mapping[str, Any], reason: str) -> list[SourceHit]:
    ids, scores = _columns(row)
    return [SourceHit(i, s, reason) for i, s in zip(ids, scores, strict=True)]


def _columns(row: Mapping[str, Any]) -> tuple[list[str], list[float]]:
    """The ids and scores of a stored popular list."""
    ids = [str(i) for i in row.get("creator_ids") or []]
    scores = list(row.get("scores") or [])
    if len(scores) != len(ids):
        # Without scores the order still ranks: 1, 1/2, 1/3, ...
        scores = [1.0 / (i + 1) for i in range(len(ids))]
    return ids, [float(s) for s in scores]


def _interleave(lists: list[list[SourceHit]]) -> Iterator[SourceHit]:
    for i in range(max((len(x) for x in lists), default=0)):
        for hits in lists:
            if i < len(hits):
                yield hits[i]
