"""Social: creators the fan's friends follow or support, the more friends the higher.

Serving path: the trainer precomputes, per fan, the creators the fan's friends follow or support and how
many friends do ("social" namespace: `{fan_id: {"ids": [...], "scores": [...], "friends": [...]}}`, ids
best first, creators the fan already had left out). One store read per request. The alternative — the
fan's friend list, then every friend's fan row — costs a read of ~5-50 large rows per request to gain
freshness up to the next training run; it is the path to take once follows stream into the online store.

Score: n / (n + 1) for n friends (in [0, 1), like the other sources' scores); `scores["social_friends"]`
carries n itself, for the ranker and for the reason ("followed by 3 of your friends").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kindred import telemetry_schema as schema
from kindred.features import SOCIAL_FRIENDS_KEY
from kindred.telemetry import get_tracer
from kindred.vectorstore import VectorIndex
from retrieval_svc.sources import FeatureReader, SourceHit, SourceRequest
from retrieval_svc.sources.ranked_lists import VerdictCache, count_phrase, read_ranked

NAME = "social"
NAMESPACE = "social"
FRIENDS_KEY = SOCIAL_FRIENDS_KEY


def reason(n_friends: int) -> str:
    return "followed by " + count_phrase(n_friends, "a friend of yours", "{n} of your friends")


def hit(item: str, score: float, n_friends: int) -> SourceHit:
    return SourceHit(item, score, reason(n_friends), {FRIENDS_KEY: float(n_friends)})


def hits_from_row(row: Mapping[str, Any] | None) -> list[SourceHit]:
    """The stored row as hits, in its order; a row without friend counts counts one friend each."""
    ranked = read_ranked(row)
    friends = list((row or {}).get("friends") or [])
    if len(friends) != len(ranked):
        friends = [1] * len(ranked)
    return [hit(item, score, int(n)) for (item, score), n in zip(ranked, friends, strict=True)]


class SocialSource:
    def __init__(
        self, store: FeatureReader, index: VectorIndex, *, verdicts: VerdictCache | None = None
    ) -> None:
        """`verdicts`: the engine's filter verdicts, kept across requests (ranked_lists.VerdictCache)."""
        self._store = store
        self._index = index
        self._verdicts = verdicts if verdicts is not None else VerdictCache()
        self._tracer = get_tracer(__name__)

    def invalidate(self) -> None:
        """Drops cached filter verdicts (after writes to the index)."""
        self._verdicts.invalidate()

    @property
    def name(self) -> str:
        return NAME

    def record_facts(self, request: SourceRequest) -> None:
        """Only the friend-count fact, for a request that switched the source's candidates off."""
        self._friends_list(request)

    def _friends_list(self, request: SourceRequest) -> tuple[list[tuple[str, float]], list[Any]]:
        """(the fan's stored list, each entry's friend count), the fact left in the request."""
        request.require_fan()  # social lists are per known fan: a new fan has none
        with self._tracer.start_as_current_span(schema.SPAN_ONLINE_STORE_GET) as span:
            span.set_attribute(schema.ONLINE_STORE_NAMESPACE, NAMESPACE)
            row = self._store.get(NAMESPACE, [request.fan_id])[0]
        # No row: no friends, or friends who follow nobody new to this fan. Nothing wrong, nothing to add.
        ranked = read_ranked(row)
        friends = list((row or {}).get("friends") or [])
        if len(friends) != len(ranked):
            friends = [1] * len(ranked)
        if request.facts is not None:  # every creator the friends follow, for other sources' candidates
            counts = zip(ranked, friends, strict=True)
            request.facts[FRIENDS_KEY] = {item: float(n) for (item, _), n in counts}
        return ranked, friends

    def retrieve(self, request: SourceRequest) -> list[SourceHit]:
        ranked, friends = self._friends_list(request)
        keep = self._verdicts.passing(
            self._index, [i for i, _ in ranked], request.filter, request.n, source=NAME
        )
        return [hit(ranked[p][0], ranked[p][1], int(friends[p])) for p in keep]
