"""A search: validate the query, encode it, one fused engine call, then each retriever's own score.

Two fusions, one per what the deployment has:

- Engine RRF (default): up to three prefetches over the same filter — dense (MiniLM cosine, at least
  `dense_min_score`), bm25 (the query's distinct terms, IDF from the engine) and name (trigram
  similarity to creator names, at least `name_min_score`; creators only) — fused by weighted RRF in the
  engine. Then one batched engine call re-scores just the returned ids with each retriever, so every
  hit carries `dense`, `bm25` and `name` scores beside the fused one.
- Learned (when the trainer promoted a `text_query_encoder`, see trainer.search_tuning): the query is
  also encoded by the fine-tuned query encoder, the engine runs the retrievers as one batch (dense,
  dense_tuned, bm25, name — same filters and thresholds) and kindred.text.fusion's model, tuned on the
  fans' search clicks, fuses the lists (a `name` term is added if the model has none, so typo-tolerant
  name matching stays on). A model that rescores the union (e.g. the lambdarank kind) gets one more
  batched call re-scoring every candidate with every retriever (as the RRF path's stage scores) first;
  a ranker that reads document evidence (kindred.text.fusion.DOC_FEATURES) gets, in that same call,
  each candidate's title BM25 and query-term coverage from the index's `bm25_title` / `terms` vectors,
  and its length from the payload; one that reads encoded evidence (ENCODED_DOC_FEATURES), from an
  index that stores it, each candidate's title cosine (`title` vector) and best / mean-of-two-best
  sentence cosines (the `sentences` multivector's MaxSim, and the stored sentences returned with it) to
  the base query vector.

Either way an item a retriever did not find gets no score for it, and every hit has reasons in words.

With `SearchParams.bm25_common_share` and an index that kept its term stats, BM25 finds its candidates
without the query's common terms and scores them with every term (a nested prefetch; kindred.text.
common_terms), in both paths. Equal fused scores of the engine's RRF come back in item-id order
(`settle_ties`): the engine alone orders them differently from call to call.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
import unicodedata
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import qdrant_edge as qe

from kindred import telemetry_schema as schema
from kindred.errors import InvalidArgument, validate_count
from kindred.telemetry import get_tracer
from kindred.text.common_terms import candidate_terms
from kindred.text.encoder import l2_normalize
from kindred.text.fusion import (
    COVERAGE,
    DOC_FEATURES,
    DOC_LEN,
    ENCODED_DOC_FEATURES,
    SENT_MAX,
    SENT_TOP2,
    TITLE_BM25,
    TITLE_DENSE,
    FusionModel,
    FusionTerm,
    sentence_evidence,
)
from kindred.text.names import name_vector
from kindred.text.tokenize import Bm25, SparseTerms
from kindred.vectorstore.base import ITEM_ID_KEY, point_uuid
from retrieval_svc.search.index import (
    BM25,
    DENSE,
    DOC_LEN_KEY,
    NAME,
    SENTENCES,
    TERMS,
    TITLE_VEC,
    Hit,
    SearchFilter,
    SearchIndex,
    dense_search_params,
    sparse_query,
)
from retrieval_svc.search.params import SearchParams

MAX_QUERY_CHARS: Final = 512
MAX_K: Final = 200
DEFAULT_K: Final = 10
_WHITESPACE_CONTROLS: Final = frozenset("\t\n\r\x0b\x0c")

tracer = get_tracer(__name__)
log = logging.getLogger(__name__)


class QueryEncoder(Protocol):
    """What search needs of kindred.text.encoder.TextEncoder."""

    version: str
    dim: int

    def encode(self, texts: Any, *, batch_size: int = ...) -> npt.NDArray[np.float32]: ...


def validate_query(query: str) -> str:
    """The query, stripped; INVALID_ARGUMENT naming `query` if it is empty, too long or not text."""
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidArgument("query", f"is {len(query)} characters long; at most {MAX_QUERY_CHARS}")
    text = query.strip()
    if not text:
        raise InvalidArgument("query", "is empty")
    if any(
        unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn") and c not in _WHITESPACE_CONTROLS for c in text
    ):
        raise InvalidArgument("query", "contains control or unassigned characters; send plain text")
    if not any(unicodedata.category(c)[0] in "LN" for c in text):
        raise InvalidArgument("query", "has no letters or digits to search for")
    return text


def validate_k(k: int) -> int:
    return validate_count(k, MAX_K, default=DEFAULT_K)


@dataclasses.dataclass(frozen=True)
class SearchHit:
    item_id: str
    kind: str
    scores: dict[str, float]  # "fused", plus "dense" / "bm25" / "name" for the retrievers that found it
    payload: dict[str, Any]
    reasons: list[str]


@dataclasses.dataclass(frozen=True)
class SearchOutcome:
    hits: list[SearchHit]
    encoder_version: str
    encode_ms: float
    engine_ms: float


DENSE_TUNED = "dense_tuned"
# Rescoring queries scored exactly (no graph): the dense ones and the encoded evidence (whose vectors
# have no graph at all).
_EXACT: Final = frozenset({DENSE, DENSE_TUNED, TITLE_DENSE, SENT_MAX})


@dataclasses.dataclass(frozen=True)
class QuerySide:
    """A fine-tuned query encoder (same document space as the index) and the fusion tuned with it."""

    encoder: QueryEncoder
    fusion: FusionModel


class HybridSearcher:
    def __init__(
        self,
        index: SearchIndex,
        encoder: QueryEncoder,
        params: SearchParams | None = None,
        *,
        query_side: QuerySide | None = None,
    ) -> None:
        for enc in (encoder, *([query_side.encoder] if query_side else [])):
            if enc.dim != index.dim:
                raise ValueError(f"encoder yields {enc.dim}-d vectors, the search index holds {index.dim}-d")
        self.index = index
        self.encoder = encoder
        self.params = params or SearchParams()
        self.query_side = query_side
        share, stats = self.params.bm25_common_share, index.term_stats
        # Terms too common to look BM25 candidates up by (kindred.text.common_terms); fixed for the
        # searcher's life, as its params and the index's stats are.
        self.common_terms = stats.common(share) if share is not None and stats is not None else frozenset()
        self.fusion: FusionModel | None = None
        if query_side is not None:
            self.fusion = query_side.fusion
            _warn_missing_evidence(index, query_side.fusion)
            if NAME not in query_side.fusion.retrievers and self.params.weight(NAME) > 0:
                # Clicks rarely teach a name term (few typos in training logs): keep name matching on.
                self.fusion = self.fusion.with_term(
                    FusionTerm(NAME, "minmax", self.params.learned_name_weight)
                )

    @functools.cached_property
    def version(self) -> str:
        """The query-side model(s): the base encoder ("-int8" when its int8 quantisation encodes the
        queries), plus the tuned query encoder if one serves. Fixed for a searcher's life: computed once."""
        quantized = (getattr(self.encoder, "manifest", None) or {}).get("quantization")
        base = self.encoder.version + ("-int8" if quantized else "")
        if self.query_side is None:
            return base
        return f"{base}+{self.query_side.encoder.version}"

    def search(self, query: str, k: int, flt: SearchFilter | None = None) -> SearchOutcome:
        text = validate_query(query)
        k = validate_k(k)
        flt = flt or SearchFilter()
        with tracer.start_as_current_span(schema.SPAN_SEARCH) as span:
            span.set_attribute(schema.MODEL_VERSION, self.version)
            t0 = time.perf_counter()
            dense = self._encode(self.encoder, text, "text_encoder")
            tuned = (
                self._encode(self.query_side.encoder, text, "text_query_encoder") if self.query_side else None
            )
            t1 = time.perf_counter()
            terms = self.index.bm25.query_terms(text)  # tokenized once: every BM25 query below reads them
            bm25 = Bm25.query_from_terms(terms)
            queries = self._queries(text, bm25, dense, flt)
            narrowed, dropped = self._candidate_queries(terms, queries)
            if dropped:
                span.set_attribute(schema.SEARCH_COMMON_TERMS_DROPPED, dropped)
            with tracer.start_as_current_span(schema.SPAN_QDRANT_QUERY):
                if tuned is None:
                    fused = self._fused(queries, narrowed, flt, k)
                    stage = self._stage_scores(queries, [h.item_id for h in fused])
                else:
                    queries[DENSE_TUNED] = (qe.Query.Nearest(tuned, using=DENSE), *queries[DENSE][1:])
                    fused, stage = self._learned(
                        text, bm25, dense, queries, narrowed, k, acorn=flt.needs_acorn
                    )
            t2 = time.perf_counter()
            span.set_attribute(schema.CANDIDATES, len(fused))
        hits = [self._hit(h, stage) for h in fused]
        return SearchOutcome(hits, self.version, (t1 - t0) * 1e3, (t2 - t1) * 1e3)

    def _encode(self, encoder: QueryEncoder, text: str, name: str) -> list[float]:
        with tracer.start_as_current_span(schema.SPAN_ONNX_RUN) as span:
            span.set_attribute(schema.MODEL_NAME, name)
            return [float(x) for x in encoder.encode([text])[0]]

    def _evidence_queries(
        self, text: str, bm25: SparseTerms, dense: list[float]
    ) -> dict[str, tuple[Any, Any, float | None]]:
        """Rescoring queries for the document evidence the fusion reads and the index stores
        (kindred.text.fusion.DOC_FEATURES, ENCODED_DOC_FEATURES); none for what the index lacks. The
        encoded evidence is scored with the base query vector `dense` (what the documents' parts were
        encoded against); the sentences query is keyed SENT_MAX (its score), SENT_TOP2 comes from it."""
        assert self.fusion is not None
        wanted = set(self.fusion.retrievers)
        out: dict[str, tuple[Any, Any, float | None]] = {}
        if self.index.encoded_evidence:
            if TITLE_DENSE in wanted:
                out[TITLE_DENSE] = (qe.Query.Nearest(dense, using=TITLE_VEC), None, None)
            if wanted & {SENT_MAX, SENT_TOP2}:
                out[SENT_MAX] = (qe.Query.Nearest([dense], using=SENTENCES), None, None)
        if not self.index.doc_evidence or not wanted & {TITLE_BM25, COVERAGE}:
            return out
        if TITLE_BM25 in wanted:
            title = self.index.title_bm25.query(text)
            if len(title):
                out[TITLE_BM25] = (qe.Query.Nearest(sparse_query(title), using=TITLE_BM25), None, None)
        if COVERAGE in wanted and len(bm25):
            share = SparseTerms(bm25.indices, (1.0 / len(bm25),) * len(bm25))
            out[COVERAGE] = (qe.Query.Nearest(sparse_query(share), using=TERMS), None, None)
        return out

    def _learned(
        self,
        text: str,
        bm25: SparseTerms,
        dense: list[float],
        queries: dict[str, tuple[Any, Any, float | None]],
        narrowed: dict[str, Any],
        k: int,
        *,
        acorn: bool = False,
    ) -> tuple[list[Hit], dict[str, dict[str, float]]]:
        """Every retriever's list in one engine batch, fused by the learned model. A retriever in
        `narrowed` finds its candidates by that query and scores them with its own (`_candidate_queries`)."""
        assert self.fusion is not None
        p = self.params
        depth = max(p.depth, k)
        names = list(queries)
        requests = [
            qe.QueryRequest(
                limit=depth,
                query=q,
                prefetches=candidate_prefetch(narrowed, r, f, depth),
                filter=None if r in narrowed else f,  # the candidate prefetch applied it
                score_threshold=th,
                params=dense_search_params(max(p.hnsw_ef, depth), acorn=acorn)
                if r in (DENSE, DENSE_TUNED)
                else None,
                with_payload=True,
            )
            for r, (q, f, th) in queries.items()
        ]
        lists = dict(zip(names, self.index.query_batch(requests), strict=True))
        by_id = {h.item_id: h for hits in lists.values() for h in hits}
        stage = {r: {h.item_id: h.score for h in hits} for r, hits in lists.items()}
        if self.fusion.rescore and by_id:
            # Union rescoring: one more batched engine call gives every candidate each retriever's real
            # score (what the fusion was fitted on), instead of "below that list's last hit" — and, for
            # a ranker that reads document evidence, its title BM25, term coverage, title and sentence
            # cosines in the same batch.
            evidence = self._evidence_queries(text, bm25, dense)
            stage = self._stage_scores({**queries, **evidence}, sorted(by_id), dense=dense)
            for name in ENCODED_DOC_FEATURES:  # the sentences query gives both: keep what is read
                if name not in self.fusion.retrievers:
                    stage.pop(name, None)
            if DOC_LEN in self.fusion.retrievers:
                stage[DOC_LEN] = {
                    i: math.log1p(float(h.payload[DOC_LEN_KEY]))
                    for i, h in by_id.items()
                    if isinstance(h.payload.get(DOC_LEN_KEY), int | float)
                }
        fused = self.fusion.fuse(
            {r: [(h.item_id, h.score) for h in hits] for r, hits in lists.items()},
            limit=k,
            rescored=stage if self.fusion.rescore else None,
        )
        return [Hit(f.doc_id, f.score, by_id[f.doc_id].payload) for f in fused], stage

    # -- the engine requests -----------------------------------------------------------------------

    def _queries(
        self, text: str, bm25: SparseTerms, dense: list[float], flt: SearchFilter
    ) -> dict[str, tuple[Any, Any, float | None]]:
        """retriever → (engine query, engine filter, score threshold), for the retrievers that apply;
        `bm25` is the BM25 query of `text` (`Bm25.query`)."""
        p = self.params
        base = flt.to_engine()
        out: dict[str, tuple[Any, Any, float | None]] = {
            DENSE: (qe.Query.Nearest(dense, using=DENSE), base, p.dense_min_score)
        }
        if len(bm25):
            out[BM25] = (qe.Query.Nearest(sparse_query(bm25), using=BM25), base, None)
        grams = name_vector(text)
        if len(grams) and (not flt.kinds or "creator" in flt.kinds):
            # Only creators carry a name vector (documents.py), so the sparse index holds no post for
            # this query to skip: a kind=creator clause would only cost engine time (~0.27 ms at 1.1M
            # points, bench_search_latency's profile) for the same results.
            out[NAME] = (qe.Query.Nearest(sparse_query(grams), using=NAME), base, p.name_min_score)
        return {r: q for r, q in out.items() if self.params.weight(r) > 0 or r == DENSE}

    def _candidate_queries(
        self, terms: list[str], queries: dict[str, tuple[Any, Any, float | None]]
    ) -> tuple[dict[str, Any], int]:
        """(retriever → the query that finds its candidates where it is not the retriever's own, how many
        terms that left out). So far one: BM25 without the common terms (`SearchParams.
        bm25_common_share`), when the query holds one and a rarer term. The engine scores those
        candidates with every term (a nested prefetch), so BM25 scores stay exact and only the candidate
        set can differ (kindred.text.common_terms)."""
        if BM25 not in queries or not self.common_terms:
            return {}, 0
        kept = candidate_terms(terms, self.common_terms)
        if len(kept) == len(terms):
            return {}, 0
        cut = sparse_query(Bm25.query_from_terms(kept))
        return {BM25: qe.Query.Nearest(cut, using=BM25)}, len(terms) - len(kept)

    def _fused(
        self,
        queries: dict[str, tuple[Any, Any, float | None]],
        narrowed: dict[str, Any],
        flt: SearchFilter,
        k: int,
    ) -> list[Hit]:
        p = self.params
        depth = max(p.depth, k)
        search = dense_search_params(max(p.hnsw_ef, depth), acorn=flt.needs_acorn)
        prefetches = [
            qe.Prefetch(
                limit=depth,
                query=q,
                prefetches=candidate_prefetch(narrowed, r, f, depth),
                filter=None if r in narrowed else f,  # the candidate prefetch applied it
                score_threshold=th,
                params=search if r == DENSE else None,
            )
            for r, (q, f, th) in queries.items()
        ]
        fusion = qe.Fusion.Rrf(p.rrf_k, weights=[p.weight(r) for r in queries])
        # The engine fuses at most every prefetch's candidates: asking for more finds no new tie.
        most = depth * len(prefetches)
        limit = k + TIE_MARGIN
        while True:
            request = qe.QueryRequest(
                limit=limit,
                prefetches=prefetches,
                query=fusion,  # type: ignore[arg-type]  # stub lacks nested classes
                with_payload=True,
            )
            hits = self.index.query(request)
            if not tie_runs_past(hits, k, limit) or limit >= most:
                return settle_ties(hits, k)
            limit *= 2

    def _stage_scores(
        self,
        queries: dict[str, tuple[Any, Any, float | None]],
        ids: list[str],
        *,
        dense: list[float] | None = None,
    ) -> dict[str, dict[str, float]]:
        """Each query's scores of exactly `ids` (HasId filter), one batched engine call. A SENT_MAX query
        (`_evidence_queries`) also returns the candidates' sentence vectors if the fusion reads SENT_TOP2,
        which is read from them with the base query vector `dense` (turning the returned vectors into
        arrays, not the engine, is the cost: ~80 ms for 300 candidates of 10 384-d sentences each, vs ~3
        ms of engine time, measured on random vectors)."""
        if not ids:
            return {}
        top2 = SENT_MAX in queries and self.fusion is not None and SENT_TOP2 in self.fusion.retrievers
        only = qe.HasIdCondition({point_uuid(i) for i in ids})
        names = list(queries)
        requests = [
            qe.QueryRequest(
                limit=len(ids),
                query=q,
                filter=qe.Filter(must=[only]),
                score_threshold=th,
                params=_EXACT_SEARCH if r in _EXACT else None,
                with_payload=[ITEM_ID_KEY] if top2 else False,
                with_vector=[SENTENCES] if r == SENT_MAX and top2 else None,
            )
            for r, (q, _f, th) in queries.items()
        ]
        if not top2:  # only scores are read: no payload, ids from the HasId set
            return dict(zip(names, self.index.scores_of(requests, ids), strict=True))
        results = dict(zip(names, self.index.query_batch(requests), strict=True))
        stage = {name: {h.item_id: h.score for h in hits} for name, hits in results.items()}
        if dense is None:
            raise ValueError("sentence evidence needs the base query vector")
        stage[SENT_TOP2] = sentence_top2(results[SENT_MAX], dense)
        return stage

    def _hit(self, fused: Hit, stage: dict[str, dict[str, float]]) -> SearchHit:
        scores = {"fused": fused.score}
        for retriever, by_id in stage.items():
            if fused.item_id in by_id:
                scores[retriever] = by_id[fused.item_id]
        if DENSE_TUNED in scores:  # one "dense" evidence for explanations: the better of the two
            scores[DENSE] = max(scores.get(DENSE, -1.0), scores[DENSE_TUNED])
        kind = str(fused.payload.get("kind", ""))
        return SearchHit(fused.item_id, kind, scores, fused.payload, search_reasons(kind, scores))


def candidate_prefetch(narrowed: dict[str, Any], retriever: str, flt: Any, depth: int) -> list[Any] | None:
    """The prefetch that finds `retriever`'s candidates by its narrowed query (`HybridSearcher.
    _candidate_queries`), under the request's filter; None if it finds them by its own query."""
    if retriever not in narrowed:
        return None
    return [qe.Prefetch(limit=depth, query=narrowed[retriever], filter=flt)]


# The engine's RRF orders items of equal fused score (one retriever's rank r against another's, often)
# differently from one call to the next: on SciFact, 30 of 200 queries came back in another top-10 order
# when asked twice. The same query must give the same page, so the engine is asked for a few more than
# k (more while the tie at the k-th place runs past them: `tie_runs_past`) and `settle_ties` orders
# equal scores by item id.
TIE_MARGIN: Final = 10


def tie_runs_past(hits: list[Hit], k: int, limit: int) -> bool:
    """Whether the items tied with the k-th best may go on past the `limit` the engine was asked for: it
    returned a full list whose last score equals the k-th best, so a tied item it left out could belong
    in the top k by item id. Groups that large are rare (an item's RRF score is one rank per retriever,
    so ties are mostly items at the same ranks of different retrievers) but possible."""
    if len(hits) < limit or len(hits) < k or k < 1:
        return False
    scores = sorted((h.score for h in hits), reverse=True)
    return scores[-1] == scores[k - 1]


def settle_ties(hits: list[Hit], k: int) -> list[Hit]:
    """The `k` best by fused score, equal scores in item-id order."""
    return sorted(hits, key=lambda h: (-h.score, h.item_id))[:k]


_EXACT_SEARCH: Final = qe.SearchParams(exact=True)  # float32 vectors (an exact search skips the int8 copy)


def sentence_top2(hits: list[Hit], dense: list[float]) -> dict[str, float]:
    """kindred.text.fusion.SENT_TOP2 of each hit of the sentences query: the mean of the two best cosines
    of its stored sentence vectors (unit: the engine normalises cosine vectors) to the query."""
    query = l2_normalize(np.asarray([dense], dtype=np.float32))[0].astype(np.float64)
    out = {}
    for h in hits:
        stored = (h.vectors or {}).get(SENTENCES)
        if stored is None:
            raise RuntimeError(f"the engine returned no {SENTENCES!r} vectors for {h.item_id}")
        out[h.item_id] = sentence_evidence(np.asarray(stored, dtype=np.float64) @ query)[1]
    return out


def _warn_missing_evidence(index: SearchIndex, fusion: FusionModel) -> None:
    """One warning at start per kind of document evidence the fusion reads and the index lacks (those
    features then read as absent for every candidate)."""
    for features, stored, how in (
        (DOC_FEATURES, index.doc_evidence, "kindred index --rebuild"),
        (ENCODED_DOC_FEATURES, index.encoded_evidence, "kindred index --rebuild --encoded-evidence"),
    ):
        missing = set(features) & set(fusion.retrievers)
        if missing and not stored:
            log.warning(
                "the search fusion reads %s but the index at %s does not store it: rebuild it (%s) "
                "or those features read as absent",
                ", ".join(sorted(missing)),
                index.root,
                how,
            )


def search_reasons(kind: str, scores: dict[str, float]) -> list[str]:
    """Why retrieval found it, strongest evidence first."""
    reasons = []
    if "name" in scores:
        reasons.append("name matches" if scores["name"] >= 0.8 else "name is close to the query")
    if "bm25" in scores:
        reasons.append(
            "contains the words searched" if kind == "post" else "profile contains the words searched"
        )
    if "dense" in scores:
        reasons.append("about the same topic")
    return reasons


__all__ = [
    "DEFAULT_K",
    "MAX_K",
    "MAX_QUERY_CHARS",
    "HybridSearcher",
    "QueryEncoder",
    "QuerySide",
    "SearchHit",
    "SearchOutcome",
    "search_reasons",
    "validate_k",
    "validate_query",
]
