"""Shared by the list-based sources (item-to-item, social, trending): read ranked id lists, filter them
inside the vector engine, interleave them.

The trainer writes these lists to the online store as `{"ids": [...], "scores": [...]}`; they carry no
payloads. The request filter's payload clauses (languages, categories, maturity) are applied by asking
the vector index which listed ids pass them (`VectorIndex.fetch(ids, filter)`), so every source,
list-based or ANN, has the one filter semantics the engine implements, and an id missing from the served
index (a creator deleted since training) drops out the same way. Excluded and already-followed ids are
per fan: they are dropped in Python, which lets the engine's verdicts be shared by every fan.

`ListCache` keeps stored lists that change only when the trainer runs (trending, popular) together with
the engine's verdict on a prefix of each, per (list key, filter without the per-fan excluded ids), so a
request merges cached lists and asks the engine only about ids no earlier request needed. Lists that are
per fan (item-to-item, social) share `VerdictCache`: the engine's verdict per id and filter, so a request
asks the engine only about ids no earlier request (of any fan) did.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from kindred import telemetry_schema as schema
from kindred.telemetry import get_tracer
from kindred.vectorstore import PayloadFilter, VectorIndex
from retrieval_svc.sources import SourceHit

# Ids checked against the filter per engine call: one call usually suffices, and stays ~1 ms.
CHUNK = 256
CACHE_ENTRIES = 1024


def ranked_columns(row: Mapping[str, Any] | None) -> tuple[Sequence[Any], Sequence[Any]]:
    """The ids and scores of one stored list as stored (best first, not yet coerced); a list without
    usable scores ranks 1, 1/2, ... For loops that consume the pairs at once (`read_ranked` builds them)."""
    if not row:
        return (), ()
    ids = row.get("ids") or []
    scores = row.get("scores") or []
    if len(scores) != len(ids):
        scores = [1.0 / (r + 1) for r in range(len(ids))]
    return ids, scores


def read_ranked(row: Mapping[str, Any] | None) -> list[tuple[str, float]]:
    """(id, score) pairs of one stored list, best first; a list without usable scores ranks 1, 1/2, ..."""
    ids, scores = ranked_columns(row)
    return [(str(i), float(s)) for i, s in zip(ids, scores, strict=True)]


class VerdictCache:
    """The engine's verdict on single ids — in the served index and passing the filter — per engine filter
    (the request filter without its excluded ids), kept for `ttl_s`.

    For sources whose lists are per fan (item-to-item, social): the lists differ, but they are drawn from
    one catalogue, and whether a creator passes "language es, no mature content" does not depend on the
    fan. So after a few requests most ids already have a verdict and a request asks the engine only about
    the ids no earlier request did; the fan's excluded ids are dropped in Python. Staleness: the index
    changes only by the service's own writes (`invalidate()` after each, as for `ListCache`) or by a new
    version (a new serving bundle builds new sources, hence new caches); `ttl_s` bounds anything else.
    Memory: at most `max_filters` filters of at most `max_ids` verdicts each (a full one starts over).
    """

    def __init__(
        self,
        ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_filters: int = 64,
        max_ids: int = 250_000,
    ) -> None:
        self._ttl = ttl_s
        self._clock = clock
        self._max_filters = max_filters
        self._max_ids = max_ids
        self._entries: dict[PayloadFilter, tuple[float, dict[str, bool]]] = {}
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        with self._lock:
            self._entries.clear()

    def _verdicts(self, engine_flt: PayloadFilter) -> dict[str, bool]:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(engine_flt)
            if entry is None or now - entry[0] > self._ttl or len(entry[1]) > self._max_ids:
                if entry is None and len(self._entries) >= self._max_filters:
                    self._entries.clear()
                entry = (now, {})
                self._entries[engine_flt] = entry
            return entry[1]

    def passing(
        self, index: VectorIndex, ids: Sequence[str], flt: PayloadFilter, n: int, *, source: str
    ) -> list[int]:
        """Positions in `ids` (distinct, best first) of the first `n` that pass `flt`, in order."""
        out: list[int] = []
        if n <= 0 or not ids:
            return out
        excluded = flt.exclude_ids
        engine_flt = dataclasses.replace(flt, exclude_ids=frozenset()) if excluded else flt
        verdicts = self._verdicts(engine_flt)
        start = 0
        while len(out) < n and start < len(ids):
            # A window a little larger than what is still missing: most ids pass an ordinary filter.
            window = ids[start : start + min(CHUNK, max(2 * (n - len(out)), 32))]
            unknown = [i for i in window if i not in verdicts and i not in excluded]
            if unknown:
                with get_tracer(__name__).start_as_current_span(schema.SPAN_QDRANT_QUERY) as span:
                    span.set_attribute(schema.SOURCE, source)
                    span.set_attribute(schema.CANDIDATES, len(unknown))
                    ok = {p.point_id for p in index.fetch(unknown, engine_flt, with_payload=False)}
                verdicts.update((i, i in ok) for i in unknown)
            for offset, item in enumerate(window):
                if item not in excluded and verdicts.get(item, False):
                    out.append(start + offset)
                    if len(out) >= n:
                        break
            start += len(window)
        return out


def interleave(lists: Iterable[Sequence[SourceHit]]) -> Iterator[SourceHit]:
    """Round-robin over `lists` (each contributes its best first), without repeating an id."""
    pending = [list(x) for x in lists]
    seen: set[str] = set()
    for rank in range(max((len(x) for x in pending), default=0)):
        for hits in pending:
            if rank < len(hits) and hits[rank].item_id not in seen:
                seen.add(hits[rank].item_id)
                yield hits[rank]


def count_phrase(n: int, one: str, many: str) -> str:
    """ "a friend of yours" / "3 of your friends": reasons read as sentences, not templates."""
    return one if n == 1 else many.format(n=n)


@dataclasses.dataclass
class CachedList:
    """One stored list (`None` row: empty) with the engine's verdict on a prefix of it, for one filter."""

    created: float
    present: bool  # the store had a row for the key
    ids: list[str]
    scores: list[float]
    # (how many of `ids` were checked, those of them that passed): replaced whole, as threads share it.
    verdict: tuple[int, frozenset[str]] = (0, frozenset())


class ListCache:
    """Stored ranked lists with their engine-filtered prefixes, per (list key, engine filter), for `ttl_s`.

    The engine filter is the request filter without `exclude_ids` (history, request exclusions): those
    are per fan, and `first_passing` drops them in Python, so fans with other interests or histories
    share the entries. `invalidate()` drops everything (call it after index writes).
    """

    def __init__(
        self, ttl_s: float, clock: Callable[[], float] = time.monotonic, max_entries: int = CACHE_ENTRIES
    ) -> None:
        self._ttl = ttl_s
        self._clock = clock
        self._max = max_entries
        self._entries: dict[tuple[str, PayloadFilter], CachedList] = {}
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        with self._lock:
            self._entries.clear()

    def lists(
        self,
        keys: Sequence[str],
        flt: PayloadFilter,
        read: Callable[[list[str]], Sequence[Mapping[str, Any] | None]],
        parse: Callable[[Mapping[str, Any] | None], list[tuple[str, float]]],
    ) -> list[CachedList]:
        """The entries of `keys` for the engine filter `flt`; `read(missing keys)` fetches rows (one call)
        for the absent or expired ones, and may raise, leaving the cache as it was."""
        now = self._clock()
        with self._lock:
            found = {k: self._entries.get((k, flt)) for k in keys}
        fresh = {k: e for k, e in found.items() if e is not None and now - e.created <= self._ttl}
        missing = [k for k in dict.fromkeys(keys) if k not in fresh]
        if missing:
            rows = read(missing)
            added = {}
            for key, row in zip(missing, rows, strict=True):
                pairs = parse(row)
                added[key] = CachedList(now, row is not None, [i for i, _ in pairs], [s for _, s in pairs])
            fresh.update(added)
            with self._lock:
                if len(self._entries) + len(added) > self._max:
                    self._entries.clear()
                self._entries.update({(k, flt): e for k, e in added.items()})
        return [fresh[k] for k in keys]


def first_passing(
    index: VectorIndex,
    lists: Sequence[CachedList],
    flt: PayloadFilter,
    engine_flt: PayloadFilter,
    n: int,
    *,
    source: str,
) -> list[tuple[int, int]]:
    """(list number, rank) of the first `n` ids passing `flt`, in merged order: the lists but the last
    interleaved (each gets its top slots), then the last one; an id counts at its first place only.

    `engine_flt` is `flt` without its excluded ids; the lists cache the engine's verdict on it, this
    extends a list's checked prefix only when the merge reaches past it, and drops `flt.exclude_ids`.
    """
    out: list[tuple[int, int]] = []
    if n <= 0:
        return out
    seen: set[str] = set()
    excluded = flt.exclude_ids
    for j, rank in _merged_order(lists):
        entry = lists[j]
        item = entry.ids[rank]
        if item in seen:
            continue
        seen.add(item)
        if item in excluded:
            continue
        checked, ok = entry.verdict
        if rank >= checked:
            _check(index, entry, engine_flt, min(CHUNK, max(2 * (n - len(out)), 32)), source)
            checked, ok = entry.verdict
        if item in ok:
            out.append((j, rank))
            if len(out) >= n:
                break
    return out


def _merged_order(lists: Sequence[CachedList]) -> Iterator[tuple[int, int]]:
    specific = lists[:-1]
    for rank in range(max((len(x.ids) for x in specific), default=0)):
        for j, entry in enumerate(specific):
            if rank < len(entry.ids):
                yield j, rank
    last = len(lists) - 1
    for rank in range(len(lists[last].ids)):
        yield last, rank


def _check(index: VectorIndex, entry: CachedList, flt: PayloadFilter, size: int, source: str) -> None:
    """Asks the engine about the next `size` unchecked ids of `entry`."""
    checked, ok = entry.verdict
    chunk = entry.ids[checked : checked + size]
    with get_tracer(__name__).start_as_current_span(schema.SPAN_QDRANT_QUERY) as span:
        span.set_attribute(schema.SOURCE, source)
        span.set_attribute(schema.CANDIDATES, len(chunk))
        passed = {p.point_id for p in index.fetch(chunk, flt, with_payload=False)}  # ids are the verdict
    current = entry.verdict
    if current[0] == checked:
        entry.verdict = (checked + len(chunk), ok | passed)
    elif current[0] < checked + len(chunk):  # another thread checked a shorter prefix meanwhile
        entry.verdict = (checked + len(chunk), ok | passed | current[1])
