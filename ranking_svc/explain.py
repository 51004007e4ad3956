"""Explanations: the few facts that best say why an item suits this fan, in words.

Built from the same rows and cross features the ranker sees, not from text per item: the fan's
category affinity and followed creators against the creator's category, onboarding interests,
viewing history, price level against the creator's tiers, language, the creator's popularity, and
the social count retrieval's social source puts on a candidate (`scores["social_friends"]`). Each
piece of evidence has a strength; the strongest `max_reasons` become reasons, placed before the
reasons retrieval gave ("similar to <creator> you follow", "popular in Music"), which are kept.

This is not a model attribution (gradients of an MLP per request would cost more than the ranking
itself): it names the features the ranker is known to weigh, whenever they hold for the item.
Cheap by construction: per-fan facts are computed once (`FanProfile`), per item it is a handful of
lookups, and the text is formatted only for the reasons kept.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from kindred.data.schema import CATEGORIES
from kindred.features import fan_language
from ranking_svc.domain import ScoredCandidate

# The fan's followed creators read to count them per category: enough for "you follow N in X".
MAX_FOLLOWING_LOOKUP = 50
SOCIAL_FRIENDS = "social_friends"


@dataclasses.dataclass(frozen=True)
class ExplainParams:
    # Ranker reasons added per item (retrieval's and re-ranking's come on top).
    max_reasons: int = 3
    # Share of the fan's engagement in a category above which "you often engage with X" holds.
    min_affinity: float = 0.2
    # Creator popularity (0..1, log-scaled recent engagement) above which "popular in X" holds.
    min_popularity: float = 0.6
    # |log(1 + fan's price level) - log(1 + creator's lowest tier)| (dollars) within which prices fit.
    price_tolerance: float = 0.4


@dataclasses.dataclass(frozen=True)
class FanProfile:
    """Per-request facts about the fan, computed once for every item explained."""

    following: frozenset[str]
    following_by_category: Mapping[str, int]
    affinity: Mapping[str, float]
    interests: frozenset[str]
    history: frozenset[str]
    language: str
    log_price: float  # log1p of the fan's usual membership price in dollars; 0 when unknown

    @classmethod
    def build(
        cls, fan_row: Mapping[str, Any] | None, following_rows: Sequence[Mapping[str, Any] | None] = ()
    ) -> FanProfile:
        """`following_rows`: "creator" rows of (some of) the creators in the fan row's `following`."""
        row = fan_row or {}
        shares = row.get("category_affinity") or ()
        affinity = (
            {c: float(a) for c, a in zip(CATEGORIES, shares, strict=True) if a}
            if len(shares) == len(CATEGORIES)
            else {}
        )
        price = float(row.get("price_level_cents") or 0.0)
        return cls(
            following=frozenset(str(c) for c in row.get("following") or ()),
            following_by_category=Counter(
                str(r.get("category")) for r in following_rows if r and r.get("category")
            ),
            affinity=affinity,
            interests=frozenset(str(c) for c in row.get("interests") or ()),
            history=frozenset(str(c) for c in row.get("history") or ()),
            language=str(row.get("language") or fan_language(str(row.get("locale") or ""))),
            log_price=math.log1p(price / 100.0) if price > 0 else 0.0,
        )

    def category_weights(self) -> dict[str, float]:
        """How much the fan cares for each category, for calibrated re-ranking: how many of the creators
        it follows (of those read) are in it, else 1 per onboarding interest; empty when neither."""
        if self.following_by_category:
            return {c: float(n) for c, n in self.following_by_category.items()}
        return {c: 1.0 for c in self.interests}

    @property
    def categories_from_follows(self) -> bool:
        """Whether `category_weights` counts follows (else onboarding interests, or nothing)."""
        return bool(self.following_by_category)


def following_to_read(fan_row: Mapping[str, Any] | None) -> list[str]:
    """The followed creators whose rows the profile needs (bounded: this is the hot path)."""
    return [str(c) for c in ((fan_row or {}).get("following") or ())][:MAX_FOLLOWING_LOOKUP]


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many.format(n=n)


def evidence(
    candidate: ScoredCandidate, creator: Mapping[str, Any] | None, fan: FanProfile, params: ExplainParams
) -> list[tuple[float, str]]:
    """(strength, reason) for every fact that holds for this fan and item; strongest is most specific."""
    row = creator or {}
    category = str(row.get("category") or "")
    out: list[tuple[float, str]] = []
    friends = round(candidate.scores.get(SOCIAL_FRIENDS, 0.0))
    if friends > 0:
        out.append(
            (
                1.0 + 0.05 * min(friends, 10),
                _plural(friends, "followed by a friend of yours", "followed by {n} of your friends"),
            )
        )
    if category:
        followed = fan.following_by_category.get(category, 0)
        share = fan.affinity.get(category, 0.0)
        if followed:
            out.append(
                (
                    0.8 + 0.05 * min(followed, 4),
                    _plural(
                        followed,
                        f"you follow a creator in {category}",
                        f"you follow {{n}} creators in {category}",
                    ),
                )
            )
        elif share >= params.min_affinity:
            out.append((0.5 + 0.5 * share, f"you often engage with {category}"))
        if category in fan.interests:
            out.append((0.7, f"matches your interest in {category}"))
    if candidate.item_id in fan.history and candidate.item_id not in fan.following:
        out.append((0.6, "you have engaged with them before"))
    popularity = float(row.get("popularity") or 0.0)
    if category and popularity >= params.min_popularity:
        out.append((0.3 + 0.2 * popularity, f"popular in {category}"))
    price = float(row.get("min_price_cents") or 0.0)
    if (
        fan.log_price > 0
        and price > 0
        and abs(fan.log_price - math.log1p(price / 100.0)) <= params.price_tolerance
    ):
        out.append((0.35, "memberships in your usual price range"))
    language = str(row.get("language") or "")
    if fan.language and language == fan.language:
        out.append((0.2, "matches your language"))
    return out


def explain(
    candidates: Sequence[ScoredCandidate],
    creator_rows: Sequence[Mapping[str, Any] | None],
    fan: FanProfile,
    params: ExplainParams,
) -> None:
    """Puts each candidate's strongest reasons first; the reasons it had stay, after them, once."""
    for candidate, row in zip(candidates, creator_rows, strict=True):
        found = evidence(candidate, row, fan, params)
        if not found:
            continue
        found.sort(key=lambda e: -e[0])  # stable: equal strengths keep the order written above
        # A reason retrieval already gave (same words) moves up rather than appearing twice.
        mine = list(dict.fromkeys(text for _, text in found))[: params.max_reasons]
        candidate.reasons[:] = mine + [r for r in candidate.reasons if r not in mine]
