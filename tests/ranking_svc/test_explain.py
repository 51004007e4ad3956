"""Explanations: reasons derived from the fan's and the creator's rows, strongest first, kept short."""

from __future__ import annotations

from typing import Any

from kindred.data.schema import CATEGORIES
from ranking_svc.domain import ScoredCandidate
from ranking_svc.explain import MAX_FOLLOWING_LOOKUP, ExplainParams, FanProfile, explain, following_to_read

PARAMS = ExplainParams()


def _affinity(**shares: float) -> list[float]:
    return [shares.get(c, 0.0) for c in CATEGORIES]


def _creator(cid: str, category: str, **kw: Any) -> dict[str, Any]:
    return {"creator_id": cid, "category": category, "language": "fr", "popularity": 0.1, **kw}


def _reasons(
    fan_row: dict[str, Any] | None,
    creator: dict[str, Any],
    following_rows: list[dict[str, Any] | None] | None = None,
    candidate: ScoredCandidate | None = None,
    params: ExplainParams = PARAMS,
) -> list[str]:
    c = candidate or ScoredCandidate(creator["creator_id"], "CANDIDATE_SOURCE_TWO_TOWER")
    explain([c], [creator], FanProfile.build(fan_row, following_rows or []), params)
    return c.reasons


def test_follows_per_category_come_from_the_followed_creators_rows() -> None:
    fan = {"following": ["p1", "p2", "m1"], "language": "en"}
    follows = [_creator("p1", "Podcasts"), _creator("p2", "Podcasts"), _creator("m1", "Music")]
    assert _reasons(fan, _creator("x", "Podcasts"), follows)[0] == "you follow 2 creators in Podcasts"
    assert _reasons(fan, _creator("y", "Music"), follows)[0] == "you follow a creator in Music"
    assert _reasons(fan, _creator("z", "Gaming"), follows) == []  # nothing holds: nothing is said


def test_the_same_creator_is_explained_differently_for_different_fans() -> None:
    creator = _creator("x", "Cooking", popularity=0.9, min_price_cents=500.0)
    gamer = {"category_affinity": _affinity(Cooking=0.6, Gaming=0.4), "language": "fr"}
    newcomer = {"interests": ["Cooking"], "onboarding": True}
    payer = {"price_level_cents": 550.0}
    assert _reasons(gamer, creator) == [
        "you often engage with Cooking",
        "popular in Cooking",
        "matches your language",
    ]
    assert _reasons(newcomer, creator) == ["matches your interest in Cooking", "popular in Cooking"]
    assert _reasons(payer, creator) == ["popular in Cooking", "memberships in your usual price range"]
    assert _reasons(payer, _creator("y", "Cooking", min_price_cents=5000.0)) == []  # $50 vs $5.50: no fit


def test_friends_count_from_retrieval_leads_and_retrievals_own_reasons_stay_once() -> None:
    from_retrieval = ["similar to a creator you follow", "followed by 3 of your friends"]
    c = ScoredCandidate(
        "x", "CANDIDATE_SOURCE_SOCIAL", scores={"social_friends": 3.0}, reasons=list(from_retrieval)
    )
    fan = {"category_affinity": _affinity(Music=0.5)}
    reasons = _reasons(fan, _creator("x", "Music"), candidate=c)
    assert reasons == [
        "followed by 3 of your friends",
        "you often engage with Music",
        "similar to a creator you follow",
    ]
    one = ScoredCandidate("y", "CANDIDATE_SOURCE_SOCIAL", scores={"social_friends": 1.0})
    assert _reasons({}, _creator("y", "Music"), candidate=one) == ["followed by a friend of yours"]


def test_history_and_language_and_the_reason_limit() -> None:
    fan = {
        "history": ["x"],
        "following": [],
        "language": "fr",
        "interests": ["Art"],
        "category_affinity": _affinity(Art=0.9),
    }
    creator = _creator("x", "Art", popularity=0.95)
    assert _reasons(fan, creator) == [
        "you often engage with Art",
        "matches your interest in Art",
        "you have engaged with them before",
    ]
    two = _reasons(fan, creator, params=ExplainParams(max_reasons=2))
    assert len(two) == 2
    # A weak share of the fan's engagement is not worth saying.
    weak = {"category_affinity": _affinity(Art=0.1)}
    assert _reasons(weak, _creator("x", "Art")) == []


def test_an_unknown_fan_or_creator_gets_no_invented_reasons() -> None:
    c = ScoredCandidate("x", "CANDIDATE_SOURCE_POPULAR", reasons=["popular on Kindred"])
    explain([c], [None], FanProfile.build(None), PARAMS)
    assert c.reasons == ["popular on Kindred"]


def test_following_lookup_is_bounded() -> None:
    fan = {"following": [f"c{i}" for i in range(500)]}
    assert len(following_to_read(fan)) == MAX_FOLLOWING_LOOKUP
    assert following_to_read(None) == []


def test_category_weights_count_follows_by_category_else_onboarding_interests() -> None:
    rows = [{"category": "Music"}, {"category": "Music"}, {"category": "Art"}, None, {"category": ""}]
    assert FanProfile.build({"following": ["a", "b", "c", "d", "e"]}, rows).category_weights() == {
        "Music": 2.0,
        "Art": 1.0,
    }
    assert FanProfile.build({"interests": ["Podcasts", "Art"]}).category_weights() == {
        "Podcasts": 1.0,
        "Art": 1.0,
    }
    assert FanProfile.build(None).category_weights() == {}
    assert FanProfile.build({"following": ["a"]}, rows[:1]).categories_from_follows
    assert not FanProfile.build({"interests": ["Art"]}).categories_from_follows
