"""Trending and cold start: the fastest-growing creators, by category and language, with a share of the
slots kept for new creators (exploration).

The trainer writes ranked lists to the online store namespace "trending" (see trainer.candidates):
"global", "category:<c>", "language:<l>" (growth over the last days against the creator's own baseline)
and the same keys prefixed "new:" (creators created recently that have few followers yet, ranked by
early traction). Each is `{"ids": [...], "scores": [...]}`, scores in [0, 1].

Which lists: the request's categories, then the fan's onboarding interests and strongest categories
(at most `max_category_lists`), the request's languages or else the fan's language, then "global";
the specific lists are interleaved so each gets its top slots. A brand-new fan has no row in the online
store and the request carries no interests field, so for a fan without a row the request's
`Filters.categories` stand for the onboarding interests: a client that onboards a fan passes the picked
categories as the category filter, and both this source and popular then rank within them.

Exploration: `new_share` of this source's slots (evenly spread: with 10 slots and 0.3, slots 4, 7 and
10) go to new creators, tagged `scores["trending_new"] = 1`; slots either part cannot fill go to the
other. The request filter is applied by the engine (see ranked_lists).

The lists change when the trainer runs, so each one is cached with the engine's verdict on its prefix
per (list key, filter without the fan's excluded ids) for `cache_ttl_s` (`ranked_lists.ListCache`); a
request merges the cached lists, drops its excluded ids in Python and builds hits only for what it
returns. `invalidate()` drops the cache after index writes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kindred import telemetry_schema as schema
from kindred.data.schema import CATEGORIES
from kindred.telemetry import get_tracer
from kindred.vectorstore import PayloadFilter, VectorIndex
from retrieval_svc.sources import NO_FACTS, FanRow, FeatureReader, SourceHit, SourceRequest
from retrieval_svc.sources.ranked_lists import CachedList, ListCache, first_passing, interleave, read_ranked

NAME = "trending"
NAMESPACE = "trending"
GLOBAL_KEY = "global"
NEW_PREFIX = "new:"
NEW_KEY = "trending_new"
NEW_FACTS: Mapping[str, float] = {NEW_KEY: 1.0}  # shared by the hits of new creators: never change it
DEFAULT_NEW_SHARE = 0.3
MAX_CATEGORY_LISTS = 3
# The fan's strongest categories by engagement share join its stated interests above this share.
AFFINITY_MIN = 0.2


def categories_for(
    requested: Sequence[str], fan: FanRow | None, max_lists: int = MAX_CATEGORY_LISTS
) -> list[str]:
    """Requested categories first (they constrain the result), then the fan's interests and strongest
    engagement categories; within the requested ones when the request names any."""
    wanted = sorted(requested)
    if fan:
        wanted += [str(c) for c in fan.get("interests") or () if c]
        affinity = fan.get("category_affinity") or []
        if len(affinity) == len(CATEGORIES):
            top = sorted(range(len(CATEGORIES)), key=lambda i: -float(affinity[i]))
            wanted += [CATEGORIES[i] for i in top[:2] if float(affinity[i]) >= AFFINITY_MIN]
    if requested:
        wanted = [c for c in wanted if c in requested]
    return list(dict.fromkeys(wanted))[:max_lists]


def languages_for(requested: Sequence[str], fan: FanRow | None) -> list[str]:
    if requested:
        return sorted(requested)
    language = str((fan or {}).get("language") or "")
    return [language] if language else []


def list_keys(categories: Sequence[str], languages: Sequence[str]) -> list[str]:
    """Store keys of the trending lists to merge, the global one last."""
    return [*(f"category:{c}" for c in categories), *(f"language:{lang}" for lang in languages), GLOBAL_KEY]


def reason(key: str, *, new: bool) -> str:
    word = "new" if new else "trending"
    category = key.removeprefix("category:")
    return f"{word} in {category}" if category != key else f"{word} on Kindred"


def merge_lists(
    rows: Sequence[Mapping[str, Any] | None], keys: Sequence[str], *, new: bool
) -> list[SourceHit]:
    """The specific lists interleaved, then the global (last) one; no repeats."""
    extra = {NEW_KEY: 1.0} if new else {}
    lists = [
        [SourceHit(i, s, reason(key, new=new), extra) for i, s in read_ranked(row)]
        for row, key in zip(rows, keys, strict=True)
    ]
    out: list[SourceHit] = []
    seen: set[str] = set()
    for hit in [*interleave(lists[:-1]), *lists[-1]]:
        if hit.item_id not in seen:
            seen.add(hit.item_id)
            out.append(hit)
    return out


def mix(trending: Sequence[SourceHit], new: Sequence[SourceHit], n: int, new_share: float) -> list[SourceHit]:
    """`n` hits with about `new_share` of them from `new`, evenly spread; either side backfills the other."""
    want_new = round(n * new_share)  # planned slots; when `new` runs short, trending takes them
    out: list[SourceHit] = []
    seen: set[str] = set()
    ti = ni = placed_new = 0
    while len(out) < n and (ti < len(trending) or ni < len(new)):
        # Slot j (0-based) is a new creator's when floor((j + 1) * want_new / n) exceeds those placed.
        due = (len(out) + 1) * want_new // n > placed_new
        take_new = ni < len(new) and (due or ti >= len(trending))
        if take_new:
            hit, ni = new[ni], ni + 1
        else:
            hit, ti = trending[ti], ti + 1
        if hit.item_id not in seen:
            seen.add(hit.item_id)
            out.append(hit)
            placed_new += take_new
    return out


class TrendingSource:
    def __init__(
        self,
        store: FeatureReader,
        index: VectorIndex,
        *,
        new_share: float = DEFAULT_NEW_SHARE,
        max_category_lists: int = MAX_CATEGORY_LISTS,
        cache_ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 <= new_share <= 1.0:
            raise ValueError(f"new_share must be in [0, 1], got {new_share}")
        self._store = store
        self._index = index
        self._new_share = new_share
        self._max_category_lists = max_category_lists
        self._cache = ListCache(cache_ttl_s, clock)
        self._tracer = get_tracer(__name__)

    @property
    def name(self) -> str:
        return NAME

    def invalidate(self) -> None:
        self._cache.invalidate()

    def retrieve(self, request: SourceRequest) -> list[SourceHit]:
        # A store failure for the fan row only costs personalisation here: the global lists still answer.
        flt = request.filter
        engine_flt = dataclasses.replace(flt, exclude_ids=frozenset())
        names = list_keys(
            categories_for(sorted(flt.categories), request.fan, self._max_category_lists),
            languages_for(sorted(flt.languages), request.fan),
        )
        lists = self._cache.lists(
            [*names, *(NEW_PREFIX + k for k in names)], engine_flt, self._read, read_ranked
        )
        want_new = round(request.n * self._new_share)
        new_ok = (
            self._hits(lists[len(names) :], names, flt, engine_flt, want_new, new=True) if want_new else []
        )
        # Enough trending ones to fill every slot in case few new creators pass the filter.
        trend_ok = self._hits(lists[: len(names)], names, flt, engine_flt, request.n, new=False)
        return mix(trend_ok, new_ok, request.n, self._new_share)

    def _read(self, keys: list[str]) -> Sequence[Mapping[str, Any] | None]:
        with self._tracer.start_as_current_span(schema.SPAN_ONLINE_STORE_GET) as span:
            span.set_attribute(schema.ONLINE_STORE_NAMESPACE, NAMESPACE)
            rows = self._store.get(NAMESPACE, keys)
        if GLOBAL_KEY in keys and rows[keys.index(GLOBAL_KEY)] is None:
            raise LookupError(f"no {NAMESPACE!r}/{GLOBAL_KEY!r} list in the online store (run the trainer)")
        return rows

    def _hits(
        self,
        lists: Sequence[CachedList],
        names: Sequence[str],
        flt: PayloadFilter,
        engine_flt: PayloadFilter,
        n: int,
        *,
        new: bool,
    ) -> list[SourceHit]:
        """The first `n` passing hits of the merged lists (as `merge_lists` orders them)."""
        reasons = [reason(key, new=new) for key in names]
        extra = NEW_FACTS if new else NO_FACTS  # shared: no dict built per hit
        passing = first_passing(self._index, lists, flt, engine_flt, n, source=NAME)
        return [SourceHit(lists[j].ids[r], lists[j].scores[r], reasons[j], extra) for j, r in passing]
