"""Candidate sources: one module each, all behind the `CandidateSource` protocol.

A source proposes items for one fan. It receives the fan's feature row (read once per request by the
retriever), the payload filter to push into the engine (already excluding what the fan knows), and
how many items to return. It raises `SourceSkipped` when it does not apply (a new fan has no
two-tower input) and any other exception when it fails; either way the other sources still answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from kindred.vectorstore import PayloadFilter

FanRow = Mapping[str, Any]
# fact name → {item id: value}: what a source knows about items beyond the ones it returns (item-to-item:
# the summed similarity of every neighbour of the fan's creators; social: every creator the fan's friends
# follow, with how many). The retriever writes each fact into every merged candidate's scores, so the
# ranker sees it whichever source proposed the candidate (kindred.features' `co_engagement`,
# `social_friends`, `mf_score`). A read-only mapping: mf's covers the catalogue without a dict of it, and
# its `get_many` scores the merged candidates in one product (`retriever.annotate` uses it when present).
ItemFacts = dict[str, Mapping[str, float]]


class SourceSkipped(Exception):
    """The source does not apply to this request; the message says why (reported as degraded)."""


class FeatureReader(Protocol):
    """The part of the online store the sources read (kindred.store.online.OnlineStore)."""

    def get(self, namespace: str, keys: Sequence[str]) -> list[dict[str, Any] | None]: ...


@dataclasses.dataclass(frozen=True)
class SourceRequest:
    fan_id: str
    fan: FanRow | None  # the "fan" row from the online store; None for a fan it does not know
    filter: PayloadFilter
    n: int
    now: float | None = None  # request time (epoch s) for time-dependent features; None = the row's as_of
    fan_error: str | None = None  # set when reading the fan row failed (as opposed to: no row)
    # Shared by the sources of one Retrieve: where a source leaves its `ItemFacts` (None: nobody asks).
    facts: ItemFacts | None = None

    def require_fan(self) -> FanRow:
        """The fan row, for sources that only work from a fan's history.

        A failed read is a source failure (degraded); a fan with no row yet is a skip (not degraded).
        """
        if self.fan_error is not None:
            raise RuntimeError(f"fan features unavailable: {self.fan_error}")
        if not self.fan:
            raise SourceSkipped("no features for this fan yet (new fan)")
        return self.fan


# The `extra` of a hit without named facts: one shared empty mapping (never change it; a plain dict, so
# hits still pickle and copy).
NO_FACTS: Mapping[str, float] = {}


class SourceHit(NamedTuple):
    """A NamedTuple, not a frozen dataclass: ~150 are built per Retrieve, and a frozen dataclass's
    __init__ (a setattr per field, a new dict for `extra`) costs twice a tuple's."""

    item_id: str
    score: float  # the source's own score (cosine, popularity, ...): comparable within a source only
    reason: str
    # Named facts behind the hit the ranker and explanations can use, e.g. {"social_friends": 3.0};
    # copied into the candidate's scores next to the source's own score.
    extra: Mapping[str, float] = NO_FACTS


class CandidateSource(Protocol):
    """A named producer of candidates, best first."""

    @property
    def name(self) -> str: ...

    def retrieve(self, request: SourceRequest) -> list[SourceHit]: ...

    def invalidate(self) -> None:
        """Drops whatever the source caches from the index; called after every write to it."""
        ...


@runtime_checkable
class FactRecorder(Protocol):
    """A source whose `ItemFacts` the ranker reads for every candidate (mf, item-to-item, social). When a
    request switches its candidates off (quota 0, by the request or the deployment's shares), the
    retriever still asks it for its facts alone: the ranker was trained with them present, and a fact
    left out reads as 0 ("unknown") for every candidate — a silently different input."""

    def record_facts(self, request: SourceRequest) -> None:
        """Leaves this source's facts in `request.facts`, proposing nothing."""
        ...


__all__ = [
    "NO_FACTS",
    "CandidateSource",
    "FactRecorder",
    "FanRow",
    "FeatureReader",
    "ItemFacts",
    "SourceHit",
    "SourceRequest",
    "SourceSkipped",
]
