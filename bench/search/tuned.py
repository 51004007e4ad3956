"""Kindred's full search on SciFact, one cross-validation fold at a time: the trainer's query-side tuned
MiniLM + cross-fitted fusion (trainer.search_tuning), learned on the other folds' judgements, exported to
ONNX and served by kindred.text.encoder, fused by kindred.text.fusion over the engine's hit lists with
every union candidate rescored by every retriever in the engine (the service's call, see
retrieval_svc/search/query.py).

Each fold's model is written to `<models dir>/text_query_encoder/scifact-<tag>-f<i>/`, the tag hashing
the configuration, the document encoder and the training query ids: a rerun with the same inputs loads
it instead of tuning again (tuning is the bulk of the run time; the result is the same model). The
fold's cross-fitted fusion examples (inner-fold tuned lists + rescored unions of its training queries)
are cached the same way under `<cache>/crossfit/<version>.json`, so the fusion (chosen among
`fusion_kinds` by inner CV on those training examples only) is refitted without re-tuning; it is saved
to `<cache>/fusions/<version>/fusion.json` (+ fusion.onnx) and loaded back by FusionModel.load, the
service's loader.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kindred.text.encoder import TextEncoder
from kindred.text.fusion import SENT_MAX, SENT_TOP2, TITLE_DENSE, FitExample, FusionModel, Hits
from trainer.search_tuning import (
    BM25,
    DENSE_BASE,
    DENSE_TUNED,
    DOC_FEATURES,
    FUSION_FILE,
    FUSION_SELECTION_FOLDS,
    QUERY_ENCODER_NAME,
    TrainingQueries,
    TuneConfig,
    cross_fitted_examples,
    export_query_encoder,
    fit_fusion,
    relevance_groups,
    select_fusion,
    shared_document_groups,
    tune_query_encoder,
)

# Diagnostic fusions (keys beside the kinds): the chosen kind refit without any document evidence,
# with the text-only DOC_FEATURES (when the system also reads encoded evidence), and with the encoded
# evidence (kindred.text.fusion.ENCODED_DOC_FEATURES) it does not read added on top.
NO_DOC_FEATURES, TEXT_DOC_FEATURES = "no_doc_features", "text_doc_features"
WITH_TITLE_DENSE, WITH_SENTENCES, WITH_ENCODED = "plus_title_dense", "plus_sentences", "plus_encoded"
# A bench-only diagnostic (not served): the same stored title and sentence vectors scored with the *tuned*
# query vector (the tuned encoder was pulled towards its clicked items' whole-text vectors, which share
# the space of their parts), rescored with each fold's own tuned vector like dense_tuned.
TITLE_DENSE_TUNED, SENT_MAX_TUNED = "title_dense_tuned", "sent_max_tuned"
TUNED_DOC_FEATURES = (TITLE_DENSE_TUNED, SENT_MAX_TUNED)
WITH_TUNED_EVIDENCE = "plus_tuned_evidence"
# Alternative systems (keys beside the kinds): the same inner-CV choice of kind, on another evidence set —
# every encoded feature the index holds when Kindred reads none, the text-only DOC_FEATURES when it reads
# some. Unlike the refits above, their kind is chosen for that evidence (never by test-fold score).
ENCODED_CV, TEXT_CV = "encoded_cv", "text_cv"
PosHits = list[tuple[int, float]]  # (corpus position, engine score), best first


@dataclasses.dataclass
class FoldInputs:
    """What every fold shares: the corpus, judgements, the engine and the fixed per-query hit lists."""

    ids: Sequence[str]
    queries: Mapping[str, str]
    qrels: Mapping[str, Mapping[str, int]]
    doc_emb: np.ndarray
    base_hits: Mapping[str, Mapping[str, PosHits]]  # qid → {"bm25": ..., "dense": ...}
    dense_search: Callable[[np.ndarray], PosHits]  # the engine's dense query (tuned query vector)
    # (qid, tuned query vector, union doc ids) → retriever → {doc id: engine score}: union rescoring
    rescore: Callable[[str, np.ndarray, Sequence[str]], dict[str, dict[str, float]]]
    doc_encoder: TextEncoder
    models_dir: Path
    cfg: TuneConfig
    cache_dir: Path
    fusion_kinds: Sequence[str]
    # Inner folds select_fusion splits a fold's training queries into to choose the kind.
    fusion_folds: int = FUSION_SELECTION_FOLDS
    # (qid, union doc ids) → document feature → {doc id: value}: rescored-only retrievers
    # (kindred.text.fusion.DOC_FEATURES, and ENCODED_DOC_FEATURES when the index holds them) the ranker
    # kinds read; None: none.
    doc_features: Callable[[str, Sequence[str]], dict[str, dict[str, float]]] | None = None
    # Which of ENCODED_DOC_FEATURES Kindred's ranker reads besides DOC_FEATURES (doc_features supplies them).
    encoded_features: tuple[str, ...] = ()
    # Encoded evidence doc_features can supply (the index holds it): diagnostic "plus_*" refits.
    available_encoded: tuple[str, ...] = ()

    @property
    def ranker_extra(self) -> tuple[str, ...]:
        if self.doc_features is None:
            return ()
        return (*DOC_FEATURES, *self.encoded_features)

    def alternative_extras(self) -> dict[str, tuple[str, ...]]:
        """Key → the document evidence of an alternative system (its own inner-CV choice of kind)."""
        if not self.ranker_extra:
            return {}
        if self.encoded_features:
            return {TEXT_CV: tuple(DOC_FEATURES)}
        return {ENCODED_CV: (*DOC_FEATURES, *self.available_encoded)} if self.available_encoded else {}

    def diagnostic_extras(self) -> dict[str, tuple[str, ...]]:
        """Key → the document evidence the chosen kind is refit with, for the ablation rows."""
        if not self.ranker_extra:
            return {}
        out: dict[str, tuple[str, ...]] = {NO_DOC_FEATURES: ()}
        if self.encoded_features:
            out[TEXT_DOC_FEATURES] = tuple(DOC_FEATURES)
        extra = self.ranker_extra
        if TITLE_DENSE in self.available_encoded and TITLE_DENSE not in extra:
            out[WITH_TITLE_DENSE] = (*extra, TITLE_DENSE)
        sentences = tuple(f for f in (SENT_MAX, SENT_TOP2) if f in self.available_encoded and f not in extra)
        if sentences:
            out[WITH_SENTENCES] = (*extra, *sentences)
        tuned = tuple(f for f in TUNED_DOC_FEATURES if f in self.available_encoded and f not in extra)
        if tuned:
            out[WITH_TUNED_EVIDENCE] = (*extra, *tuned)
        missing = tuple(f for f in self.available_encoded if f not in extra)
        if missing and (*extra, *missing) not in out.values():
            out[WITH_ENCODED] = (*extra, *missing)
        return out


def with_doc_features(ex: FitExample, qid: str, inp: FoldInputs) -> FitExample:
    """The example with its union's document features added to `rescored` (they do not depend on the
    tuned encoder, so cached cross-fitted examples are completed rather than recomputed)."""
    if inp.doc_features is None:
        return ex
    union = sorted({d for lst in ex.hits.values() for d, _ in lst})
    return FitExample(ex.hits, ex.relevance, {**(ex.rescored or {}), **inp.doc_features(qid, union)})


def training_queries(qids: Sequence[str], inp: FoldInputs) -> TrainingQueries:
    pos = {d: i for i, d in enumerate(inp.ids)}
    texts, positives, relevance = [], [], []
    for q in qids:
        rel = {pos[d]: float(r) for d, r in inp.qrels[q].items() if r > 0}
        if rel:
            texts.append(inp.queries[q])
            positives.append(sorted(rel))
            relevance.append(rel)
    return TrainingQueries(texts, positives, relevance)


def to_ids(hits: PosHits, ids: Sequence[str]) -> Hits:
    return [(ids[d], s) for d, s in hits]


def fold_tag(train_qids: Sequence[str], inp: FoldInputs) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(dataclasses.asdict(inp.cfg), sort_keys=True).encode())
    h.update(str(inp.doc_encoder.manifest["sha256"]).encode())
    h.update("\x00".join(sorted(train_qids)).encode())
    return h.hexdigest()[:10]


def hits_of(q: str, vec: np.ndarray, inp: FoldInputs) -> dict[str, Hits]:
    base = inp.base_hits[q]
    return {
        BM25: to_ids(base[BM25], inp.ids),
        DENSE_BASE: to_ids(base[DENSE_BASE], inp.ids),
        DENSE_TUNED: to_ids(inp.dense_search(vec), inp.ids),
    }


def _example_json(ex: FitExample) -> dict[str, Any]:
    return {
        "hits": {r: [[d, s] for d, s in h] for r, h in ex.hits.items()},
        "relevance": dict(ex.relevance),
        "rescored": {r: dict(m) for r, m in (ex.rescored or {}).items()},
    }


def _example_of(d: Mapping[str, Any]) -> FitExample:
    return FitExample(
        {r: [(str(x), float(s)) for x, s in h] for r, h in d["hits"].items()},
        {str(k): float(v) for k, v in d["relevance"].items()},
        {r: {str(k): float(v) for k, v in m.items()} for r, m in d["rescored"].items()},
    )


def crossfit_examples(
    version: str, train_qids: Sequence[str], inp: FoldInputs, log: Callable[[str], None]
) -> tuple[list[FitExample], list[dict[str, Any]], bool]:
    """(the fold's cross-fitted examples, inner tuning summaries, loaded from cache?)."""
    path = inp.cache_dir / "crossfit" / f"{version}.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        return [_example_of(e) for e in data["examples"]], data["inner"], True
    kept = [q for q in train_qids if any(r > 0 for r in inp.qrels.get(q, {}).values())]
    tq = training_queries(kept, inp)
    hard = [
        [d for d, _ in inp.base_hits[q][BM25] if d not in rel][: inp.cfg.hard_negatives]
        for q, rel in zip(kept, tq.relevance, strict=True)
    ]
    rel_ids = [{inp.ids[d]: g for d, g in rel.items()} for rel in tq.relevance]
    examples, inner = cross_fitted_examples(
        tq,
        inp.doc_emb,
        hard,
        lambda row, vec: hits_of(kept[row], vec, inp),
        rel_ids,
        inp.cfg,
        groups=shared_document_groups(tq),
        rescore_of=lambda row, vec, union: inp.rescore(kept[row], vec, union),
        log=log,
    )
    summaries = [{k: s[k] for k in ("queries", "pairs", "seconds")} for s in inner]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"examples": [_example_json(e) for e in examples], "inner": summaries}))
    tmp.replace(path)
    return examples, summaries, False


def fit_fold(
    name: str, train_qids: Sequence[str], inp: FoldInputs, log: Callable[[str], None]
) -> tuple[TextEncoder, dict[str, FusionModel], str, dict[str, Any]]:
    """The fold's tuned query encoder (ONNX, served path), its fusion of every kind in `fusion_kinds`
    (each saved and loaded back through FusionModel.load) and the kind inner CV chose (Kindred's)."""
    version = f"scifact-{fold_tag(train_qids, inp)}-{name}"
    directory = inp.models_dir / QUERY_ENCODER_NAME / version
    info: dict[str, Any] = {"version": version}
    t0 = time.perf_counter()
    examples, inner, cached = crossfit_examples(version, train_qids, inp, log)
    info["crossfit_cached"] = cached
    if inp.doc_features is not None:
        kept = [q for q in train_qids if any(r > 0 for r in inp.qrels.get(q, {}).values())]
        examples = [with_doc_features(ex, q, inp) for ex, q in zip(examples, kept, strict=True)]
    choice = select_fusion(
        examples,
        inp.fusion_kinds,
        folds=inp.fusion_folds,
        groups=relevance_groups(examples),  # claims citing the same abstract stay in one inner split
        seed=inp.cfg.seed,
        threads=inp.cfg.threads,
        ranker_extra=inp.ranker_extra,
        log=log,
    )
    fitted = {choice.kind: choice.chosen}
    for kind in inp.fusion_kinds:  # the other kinds, refit on the same examples: diagnostic rows
        if kind not in fitted:
            fitted[kind] = fit_fusion(
                examples, kind, seed=inp.cfg.seed, threads=inp.cfg.threads, ranker_extra=inp.ranker_extra
            )
    for key, extra in inp.diagnostic_extras().items():  # the chosen kind, less / more evidence: shares
        fitted[key] = fit_fusion(
            examples, choice.kind, seed=inp.cfg.seed, threads=inp.cfg.threads, ranker_extra=extra
        )
    alternatives: dict[str, Any] = {}
    for key, extra in inp.alternative_extras().items():
        alt = select_fusion(
            examples,
            inp.fusion_kinds,
            folds=inp.fusion_folds,
            groups=relevance_groups(examples),
            seed=inp.cfg.seed,
            threads=inp.cfg.threads,
            ranker_extra=extra,
            log=log,
        )
        fitted[key] = alt.chosen
        alternatives[key] = {
            "chosen_fusion": alt.kind,
            "inner_cv_ndcg10": alt.cv_ndcg,
            "evidence": list(extra),
        }
    fusions: dict[str, FusionModel] = {}
    tag = "".join(f"+{f}" for f in inp.encoded_features) + ("+doc" if inp.ranker_extra else "")
    for kind, model in fitted.items():
        path = inp.cache_dir / "fusions" / f"{version}{tag}" / kind / FUSION_FILE
        model.save(path)
        fusions[kind] = FusionModel.load(path)  # what serves: the file, its ONNX ranker sha256-checked
    info.update(
        chosen_fusion=choice.kind,
        fusion_inner_cv_ndcg10=choice.cv_ndcg,
        alternatives=alternatives,
        fusion_seconds=round(time.perf_counter() - t0, 1),
    )
    if directory.is_dir():
        log(f"{name}: reusing {directory.name}")
        info["cached"] = True
    else:
        t0 = time.perf_counter()
        kept = [q for q in train_qids if any(r > 0 for r in inp.qrels.get(q, {}).values())]
        tq = training_queries(kept, inp)
        hard = [
            [d for d, _ in inp.base_hits[q][BM25] if d not in rel][: inp.cfg.hard_negatives]
            for q, rel in zip(kept, tq.relevance, strict=True)
        ]
        model, summary = tune_query_encoder(tq, inp.doc_emb, hard, inp.cfg, log=log)
        training = {
            **summary,
            "data": {"dataset": "BEIR SciFact train", "queries": len(tq), "fold": name},
            "inner_folds": inner,
        }
        export_query_encoder(
            model,
            inp.models_dir,
            version=version,
            fusion=choice.chosen,
            doc_encoder=inp.doc_encoder,
            training=training,
            log=log,
        )
        info.update(cached=False, seconds=round(time.perf_counter() - t0, 1))
    encoder = TextEncoder.load(directory, intra_op_num_threads=inp.cfg.threads)
    manifest = encoder.manifest
    info.update(
        fusion=str(fusions[choice.kind]),
        train_seconds=manifest.get("training", {}).get("seconds"),
        inner_fold_seconds=[s.get("seconds") for s in inner],
        parity_max_abs_diff=manifest.get("parity", {}).get("max_abs_diff"),
    )
    return encoder, fusions, choice.kind, info


def score_fold(
    encoder: TextEncoder, fusions: Mapping[str, FusionModel], qids: Sequence[str], inp: FoldInputs
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, float]]]:
    """({fusion kind: run}, tuned-dense-alone run) for `qids`, through the served encoder and fusions."""
    vecs = encoder.encode([inp.queries[q] for q in qids])
    runs: dict[str, dict[str, dict[str, float]]] = {kind: {} for kind in fusions}
    tuned_run: dict[str, dict[str, float]] = {}
    for q, v in zip(qids, vecs, strict=True):
        hits = hits_of(q, v, inp)
        union = sorted({d for lst in hits.values() for d, _ in lst})
        rescored = inp.rescore(q, v, union) if any(f.rescore for f in fusions.values()) else None
        if rescored is not None and inp.doc_features is not None:
            rescored = {**rescored, **inp.doc_features(q, union)}
        for kind, fusion in fusions.items():
            runs[kind][q] = {h.doc_id: h.score for h in fusion.fuse(hits, rescored=rescored)}
        tuned_run[q] = dict(hits[DENSE_TUNED])
    return runs, tuned_run


__all__ = [
    "ENCODED_CV",
    "NO_DOC_FEATURES",
    "TEXT_CV",
    "TEXT_DOC_FEATURES",
    "WITH_ENCODED",
    "WITH_SENTENCES",
    "WITH_TITLE_DENSE",
    "FoldInputs",
    "crossfit_examples",
    "fit_fold",
    "hits_of",
    "score_fold",
    "training_queries",
]
