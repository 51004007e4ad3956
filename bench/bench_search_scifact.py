"""Search quality on BEIR SciFact (training queries): BM25, dense MiniLM, RRF, and Kindred's full search.

    python bench/bench_search_scifact.py [--quick] [--epochs N] [--lr X] [--trec-out var/bench/scifact/k.trec]
                                         [--train-qrels P] [--eval-qrels P] [--int8] [--sentences]
                                         [--encoded-features title_dense,sent_max,sent_top2]

Every system runs through Qdrant edge, in-process, on one shard holding the vectors of each document:
- "bm25":   sparse vector (kindred.text.tokenize.Bm25 over title + abstract, Porter, k1 0.9, b 0.4) with
            Modifier.Idf, so the engine supplies IDF from its live counts; query terms weigh 1.0.
- "dense":  all-MiniLM-L6-v2 exported to ONNX (trainer.text_encoder), served by kindred.text.encoder
            (no torch); cosine on HNSW.
- "rrf":    one engine call: prefetch BM25 top-100 and dense top-100, fused with Fusion.Rrf(k=60).
- "kindred": the service's learned path (bench/search/tuned.py): trainer.search_tuning's query-side
            fine-tuned MiniLM (ONNX, kindred.text.encoder) queries the same dense vectors, the engine's
            BM25, base-dense and tuned-dense top-100 lists are united and every candidate rescored by
            every retriever in the engine (HasId filter, exact dense: the service's call), and
            kindred.text.fusion fuses them with the fusion kind (linear, linear on the rescored union,
            or LightGBM LambdaRank served as ONNX, with its rounds) that an inner CV on the fold's
            training queries chose, fitted on cross-fitted tuned scores. The ranker kinds also read
            document evidence (kindred.text.fusion.DOC_FEATURES: title BM25, share of the query's terms
            in the abstract, log length), stored per point as the service's index stores it (two sparse
            named vectors and the length) and rescored in the same engine calls (--no-doc-features: off);
            --encoded-features adds kindred.text.fusion.ENCODED_DOC_FEATURES (the title's MiniLM cosine
            from a second dense named vector; with --sentences the best and mean-of-two-best sentence
            cosines from the MaxSim multivector, read by one HasId query returning the multivectors).
            Learned from judgements, so scored only by 5-fold cross-validation over the training
            queries, with folds that keep claims sharing a relevant abstract together: each query is
            ranked by models that never saw it. With --eval-qrels different from --train-qrels it learns
            on one file and scores the other, no CV.
            "kindred_<kind>" rows: each candidate kind, refit on the same training examples, every fold;
            "kindred_no_doc_features" / "kindred_text_doc_features" / "kindred_plus_title_dense" /
            "kindred_plus_sentences" / "kindred_plus_encoded": the chosen kind refit without any
            document evidence / with the text-only DOC_FEATURES / with the encoded evidence it does not
            read added (title cosine, sentence scores, all of it); "kindred_encoded_cv" /
            "kindred_text_cv": the same inner-CV kind choice on all the encoded evidence stored / on the
            text-only DOC_FEATURES (when Kindred reads none / some of the encoded evidence).

Extra rows, same folds: "dense_tuned_cv" (the tuned encoder alone), "fusion_base_cv" (the same fusion
without it), "lambdarank_2src" (LightGBM LambdaRank over features of BM25 ∪ dense candidates),
"logreg_cv", "convex_cv" (min-max convex mix, weight tuned on the training folds), "convex_in_sample"
(tuned on the scored queries: optimistic, the reference 0.737's protocol), "dense_exact" (exact scan:
HNSW recall check); with --sentences "sentence_maxsim" and "lambdarank_3src" (a MaxSim multivector of
title + abstract sentences: ~50k more texts to encode), with --int8 "dense_int8".

Outputs bench/results/search_scifact.json and the "search_scifact" section of bench/RESULTS.md (through
bench.results_md.write_section). Corpus embeddings are cached under var/bench/scifact/ keyed by the
model's sha256, and each fold's tuned model under var/bench/models/text_query_encoder/, so reruns skip
encoding and tuning.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (make bench): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.results_md import write_section
from bench.search import metrics as M
from bench.search import scifact
from bench.search.tuned import (
    SENT_MAX_TUNED,
    TITLE_DENSE_TUNED,
    TUNED_DOC_FEATURES,
    FoldInputs,
    fit_fold,
    score_fold,
)
from kindred.text.encoder import TextEncoder, latency_stats, measure_latency
from kindred.text.fusion import (
    ENCODED_DOC_FEATURES,
    SENT_MAX,
    SENT_TOP2,
    FitExample,
    FusionModel,
    item_sentences,
    sentence_evidence,
)
from kindred.text.tokenize import Bm25, SparseTerms, tokenize
from trainer.search_tuning import (
    AUTO_FUSION_KINDS,
    BM25,
    COVERAGE,
    DENSE_BASE,
    DENSE_TUNED,
    DOC_LEN,
    FUSION_KINDS,
    FUSION_SELECTION_FOLDS,
    RANKER_PARAMS,
    TITLE_BM25,
    TITLE_DENSE,
    TuneConfig,
)

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "var" / "bench" / "scifact"
DEFAULT_MODELS = REPO / "var" / "bench" / "models"
RESULTS_JSON = REPO / "bench" / "results" / "search_scifact.json"
RESULTS_MD = REPO / "bench" / "RESULTS.md"
SECTION = "## Search — BEIR SciFact"
RESULTS_KEY = "search_scifact"
DENSE, SPARSE, SENT = "dense", "bm25", "sentences"
# Document evidence for the fusion's ranker (trainer.search_tuning.DOC_FEATURES), stored per point like
# the service's index would: the title's MiniLM vector, the title's BM25 vector, a binary term vector
# (query weights 1/|terms| make its dot product the share of query terms the document contains).
TITLE_VEC, TITLE_SPARSE, TERMS = "title", "bm25_title", "terms"
SENTENCE_FEATURES = (SENT_MAX, SENT_TOP2, SENT_MAX_TUNED)  # read from the SENT multivector
DEPTH = 100  # per-retriever candidates; also the Recall@100 cut
RRF_K = 60
REFERENCE = {  # published / measured elsewhere (data README, issue 4): shown beside ours, never used
    "bm25": {"ndcg@10": 0.697, "note": "pytrec_eval, title+text, k1 0.9 b 0.4"},
    "dense": {"ndcg@10": 0.6602, "note": "all-MiniLM-L6-v2, MTEB results (train queries)"},
    "rrf": {"ndcg@10": 0.714, "note": "RRF(k=60) of BM25 and MiniLM"},
    "convex_in_sample": {"ndcg@10": 0.737, "note": "min-max convex mix tuned in-sample"},
    "kindred": {"ndcg@10": 0.76, "note": "issue 4 goal, cross-validated"},
}


# ----------------------------------------------------------------------------------------------------
# index


@dataclasses.dataclass
class Corpus:
    ids: list[str]
    texts: list[str]
    titles: list[str]
    bodies: list[str]


def corpus_of(data: scifact.SciFact) -> Corpus:
    docs = list(data.corpus.values())
    return Corpus(
        [d.doc_id for d in docs], [d.full_text for d in docs], [d.title for d in docs], [d.text for d in docs]
    )


def cached_embeddings(
    encoder: TextEncoder, texts: Sequence[str], kind: str, log: Callable[[str], None]
) -> tuple[np.ndarray, float | None]:
    """(embeddings, seconds spent encoding or None if cached). Keyed by model + tokenizer + texts."""
    key = hashlib.sha256(
        "\x00".join(
            [
                encoder.manifest["sha256"],
                encoder.manifest["tokenizer_sha256"],
                str(encoder.max_length),
                *texts,
            ]
        ).encode()
    ).hexdigest()[:16]
    path = CACHE / f"emb-{kind}-{key}.npy"
    if path.is_file():
        return np.load(path), None
    log(f"encoding {len(texts)} {kind} texts (cached afterwards at {path.relative_to(REPO)})")
    t0 = time.perf_counter()
    emb = encoder.encode(texts, batch_size=32)
    took = time.perf_counter() - t0
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    os.replace(tmp, path)
    return emb, took


def sentences_of(corpus: Corpus) -> tuple[list[str], list[int]]:
    """Every document's sentence texts (kindred.text.fusion.item_sentences), flattened, with offsets
    (doc i = [off[i], off[i+1]))."""
    texts: list[str] = []
    offsets = [0]
    for title, body in zip(corpus.titles, corpus.bodies, strict=True):
        texts.extend(item_sentences(title, body))
        offsets.append(len(texts))
    return texts, offsets


class Index:
    """One qdrant-edge shard: dense + BM25 sparse per document; point id = position in the corpus."""

    def __init__(
        self,
        path: Path,
        corpus: Corpus,
        dense: np.ndarray,
        bm25: Bm25,
        sentences: Sequence[np.ndarray] | None,
        titles: np.ndarray | None = None,
        title_bm25: Bm25 | None = None,
    ) -> None:
        import qdrant_edge as qe

        self.qe = qe
        self.path = path
        dim = int(dense.shape[1])
        maxsim = qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim)
        vector_params = {DENSE: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)}
        if sentences is not None:
            # Title + each abstract sentence; MaxSim with a one-vector query = best sentence's cosine.
            vector_params[SENT] = qe.EdgeVectorParams(
                size=dim, distance=qe.Distance.Cosine, multivector_config=maxsim
            )
        sparse_params = {SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}
        if titles is not None and title_bm25 is not None:
            vector_params[TITLE_VEC] = qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)
            sparse_params[TITLE_SPARSE] = qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)
            sparse_params[TERMS] = qe.EdgeSparseVectorParams()
        self.title_bm25 = title_bm25
        self.has_sentences = sentences is not None
        config = qe.EdgeConfig(
            vectors=vector_params,
            sparse_vectors=sparse_params,
            hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=128, full_scan_threshold=10_000),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
        )
        self.shard = qe.EdgeShard.create(str(path), config)
        t0 = time.perf_counter()
        batch: list[Any] = []
        for i, text in enumerate(corpus.texts):
            sv = bm25.document(text)
            vectors: dict[str, Any] = {
                DENSE: dense[i].astype(float).tolist(),
                SPARSE: qe.SparseVector(list(sv.indices), list(sv.values)),
            }
            if sentences is not None:
                vectors[SENT] = sentences[i].astype(float).tolist()
            if titles is not None and title_bm25 is not None:
                tv = title_bm25.document(corpus.titles[i])
                vectors[TITLE_VEC] = titles[i].astype(float).tolist()
                if len(tv):
                    vectors[TITLE_SPARSE] = qe.SparseVector(list(tv.indices), list(tv.values))
                if len(sv):
                    vectors[TERMS] = qe.SparseVector(list(sv.indices), [1.0] * len(sv))
            batch.append(qe.Point(i, vectors, {}))
            if len(batch) == 256 or i == len(corpus.texts) - 1:  # bounded memory: ~10 vectors per doc
                self.shard.update(qe.UpdateOperation.upsert_points(batch))
                batch = []
        self.upsert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.shard.optimize()
        self.optimize_s = time.perf_counter() - t0

    def _sparse(self, sv: SparseTerms) -> Any:
        return self.qe.SparseVector(list(sv.indices), list(sv.values))

    def bm25(self, q: SparseTerms, limit: int = DEPTH) -> list[tuple[int, float]]:
        if not len(q):
            return []
        req = self.qe.QueryRequest(limit=limit, query=self.qe.Query.Nearest(self._sparse(q), using=SPARSE))
        return [(int(h.id), float(h.score)) for h in self.shard.query(req)]

    def dense(
        self, v: np.ndarray, limit: int = DEPTH, *, ef: int = 256, exact: bool = False
    ) -> list[tuple[int, float]]:
        req = self.qe.QueryRequest(
            limit=limit,
            query=self.qe.Query.Nearest([float(x) for x in v], using=DENSE),
            params=self.qe.SearchParams(hnsw_ef=ef, exact=exact),
        )
        return [(int(h.id), float(h.score)) for h in self.shard.query(req)]

    def rrf(
        self, q: SparseTerms, v: np.ndarray, limit: int = DEPTH, *, ef: int = 256
    ) -> list[tuple[int, float]]:
        qe = self.qe
        prefetches = [
            qe.Prefetch(
                limit=DEPTH,
                query=qe.Query.Nearest([float(x) for x in v], using=DENSE),
                params=qe.SearchParams(hnsw_ef=ef),
            )
        ]
        if len(q):
            prefetches.insert(
                0, qe.Prefetch(limit=DEPTH, query=qe.Query.Nearest(self._sparse(q), using=SPARSE))
            )
        req = qe.QueryRequest(limit=limit, prefetches=prefetches, query=qe.Fusion.Rrf(RRF_K))
        return [(int(h.id), float(h.score)) for h in self.shard.query(req)]

    def maxsim(self, v: np.ndarray, limit: int = DEPTH, *, ef: int = 256) -> list[tuple[int, float]]:
        req = self.qe.QueryRequest(
            limit=limit,
            query=self.qe.Query.Nearest([[float(x) for x in v]], using=SENT),
            params=self.qe.SearchParams(hnsw_ef=ef),
        )
        return [(int(h.id), float(h.score)) for h in self.shard.query(req)]

    def bm25_of(self, q: SparseTerms, docs: Sequence[int]) -> dict[int, float]:
        """BM25 of exactly these candidates, in the engine (a HasId filter); no shared term = absent = 0."""
        if not len(q) or not docs:
            return {}
        qe = self.qe
        req = qe.QueryRequest(
            limit=len(docs),
            query=qe.Query.Nearest(self._sparse(q), using=SPARSE),
            filter=qe.Filter(must=[qe.HasIdCondition({int(d) for d in docs})]),
        )
        return {int(h.id): float(h.score) for h in self.shard.query(req)}

    def dense_of(self, v: np.ndarray, docs: Sequence[int]) -> dict[int, float]:
        """Exact cosine of exactly these candidates, in the engine (HasId filter, exact search): the
        service's union rescoring call (retrieval_svc/search/query.py)."""
        if not docs:
            return {}
        qe = self.qe
        req = qe.QueryRequest(
            limit=len(docs),
            query=qe.Query.Nearest([float(x) for x in v], using=DENSE),
            filter=qe.Filter(must=[qe.HasIdCondition({int(d) for d in docs})]),
            params=qe.SearchParams(exact=True),
        )
        return {int(h.id): float(h.score) for h in self.shard.query(req)}

    def _of(self, query: Any, using: str, docs: Sequence[int], *, exact: bool = False) -> dict[int, float]:
        qe = self.qe
        req = qe.QueryRequest(
            limit=len(docs),
            query=qe.Query.Nearest(query, using=using),
            filter=qe.Filter(must=[qe.HasIdCondition({int(d) for d in docs})]),
            params=qe.SearchParams(exact=True) if exact else None,
        )
        return {int(h.id): float(h.score) for h in self.shard.query(req)}

    def sentence_scores_of(self, qvec: np.ndarray, docs: Sequence[int]) -> dict[int, tuple[float, float]]:
        """(best, mean of the two best) sentence cosines of exactly these candidates: one engine query
        (HasId filter, exact MaxSim of the one-vector query) that also returns each candidate's stored
        multivector (with_vector), from which the second-best cosine is read — the call a service would
        make for kindred.text.fusion.SENT_MAX / SENT_TOP2."""
        if not docs or not self.has_sentences:
            return {}
        qe = self.qe
        q = [float(x) for x in qvec]
        req = qe.QueryRequest(
            limit=len(docs),
            query=qe.Query.Nearest([q], using=SENT),
            filter=qe.Filter(must=[qe.HasIdCondition({int(d) for d in docs})]),
            params=qe.SearchParams(exact=True),
            with_vector=[SENT],
        )
        out: dict[int, tuple[float, float]] = {}
        qv = np.asarray(q, dtype=np.float64)
        for h in self.shard.query(req):
            stored = h.vector[SENT] if isinstance(h.vector, dict) else None
            if stored is None:
                raise RuntimeError(f"the engine returned no {SENT!r} multivector for point {h.id}")
            _, top2 = sentence_evidence(np.asarray(stored, dtype=np.float64) @ qv)  # stored unit vectors
            out[int(h.id)] = (float(h.score), top2)  # the engine's MaxSim score is the best
        return out

    def tuned_evidence_of(self, qvec: np.ndarray, docs: Sequence[int]) -> dict[str, dict[int, float]]:
        """bench.search.tuned.TUNED_DOC_FEATURES of exactly these candidates for a tuned query vector: its
        exact cosine to the stored title vector, and its MaxSim over the stored sentence vectors (the
        engine's score; no vectors returned). {} without document evidence in the index."""
        if not docs or self.title_bm25 is None:
            return {}
        q = [float(x) for x in qvec]
        out = {TITLE_DENSE_TUNED: self._of(q, TITLE_VEC, docs, exact=True)}
        if self.has_sentences:
            out[SENT_MAX_TUNED] = self._of([q], SENT, docs, exact=True)
        return out

    def doc_features_of(
        self, text: str, qvec: np.ndarray, docs: Sequence[int], bm25: Bm25
    ) -> dict[str, dict[int, float]]:
        """Title cosine, title BM25 and query-term coverage of exactly these candidates, in the engine
        (HasId filter; exact cosine): the evidence kindred.text.fusion.DOC_FEATURES names, plus
        ENCODED_DOC_FEATURES' title cosine and (with a sentence multivector) the sentence scores."""
        if not docs or self.title_bm25 is None:
            return {}
        out = {TITLE_DENSE: self._of([float(x) for x in qvec], TITLE_VEC, docs, exact=True)}
        if self.has_sentences:
            sent = self.sentence_scores_of(qvec, docs)
            out[SENT_MAX] = {d: v[0] for d, v in sent.items()}
            out[SENT_TOP2] = {d: v[1] for d, v in sent.items()}
        tq = self.title_bm25.query(text)
        out[TITLE_BM25] = self._of(self._sparse(tq), TITLE_SPARSE, docs) if len(tq) else {}
        q = bm25.query(text)
        if len(q):
            share = self.qe.SparseVector(list(q.indices), [1.0 / len(q)] * len(q))
            out[COVERAGE] = self._of(share, TERMS, docs)
        else:
            out[COVERAGE] = {}
        return out

    def close(self) -> None:
        self.shard.close()


# ----------------------------------------------------------------------------------------------------
# candidates and features

FEATURES = (
    "bm25",
    "dense",
    "sent_max",
    "sent_top2",
    "title_dense",
    "bm25_mm",
    "dense_mm",
    "sent_mm",
    "title_dense_mm",
    "bm25_z",
    "dense_z",
    "sent_z",
    "bm25_rrf",
    "dense_rrf",
    "sent_rrf",
    "bm25_rel_top",
    "dense_gap_top",
    "sent_gap_top",
    "title_cov",
    "body_cov",
    "doc_cov",
    "q_terms",
    "log_doc_len",
    "n_sentences",
)


# The two-retriever variant (BM25 ∪ dense candidates, no sentence features): where a learned fusion
# lands against RRF and the convex mix on exactly their inputs.
TWO_SOURCE_FEATURES = tuple(f for f in FEATURES if not f.startswith("sent_") and f != "n_sentences")


@dataclasses.dataclass
class QueryCands:
    qid: str
    docs: np.ndarray  # corpus positions
    x: np.ndarray  # (n, len(features))
    features: tuple[str, ...] = FEATURES

    def col(self, name: str) -> np.ndarray:
        return self.x[:, self.features.index(name)]

    def select(self, names: Sequence[str]) -> QueryCands:
        return QueryCands(
            self.qid, self.docs, self.x[:, [self.features.index(n) for n in names]], tuple(names)
        )


def minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def zscore(x: np.ndarray) -> np.ndarray:
    sd = float(x.std())
    return (x - float(x.mean())) / sd if sd > 0 else np.zeros_like(x)


@dataclasses.dataclass
class DocSide:
    """Per-document data the features read (in the service: payload fields and stored vectors)."""

    doc_emb: np.ndarray
    title_emb: np.ndarray
    sentences: list[np.ndarray] | None  # None: the sentence retriever is off (its features read 0)
    title_terms: list[set[str]]
    body_terms: list[set[str]]
    doc_len: np.ndarray


def build_candidates(
    qid: str,
    q_terms: list[str],
    qvec: np.ndarray,
    hits: Mapping[str, list[tuple[int, float]]],
    bm25_of: Callable[[Sequence[int]], dict[int, float]],
    side: DocSide,
) -> QueryCands:
    """Union of every retriever's top-DEPTH, with engine-consistent scores for all of them."""
    ranks = {name: {d: r for r, (d, _) in enumerate(h, start=1)} for name, h in hits.items()}
    docs = np.array(sorted(set().union(*ranks.values())), dtype=np.int64)
    n = len(docs)
    bm25_score = bm25_of([int(d) for d in docs])
    bm = np.array([bm25_score.get(int(d), 0.0) for d in docs], dtype=np.float64)
    de = side.doc_emb[docs] @ qvec  # exact cosine of unit vectors: the number the engine returns
    te = side.title_emb[docs] @ qvec
    if side.sentences is not None:
        sims = [np.sort(side.sentences[int(d)] @ qvec)[::-1] for d in docs]
        smax = np.array([s[0] for s in sims])  # = the engine's MaxSim score
        stop2 = np.array([s[:2].mean() for s in sims])
        n_sent = np.array([len(side.sentences[int(d)]) for d in docs], dtype=np.float64)
    else:
        smax = stop2 = n_sent = np.zeros(n)

    def rank_of(name: str) -> np.ndarray:
        return np.array([ranks.get(name, {}).get(int(d), DEPTH + 1) for d in docs], dtype=np.float64)

    qset = set(q_terms)
    nq = max(1, len(qset))
    tcov = np.array([len(qset & side.title_terms[d]) / nq for d in docs])
    bcov = np.array([len(qset & side.body_terms[d]) / nq for d in docs])
    dcov = np.array([len(qset & (side.title_terms[d] | side.body_terms[d])) / nq for d in docs])
    top_bm = float(bm.max()) if n and bm.max() > 0 else 1.0
    cols = {
        "bm25": bm,
        "dense": de,
        "sent_max": smax,
        "sent_top2": stop2,
        "title_dense": te,
        "bm25_mm": minmax(bm),
        "dense_mm": minmax(de),
        "sent_mm": minmax(smax),
        "title_dense_mm": minmax(te),
        "bm25_z": zscore(bm),
        "dense_z": zscore(de),
        "sent_z": zscore(smax),
        "bm25_rrf": 1.0 / (RRF_K + rank_of("bm25")),
        "dense_rrf": 1.0 / (RRF_K + rank_of("dense")),
        "sent_rrf": 1.0 / (RRF_K + rank_of("sent")),
        "bm25_rel_top": bm / top_bm,
        "dense_gap_top": de - float(de.max()),
        "sent_gap_top": smax - float(smax.max()),
        "title_cov": tcov,
        "body_cov": bcov,
        "doc_cov": dcov,
        "q_terms": np.full(n, float(len(qset))),
        "log_doc_len": np.log1p(side.doc_len[docs]),
        "n_sentences": n_sent,
    }
    x = np.column_stack([cols[f] for f in FEATURES]).astype(np.float32)
    return QueryCands(qid, docs, x)


# ----------------------------------------------------------------------------------------------------
# learned fusion


def folds_of(qids: Sequence[str], k: int, seed: int) -> list[list[str]]:
    order = sorted(qids)
    random.Random(seed).shuffle(order)
    return [order[i::k] for i in range(k)]


def group_folds(
    qids: Sequence[str], qrels: Mapping[str, Mapping[str, int]], k: int, seed: int
) -> list[list[str]]:
    """k folds in which queries that share a judged-relevant document always land in the same fold.

    Why: 538 of SciFact's 809 training claims share a relevant abstract with another claim (a claim and
    its negation cite the same paper). A model that can recognise a document (its length, its number of
    sentences...) would otherwise be rewarded in one fold for what it learned about that document in
    another. Components are shuffled (seeded) and dealt largest-first to the smallest fold.
    """
    parent = {q: q for q in qids}

    def find(q: str) -> str:
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    by_doc: dict[str, list[str]] = {}
    for q in qids:
        for doc, rel in qrels.get(q, {}).items():
            if rel > 0:
                by_doc.setdefault(doc, []).append(q)
    for group in by_doc.values():
        for other in group[1:]:
            parent[find(other)] = find(group[0])
    comps: dict[str, list[str]] = {}
    for q in sorted(qids):
        comps.setdefault(find(q), []).append(q)
    groups = sorted(comps.values())
    random.Random(seed).shuffle(groups)
    groups.sort(key=len, reverse=True)  # stable: equal sizes keep the shuffled order
    folds: list[list[str]] = [[] for _ in range(k)]
    for g in groups:
        min(folds, key=len).extend(g)
    return [sorted(f) for f in folds]


def labels_of(c: QueryCands, qrels: Mapping[str, Mapping[str, int]], ids: Sequence[str]) -> np.ndarray:
    rels = qrels.get(c.qid, {})
    return np.array([max(0, rels.get(ids[int(d)], 0)) for d in c.docs], dtype=np.float32)


def fit_lambdarank(
    train: Sequence[QueryCands],
    qrels: Mapping[str, Mapping[str, int]],
    ids: Sequence[str],
    *,
    rounds: int,
    seed: int,
) -> Any:
    import lightgbm as lgb

    x = np.concatenate([c.x for c in train])
    y = np.concatenate([labels_of(c, qrels, ids) for c in train])
    # The service's fusion ranker settings (trainer.search_tuning.RANKER_PARAMS), on other features.
    params = {**RANKER_PARAMS, "metric": "ndcg", "ndcg_eval_at": [10], "num_threads": 2, "seed": seed}
    ds = lgb.Dataset(x, y, group=[len(c.docs) for c in train], feature_name=list(train[0].features))
    return lgb.train(params, ds, num_boost_round=rounds)


class LogReg:
    """L2-regularised logistic regression (Newton steps) on standardised features: a linear fusion peer."""

    def __init__(self, l2: float = 1.0, iters: int = 25) -> None:
        self.l2, self.iters = l2, iters

    def fit(self, x: np.ndarray, y: np.ndarray) -> LogReg:
        self.mu, self.sd = x.mean(axis=0), x.std(axis=0) + 1e-6
        z = np.column_stack([(x - self.mu) / self.sd, np.ones(len(x))]).astype(np.float64)
        w = np.zeros(z.shape[1])
        reg = self.l2 * np.eye(z.shape[1])
        reg[-1, -1] = 0.0
        for _ in range(self.iters):
            p = 1.0 / (1.0 + np.exp(-(z @ w)))
            grad = z.T @ (p - y) + reg @ w
            hess = (z * (p * (1 - p))[:, None]).T @ z + reg
            step = np.linalg.solve(hess, grad)
            w -= step
            if float(np.abs(step).max()) < 1e-6:
                break
        self.w = w
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = np.column_stack([(x - self.mu) / self.sd, np.ones(len(x))])
        return np.asarray(z @ self.w)


def run_of(
    cands: Sequence[QueryCands], scores: Sequence[np.ndarray], ids: Sequence[str]
) -> dict[str, dict[str, float]]:
    return {
        c.qid: {ids[int(d)]: float(s) for d, s in zip(c.docs, sc, strict=True)}
        for c, sc in zip(cands, scores, strict=True)
    }


def convex_scores(c: QueryCands, alpha: float) -> np.ndarray:
    return alpha * c.col("bm25_mm") + (1 - alpha) * c.col("dense_mm")


def tune_convex(
    cands: Sequence[QueryCands], qrels: Mapping[str, Mapping[str, int]], ids: Sequence[str]
) -> float:
    grid = [i / 20 for i in range(21)]
    judged = {c.qid: qrels[c.qid] for c in cands}
    return max(
        grid,
        key=lambda a: M.evaluate(run_of(cands, [convex_scores(c, a) for c in cands], ids), judged)["ndcg@10"],
    )


# A learner fits on training queries' candidates and scores held-out ones: (scores, info).
Learner = Callable[[Sequence[QueryCands], Sequence[QueryCands]], tuple[list[np.ndarray], dict[str, Any]]]


def lambdarank_learner(
    qrels: Mapping[str, Mapping[str, int]], ids: Sequence[str], rounds: int, seed: int
) -> Learner:
    def learn(
        train: Sequence[QueryCands], held: Sequence[QueryCands]
    ) -> tuple[list[np.ndarray], dict[str, Any]]:
        model = fit_lambdarank(train, qrels, ids, rounds=rounds, seed=seed)
        gain = np.asarray(model.feature_importance(importance_type="gain"), dtype=np.float64)
        return [model.predict(c.x) for c in held], {"gain": gain}

    return learn


def logreg_learner(qrels: Mapping[str, Mapping[str, int]], ids: Sequence[str]) -> Learner:
    def learn(
        train: Sequence[QueryCands], held: Sequence[QueryCands]
    ) -> tuple[list[np.ndarray], dict[str, Any]]:
        x = np.concatenate([c.x for c in train])
        y = np.concatenate([labels_of(c, qrels, ids) for c in train])
        model = LogReg().fit(x, y)
        return [model.predict(c.x) for c in held], {}

    return learn


def convex_learner(qrels: Mapping[str, Mapping[str, int]], ids: Sequence[str]) -> Learner:
    def learn(
        train: Sequence[QueryCands], held: Sequence[QueryCands]
    ) -> tuple[list[np.ndarray], dict[str, Any]]:
        alpha = tune_convex(train, qrels, ids)
        return [convex_scores(c, alpha) for c in held], {"alpha": alpha}

    return learn


def held_out_run(
    learner: Learner,
    cands: Mapping[str, QueryCands],
    ids: Sequence[str],
    *,
    train_ids: Sequence[str],
    eval_ids: Sequence[str],
    folds: Sequence[Sequence[str]] | None,
) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """The eval queries' run, each query scored by a model that never saw it.

    With `folds` (cross-validation: train_ids == eval_ids) each fold is scored by a model fitted on the
    other folds; without, one model is fitted on train_ids (disjoint from eval_ids) and scores eval_ids.
    """
    run: dict[str, dict[str, float]] = {}
    infos: list[dict[str, Any]] = []
    plan = (
        [([q for q in eval_ids if q not in set(f)], list(f)) for f in folds]
        if folds is not None
        else [(list(train_ids), list(eval_ids))]
    )
    for fit_ids, score_ids in plan:
        if set(fit_ids) & set(score_ids):
            raise AssertionError("a query would be scored by a model trained on it")
        held = [cands[q] for q in score_ids]
        scores, info = learner([cands[q] for q in fit_ids], held)
        run.update(run_of(held, scores, ids))
        infos.append(info)
    return run, infos


# ----------------------------------------------------------------------------------------------------
# reporting


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def render_section(result: Mapping[str, Any]) -> str:
    sysd = result["systems"]
    extra = result.get("extra_systems", {})
    mach = result["machine"]
    kin = result["kindred"]
    lines = [
        SECTION,
        "",
        f"Measured {result['date']} on {mach['nproc']} cores ({mach['cpu']}, {mach['ram_gib']} GiB RAM; "
        f"load average at start {mach['load_avg_at_start']}, at end {mach.get('load_avg_at_end')}: "
        "the cores are shared with other engineers' jobs, so throughput and latency are noisy).",
        "",
        "```",
        result["command"],
        "```",
        "",
        f"Split: **{result['split']}** queries ({result['n_eval_queries']} judged), protocol: "
        f"**{result['protocol']}**"
        + (f" ({result['fold_grouping']})" if result.get("fold_grouping") else "")
        + ". Metrics with pytrec_eval semantics (bench/search/metrics.py). "
        "Everything runs through qdrant-edge in-process (BM25 as a sparse vector with the engine's IDF "
        "modifier; MiniLM as ONNX via onnxruntime).",
        "",
        "| system | NDCG@10 | Recall@100 | reference NDCG@10 |",
        "|---|---|---|---|",
    ]
    for name, row in [*sysd.items(), *extra.items()]:
        ref = REFERENCE.get(name)
        ref_s = f"{ref['ndcg@10']:.3f} ({ref['note']})" if ref else ""
        lines.append(f"| {name} | {row['ndcg@10']:.4f} | {row['recall@100']:.4f} | {ref_s} |")
    per_fold = result.get("per_fold_ndcg@10")
    if per_fold:
        n = len(next(iter(per_fold.values())))
        lines += [
            "",
            "NDCG@10 per fold (each fold scored by models that never saw its queries):",
            "",
            "| system | " + " | ".join(f"fold {i + 1}" for i in range(n)) + " | mean |",
            "|---|" + "---|" * (n + 1),
        ]
        for name, vals in per_fold.items():
            lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in vals) + f" | {np.mean(vals):.4f} |")
    enc = result["encoder"]
    hybrid = result["latency"]["hybrid_query"]
    lines += [
        "",
        "Rows: bm25 / dense / rrf / kindred are issue 4's four systems. **kindred** = the trainer's "
        "query-side fine-tuned MiniLM (trainer.search_tuning: contrastive loss over the judged abstract vs "
        "every other abstract, documents keep their base vectors, so the index is unchanged) exported to "
        "ONNX and served by kindred.text.encoder, plus kindred.text.fusion over the union of the engine's "
        "BM25, base-dense and tuned-dense top-100 lists, every candidate rescored by every retriever in "
        "the engine"
        + (
            f", the ranker kinds also reading document evidence ({', '.join(kin['doc_features'])}: "
            "title BM25, share of the query's terms the abstract contains, log length — what the "
            "service's index stores, kindred.text.fusion.DOC_FEATURES"
            + (
                "; and kindred.text.fusion.ENCODED_DOC_FEATURES: the query's base-MiniLM cosine to the "
                "title (a second dense named vector) and the best / mean of the two best cosines to the "
                "title and abstract sentences (a MaxSim multivector named vector)"
                if kin.get("encoded_features")
                else ""
            )
            + " — rescored in the engine)"
            if kin.get("doc_features")
            else ""
        )
        + " — the fusion kind chosen per fold by inner 3-fold CV on that fold's cross-fitted "
        "training examples (never by test-fold score) among "
        f"{', '.join(kin.get('fusion_kinds', []))}, each a kindred_<kind> row"
        + (
            "; the chosen kind refit on the same examples with other evidence: kindred_no_doc_features "
            "without any, kindred_text_doc_features with DOC_FEATURES only, kindred_plus_title_dense / "
            "kindred_plus_sentences / kindred_plus_encoded with that encoded evidence (all of it, for the "
            "last) added, kindred_plus_tuned_evidence with the stored title and sentence vectors scored "
            "by the *tuned* query vector too (title_dense_tuned, sent_max_tuned; a bench-only diagnostic, "
            "not served) (rows present when they apply); kindred_encoded_cv / kindred_text_cv: an "
            "alternative system on the other evidence set (every encoded feature the index holds / the "
            "text-only DOC_FEATURES), its kind chosen by its own inner CV. "
            if kin.get("doc_features")
            else ". "
        )
        + f"Chosen per fold: {', '.join(str(c) for c in kin.get('chosen_per_fold', []))}; "
        f"fold fusions: {'; '.join(f['fusion'] for f in kin['folds'])}. "
        "dense_tuned_cv is the tuned encoder alone; fusion_base_cv the same fusion fit without it (BM25 + "
        "base dense): the encoder's share. lambdarank_2src (LightGBM LambdaRank over 20 candidate "
        "features), logreg_cv and convex_cv are learned fusions of BM25 ∪ base-dense candidates under the "
        "same folds; convex_in_sample tunes its weight on the queries it scores (the reference 0.737's "
        "protocol, optimistic); dense_exact an exact scan (HNSW recall check).",
        "",
        f"Tuning cost: {kin['tune_seconds_total']} s for {len(kin['folds'])} folds × "
        f"({kin['config']['inner_folds']} inner + 1 final) query-encoder tunings of "
        f"{kin['config']['epochs']} epochs, plus ONNX export and parity check per fold; the corpus is never "
        "re-encoded.",
        "",
        f"Encoder ({enc['model_version']}, onnxruntime, max_length {enc['max_length']}): "
        f"corpus {enc['docs_per_s']} docs/s and queries {enc['queries_per_s']} queries/s at "
        f"{enc['threads']} threads (batch 32, length-sorted); single query p50 "
        f"{enc['single_query_1_thread']['p50_ms']} ms / p99 {enc['single_query_1_thread']['p99_ms']} ms "
        f"(1 thread). Hybrid query end to end (tokenize + encode + one RRF engine call): p50 "
        f"{hybrid['p50_ms']} ms / p99 {hybrid['p99_ms']} ms.",
    ]
    if "dense_int8" in extra:
        lines.append(
            f"Int8 (dynamic, per-channel) encoder: see the dense_int8 row; "
            f"{enc.get('int8_docs_per_s', '?')} docs/s on the same sample right after fp32's "
            f"{enc['docs_per_s']}."
        )
    lines += [
        "",
        f"Total benchmark time {result['runtime_s']} s. Raw numbers: bench/results/search_scifact.json.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=scifact.DEFAULT_DIR)
    p.add_argument("--train-qrels", type=Path, default=None, help="judgements to learn from (default: train)")
    p.add_argument(
        "--eval-qrels", type=Path, default=None, help="judgements to score (default: --train-qrels)"
    )
    p.add_argument(
        "--trec-out",
        type=Path,
        default=None,
        help="write the kindred run here (TREC format); "
        "the other systems' runs go beside it as <stem>.<system><suffix>",
    )
    p.add_argument(
        "--quick", action="store_true", help="200 queries, fewer boosting rounds and latency samples"
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="text encoder version directory "
        "(default: var/bench/models/text_encoder/CURRENT, exported first if absent)",
    )
    p.add_argument(
        "--models-out",
        type=Path,
        default=DEFAULT_MODELS,
        help="where each fold's tuned query encoder is exported (reused by reruns with the same inputs)",
    )
    p.add_argument("--int8", action="store_true", help="also measure the int8-quantised encoder (dense only)")
    p.add_argument(
        "--sentences",
        action="store_true",
        help="also the sentence-MaxSim retriever and the 3-source LambdaRank row (encodes ~50k sentences)",
    )
    p.add_argument("--epochs", type=int, default=TuneConfig.epochs)
    p.add_argument("--lr", type=float, default=TuneConfig.lr)
    p.add_argument("--inner-folds", type=int, default=TuneConfig.inner_folds)
    p.add_argument("--threads", type=int, default=TuneConfig.threads)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--k1", type=float, default=0.9)
    p.add_argument("--b", type=float, default=0.4)
    p.add_argument(
        "--drop-features",
        default="",
        help="comma-separated features the LambdaRank rows must not use (ablations)",
    )
    p.add_argument(
        "--fusion",
        default="auto",
        help=f"Kindred's fusion kind(s), comma-separated ({', '.join(FUSION_KINDS)}; ranker kinds may end "
        f"in ':<rounds>') or 'auto' ({', '.join(AUTO_FUSION_KINDS)}); with several, each fold picks one by "
        "inner CV on its training queries, and every kind gets a row",
    )
    p.add_argument(
        "--fusion-folds",
        type=int,
        default=FUSION_SELECTION_FOLDS,
        help="inner folds each outer fold's training queries are split into to choose the fusion kind",
    )
    p.add_argument(
        "--doc-features",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Kindred's ranker fusions also read document evidence (title BM25, query-term coverage, "
        "length: kindred.text.fusion.DOC_FEATURES); off also removes the title vectors (--encoded-features)",
    )
    p.add_argument(
        "--encoded-features",
        default="",
        help="comma-separated kindred.text.fusion.ENCODED_DOC_FEATURES Kindred's ranker fusions also read "
        f"({', '.join(ENCODED_DOC_FEATURES)}; the sentence ones need --sentences), or 'none'",
    )
    p.add_argument("--json-out", type=Path, default=RESULTS_JSON)
    p.add_argument("--md-out", type=Path, default=RESULTS_MD)
    args = p.parse_args(argv)
    if args.fusion_folds < 2:
        p.error(f"--fusion-folds must be at least 2 (one to fit on, one to score), got {args.fusion_folds}")
    return args


def ensure_encoder_dir(
    model_dir: Path | None, int8: bool, log: Callable[[str], None]
) -> tuple[Path, Path | None]:
    from kindred.models import current_version

    if model_dir is not None:
        return model_dir, None
    fp32 = DEFAULT_MODELS / "text_encoder" / "minilm-fp32"
    if not fp32.is_dir():
        log("exporting MiniLM to ONNX (trainer.text_encoder) into var/bench/models")
        from trainer.text_encoder import export

        export(
            DEFAULT_MODELS,
            version="minilm-fp32",
            do_promote=current_version(DEFAULT_MODELS, "text_encoder") is None,
            log=log,
        )
    q8 = DEFAULT_MODELS / "text_encoder" / "minilm-int8"
    if int8 and not q8.is_dir():
        from trainer.text_encoder import export

        export(DEFAULT_MODELS, version="minilm-int8", int8=True, log=log)
    return fp32, (q8 if int8 else None)


Plan = list[tuple[str, list[str], list[str]]]  # (name, ids to learn from, ids to score)


def learning_plan(
    folds: Sequence[Sequence[str]] | None, train_ids: Sequence[str], eval_ids: Sequence[str]
) -> Plan:
    """Cross-validation (each fold scored by what the other folds taught) or one train → eval split."""
    if folds is None:
        plan = [("all", list(train_ids), list(eval_ids))]
    else:
        plan = [(f"f{i + 1}", [q for q in eval_ids if q not in set(f)], list(f)) for i, f in enumerate(folds)]
    for name, fit_ids, score_ids in plan:
        if set(fit_ids) & set(score_ids):
            raise AssertionError(f"{name}: a query would be scored by a model trained on it")
    return plan


def fusion_cv_run(
    plan: Plan,
    base_hits: Mapping[str, Mapping[str, list[tuple[int, float]]]],
    qrels: Mapping[str, Mapping[str, int]],
    ids: Sequence[str],
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """kindred.text.fusion fitted on BM25 + base dense only (no tuned encoder), per fold."""
    run: dict[str, dict[str, float]] = {}
    models = []

    def hits(q: str) -> dict[str, list[tuple[str, float]]]:
        return {r: [(ids[d], s) for d, s in h] for r, h in base_hits[q].items()}

    for _, fit_ids, score_ids in plan:
        examples = [
            FitExample(hits(q), {d: float(r) for d, r in qrels[q].items()}) for q in fit_ids if q in qrels
        ]
        model = FusionModel.fit(examples, retrievers=["bm25", "dense"])
        models.append(str(model))
        for q in score_ids:
            run[q] = {h.doc_id: h.score for h in model.fuse(hits(q))}
    return run, models


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    mach = machine()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    if not scifact.available(args.data_dir):
        print(f"BEIR SciFact not found under {args.data_dir}: nothing to measure", file=sys.stderr)
        return 2
    data = scifact.load(args.data_dir)
    train_path = args.train_qrels or data.train_qrels_path
    eval_path = args.eval_qrels or train_path
    train_qrels = scifact.load_qrels(train_path)
    eval_qrels = scifact.load_qrels(eval_path)
    cross_val = train_path.resolve() == eval_path.resolve()
    if not cross_val:
        overlap = set(train_qrels) & set(eval_qrels)
        if overlap:
            log(f"not training on {len(overlap)} queries judged in both files (never score a seen query)")
            train_qrels = {q: r for q, r in train_qrels.items() if q not in overlap}
    scifact.check_consistency(data, train_qrels)
    encoded = tuple(f.strip() for f in args.encoded_features.split(",") if f.strip() not in ("", "none"))
    available_encoded: tuple[str, ...] = ()
    if args.doc_features:  # the index stores title vectors, and sentence multivectors with --sentences
        available_encoded = tuple(
            f
            for f in (*ENCODED_DOC_FEATURES, *TUNED_DOC_FEATURES)
            if args.sentences or f not in SENTENCE_FEATURES
        )
    if set(encoded) - set(available_encoded):
        raise SystemExit(
            f"--encoded-features: {sorted(set(encoded) - set(available_encoded))} not available "
            f"(known: {', '.join(ENCODED_DOC_FEATURES)}; all need --doc-features, "
            "the sentence ones --sentences)"
        )
    scifact.check_consistency(data, eval_qrels)
    if args.quick:
        keep = sorted(eval_qrels)[:200]
        eval_qrels = {q: eval_qrels[q] for q in keep}
        if cross_val:
            train_qrels = dict(eval_qrels)
    corpus = corpus_of(data)
    ids = corpus.ids
    all_qids = sorted(set(eval_qrels) | set(train_qrels))
    eval_ids = sorted(eval_qrels)
    train_ids = sorted(train_qrels)
    folds = group_folds(eval_ids, eval_qrels, args.folds, args.seed) if cross_val else None
    plan = learning_plan(folds, train_ids, eval_ids)
    protocol = f"{args.folds}-fold CV" if cross_val else f"learn on {train_path.name}, score {eval_path.name}"
    grouping = "queries sharing a relevant document are kept in one fold" if cross_val else None

    # --- models
    fp32_dir, int8_dir = ensure_encoder_dir(args.model_dir, args.int8, log)
    encoder = TextEncoder.load(fp32_dir, intra_op_num_threads=args.threads)
    bm25 = Bm25.fit(corpus.texts, k1=args.k1, b=args.b)
    log(f"encoder {encoder}; BM25 k1={bm25.k1} b={bm25.b} avg_len={bm25.avg_len:.1f}")
    doc_emb, enc_s = cached_embeddings(encoder, corpus.texts, "corpus", log)
    title_emb, _ = cached_embeddings(encoder, corpus.titles, "titles", log)
    sentences: list[np.ndarray] | None = None
    if args.sentences:
        sent_texts, sent_offsets = sentences_of(corpus)
        sent_flat, _ = cached_embeddings(encoder, sent_texts, "sentences", log)
        sentences = [sent_flat[a:b] for a, b in itertools.pairwise(sent_offsets)]
    tune_cfg = TuneConfig(
        epochs=args.epochs, lr=args.lr, inner_folds=args.inner_folds, seed=args.seed, threads=args.threads
    )

    # --- throughput (always measured, on a fixed sample, so cached runs report it too)
    rng = random.Random(args.seed)
    sample_docs = rng.sample(corpus.texts, 128 if not args.quick else 32)
    t0 = time.perf_counter()
    encoder.encode(sample_docs)
    docs_per_s = len(sample_docs) / (time.perf_counter() - t0)
    qtexts = [data.queries[q] for q in all_qids]
    t0 = time.perf_counter()
    qemb_all = encoder.encode(qtexts)
    queries_per_s = len(qtexts) / (time.perf_counter() - t0)
    qemb = dict(zip(all_qids, qemb_all, strict=True))
    q8 = TextEncoder.load(int8_dir, intra_op_num_threads=args.threads) if int8_dir is not None else None
    int8_dps = None
    if q8 is not None:  # the same sample, right after fp32: comparable under the same machine load
        t0 = time.perf_counter()
        q8.encode(sample_docs)
        int8_dps = round(len(sample_docs) / (time.perf_counter() - t0), 1)
    single = TextEncoder.load(fp32_dir, intra_op_num_threads=1)
    lat_texts = qtexts[: (200 if not args.quick else 50)]
    lat1 = measure_latency(single, lat_texts)
    lat2 = measure_latency(encoder, lat_texts)
    log(
        f"encoder: {docs_per_s:.1f} docs/s, {queries_per_s:.1f} queries/s; "
        f"single query p50 {lat1['p50_ms']} ms "
        f"p99 {lat1['p99_ms']} ms (1 thread)"
    )

    # --- index, retrieval, and Kindred's tuned search (which queries the same engine)
    shard_dir = Path(tempfile.mkdtemp(prefix="shard-", dir=_mkdir(CACHE)))
    try:
        title_bm25 = Bm25.fit(corpus.titles, k1=args.k1, b=args.b) if args.doc_features else None
        index = Index(
            shard_dir / "scifact",
            corpus,
            doc_emb,
            bm25,
            sentences,
            titles=title_emb if args.doc_features else None,
            title_bm25=title_bm25,
        )
        log(f"indexed {len(ids)} docs: upsert {index.upsert_s:.1f}s, optimize {index.optimize_s:.1f}s")
        side = DocSide(
            doc_emb=doc_emb,
            title_emb=title_emb,
            sentences=sentences,
            title_terms=[set(tokenize(t)) for t in corpus.titles],
            body_terms=[set(tokenize(t)) for t in corpus.bodies],
            doc_len=np.array([len(tokenize(t)) for t in corpus.texts], dtype=np.float64),
        )
        names = ["bm25", "dense", "rrf", "dense_exact"] + (["sentence_maxsim"] if sentences else [])
        runs: dict[str, dict[str, dict[str, float]]] = {name: {} for name in names}
        cands: dict[str, QueryCands] = {}
        cands2: dict[str, QueryCands] = {}
        base_hits: dict[str, dict[str, list[tuple[int, float]]]] = {}
        hybrid_lat: list[float] = []
        for qid in all_qids:
            text = data.queries[qid]
            qs = bm25.query(text)
            hits = {"bm25": index.bm25(qs), "dense": index.dense(qemb[qid])}
            base_hits[qid] = dict(hits)
            if sentences is not None:
                hits["sent"] = index.maxsim(qemb[qid])
            if qid in eval_qrels:
                runs["bm25"][qid] = {ids[d]: s for d, s in hits["bm25"]}
                runs["dense"][qid] = {ids[d]: s for d, s in hits["dense"]}
                runs["rrf"][qid] = {ids[d]: s for d, s in index.rrf(qs, qemb[qid])}
                runs["dense_exact"][qid] = {ids[d]: s for d, s in index.dense(qemb[qid], exact=True)}
                if sentences is not None:
                    runs["sentence_maxsim"][qid] = {ids[d]: s for d, s in hits["sent"]}
            terms = bm25.query_terms(text)
            bm25_of = functools.partial(index.bm25_of, qs)
            if sentences is not None:
                cands[qid] = build_candidates(qid, terms, qemb[qid], hits, bm25_of, side)
            two = {k: hits[k] for k in ("bm25", "dense")}
            cands2[qid] = build_candidates(qid, terms, qemb[qid], two, bm25_of, side).select(
                TWO_SOURCE_FEATURES
            )
        for text in lat_texts:  # the serving path of one query, end to end
            t0 = time.perf_counter()
            index.rrf(bm25.query(text), single.encode_one(text))
            hybrid_lat.append(time.perf_counter() - t0)
        log(f"retrieved {len(all_qids)} queries; hybrid p50 {latency_stats(hybrid_lat)['p50_ms']} ms")

        int8_row = None
        if q8 is not None:
            q8_emb, _ = cached_embeddings(q8, corpus.texts, "corpus-int8", log)
            q8_q = q8.encode([data.queries[q] for q in eval_ids])
            scores = q8_q @ q8_emb.T
            run8 = {}
            for qid, row in zip(eval_ids, scores, strict=True):
                top = np.argsort(-row)[:DEPTH]
                run8[qid] = {ids[int(d)]: float(row[d]) for d in top}
            int8_row = M.evaluate(run8, eval_qrels)
            log(f"int8 dense (exact scan): {int8_row}")

        # Kindred: per fold, the trainer's tuned query encoder + fusion, learned on the other folds.
        pos_of = {d: i for i, d in enumerate(ids)}

        def rescore(qid: str, tuned_vec: np.ndarray, union: Sequence[str]) -> dict[str, dict[str, float]]:
            docs = [pos_of[d] for d in union]
            out = {
                BM25: {ids[d]: s for d, s in index.bm25_of(bm25.query(data.queries[qid]), docs).items()},
                DENSE_BASE: {ids[d]: s for d, s in index.dense_of(qemb[qid], docs).items()},
                DENSE_TUNED: {ids[d]: s for d, s in index.dense_of(tuned_vec, docs).items()},
            }
            # The stored title and sentence vectors scored with the tuned query vector (the diagnostic
            # "plus_tuned_evidence" row): they depend on the tuned encoder, so cross-fitted like DENSE_TUNED.
            for name, scores in index.tuned_evidence_of(tuned_vec, docs).items():
                out[name] = {ids[d]: s for d, s in scores.items()}
            return out

        log_len = np.log1p(side.doc_len)
        # Every feature is one document's value for one query (no union-dependent normalisation), and the
        # folds' unions overlap (BM25 and base-dense lists are the same): each (query, document) is asked
        # of the engine once.
        evidence: dict[str, tuple[set[int], dict[str, dict[int, float]]]] = {}

        def doc_features(qid: str, union: Sequence[str]) -> dict[str, dict[str, float]]:
            docs = [pos_of[d] for d in union]
            asked, found = evidence.setdefault(qid, (set(), {}))
            todo = [d for d in docs if d not in asked]
            if todo:
                for name, m in index.doc_features_of(data.queries[qid], qemb[qid], todo, bm25).items():
                    found.setdefault(name, {}).update(m)
                asked.update(todo)
            out = {name: {ids[d]: m[d] for d in docs if d in m} for name, m in found.items()}
            out[DOC_LEN] = {ids[d]: float(log_len[d]) for d in docs}  # a payload field in the service
            return out

        kinds = AUTO_FUSION_KINDS if args.fusion == "auto" else tuple(args.fusion.split(","))
        inp = FoldInputs(
            ids=ids,
            queries=data.queries,
            qrels={**train_qrels, **({} if not cross_val else eval_qrels)},
            doc_emb=doc_emb,
            base_hits=base_hits,
            dense_search=lambda v: index.dense(v),
            rescore=rescore,
            doc_encoder=encoder,
            models_dir=args.models_out,
            cfg=tune_cfg,
            cache_dir=CACHE,
            fusion_kinds=kinds,
            fusion_folds=args.fusion_folds,
            doc_features=doc_features if args.doc_features else None,
            encoded_features=encoded,
            available_encoded=available_encoded,
        )
        kindred_run: dict[str, dict[str, float]] = {}
        tuned_run: dict[str, dict[str, float]] = {}
        kind_runs: dict[str, dict[str, dict[str, float]]] = {f"kindred_{k}": {} for k in kinds}
        fold_infos: list[dict[str, Any]] = []
        for name, fit_ids, score_ids in plan:
            log(f"kindred {name}: learning from {len(fit_ids)} queries, scoring {len(score_ids)}")
            enc_f, fusions_f, chosen, info = fit_fold(name, fit_ids, inp, log)
            runs_f, tuned_f = score_fold(enc_f, fusions_f, score_ids, inp)
            kindred_run.update(runs_f[chosen])  # the kind inner CV chose, never by test-fold score
            for kind, run_k in runs_f.items():
                kind_runs.setdefault(f"kindred_{kind}", {}).update(run_k)
            tuned_run.update(tuned_f)
            held = {q: eval_qrels[q] for q in score_ids}
            info.update(
                queries=len(score_ids),
                ndcg10=round(M.evaluate(runs_f[chosen], held)["ndcg@10"], 4),
                ndcg10_by_kind={k: round(M.evaluate(r, held)["ndcg@10"], 4) for k, r in runs_f.items()},
                tuned_dense_ndcg10=round(M.evaluate(tuned_f, held)["ndcg@10"], 4),
            )
            fold_infos.append(info)
            log(
                f"kindred {name}: NDCG@10 {info['ndcg10']} ({chosen}; by kind {info['ndcg10_by_kind']}; "
                f"tuned dense alone {info['tuned_dense_ndcg10']})"
            )
    finally:
        with contextlib.suppress(NameError):  # NameError: indexing failed before the shard existed
            index.close()
        shutil.rmtree(shard_dir, ignore_errors=True)

    # --- other learned fusions (never scored on a query they learned from)
    rounds = 300 if not args.quick else 100
    learned: dict[str, dict[str, dict[str, float]]] = {
        "kindred": kindred_run,
        "dense_tuned_cv": tuned_run,
        **kind_runs,
    }
    learned["fusion_base_cv"], base_fusions = fusion_cv_run(plan, base_hits, train_qrels, ids)
    infos: dict[str, list[dict[str, Any]]] = {}
    ranker = lambdarank_learner(train_qrels, ids, rounds, args.seed)
    dropped = {f.strip() for f in args.drop_features.split(",") if f.strip()}
    if dropped - set(FEATURES):
        raise SystemExit(f"--drop-features: unknown {sorted(dropped - set(FEATURES))}")
    kept = [f for f in FEATURES if f not in dropped]
    kept2 = [f for f in TWO_SOURCE_FEATURES if f not in dropped]
    rank_cands2 = {q: c.select(kept2) for q, c in cands2.items()}
    learners: list[tuple[str, Learner, Mapping[str, QueryCands]]] = [
        ("lambdarank_2src", ranker, rank_cands2),
        ("logreg_cv", logreg_learner(train_qrels, ids), cands2),
        ("convex_cv", convex_learner(train_qrels, ids), cands2),
    ]
    if sentences is not None:
        learners.insert(0, ("lambdarank_3src", ranker, {q: c.select(kept) for q, c in cands.items()}))
    for name, learner, pool in learners:
        learned[name], infos[name] = held_out_run(
            learner, pool, ids, train_ids=train_ids, eval_ids=eval_ids, folds=folds
        )
        log(f"{name}: scored by {protocol}")
    eval_c2 = [cands2[q] for q in eval_ids]
    alpha_in = tune_convex(eval_c2, eval_qrels, ids)
    learned["convex_in_sample"] = run_of(eval_c2, [convex_scores(c, alpha_in) for c in eval_c2], ids)
    alphas = [float(i["alpha"]) for i in infos["convex_cv"]]

    systems = {
        name: _rounded(M.evaluate(runs[name] if name in runs else learned[name], eval_qrels))
        for name in ("bm25", "dense", "rrf", "kindred")
    }
    extra_names = (
        *kind_runs,
        "dense_tuned_cv",
        "fusion_base_cv",
        "lambdarank_3src",
        "lambdarank_2src",
        "convex_cv",
        "logreg_cv",
        "convex_in_sample",
    )
    extra_systems: dict[str, dict[str, float]] = {
        name: _rounded(M.evaluate(learned[name], eval_qrels)) for name in extra_names if name in learned
    }
    for name in ("dense_exact", "sentence_maxsim"):
        if name in runs:
            extra_systems[name] = _rounded(M.evaluate(runs[name], eval_qrels))
    if int8_row is not None:
        extra_systems["dense_int8"] = _rounded(int8_row)
    for name, row in {**systems, **extra_systems}.items():
        log(f"{name:>23}: NDCG@10 {row['ndcg@10']:.4f}  Recall@100 {row['recall@100']:.4f}")
    per_fold: dict[str, list[float]] = {}
    if folds is not None:
        for name in (
            "bm25",
            "dense",
            "rrf",
            "kindred",
            *kind_runs,
            "dense_tuned_cv",
            "fusion_base_cv",
            "lambdarank_3src",
            "lambdarank_2src",
            "sentence_maxsim",
        ):
            if name not in runs and name not in learned:
                continue
            run = runs[name] if name in runs else learned[name]
            per_fold[name] = [
                round(M.evaluate(run, {q: eval_qrels[q] for q in f})["ndcg@10"], 4) for f in folds
            ]

    if args.trec_out is not None:
        M.write_trec_run(kindred_run, args.trec_out, tag="kindred")
        for name in ("bm25", "dense", "rrf"):
            M.write_trec_run(
                runs[name],
                args.trec_out.with_name(f"{args.trec_out.stem}.{name}{args.trec_out.suffix}"),
                tag=name,
            )
        log(f"TREC runs written next to {args.trec_out}")

    runtime = round(time.perf_counter() - t_start, 1)
    mach["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    command = "python bench/bench_search_scifact.py" + (
        "" if argv is None and len(sys.argv) <= 1 else " " + " ".join(sys.argv[1:] if argv is None else argv)
    )
    tune_total = sum(
        (f.get("train_seconds") or 0) + sum(s or 0 for s in f.get("inner_fold_seconds") or [])
        for f in fold_infos
    )
    result = {
        "split": "train",
        "protocol": protocol,
        "fold_grouping": grouping,
        "command": command,
        "machine": mach,
        "date": started,
        "n_eval_queries": len(eval_qrels),
        "n_train_queries": len(train_qrels),
        "quick": args.quick,
        "systems": systems,
        "extra_systems": extra_systems,
        "per_fold_ndcg@10": per_fold,
        "reference": REFERENCE,
        "bm25": bm25.to_dict(),
        "kindred": {
            "encoder": "query-side fine-tuned all-MiniLM-L6-v2 (trainer.search_tuning), ONNX",
            "fusion": "kindred.text.fusion over the rescored union, kind chosen per fold by inner CV on "
            "cross-fitted training examples",
            "fusion_kinds": list(kinds),
            "fusion_selection_folds": args.fusion_folds,
            "doc_features": list(inp.ranker_extra),
            "encoded_features": list(inp.encoded_features),
            "chosen_per_fold": [f.get("chosen_fusion") for f in fold_infos],
            "config": dataclasses.asdict(tune_cfg),
            "folds": fold_infos,
            "tune_seconds_total": round(tune_total, 1),
            "fusion_base_per_fold": base_fusions,
        },
        "fusion": {
            "lambdarank_rounds": rounds,
            "lambdarank_features_2src": kept2,
            "dropped_features": sorted(dropped),
            "convex_alpha_per_fold": alphas,
            "convex_alpha_in_sample": alpha_in,
        },
        "encoder": {
            "model_version": encoder.version,
            "model_sha256": encoder.manifest["sha256"],
            "weights_sha256": encoder.manifest.get("weights_sha256"),
            "max_length": encoder.max_length,
            "threads": args.threads,
            "docs_per_s": round(docs_per_s, 1),
            "queries_per_s": round(queries_per_s, 1),
            "corpus_encode_s": round(enc_s, 1) if enc_s else "cached",
            "single_query_1_thread": lat1,
            f"single_query_{args.threads}_threads": lat2,
            **({"int8_docs_per_s": int8_dps} if int8_dps else {}),
        },
        "latency": {
            "hybrid_query": latency_stats(hybrid_lat),
            "note": "one query: BM25 tokenize + ONNX encode (1 thread) + one qdrant-edge RRF call",
        },
        "runtime_s": runtime,
    }
    if not args.quick:
        _write_json(args.json_out, result)
        write_section(RESULTS_KEY, render_section(result), args.md_out)
        log(f"wrote {args.json_out} and the SciFact section of {args.md_out.name}")
    else:
        _write_json(CACHE / "search_scifact.quick.json", result)
        log("quick run: results written to var/bench/scifact/search_scifact.quick.json only")
    return 0


def _rounded(row: Mapping[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in row.items()}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


if __name__ == "__main__":
    raise SystemExit(main())
