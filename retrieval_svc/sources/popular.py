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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kindred import telemetry_schema as schema
from kindred.telemetry import get_tracer
from kindred.vectorstore import PayloadFilter, VectorIndex
from retrieval_svc.sources import FanRow, FeatureReader, SourceHit, SourceRequest

NAME = "popular"
NAMESPACE = "popular"
GLOBAL_KEY = "global"
REASON_GLOBAL = "popular on Kindred"
# Ids checked against the filter per engine call: enough for a selective filter, small enough to be ~1 ms.
CHUNK = 256
CACHE_ENTRIES = 1024


@dataclasses.dataclass
class _Filtered:
    """A merged popular list filtered by the engine, as far as some request needed it."""

    created: float
    ranked: list[SourceHit]  # the merged lists, unfiltered
    passing: list[SourceHit]  # the prefix of `ranked` that passed, in order
    checked: int  # how many of `ranked` were checked


class PopularSource:
    """Popular creators passing the request filter.

    Popular lists change when the trainer runs, not per request, so the engine-filtered list is cached
    per (lists, languages, categories, mature) for `cache_ttl_s`; the per-fan part of the filter (ids
    to exclude: history, request exclusions) is then removed from the cached prefix, which the cache
    makes long enough to still hold n items. `invalidate()` drops the cache after index writes.
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
        self._ttl = cache_ttl_s
        self._clock = clock
        self._cache: dict[tuple[object, ...], _Filtered] = {}
        self._lock = threading.Lock()
        self._tracer = get_tracer(__name__)

    @property
    def name(self) -> str:
        return NAME

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()

    def retrieve(self, request: SourceRequest) -> list[SourceHit]:
        flt = request.filter
        categories = interest_categories(sorted(flt.categories), request.fan, self._max_interest_lists)
        lists = [(f"category:{c}", f"popular in {c}") for c in categories]
        lists += [(f"language:{lang}", REASON_GLOBAL) for lang in sorted(flt.languages)]
        lists.append((GLOBAL_KEY, REASON_GLOBAL))
        key = (tuple(lists), tuple(sorted(flt.languages)), tuple(sorted(flt.categories)), flt.exclude_mature)
        need = request.n + len(flt.exclude_ids)  # enough passing items to survive the exclusions
        with self._lock:
            entry = self._cache.get(key)
        now = self._clock()
        if entry is None or now - entry.created > self._ttl:
            entry = _Filtered(now, self._read_lists(lists), [], 0)
        if len(entry.passing) < need and entry.checked < len(entry.ranked):
            self._extend(entry, dataclasses.replace(flt, exclude_ids=frozenset()), need)
        with self._lock:
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()
            self._cache[key] = entry
        return [h for h in entry.passing if h.item_id not in flt.exclude_ids][: request.n]

    def _read_lists(self, lists: Sequence[tuple[str, str]]) -> list[SourceHit]:
        with self._tracer.start_as_current_span(schema.SPAN_ONLINE_STORE_GET) as span:
            span.set_attribute(schema.ONLINE_STORE_NAMESPACE, NAMESPACE)
            rows = self._store.get(NAMESPACE, [key for key, _ in lists])
        if rows[-1] is None:
            raise LookupError(f"no {NAMESPACE!r}/{GLOBAL_KEY!r} list in the online store (run the trainer)")
        return merge_lists(rows, [reason for _, reason in lists])

    def _extend(self, entry: _Filtered, flt: PayloadFilter, need: int) -> None:
        """Filters further chunks of the ranked list in the engine until `need` items passed."""
        passing, checked = list(entry.passing), entry.checked
        while len(passing) < need and checked < len(entry.ranked):
            chunk = entry.ranked[checked : checked + CHUNK]
            with self._tracer.start_as_current_span(schema.SPAN_QDRANT_QUERY) as span:
                span.set_attribute(schema.SOURCE, NAME)
                ok = {p.point_id for p in self._index.fetch([h.item_id for h in chunk], flt)}
            passing.extend(h for h in chunk if h.item_id in ok)
            checked += len(chunk)
        # Replace both fields together: another thread may be reading this entry.
        entry.passing, entry.checked = passing, checked


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


def _hits(row: dict[str, Any], reason: str) -> list[SourceHit]:
    ids = [str(i) for i in row.get("creator_ids") or []]
    scores = list(row.get("scores") or [])
    if len(scores) != len(ids):
        # Without scores the order still ranks: 1, 1/2, 1/3, ...
        scores = [1.0 / (i + 1) for i in range(len(ids))]
    return [SourceHit(i, float(s), reason) for i, s in zip(ids, scores, strict=True)]


def _interleave(lists: list[list[SourceHit]]) -> Iterator[SourceHit]:
    for i in range(max((len(x) for x in lists), default=0)):
        for hits in lists:
            if i < len(hits):
                yield hits[i]
