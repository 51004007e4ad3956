"""Kindred's full search on SciFact, one cross-validation fold at a time: the trainer's query-side tuned
MiniLM + cross-fitted fusion (trainer.search_tuning), learned on the other folds' judgements, exported to
ONNX and served by kindred.text.encoder, fused by kindred.text.fusion over the engine's hit lists.

Each fold's model is written to `<models dir>/text_query_encoder/scifact-<tag>-f<i>/`, the tag hashing
the configuration, the document encoder and the training query ids: a rerun with the same inputs loads
it instead of tuning again (tuning is the bulk of the run time; the result is the same model).
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
from kindred.text.fusion import FusionModel, Hits
from trainer.search_tuning import (
    BM25,
    DENSE_BASE,
    DENSE_TUNED,
    FUSION_FILE,
    QUERY_ENCODER_NAME,
    TrainingQueries,
    TuneConfig,
    cross_fitted_fusion,
    export_query_encoder,
    shared_document_groups,
    tune_query_encoder,
)

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
    doc_encoder: TextEncoder
    models_dir: Path
    cfg: TuneConfig


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


def fit_fold(
    name: str, train_qids: Sequence[str], inp: FoldInputs, log: Callable[[str], None]
) -> tuple[TextEncoder, FusionModel, dict[str, Any]]:
    """The fold's tuned query encoder (ONNX, served path) and fusion; loaded if already exported."""
    version = f"scifact-{fold_tag(train_qids, inp)}-{name}"
    directory = inp.models_dir / QUERY_ENCODER_NAME / version
    info: dict[str, Any] = {"version": version}
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

        def hits_of(row: int, vec: np.ndarray) -> Mapping[str, Hits]:
            base = inp.base_hits[kept[row]]
            return {
                BM25: to_ids(base[BM25], inp.ids),
                DENSE_BASE: to_ids(base[DENSE_BASE], inp.ids),
                DENSE_TUNED: to_ids(inp.dense_search(vec), inp.ids),
            }

        rel_ids = [{inp.ids[d]: g for d, g in rel.items()} for rel in tq.relevance]
        fusion, inner = cross_fitted_fusion(
            tq, inp.doc_emb, hard, hits_of, rel_ids, inp.cfg, groups=shared_document_groups(tq), log=log
        )
        model, summary = tune_query_encoder(tq, inp.doc_emb, hard, inp.cfg, log=log)
        training = {
            **summary,
            "data": {"dataset": "BEIR SciFact train", "queries": len(tq), "fold": name},
            "inner_folds": [{k: s[k] for k in ("queries", "pairs", "seconds")} for s in inner],
        }
        export_query_encoder(
            model,
            inp.models_dir,
            version=version,
            fusion=fusion,
            doc_encoder=inp.doc_encoder,
            training=training,
            log=log,
        )
        info.update(cached=False, seconds=round(time.perf_counter() - t0, 1))
    encoder = TextEncoder.load(directory, intra_op_num_threads=inp.cfg.threads)
    fusion = FusionModel.load(directory / FUSION_FILE)
    manifest = encoder.manifest
    info.update(
        fusion=str(fusion),
        train_seconds=manifest.get("training", {}).get("seconds"),
        inner_fold_seconds=[s.get("seconds") for s in manifest.get("training", {}).get("inner_folds", [])],
        parity_max_abs_diff=manifest.get("parity", {}).get("max_abs_diff"),
    )
    return encoder, fusion, info


def score_fold(
    encoder: TextEncoder, fusion: FusionModel, qids: Sequence[str], inp: FoldInputs
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """(kindred run, tuned-dense-alone run) for `qids`, through the served encoder and fusion."""
    vecs = encoder.encode([inp.queries[q] for q in qids])
    run: dict[str, dict[str, float]] = {}
    tuned_run: dict[str, dict[str, float]] = {}
    for q, v in zip(qids, vecs, strict=True):
        tuned = to_ids(inp.dense_search(v), inp.ids)
        base = inp.base_hits[q]
        hits = {
            BM25: to_ids(base[BM25], inp.ids),
            DENSE_BASE: to_ids(base[DENSE_BASE], inp.ids),
            DENSE_TUNED: tuned,
        }
        run[q] = {h.doc_id: h.score for h in fusion.fuse(hits)}
        tuned_run[q] = dict(tuned)
    return run, tuned_run


__all__ = ["FoldInputs", "fit_fold", "score_fold", "training_queries"]
