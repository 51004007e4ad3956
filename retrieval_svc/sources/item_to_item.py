"""Item-to-item: creators whose audiences overlap with the creators the fan follows or supports.

The trainer computes each creator's top co-engagement neighbours (shrunk cosine over the fan × creator
follow/membership matrix, see trainer.candidates) into the online store namespace "creator_neighbors":
`{creator_id: {"ids": [...], "scores": [...]}}`. At serving time the neighbour lists of the fan's
`following` (its strongest engagements first, at most `max_seeds`) are read in one batch and summed: a
creator similar to several of the fan's creators rises. The request filter is applied by the engine
(see ranked_lists), and the seeds themselves are already excluded by it (the fan follows them).

Score: the summed similarity `s` squashed to s / (1 + s) in [0, 1), the range of the other sources'
scores the ranker was trained with; `scores["item_to_item_seeds"]` says how many of the fan's creators
led to the candidate, which the reason puts in words. The engine's filter verdicts are cached across
requests (`ranked_lists.VerdictCache`): neighbour lists differ per fan, the catalogue they come from does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kindred import telemetry_schema as schema
from kindred.features import CO_ENGAGEMENT_KEY
from kindred.telemetry import get_tracer
from kindred.vectorstore import VectorIndex
from retrieval_svc.sources import FanRow, FeatureReader, SourceHit, SourceRequest
from retrieval_svc.sources.ranked_lists import VerdictCache, count_phrase, ranked_columns

NAME = "item_to_item"
NAMESPACE = "creator_neighbors"
SEEDS_KEY = "item_to_item_seeds"
# Seeds read per request: one batched store read of this many rows; past ~50 the sum barely moves.
MAX_SEEDS = 50


def seeds_of(fan: FanRow, max_seeds: int = MAX_SEEDS) -> list[str]:
    """The creators the fan follows or supports, strongest engagement first (the fan row's history
    order), then the rest of `following` in its own order."""
    following = [str(c) for c in fan.get("following") or ()]
    followed = set(following)
    history = [str(c) for c in fan.get("history") or () if str(c) in followed]
    return list(dict.fromkeys([*history, *following]))[:max_seeds]


def reason(n_seeds: int) -> str:
    return "similar to " + count_phrase(n_seeds, "a creator you follow", "{n} creators you follow")


def summed_neighbours(
    seeds: Sequence[str], rows: Sequence[Mapping[str, Any] | None]
) -> tuple[list[str], dict[str, float], dict[str, int]]:
    """Neighbours of `seeds` (their stored rows, in the same order) best first (seeds excluded), with
    each one's summed similarity and how many seeds led to it."""
    total: dict[str, float] = {}
    count: dict[str, int] = {}
    exclude = set(seeds)
    # ~50 rows of ~10-50 neighbours per request: the columns, not `read_ranked`'s list of pairs per row.
    for row in rows:
        ids, scores = ranked_columns(row)
        for raw, raw_sim in zip(ids, scores, strict=True):
            item, sim = str(raw), float(raw_sim)
            if item in exclude:
                continue
            total[item] = total.get(item, 0.0) + sim
            count[item] = count.get(item, 0) + 1
    # Best first, ties by id: sorted by id, then a stable sort by sum (a C key: no Python call per id).
    ranked = sorted(total)
    ranked.sort(key=total.__getitem__, reverse=True)
    return ranked, total, count


def hit(item: str, total: float, count: int) -> SourceHit:
    return SourceHit(item, total / (1.0 + total), reason(count), {SEEDS_KEY: float(count)})


def aggregate(seeds: Sequence[str], rows: Sequence[Mapping[str, Any] | None]) -> list[SourceHit]:
    """Neighbours of `seeds` (their stored rows, in the same order), summed, best first; seeds excluded."""
    ranked, total, count = summed_neighbours(seeds, rows)
    return [hit(i, total[i], count[i]) for i in ranked]


class ItemToItemSource:
    def __init__(
        self,
        store: FeatureReader,
        index: VectorIndex,
        *,
        max_seeds: int = MAX_SEEDS,
        verdicts: VerdictCache | None = None,
    ) -> None:
        """`verdicts`: the engine's filter verdicts, kept across requests (ranked_lists.VerdictCache)."""
        self._store = store
        self._index = index
        self._max_seeds = max_seeds
        self._verdicts = verdicts if verdicts is not None else VerdictCache()
        self._tracer = get_tracer(__name__)

    def invalidate(self) -> None:
        """Drops cached filter verdicts (after writes to the index)."""
        self._verdicts.invalidate()

    @property
    def name(self) -> str:
        return NAME

    def record_facts(self, request: SourceRequest) -> None:
        """Only the co-engagement fact, for a request that switched the source's candidates off."""
        self._neighbours(request)

    def _neighbours(self, request: SourceRequest) -> tuple[list[str], dict[str, float], dict[str, int]]:
        """`summed_neighbours` of the fan's seeds, the fact left in the request."""
        fan = request.require_fan()
        seeds = seeds_of(fan, self._max_seeds)
        if not seeds:
            return [], {}, {}  # follows nobody yet: nothing to be similar to, and nothing wrong
        with self._tracer.start_as_current_span(schema.SPAN_ONLINE_STORE_GET) as span:
            span.set_attribute(schema.ONLINE_STORE_NAMESPACE, NAMESPACE)
            rows = self._store.get(NAMESPACE, seeds)
        ranked, total, count = summed_neighbours(seeds, rows)
        if request.facts is not None:  # every neighbour's sum, for candidates other sources propose
            request.facts[CO_ENGAGEMENT_KEY] = total
        return ranked, total, count

    def retrieve(self, request: SourceRequest) -> list[SourceHit]:
        ranked, total, count = self._neighbours(request)
        if not ranked:
            return []
        # Hits (with their reason text) only for what is returned: the sum can run to thousands of ids.
        keep = self._verdicts.passing(self._index, ranked, request.filter, request.n, source=NAME)
        return [hit(ranked[p], total[ranked[p]], count[ranked[p]]) for p in keep]
