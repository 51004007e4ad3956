"""The mf source over a real qdrant-edge index: fold-in scores, the engine's filter, the facts it leaves."""

from __future__ import annotations

import numpy as np
import pytest
from rs_helpers import IndexedCreators, fan_row, tiny_mf

from kindred.mf import MF_SCORE_KEY, MfModel
from kindred.vectorstore import PayloadFilter
from retrieval_svc.sources import ItemFacts, SourceRequest, SourceSkipped
from retrieval_svc.sources.mf import WINDOW_FACTOR, MfSource


def _model(ids: list[str]) -> MfModel:
    return tiny_mf(ids)


def _request(
    fan: dict, flt: PayloadFilter | None = None, n: int = 10, facts: ItemFacts | None = None
) -> SourceRequest:  # type: ignore[type-arg]
    return SourceRequest(
        fan["fan_id"], fan, (flt or PayloadFilter()).excluding(fan["following"]), n, facts=facts
    )


def test_hits_are_the_best_fold_in_scores_that_pass_the_engines_filter(creators: IndexedCreators) -> None:
    model = _model(creators.ids[:100])  # c100-c119 are newer than the model: never proposed
    fan = fan_row("f1", ["c001", "c002", "c017", "c050"])
    flt = PayloadFilter.build(languages=["en", "fr"], categories=["Art", "Music"], exclude_mature=True)
    facts: ItemFacts = {}

    hits = MfSource(model, creators.index).retrieve(_request(fan, flt, n=6, facts=facts))

    vector = model.fold_in(fan["following"])
    assert vector is not None
    scores = model.scores(vector)
    ranked = [model.creator_ids[r] for r in np.argsort(-scores, kind="stable")]
    request = _request(fan, flt)
    expected = creators.passes(ranked, request.filter)[:6]
    assert [h.item_id for h in hits] == expected and len(expected) == 6
    assert not {h.item_id for h in hits} & set(fan["following"])
    assert hits[0].score == pytest.approx(float(scores[model.row_of(expected[0])]))  # type: ignore[index]
    # Every creator's score is left as a fact, not only the hits'; unknown creators read as absent.
    assert facts[MF_SCORE_KEY].get("c099", 0.0) == pytest.approx(float(scores[99]))
    assert facts[MF_SCORE_KEY].get("c110", 0.0) == 0.0
    # Switched off by the request, the source leaves the same fact and proposes nothing.
    only: ItemFacts = {}
    MfSource(model, creators.index).record_facts(_request(fan, flt, n=0, facts=only))
    assert only[MF_SCORE_KEY].get("c099", 0.0) == pytest.approx(float(scores[99]))
    # The filter was the engine's (followed ids are dropped in Python, never asked).
    assert creators.index.fetches and all(
        f == PayloadFilter.build(languages=["en", "fr"], categories=["Art", "Music"], exclude_mature=True)
        for _, f in creators.index.fetches
    )


def test_a_restrictive_filter_reaches_past_the_first_window(creators: IndexedCreators) -> None:
    model = _model(creators.ids)
    fan = fan_row("f1", ["c003"])
    flt = PayloadFilter.build(languages=["de"], categories=["Podcasts"])  # a few percent of the catalogue
    hits = MfSource(model, creators.index).retrieve(_request(fan, flt, n=8))
    request = _request(fan, flt)
    scores = model.scores(model.fold_in(["c003"]))  # type: ignore[arg-type]
    ranked = [model.creator_ids[r] for r in np.argsort(-scores, kind="stable") if r != 3]
    first_window = WINDOW_FACTOR * 8 + 32
    assert len(creators.passes(ranked[:first_window], request.filter)) < 8  # the case under test
    assert [h.item_id for h in hits] == creators.passes(ranked, request.filter)[:8]
    assert len(hits) == 8


def test_new_fans_are_skipped_and_unknown_follows_give_nothing(creators: IndexedCreators) -> None:
    source = MfSource(_model(creators.ids[:100]), creators.index)
    with pytest.raises(SourceSkipped):
        source.retrieve(SourceRequest("new", None, PayloadFilter(), 10))
    assert source.retrieve(_request(fan_row("f2", ["c110", "c111"]))) == []
    with pytest.raises(RuntimeError, match="fan features unavailable"):
        source.retrieve(SourceRequest("f3", None, PayloadFilter(), 10, fan_error="redis down"))
