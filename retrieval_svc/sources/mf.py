"""Matrix factorisation: creators whose ALS factors best match the fan's follows (kindred.mf).

Per request the fan's vector is folded in from its `following` (one k × k solve), the best-scoring
creators are found by `MfModel.top` (exact; it scores the creators in descending order of their
vector's norm and stops once no creator left can enter), and they are checked against the request
filter by the engine (ranked_lists.VerdictCache, like item-to-item's lists): the filter is the engine's
verdict, never re-implemented here. The fan's vector is left in the request's facts under "mf_score"
(a `ScoreLookup`), so the ranker sees every candidate's ALS score, whichever source proposed it. A fan
the model knows none of the follows of (new fan, or only creators newer than the model) gets nothing
from this source, without being degraded: the other sources cover it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from kindred import telemetry_schema as schema
from kindred.mf import MF_SCORE_KEY, FloatArray, MfModel, ScoreLookup, top_rows
from kindred.telemetry import get_tracer
from kindred.vectorstore import VectorIndex
from retrieval_svc.sources import SourceHit, SourceRequest
from retrieval_svc.sources.ranked_lists import VerdictCache

NAME = "mf"
REASON = "fans with tastes like yours follow this creator"
# Ranked ids handed to the filter check beyond n and the fan's follows: most filters pass most ids, and
# a restrictive one gets the whole ranking (one full sort) only when this first window runs dry.
WINDOW_FACTOR = 4


class MfSource:
    def __init__(self, model: MfModel, index: VectorIndex, *, verdicts: VerdictCache | None = None) -> None:
        self._model = model
        self._index = index
        self._verdicts = verdicts if verdicts is not None else VerdictCache()
        self._tracer = get_tracer(__name__)

    @property
    def name(self) -> str:
        return NAME

    def invalidate(self) -> None:
        """Drops cached filter verdicts (after writes to the index)."""
        self._verdicts.invalidate()

    def record_facts(self, request: SourceRequest) -> None:
        """Only the `mf_score` fact (the fan folded in), for a request that switched the source's
        candidates off: the ranker still reads every candidate's score."""
        self._fold_in(request)

    def _fold_in(self, request: SourceRequest) -> tuple[npt.NDArray[np.int64], FloatArray | None]:
        """(the followed creators' rows, the fan's vector or None), the fact left in the request."""
        fan = request.require_fan()
        model = self._model
        seen = model.rows(str(c) for c in fan.get("following") or ())  # fold-in input and exclusions
        vector = model.fold_in_rows(seen)
        if vector is not None and request.facts is not None:
            request.facts[MF_SCORE_KEY] = ScoreLookup(model, vector)
        return seen, vector

    def retrieve(self, request: SourceRequest) -> list[SourceHit]:
        model = self._model
        with self._tracer.start_as_current_span(schema.SPAN_MF_SCORE) as span:
            seen, vector = self._fold_in(request)
            if vector is None:
                span.set_attribute(schema.CANDIDATES, 0)
                return []  # follows nobody the model knows: nothing to fold in, and nothing wrong
            window, window_scores = model.top(vector, WINDOW_FACTOR * request.n + 32, seen)
            span.set_attribute(schema.CANDIDATES, len(window))
        ids = list(map(model.creator_ids.__getitem__, window.tolist()))  # C-level: ~200 rows a request
        keep = self._verdicts.passing(self._index, ids, request.filter, request.n, source=NAME)
        if len(keep) < request.n and len(window) < len(model.creator_ids) - len(seen):
            scores = model.scores(vector)  # a restrictive filter: the whole ranking
            window = top_rows(scores, len(scores), seen)
            window_scores = scores[window]
            ids = [model.creator_ids[r] for r in window.tolist()]
            keep = self._verdicts.passing(self._index, ids, request.filter, request.n, source=NAME)
        return [SourceHit(ids[p], float(window_scores[p]), REASON) for p in keep]


def fan_scores(model: MfModel, following: Iterable[str]) -> FloatArray | None:
    """Every creator's score (C,) for a fan following `following`; None when the model knows none."""
    vector = model.fold_in(following)
    return None if vector is None else model.scores(vector)


def ranked_hits(model: MfModel, scores: FloatArray, n: int, following: Iterable[str]) -> list[SourceHit]:
    """The best `n` hits of a score vector, the followed creators left out: the trainer's view of this
    source, where there is no engine filter to apply."""
    rows = top_rows(scores, n, model.rows(following)).tolist()
    return [SourceHit(model.creator_ids[r], float(scores[r]), REASON) for r in rows]
