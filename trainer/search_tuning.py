"""Learning search from the fans: a query-side fine-tuned MiniLM and the fusion weights on top of it.

    python -m trainer search-tune --data-dir var/demo [--epochs 2] [--force-promote]

What is tuned, and why only the query side. The documents keep the base all-MiniLM-L6-v2 vectors they
were indexed with (model `text_encoder`); only the encoder that turns a *query* into a vector is
fine-tuned, towards the vectors of the documents fans clicked for it. Measured on this 2-core machine
(shared, load 8-27): encoding the 5,183 SciFact abstracts once took 37 minutes, and full fine-tuning
needs that again for every tuned model (every CV fold; every catalogue re-index in production), plus
backward passes through 256-token documents (59 s for one step over 32 claims + 64 abstracts at 2
threads). Tuning the query tower against fixed document vectors costs 1-3 s per step of 32 short
queries and never re-indexes: a promoted query encoder serves from retrieval_svc's next start (loaded
at start, not hot-swapped), for an index of any size.
The price is a smaller search space than full fine-tuning (the documents do not move), and the query
encoder is only valid with the document encoder it was tuned against (its manifest records that
model's sha256; the service must use the pair).

The loss is MultipleNegativesRanking-style: softmax cross-entropy of scale × cos(query, document) over
the clicked document, the other documents of the batch, each query's BM25 hard negatives (top lexical
hits the fan did not click) and — up to `full_softmax_max_docs` documents — the whole collection, since
with fixed document vectors scoring every document costs one matrix product. Other documents judged
relevant for the same query are masked out of its negatives.

Fusion (kindred.text.fusion) is fitted on *cross-fitted* tuned scores: the training queries are split
into `inner_folds` groups; each group's queries are scored by a query encoder tuned without them, so the
fusion sees the tuned retriever as it behaves on unseen queries (scoring the training queries with the
final encoder would overweight it: it has memorised them). Each cross-fitted example also carries every
union candidate's real score per retriever (union rescoring, see kindred.text.fusion). The fusion is one
of `FUSION_KINDS` — "linear" (weighted normalised scores over the engine's lists), "linear_rescored"
(the same over the rescored union), "lambdarank" (a LightGBM LambdaRank booster over per-retriever
features of the rescored union, served as ONNX via trainer.lgbm_onnx), "lambdarank_on_linear" (the
same trees boosted from linear_rescored's score, which the graph adds back), "xendcg" (the lambdarank
kind's trees trained with LightGBM's listwise rank_xendcg loss instead), "lambdarank_mono" (the lambdarank
kind's trees constrained to score an item no lower when any of its retrieval scores rises:
`monotone_directions`) — or, with several kinds, the one
whose mean NDCG@10 is best under an inner cross-validation over the cross-fitted examples
(`select_fusion`; refit on all of them). The final encoder is then tuned on every training query.
Served: model `text_query_encoder/<version>/` = model.onnx + tokenizer.json + fusion.json (+ fusion.onnx
for a lambdarank fusion) + manifest.json, exported by trainer.text_encoder's parity-checked path.

The job on the event log (`run_search_tune`): SEARCH_CLICK events give (query, clicked creator or post);
the documents are the catalogue's creators (name, category, tags, description) and posts (title, text).
The latest `holdout_fraction` of distinct queries by first-click time are held out; the new encoder +
fusion and the current one (the promoted `text_query_encoder`, or the base encoder with the default
fusion if none was promoted) are scored on them, and trainer.promotion.decide promotes the new one only
if it is not worse (tolerance 0 by default: the issue's "never promoted if it scores worse").
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from kindred.errors import InvalidArgument
from kindred.fileio import write_text_atomic
from kindred.models import current_version, promote, version_dir
from kindred.text.encoder import MODEL_NAME as DOC_ENCODER_NAME
from kindred.text.encoder import TextEncoder
from kindred.text.fusion import (
    COVERAGE,
    DOC_FEATURES,
    DOC_LEN,
    ENCODED_DOC_FEATURES,
    SENT_MAX,
    SENT_TOP2,
    TITLE_BM25,
    TITLE_DENSE,
    FitExample,
    FusionModel,
    Hits,
    Ranker,
    fused_order,
    ranker_features,
    rescore_union,
    sentence_evidence,
    union_of,
)
from kindred.text.tokenize import Bm25, idf, tokenize

if TYPE_CHECKING:
    from retrieval_svc.search.index import EncodedEvidence

QUERY_ENCODER_NAME: Final = "text_query_encoder"
FUSION_FILE: Final = "fusion.json"
DENSE_BASE, DENSE_TUNED, BM25 = "dense", "dense_tuned", "bm25"
FUSION_RETRIEVERS: Final = (BM25, DENSE_BASE, DENSE_TUNED)
# Document evidence a ranker fusion may read besides the retrievers (kindred.text.fusion.DOC_FEATURES:
# title BM25, query-term coverage, length), each a "rescored-only retriever". All three need nothing
# but the item's text at index time (two sparse named vectors and a payload field;
# retrieval_svc/search/index.py), no second encoder pass. The encoded evidence (ENCODED_DOC_FEATURES:
# title cosine, best / mean-of-two-best sentence cosine) needs each item's title and sentences encoded
# too (~10 texts per item): asked for by `encoded_features`, served by an index built with
# `kindred index --encoded-evidence`.
FUSION_KINDS: Final = (
    "linear",
    "linear_rescored",
    "lambdarank",
    "lambdarank_on_linear",
    "xendcg",
    "lambdarank_mono",
)
# What `auto` chooses between: the ranker's boosting rounds are chosen with the kind (inner CV), since
# a few hundred training queries overfit 300 rounds. "lambdarank:N" = N rounds; "lambdarank:NxB" = the
# mean of B such boosters (seeds, row and feature samples differ; one ONNX graph). The monotone bags
# scored above every free kind on SciFact (bench/RESULTS.md), so auto weighs them too.
AUTO_FUSION_KINDS: Final = (
    "linear",
    "linear_rescored",
    "lambdarank:50",
    "lambdarank:100",
    "lambdarank:200",
    "lambdarank:100x5",
    "lambdarank:200x5",
    "lambdarank_mono:100x5",
    "lambdarank_mono:200x5",
    # A bag across round counts: on SciFact, fixed in every fold, 0.7609 against 0.7588 for either of the
    # two above (README, "SciFact"); the inner CV chose it in one fold of five.
    "lambdarank_mono:100+200+400x5",
)
# Inner folds `select_fusion` splits the training examples into to choose between kinds (each inner fit
# sees 2/3 of them). 5 was tried on SciFact: the same score within noise (README, "SciFact").
FUSION_SELECTION_FOLDS: Final = 3
FloatMatrix = npt.NDArray[np.float32]
Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    epochs: int = 2
    batch_size: int = 32
    lr: float = 2e-5
    scale: float = 20.0  # sentence-transformers' MultipleNegativesRankingLoss default
    hard_negatives: int = 16
    max_query_tokens: int = 64  # claims and search queries are short; training pays for padding
    full_softmax_max_docs: int = 50_000
    inner_folds: int = 2
    depth: int = 100  # per-retriever hits the fusion sees (the service's prefetch limit)
    freeze_embeddings: bool = True  # 12M of MiniLM's 23M weights; a few hundred queries cannot move them well
    seed: int = 0
    # One thread: on the shared 2 cores (load 15-27) a step over 32 queries took 7.5 s with 1 torch thread
    # and 45 s with 2 (threads spin-waiting for each other on an oversubscribed machine).
    threads: int = 1


@dataclasses.dataclass(frozen=True)
class TrainingQueries:
    """Queries with the documents (row indices of the document matrix) judged relevant / clicked."""

    texts: list[str]
    positives: list[list[int]]
    relevance: list[dict[int, float]]

    def subset(self, rows: Sequence[int]) -> TrainingQueries:
        return TrainingQueries(
            [self.texts[i] for i in rows],
            [self.positives[i] for i in rows],
            [self.relevance[i] for i in rows],
        )

    def __len__(self) -> int:
        return len(self.texts)


# ------------------------------------------------------------------------------------------------
# the query encoder


def base_query_model(threads: int) -> Any:
    """The base MiniLM as a sentence-transformers model (torch), the starting point of every tuning."""
    import torch

    from trainer.text_encoder import load_sentence_transformer, source_model_dir

    torch.set_num_threads(threads)
    return load_sentence_transformer(source_model_dir())


def tune_query_encoder(
    queries: TrainingQueries,
    doc_emb: FloatMatrix,
    hard_negatives: Sequence[Sequence[int]],
    cfg: TuneConfig,
    *,
    log: Log = print,
) -> tuple[Any, dict[str, Any]]:
    """A copy of base MiniLM whose query vectors are pulled towards their clicked documents' (fixed)
    vectors. Returns (sentence-transformers model, training summary)."""
    import torch

    torch.manual_seed(cfg.seed)
    model = base_query_model(cfg.threads)
    model.max_seq_length = cfg.max_query_tokens
    model.train()
    if cfg.freeze_embeddings:
        for p in model[0].auto_model.embeddings.parameters():
            p.requires_grad_(False)
    docs = torch.from_numpy(np.ascontiguousarray(doc_emb, dtype=np.float32))
    pairs = [(q, p) for q, pos in enumerate(queries.positives) for p in pos]
    if not pairs:
        raise ValueError("no (query, clicked document) pairs to learn from")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(pairs) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, total // 10)) * max(0.0, (total - s) / total)
    )
    rng = random.Random(cfg.seed)
    full = len(doc_emb) <= cfg.full_softmax_max_docs
    t0 = time.perf_counter()
    losses: list[float] = []
    for epoch in range(cfg.epochs):
        rng.shuffle(pairs)
        for start in range(0, len(pairs), cfg.batch_size):
            batch = pairs[start : start + cfg.batch_size]
            qrows = [q for q, _ in batch]
            if full:
                cand = np.arange(len(doc_emb))
            else:
                pool = {p for _, p in batch}
                for q in qrows:
                    pool.update(hard_negatives[q][: cfg.hard_negatives])
                cand = np.array(sorted(pool))
            where = {int(d): i for i, d in enumerate(cand)}
            target = torch.tensor([where[p] for _, p in batch])
            mask = torch.zeros(len(batch), len(cand), dtype=torch.bool)
            for i, (q, p) in enumerate(batch):
                for other in queries.positives[q]:
                    if other != p and other in where:
                        mask[i, where[other]] = True
            features = model.preprocess([queries.texts[q] for q in qrows])
            qv = model(features)["sentence_embedding"]
            logits = cfg.scale * qv @ docs[torch.from_numpy(cand)].T
            logits = logits.masked_fill(mask, float("-inf"))
            loss = torch.nn.functional.cross_entropy(logits, target)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            losses.append(loss.item())
        log(
            f"[search-tune] epoch {epoch + 1}/{cfg.epochs}: {len(pairs)} pairs, "
            f"mean loss {np.mean(losses[-steps_per_epoch:]):.4f}, {time.perf_counter() - t0:.0f}s"
        )
    model.eval()
    model.max_seq_length = 256
    summary = {
        "pairs": len(pairs),
        "queries": len(queries),
        "epochs": cfg.epochs,
        "steps": len(losses),
        "negatives": "every document" if full else f"in-batch + {cfg.hard_negatives} BM25 hard negatives",
        "first_loss": round(losses[0], 4),
        "last_epoch_loss": round(float(np.mean(losses[-steps_per_epoch:])), 4),
        "seconds": round(time.perf_counter() - t0, 1),
        "config": dataclasses.asdict(cfg),
    }
    return model, summary


def torch_encode(model: Any, texts: Sequence[str]) -> FloatMatrix:
    """Unit query vectors from the torch model (inner folds only; what serves is the ONNX export)."""
    import torch

    with torch.no_grad():
        out = model.encode(list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(out, dtype=np.float32)


def weights_sha256(model: Any) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# retrieval over a document matrix (exact: what the engine returns, up to HNSW recall)


@dataclasses.dataclass
class ExactRetrievers:
    """BM25 and cosine over an in-memory document set: the trainer's stand-in for the engine."""

    doc_emb: FloatMatrix
    bm25: Bm25
    postings: dict[str, list[tuple[int, float]]]
    idf: dict[str, float]
    # Document evidence (kindred.text.fusion.DOC_FEATURES), when built with titles: title BM25 (its own
    # postings and IDF, as the index's `bm25_title` vector), each document's term set and log length.
    titles: ExactRetrievers | None = None
    terms: list[frozenset[str]] | None = None
    log_len: FloatMatrix | None = None
    # Encoded evidence (kindred.text.fusion.ENCODED_DOC_FEATURES): each document's title and sentence
    # vectors by the base document encoder, as the index stores them (encode_documents).
    encoded: EncodedEvidence | None = None

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        doc_emb: FloatMatrix,
        *,
        titles: Sequence[str] | None = None,
        idf_over_nonempty: bool = False,
        encoded: EncodedEvidence | None = None,
    ) -> ExactRetrievers:
        """`idf_over_nonempty`: IDF's document count is the documents with at least one term (the
        engine's, which counts points holding the sparse vector; titles: many items have none).
        `encoded`: the documents' title and sentence vectors (retrieval_svc.search.index.encode_documents),
        for the encoded evidence."""
        bm25 = Bm25.fit(texts)
        postings: dict[str, list[tuple[int, float]]] = {}
        nonempty = 0
        for i, text in enumerate(texts):
            weights = bm25.document_weights(text)
            nonempty += bool(weights)
            for term, w in weights.items():
                postings.setdefault(term, []).append((i, w))
        n_docs = nonempty if idf_over_nonempty else len(texts)
        idfs = {t: idf(n_docs, len(p)) for t, p in postings.items()}
        if titles is None:
            return cls(doc_emb, bm25, postings, idfs, encoded=encoded)
        tokens = [tokenize(t, bm25.tokenizer) for t in texts]
        return cls(
            doc_emb,
            bm25,
            postings,
            idfs,
            encoded=encoded,
            titles=cls.build(titles, doc_emb, idf_over_nonempty=True),
            terms=[frozenset(t) for t in tokens],
            log_len=np.log1p(np.array([len(t) for t in tokens], dtype=np.float32)),
        )

    def doc_evidence(
        self, query: str, docs: Sequence[str], base: FloatMatrix | None = None
    ) -> dict[str, dict[str, float]]:
        """DOC_FEATURES of these candidates (row numbers as strings), if built with titles, and
        ENCODED_DOC_FEATURES, if built with `encoded` and given the base query vector `base`; {} if
        neither. Title BM25 / coverage absent where zero, as the engine's sparse scores."""
        out = self.encoded_evidence(base, docs) if base is not None else {}
        if self.titles is None or self.terms is None or self.log_len is None:
            return out
        rows = [int(d) for d in docs]
        q = set(self.bm25.query_terms(query))
        cover = {str(d): len(q & self.terms[d]) / len(q) for d in rows if q & self.terms[d]}
        return {
            **out,
            TITLE_BM25: {str(d): s for d, s in self.titles.bm25_scores(query, rows).items()},
            COVERAGE: cover,
            DOC_LEN: {str(d): float(self.log_len[d]) for d in rows},
        }

    def encoded_evidence(self, base: FloatMatrix, docs: Sequence[str]) -> dict[str, dict[str, float]]:
        """ENCODED_DOC_FEATURES of these candidates for the base query vector `base` (unit, as the
        encoder's): the title's cosine (absent for a document without a title, which has no title
        vector) and kindred.text.fusion.sentence_evidence of the sentences' cosines — the engine's
        exact cosine / MaxSim over the same vectors; {} if built without `encoded`."""
        if self.encoded is None:
            return {}
        qv = np.asarray(base, dtype=np.float64)
        title: dict[str, float] = {}
        best: dict[str, float] = {}
        top2: dict[str, float] = {}
        for d in docs:
            row = int(d)
            vec = self.encoded.titles[row]
            if vec is not None:
                title[d] = float(np.asarray(vec, dtype=np.float64) @ qv)
            best[d], top2[d] = sentence_evidence(
                np.asarray(self.encoded.sentences[row], dtype=np.float64) @ qv
            )
        return {TITLE_DENSE: title, SENT_MAX: best, SENT_TOP2: top2}

    def bm25_hits(self, query: str, depth: int) -> list[tuple[int, float]]:
        scores: dict[int, float] = {}
        for term in self.bm25.query_terms(query):
            for doc, w in self.postings.get(term, ()):
                scores[doc] = scores.get(doc, 0.0) + self.idf[term] * w
        return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]

    def bm25_scores(self, query: str, docs: Sequence[int]) -> dict[int, float]:
        """BM25 of exactly these documents (union rescoring); a document sharing no term is absent."""
        wanted = set(docs)
        scores: dict[int, float] = {}
        for term in self.bm25.query_terms(query):
            for doc, w in self.postings.get(term, ()):
                if doc in wanted:
                    scores[doc] = scores.get(doc, 0.0) + self.idf[term] * w
        return scores

    def rescored(
        self, query: str, base: FloatMatrix, tuned: FloatMatrix, docs: Sequence[str]
    ) -> dict[str, dict[str, float]]:
        """Every candidate's (ids are row numbers as strings) BM25, base and tuned cosine."""
        rows = [int(d) for d in docs]
        sub = self.doc_emb[rows]
        return {
            BM25: {str(d): s for d, s in self.bm25_scores(query, rows).items()},
            DENSE_BASE: dict(zip(docs, (sub @ base).astype(float).tolist(), strict=True)),
            DENSE_TUNED: dict(zip(docs, (sub @ tuned).astype(float).tolist(), strict=True)),
        }

    def dense_hits(self, qvec: FloatMatrix, depth: int) -> list[tuple[int, float]]:
        sims = self.doc_emb @ qvec
        top = np.argsort(-sims, kind="stable")[:depth]
        return [(int(d), float(sims[d])) for d in top]


def as_hits(rows: Sequence[tuple[int, float]], ids: Sequence[str]) -> Hits:
    return [(ids[d], s) for d, s in rows]


def hard_negatives_of(retr: ExactRetrievers, queries: TrainingQueries, k: int) -> list[list[int]]:
    out = []
    for text, rel in zip(queries.texts, queries.relevance, strict=True):
        out.append([d for d, _ in retr.bm25_hits(text, k + len(rel)) if d not in rel][:k])
    return out


# ------------------------------------------------------------------------------------------------
# cross-fitted fusion


def split_groups(n: int, k: int, seed: int, groups: Sequence[int] | None = None) -> list[list[int]]:
    """k disjoint row sets covering range(n); rows with the same group id stay together."""
    gid = list(groups) if groups is not None else list(range(n))
    by_group: dict[int, list[int]] = {}
    for row, g in enumerate(gid):
        by_group.setdefault(g, []).append(row)
    comps = sorted(by_group.values())
    random.Random(seed).shuffle(comps)
    comps.sort(key=len, reverse=True)
    folds: list[list[int]] = [[] for _ in range(k)]
    for c in comps:
        min(folds, key=len).extend(c)
    return [sorted(f) for f in folds if f]


def shared_document_groups(queries: TrainingQueries) -> list[int]:
    """Group id per query: queries sharing a relevant document share a group (no leakage across folds)."""
    parent = list(range(len(queries)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[int, int] = {}
    for q, pos in enumerate(queries.positives):
        for d in pos:
            if d in first:
                parent[find(q)] = find(first[d])
            else:
                first[d] = q
    return [find(q) for q in range(len(queries))]


HitsOf = Callable[[int, FloatMatrix], Mapping[str, Hits]]  # (query row, tuned vector) → retriever → hits
# (query row, tuned vector, union candidates) → retriever → {doc: real score}: union rescoring
RescoreOf = Callable[[int, FloatMatrix, Sequence[str]], Mapping[str, Mapping[str, float]]]


def cross_fitted_examples(
    queries: TrainingQueries,
    doc_emb: FloatMatrix,
    hard_negatives: Sequence[Sequence[int]],
    hits_of: HitsOf,
    relevance_ids: Sequence[Mapping[str, float]],
    cfg: TuneConfig,
    *,
    groups: Sequence[int] | None = None,
    rescore_of: RescoreOf | None = None,
    log: Log = print,
) -> tuple[list[FitExample], list[dict[str, Any]]]:
    """Every training query's hit lists (and rescored union), its tuned list from an encoder not tuned
    on it, in query-row order. `groups`: queries with the same id stay in one inner fold (SciFact: claims
    citing the same abstract); None splits by query (search logs, where popular creators link almost
    every query to every other)."""
    folds = split_groups(len(queries), cfg.inner_folds, cfg.seed, groups)
    by_row: dict[int, FitExample] = {}
    summaries = []
    for i, rows in enumerate(folds):
        keep = sorted(set(range(len(queries))) - set(rows))
        model, summary = tune_query_encoder(
            queries.subset(keep), doc_emb, [hard_negatives[r] for r in keep], cfg, log=log
        )
        vecs = torch_encode(model, [queries.texts[r] for r in rows])
        for r, v in zip(rows, vecs, strict=True):
            hits = hits_of(r, v)
            union = sorted({d for lst in hits.values() for d, _ in lst})
            rescored = rescore_of(r, v, union) if rescore_of is not None else None
            by_row[r] = FitExample(hits, relevance_ids[r], rescored)
        summaries.append(summary)
        log(f"[search-tune] inner fold {i + 1}/{len(folds)}: {len(rows)} queries scored out of fold")
    return [by_row[r] for r in sorted(by_row)], summaries


def cross_fitted_fusion(
    queries: TrainingQueries,
    doc_emb: FloatMatrix,
    hard_negatives: Sequence[Sequence[int]],
    hits_of: HitsOf,
    relevance_ids: Sequence[Mapping[str, float]],
    cfg: TuneConfig,
    *,
    groups: Sequence[int] | None = None,
    rescore_of: RescoreOf | None = None,
    kinds: Sequence[str] = ("linear",),
    ranker_extra: Sequence[str] = (),
    log: Log = print,
) -> tuple[FusionModel, list[dict[str, Any]]]:
    """The fusion fitted on cross-fitted examples (`cross_fitted_examples`); of `kinds`, the one an inner
    cross-validation prefers when there are several (`select_fusion`)."""
    examples, summaries = cross_fitted_examples(
        queries,
        doc_emb,
        hard_negatives,
        hits_of,
        relevance_ids,
        cfg,
        groups=groups,
        rescore_of=rescore_of,
        log=log,
    )
    choice = select_fusion(
        examples,
        kinds,
        groups=None if groups is None else relevance_groups(examples),
        seed=cfg.seed,
        threads=cfg.threads,
        ranker_extra=ranker_extra,
        log=log,
    )
    fusion = choice.chosen
    fusion.info.update(protocol=f"cross-fitted over {cfg.inner_folds} inner folds")
    log(f"[search-tune] fusion {fusion} (cross-fitted)")
    return fusion, summaries


def fit_fusion(
    examples: Sequence[FitExample],
    kind: str,
    *,
    retrievers: Sequence[str] = FUSION_RETRIEVERS,
    seed: int = 0,
    threads: int = 1,
    ranker_rounds: int | None = None,
    ranker_extra: Sequence[str] = (),
) -> FusionModel:
    """One fusion of `kind` (see FUSION_KINDS; a ranker kind may end in ":<rounds>", ":<rounds>x<boosters>"
    or ":<rounds>+<rounds>…x<boosters>", see `fit_ranked_fusion`) fitted on `examples`.
    `ranker_extra`: rescored-only retrievers (e.g. DOC_FEATURES) a ranker kind reads besides
    `retrievers`; linear kinds ignore them."""
    kind, _, n = kind.partition(":")
    rounds_text, _, bags_text = n.partition("x")
    round_counts = rounds_text.split("+")
    if n and (
        kind not in RANKER_OBJECTIVES
        or not all(r.isdigit() and int(r) >= 1 for r in round_counts)
        or (bags_text and (not bags_text.isdigit() or int(bags_text) < 1))
    ):
        raise ValueError(
            f"fusion kind {kind}:{n}: only ranker kinds take positive numbers of rounds "
            "(and optionally x<boosters>, e.g. lambdarank:100x5 or lambdarank:100+200x5)"
        )
    rounds: int | tuple[int, ...] = RANKER_ROUNDS if ranker_rounds is None else ranker_rounds
    if n:
        counts = tuple(int(r) for r in round_counts)
        rounds = counts[0] if len(counts) == 1 else counts
    bags = int(bags_text) if bags_text else 1
    if kind == "linear":
        return FusionModel.fit(examples, retrievers=retrievers)
    if kind == "linear_rescored":
        return FusionModel.fit(examples, retrievers=retrievers, rescore=True)
    readers = [*retrievers, *(r for r in ranker_extra if r not in retrievers)]
    if kind in ("lambdarank", "xendcg", "lambdarank_mono"):
        return fit_ranked_fusion(
            examples,
            retrievers=readers,
            rounds=rounds,
            seed=seed,
            threads=threads,
            bags=bags,
            objective=RANKER_OBJECTIVES[kind],
            monotone=kind == "lambdarank_mono",
        )
    if kind == "lambdarank_on_linear":
        if not isinstance(rounds, int):
            raise ValueError("lambdarank_on_linear takes one number of rounds")
        base = FusionModel.fit(examples, retrievers=retrievers, rescore=True)
        return fit_ranked_fusion(
            examples, retrievers=readers, rounds=rounds, seed=seed, threads=threads, base=base, bags=bags
        )
    raise ValueError(f"unknown fusion kind {kind!r} (known: {', '.join(FUSION_KINDS)})")


# LightGBM LambdaRank: shallow trees, strong regularisation (~600 queries x ~150 candidates), truncated
# at 20 so the gradient concentrates on what NDCG@10 sees.
RANKER_PARAMS: Final = {
    "objective": "lambdarank",
    "lambdarank_truncation_level": 20,
    "learning_rate": 0.03,
    "num_leaves": 15,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbose": -1,
    "deterministic": True,
    "force_row_wise": True,
}
RANKER_ROUNDS: Final = 100
# The boosting objective of each ranker kind. "xendcg" is LightGBM's rank_xendcg (Bruch et al., "An
# Alternative Cross Entropy Loss for Learning-to-Rank"): a listwise loss reported to be steadier than
# LambdaRank on small query sets; the served graph is the same kind of tree ensemble either way.
RANKER_OBJECTIVES: Final = {
    "lambdarank": "lambdarank",
    "lambdarank_on_linear": "lambdarank",
    "xendcg": "rank_xendcg",
    "lambdarank_mono": "lambdarank",
}
# Readers whose value says nothing about relevance by itself rising (a longer item is not a better one).
UNORDERED_READERS: Final = frozenset({DOC_LEN})


def monotone_directions(retrievers: Sequence[str]) -> list[int]:
    """LightGBM monotone constraints over the ranker's features (kindred.text.fusion.ranker_feature_names):
    +1 for every per-document view of a retrieval score or score-like evidence (raw, normalised, gap to
    the top, reciprocal rank), 0 for the per-query columns and for UNORDERED_READERS. A few hundred
    training queries let free trees learn "more BM25, lower score" corners from noise; the constraint
    rules those out while keeping every interaction that respects the order."""
    from kindred.text.fusion import RANKER_DOC_FEATURES, ranker_feature_names

    out = []
    for name in ranker_feature_names(retrievers):
        retriever, _, feature = name.rpartition(":")
        out.append(1 if feature in RANKER_DOC_FEATURES and retriever not in UNORDERED_READERS else 0)
    return out


BASE_SCALE: Final = 20.0  # a 0.05 gap in the linear score (weights sum to 1) = 1 logit for the trees
_BASE_FEATURE = {"minmax": "minmax", "zscore": "zscore", "rrf": "rrf_union"}


def fit_ranked_fusion(
    examples: Sequence[FitExample],
    *,
    retrievers: Sequence[str] = FUSION_RETRIEVERS,
    rrf_k: int = 60,
    rounds: int | Sequence[int] = RANKER_ROUNDS,
    seed: int = 0,
    threads: int = 1,
    base: FusionModel | None = None,
    base_scale: float = BASE_SCALE,
    bags: int = 1,
    objective: str = "lambdarank",
    monotone: bool = False,
) -> FusionModel:
    """A lambdarank fusion over the rescored union (`rescored` of each example; lists only without),
    exported to ONNX by trainer.lgbm_onnx and checked against LightGBM on the training features.

    `base`: a linear fusion (fitted on the same rescored lists) the trees are boosted from: its score
    × `base_scale` is LightGBM's initial score, and the graph adds it back as a linear term over the
    ranker's own features (min-max, z-score and union rank are among them), so trees only correct it.
    `bags` > 1: that many boosters, seeds seed, seed + 1, …, each on its own row and feature samples
    (RANKER_PARAMS' bagging), served as one ensemble scoring their mean (trainer.lgbm_onnx) — a few
    hundred training queries make one booster's choices noisy. Several `rounds` (e.g. (100, 200, 400)):
    each bag holds one booster per count, every booster its own seed, all averaged alike — the ensemble
    spans the round counts instead of betting on one (which one suits a few hundred queries is itself a
    noisy choice). `objective`: LightGBM's ranking
    objective ("lambdarank" or "rank_xendcg"; RANKER_OBJECTIVES). `monotone`: the trees may only raise an
    item's score when one of its scores rises (`monotone_directions`)."""
    import lightgbm as lgb

    from trainer.lgbm_onnx import boosters_to_onnx

    xs, ys, sizes = [], [], []
    for ex in examples:
        union, features = example_features(ex, retrievers, rrf_k)
        if not union:
            continue
        xs.append(features)
        ys.append(np.array([max(0, round(float(ex.relevance.get(d, 0.0)))) for d in union], dtype=np.int32))
        sizes.append(len(union))
    if not xs:
        raise ValueError("no training query has candidates")
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    w = _base_weights(base, retrievers, base_scale) if base is not None else None
    init = (x.astype(np.float64) @ w.astype(np.float64)) if w is not None else None
    if bags < 1:
        raise ValueError("bags must be at least 1")
    counts = (rounds,) if isinstance(rounds, int) else tuple(rounds)
    if not counts or min(counts) < 1:
        raise ValueError(f"rounds must be positive, got {rounds}")
    # One Dataset for every booster: binning it is work each booster would repeat (on SciFact's ~650
    # training queries the same boosters, byte for byte, in ~15% less time for a 100x5 bag). Seeds and row
    # and feature samples are training parameters; the bins depend on the data (and, beyond LightGBM's
    # 200,000-row bin sample, on the first booster's seed).
    data = lgb.Dataset(x.astype(np.float64), y, group=sizes, init_score=init, free_raw_data=False)
    boosters = []
    for bag in range(bags):
        for j, count in enumerate(counts):
            params = {
                **RANKER_PARAMS,
                "seed": seed + bag * len(counts) + j,  # one count: seed + bag, as before
                "num_threads": threads,
                "objective": objective,
            }
            if objective != "lambdarank":
                del params["lambdarank_truncation_level"]
            if monotone:
                params["monotone_constraints"] = monotone_directions(retrievers)
                params["monotone_constraints_method"] = "intermediate"
            boosters.append(lgb.train(params, data, num_boost_round=count))
    ranker = Ranker.from_bytes(retrievers, boosters_to_onnx(boosters, x.shape[1], w))
    sample = x[: min(len(x), 2000)]
    want = np.mean(
        [np.asarray(b.predict(sample, raw_score=True), dtype=np.float64) for b in boosters], axis=0
    )
    if w is not None:
        want = want + sample.astype(np.float64) @ w.astype(np.float64)
    diff = float(np.abs(ranker.score(sample) - want).max())
    if diff > 1e-4:
        raise RuntimeError(f"ONNX ranker differs from LightGBM by {diff}")
    info = {
        "objective": f"{objective} (LightGBM)"
        + (", ndcg@10 truncation 20" if objective == "lambdarank" else ""),
        "rounds": rounds if isinstance(rounds, int) else list(counts),
        "boosters": len(boosters),
        "monotone": monotone,
        "train_queries": len(sizes),
        "train_rows": len(x),
        "onnx_max_abs_diff": diff,
        **({"boosted_from": str(base), "base_scale": base_scale} if base is not None else {}),
    }
    return FusionModel([], rrf_k=rrf_k, info=info, rescore=True, ranker=ranker)


def _base_weights(base: FusionModel, retrievers: Sequence[str], scale: float) -> npt.NDArray[np.float32]:
    """The linear fusion as weights over the ranker's feature columns (its terms over the same lists)."""
    from kindred.text.fusion import ranker_feature_names

    names = ranker_feature_names(retrievers)
    w = np.zeros(len(names), dtype=np.float32)
    for t in base.terms:
        if t.retriever not in retrievers:
            raise ValueError(f"base term {t.name} reads a retriever the ranker does not")
        w[names.index(f"{t.retriever}:{_BASE_FEATURE[t.norm]}")] += scale * t.weight
    return w


def ndcg_at(order: Sequence[str], relevance: Mapping[str, float], k: int = 10) -> float:
    """Graded NDCG@k (linear gains), the benchmark's metric."""
    dcg = sum(max(0.0, relevance.get(d, 0.0)) / math.log2(i + 2) for i, d in enumerate(order[:k]))
    ideal = sorted((g for g in relevance.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


# Ranker features of fit examples, memoised per (example, readers, rrf_k): select_fusion fits and scores
# the same examples a dozen times per fold (kinds × inner splits), and building their features in Python
# took most of that time, not LightGBM. The example is kept in the entry so its id cannot be reused.
_FEATURES: dict[tuple[int, tuple[str, ...], int], tuple[FitExample, list[str], npt.NDArray[np.float32]]] = {}
_FEATURES_MAX: Final = 100_000


def example_features(
    ex: FitExample, readers: Sequence[str], rrf_k: int
) -> tuple[list[str], npt.NDArray[np.float32]]:
    """(union candidates sorted by id, their ranker features over `readers`) — exactly what
    FusionModel.score_union computes for a ranker reading `readers` (rescored union if the example has
    one). The array is shared: callers must not modify it."""
    key = (id(ex), tuple(readers), rrf_k)
    got = _FEATURES.get(key)
    if got is not None and got[0] is ex:
        return got[1], got[2]
    union = union_of(ex.hits, readers)
    lists = rescore_union(ex.hits, ex.rescored, readers) if ex.rescored is not None else ex.hits
    x = ranker_features(ex.hits, lists, union, readers, rrf_k)
    if len(_FEATURES) >= _FEATURES_MAX:
        _FEATURES.clear()
    _FEATURES[key] = (ex, union, x)
    return union, x


def fused_ndcg(model: FusionModel, examples: Sequence[FitExample], k: int = 10) -> float:
    """Mean NDCG@k of `model.fuse` — the served call, rescored union included — over `examples`. A pure
    ranker (no linear terms, rescoring) scores the memoised features (`example_features`) and orders
    them with `fuse`'s own rule (fused_order): the same order, without rebuilding the features per call."""
    pure_ranker = model.ranker is not None and not model.terms and model.rescore
    got = []
    for ex in examples:
        if pure_ranker and ex.rescored is not None:
            assert model.ranker is not None
            docs, x = example_features(ex, model.ranker.retrievers, model.rrf_k)
            scores = model.ranker.score(x) if docs else np.zeros(0)
            order = [docs[i] for i in fused_order(docs, scores)]
        else:
            order = [h.doc_id for h in model.fuse(ex.hits, rescored=ex.rescored)]
        got.append(ndcg_at(order, ex.relevance, k))
    return float(np.mean(got)) if got else 0.0


@dataclasses.dataclass(frozen=True)
class FusionChoice:
    chosen: FusionModel
    kind: str
    cv_ndcg: dict[str, float]  # kind → mean NDCG@10 over the inner folds' held-out examples


def select_fusion(
    examples: Sequence[FitExample],
    kinds: Sequence[str],
    *,
    folds: int = FUSION_SELECTION_FOLDS,
    groups: Sequence[int] | None = None,
    seed: int = 0,
    threads: int = 1,
    ranker_rounds: int | None = None,
    ranker_extra: Sequence[str] = (),
    log: Log = print,
) -> FusionChoice:
    """Of `kinds`, the fusion whose mean held-out NDCG@10 over a `folds`-fold split of `examples` is best,
    refit on all of them. `groups`: examples with the same id stay in one split (SciFact:
    `relevance_groups`, claims sharing a relevant abstract); None splits by example (search logs, where
    popular creators would tie every query into one group). Scores only `examples`: the caller passes
    training queries, never the ones it will report."""
    for kind in kinds:
        if kind.partition(":")[0] not in FUSION_KINDS:
            raise ValueError(f"unknown fusion kind {kind!r} (known: {', '.join(FUSION_KINDS)})")
    if not examples:
        raise ValueError("no examples to fit a fusion on")
    if len(kinds) > 1 and folds < 2:
        raise ValueError(
            f"choosing between fusion kinds needs at least 2 folds (fit on one, score another), got {folds}"
        )
    cv: dict[str, float] = {}
    if len(kinds) > 1:
        parts = split_groups(len(examples), folds, seed, groups)
        if len(parts) < 2:  # one group holds everything: nothing to hold out, split by example
            parts = split_groups(len(examples), folds, seed)
        for kind in kinds:
            held_scores = []
            for rows in parts:
                fit_rows = sorted(set(range(len(examples))) - set(rows))
                model = fit_fusion(
                    [examples[r] for r in fit_rows],
                    kind,
                    seed=seed,
                    threads=threads,
                    ranker_rounds=ranker_rounds,
                    ranker_extra=ranker_extra,
                )
                held_scores.append(fused_ndcg(model, [examples[r] for r in rows]) * len(rows))
            cv[kind] = round(sum(held_scores) / len(examples), 6)
            log(f"[search-tune] fusion {kind}: inner {len(parts)}-fold NDCG@10 {cv[kind]:.4f}")
    kind = max(kinds, key=lambda k: cv.get(k, 0.0)) if cv else kinds[0]
    chosen = fit_fusion(
        examples, kind, seed=seed, threads=threads, ranker_rounds=ranker_rounds, ranker_extra=ranker_extra
    )
    chosen.info.update(kind=kind, selection={"inner_cv_ndcg@10": cv, "folds": folds} if cv else "only kind")
    return FusionChoice(chosen, kind, cv)


def relevance_groups(examples: Sequence[FitExample]) -> list[int]:
    """Group id per example: examples sharing a relevant document share a group."""
    parent = list(range(len(examples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for q, ex in enumerate(examples):
        for d, g in ex.relevance.items():
            if g <= 0:
                continue
            if d in first:
                parent[find(q)] = find(first[d])
            else:
                first[d] = q
    return [find(q) for q in range(len(examples))]


# ------------------------------------------------------------------------------------------------
# export


def export_query_encoder(
    model: Any,
    models_dir: Path,
    *,
    version: str,
    fusion: FusionModel,
    doc_encoder: TextEncoder,
    training: Mapping[str, Any],
    log: Log = print,
) -> Path:
    """`<models_dir>/text_query_encoder/<version>/` through trainer.text_encoder's parity-checked export."""
    from trainer.text_encoder import export_model

    extra = {
        "kind": "text_query_encoder",
        "role": "query",
        "document_encoder": {
            "name": doc_encoder.name,
            "version": doc_encoder.version,
            "sha256": doc_encoder.manifest["sha256"],
            "weights_sha256": doc_encoder.manifest.get("weights_sha256"),
        },
        "training": dict(training),
        "fusion": fusion.to_dict(),
    }
    return export_model(
        models_dir,
        model,
        name=QUERY_ENCODER_NAME,
        version=version,
        weights_sha256=weights_sha256(model),
        extra_manifest=extra,
        extra_files=fusion.files(FUSION_FILE),
        log=log,
    )


def load_query_side(models_dir: Path, version: str | None = None) -> tuple[TextEncoder, FusionModel]:
    """The promoted (or given) tuned query encoder and its fusion."""
    directory = version_dir(models_dir, QUERY_ENCODER_NAME, version)
    return TextEncoder.load(directory, intra_op_num_threads=2), FusionModel.load(directory / FUSION_FILE)


# ------------------------------------------------------------------------------------------------
# the job: search logs → tuned query encoder + fusion → gate


@dataclasses.dataclass(frozen=True)
class SearchLog:
    """Distinct queries with the documents fans clicked for them, in order of first click."""

    queries: list[str]
    clicked: list[set[str]]  # document keys: "creator:<id>" or "post:<id>"
    first_click: list[float]


def search_log(events: Any) -> SearchLog:
    """SEARCH_CLICK events joined into (query → clicked documents); a click on a post counts for the post."""
    from kindred.v1 import events_pb2

    clicks: dict[str, set[str]] = {}
    first: dict[str, float] = {}
    for ev in events:
        if ev.type != events_pb2.EVENT_TYPE_SEARCH_CLICK or not ev.query.strip():
            continue
        doc = f"post:{ev.post_id}" if ev.post_id else f"creator:{ev.creator_id}" if ev.creator_id else ""
        if not doc:
            continue
        query = " ".join(ev.query.split())
        clicks.setdefault(query, set()).add(doc)
        t = ev.occurred_at.seconds + ev.occurred_at.nanos / 1e9
        first[query] = min(first.get(query, t), t)
    order = sorted(clicks, key=lambda q: (first[q], q))
    return SearchLog(order, [clicks[q] for q in order], [first[q] for q in order])


def catalogue_titles(catalogue: Any) -> list[str]:
    """Each document's title, in catalogue_documents' order: the search index's `title` payload (a
    creator's name, a post's title), which its `bm25_title` vector is built from."""
    return _titles_of(_search_docs(catalogue))


def _titles_of(docs: Sequence[Any]) -> list[str]:
    from retrieval_svc.search.documents import TITLE_KEY

    return [str(doc.payload.get(TITLE_KEY) or "") for doc in docs]


def check_encoded_features(features: Sequence[str]) -> tuple[str, ...]:
    """`features`, deduplicated in order; InvalidArgument naming `encoded_features` for one that is not
    an ENCODED_DOC_FEATURES name."""
    unknown = [f for f in features if f not in ENCODED_DOC_FEATURES]
    if unknown:
        raise InvalidArgument(
            "encoded_features", f"unknown {', '.join(unknown)} (known: {', '.join(ENCODED_DOC_FEATURES)})"
        )
    return tuple(dict.fromkeys(features))


def catalogue_retrievers(
    catalogue: Any,
    doc_encoder: TextEncoder,
    *,
    doc_features: bool = False,
    encoded_features: Sequence[str] = (),
    log: Log = print,
) -> ExactRetrievers:
    """Exact retrievers over the catalogue's search documents (catalogue_documents' order), encoded by
    the base document encoder exactly as `kindred index` encodes them (the index's encode_documents):
    with `doc_features` the DOC_FEATURES evidence, with `encoded_features` the documents' title and
    sentence vectors for ENCODED_DOC_FEATURES too (all three computed; the fusion reads the ones asked)."""
    from retrieval_svc.search.index import encode_documents

    docs = _search_docs(catalogue)
    t0 = time.perf_counter()
    doc_emb, encoded = encode_documents(
        docs, doc_encoder.encode, evidence=bool(check_encoded_features(encoded_features))
    )
    what = "documents with their titles and sentences" if encoded is not None else "documents"
    log(
        f"[search-tune] encoded {len(docs)} {what} in {time.perf_counter() - t0:.1f}s ({doc_encoder.version})"
    )
    titles = _titles_of(docs) if doc_features else None
    return ExactRetrievers.build([d.text for d in docs], doc_emb, titles=titles, encoded=encoded)


def catalogue_documents(catalogue: Any) -> tuple[list[str], list[str]]:
    """(document keys, texts) of every creator and post: exactly the texts the search index encodes
    (retrieval_svc.search.bulk.catalogue_docs), so what is learned here is learned on what is served."""
    docs = _search_docs(catalogue)
    return [f"{d.kind}:{d.item_id}" for d in docs], [d.text for d in docs]


def _search_docs(catalogue: Any) -> list[Any]:
    from retrieval_svc.search.bulk import catalogue_docs  # what `kindred index` indexes

    return catalogue_docs(catalogue)


def queries_of(log_: SearchLog, rows: Sequence[int], key_row: Mapping[str, int]) -> TrainingQueries:
    texts, positives, relevance = [], [], []
    for r in rows:
        docs = sorted(key_row[k] for k in log_.clicked[r] if k in key_row)
        if docs:
            texts.append(log_.queries[r])
            positives.append(docs)
            relevance.append(dict.fromkeys(docs, 1.0))
    return TrainingQueries(texts, positives, relevance)


def evaluate_search(
    query_encoder: TextEncoder,
    doc_encoder: TextEncoder,
    fusion: FusionModel,
    retr: ExactRetrievers,
    queries: TrainingQueries,
    ids: Sequence[str],
    *,
    depth: int,
    ks: Sequence[int] = (10,),
) -> dict[str, float]:
    """Mean NDCG@k / Recall@k of the fused ranking on `queries`: the query path, exact retrieval."""
    from trainer.evaluate import ndcg_at_k, recall_at_k

    base = doc_encoder.encode(queries.texts)
    tuned = query_encoder.encode(queries.texts) if query_encoder is not doc_encoder else base
    row = {str(i): i for i in range(len(ids))}
    sums: dict[str, float] = {}
    for text, rel, bv, tv in zip(queries.texts, queries.relevance, base, tuned, strict=True):
        hits = {
            BM25: as_hits(retr.bm25_hits(text, depth), ids),
            DENSE_BASE: as_hits(retr.dense_hits(bv, depth), ids),
            DENSE_TUNED: as_hits(retr.dense_hits(tv, depth), ids),
        }
        union = sorted({d for lst in hits.values() for d, _ in lst})
        rescored = (
            {**retr.rescored(text, bv, tv, union), **retr.doc_evidence(text, union, bv)}
            if fusion.rescore
            else None
        )
        ranked = [row[h.doc_id] for h in fusion.fuse(hits, rescored=rescored)]
        relevant = set(rel)
        for k in ks:
            sums[f"ndcg@{k}"] = sums.get(f"ndcg@{k}", 0.0) + ndcg_at_k(ranked, relevant, k)
            sums[f"recall@{k}"] = sums.get(f"recall@{k}", 0.0) + recall_at_k(ranked, relevant, k)
    return {m: round(v / max(1, len(queries)), 6) for m, v in sums.items()}


def document_encoder(models_dir: Path, log: Log) -> TextEncoder:
    """The promoted `text_encoder` (what the index was built with); the base MiniLM is exported and
    promoted first if there is none."""
    if current_version(models_dir, DOC_ENCODER_NAME) is None:
        from trainer.text_encoder import export

        log("[search-tune] no text_encoder promoted yet: exporting the base MiniLM as the document encoder")
        export(models_dir, do_promote=True, log=log)
    return TextEncoder.from_registry(models_dir, intra_op_num_threads=2)


@dataclasses.dataclass(frozen=True)
class SearchTuneReport:
    version: str
    directory: Path
    record: dict[str, Any]


def run_search_tune(
    data_dir: Path,
    models_dir: Path,
    cfg: TuneConfig,
    *,
    version: str | None = None,
    holdout_fraction: float = 0.2,
    min_queries: int = 20,
    force_promote: bool = False,
    tolerance: float = 0.0,
    fusion_kinds: Sequence[str] = ("linear",),
    doc_features: bool = False,
    encoded_features: Sequence[str] = (),
    log: Log = print,
) -> SearchTuneReport:
    """Event log → query encoder + fusion → ONNX version → gate vs the current one on held-out queries.

    `doc_features`: ranker fusions also read DOC_FEATURES (title BM25, term coverage, length; served
    only by an index that stores them, see retrieval_svc/search/index.py). `encoded_features`: these of
    ENCODED_DOC_FEATURES too (served only by an index built with `kindred index --encoded-evidence`).
    Raises ValueError when the log holds too few clicked queries to learn from."""
    from kindred.data.catalogue import Catalogue
    from kindred.eventlog import EventLog
    from trainer.config import PromotionConfig
    from trainer.promotion import PROMOTION_FILE, decide
    from trainer.text_encoder import new_version

    t0 = time.perf_counter()
    encoded_features = check_encoded_features(encoded_features)
    with EventLog(Path(data_dir) / "events") as elog:
        slog = search_log(elog.read())
    catalogue = Catalogue.load(data_dir)
    keys, _texts = catalogue_documents(catalogue)
    key_row = {k: i for i, k in enumerate(keys)}
    n_hold = max(1, round(len(slog.queries) * holdout_fraction))
    cut = len(slog.queries) - n_hold
    train = queries_of(slog, range(cut), key_row)
    held = queries_of(slog, range(cut, len(slog.queries)), key_row)
    log(
        f"[search-tune] {len(slog.queries)} distinct clicked queries over {len(keys)} documents: "
        f"{len(train)} to learn from, {len(held)} held out (the latest by first click)"
    )
    if len(train) < min_queries or not len(held):
        raise ValueError(f"not enough search clicks: {len(train)} training queries (need {min_queries})")

    doc_enc = document_encoder(Path(models_dir), log)
    retr = catalogue_retrievers(
        catalogue, doc_enc, doc_features=doc_features, encoded_features=encoded_features, log=log
    )
    doc_emb = retr.doc_emb
    ids = [str(i) for i in range(len(keys))]
    hard = hard_negatives_of(retr, train, cfg.hard_negatives)
    base_train = doc_enc.encode(train.texts)
    base_hits = {
        r: {
            BM25: as_hits(retr.bm25_hits(t, cfg.depth), ids),
            DENSE_BASE: as_hits(retr.dense_hits(v, cfg.depth), ids),
        }
        for r, (t, v) in enumerate(zip(train.texts, base_train, strict=True))
    }

    def hits_of(r: int, vec: FloatMatrix) -> Mapping[str, Hits]:
        return {**base_hits[r], DENSE_TUNED: as_hits(retr.dense_hits(vec, cfg.depth), ids)}

    def rescore_of(r: int, vec: FloatMatrix, union: Sequence[str]) -> Mapping[str, Mapping[str, float]]:
        text = train.texts[r]
        return {
            **retr.rescored(text, base_train[r], vec, union),
            **retr.doc_evidence(text, union, base_train[r]),
        }

    rel_ids = [{str(d): g for d, g in rel.items()} for rel in train.relevance]
    fusion, inner = cross_fitted_fusion(
        train,
        doc_emb,
        hard,
        hits_of,
        rel_ids,
        cfg,
        rescore_of=rescore_of,
        kinds=fusion_kinds,
        ranker_extra=(*(DOC_FEATURES if doc_features else ()), *encoded_features),
        log=log,
    )
    model, summary = tune_query_encoder(train, doc_emb, hard, cfg, log=log)
    version = version or new_version()
    training = {
        **summary,
        "data": {
            "events": str(Path(data_dir) / "events"),
            "distinct_queries": len(slog.queries),
            "training_queries": len(train),
            "held_out_queries": len(held),
            "documents": len(keys),
            "held_out_from": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(slog.first_click[cut])),
        },
        "inner_folds": [{k: s[k] for k in ("queries", "pairs", "seconds")} for s in inner],
    }
    directory = export_query_encoder(
        model,
        Path(models_dir),
        version=version,
        fusion=fusion,
        doc_encoder=doc_enc,
        training=training,
        log=log,
    )
    new_q = TextEncoder.load(directory, intra_op_num_threads=2)
    new_metrics = evaluate_search(new_q, doc_enc, fusion, retr, held, ids, depth=cfg.depth)

    current = current_version(Path(models_dir), QUERY_ENCODER_NAME)
    if current is not None:
        cur_q, cur_fusion = load_query_side(Path(models_dir), current)
        cur_label = f"{QUERY_ENCODER_NAME} {current}"
    else:
        cur_q, cur_fusion = doc_enc, FusionModel.default()
        cur_label = f"base {DOC_ENCODER_NAME} {doc_enc.version} with the default fusion"
    cur_metrics = evaluate_search(cur_q, doc_enc, cur_fusion, retr, held, ids, depth=cfg.depth)
    gate = PromotionConfig(
        model="search", metrics=("ndcg@10", "recall@10"), tolerance_abs=tolerance, tolerance_rel=0.0
    )
    decision = decide({"search": new_metrics}, {"search": cur_metrics}, gate, force=force_promote)
    record = {
        "version": version,
        "decision": decision.outcome,
        "reason": decision.reason,
        "forced": decision.forced,
        "gate_decision": "promoted" if decision.gate_promoted else "rejected",
        "decided_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "gate": {"metrics": list(gate.metrics), "tolerance_abs": tolerance, "held_out_queries": len(held)},
        "checks": [dataclasses.asdict(c) for c in decision.checks],
        "new": {"version": version, "metrics": new_metrics},
        "current": {"model": cur_label, "metrics": cur_metrics},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_text_atomic(directory / PROMOTION_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")
    log(f"[search-tune] held-out {len(held)} queries: new {new_metrics}, current ({cur_label}) {cur_metrics}")
    log(f"[search-tune] decision: {decision.outcome.upper()} — {decision.reason}")
    if decision.promoted:
        promote(Path(models_dir), QUERY_ENCODER_NAME, version)
        log(f"[search-tune] CURRENT → {QUERY_ENCODER_NAME} {version}")
    return SearchTuneReport(version, directory, record)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trainer search-tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-dir", type=Path, default=None, help="data directory (default: KINDRED_DATA_DIR)")
    p.add_argument("--version", default=None)
    p.add_argument("--epochs", type=int, default=TuneConfig.epochs)
    p.add_argument("--batch-size", type=int, default=TuneConfig.batch_size)
    p.add_argument("--lr", type=float, default=TuneConfig.lr)
    p.add_argument("--inner-folds", type=int, default=TuneConfig.inner_folds)
    p.add_argument("--holdout-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=TuneConfig.seed)
    p.add_argument("--threads", type=int, default=TuneConfig.threads)
    p.add_argument(
        "--fusion",
        default="linear",
        help=f"fusion kind(s), comma-separated ({', '.join(FUSION_KINDS)}; a ranker kind may end in "
        f"':<rounds>') or 'auto' ({', '.join(AUTO_FUSION_KINDS)}): several are chosen between by inner "
        "cross-validation on the training queries",
    )
    p.add_argument("--force-promote", action="store_true", help="promote whatever the gate says (recorded)")
    p.add_argument(
        "--doc-features",
        action="store_true",
        help="ranker fusions also read document evidence (title BM25, term coverage, length); serve it "
        "only from a search index built with them (retrieval_svc/search/index.py: doc_evidence)",
    )
    p.add_argument(
        "--encoded-features",
        type=_encoded_features_arg,
        default=(),
        help=f"comma-separated, of {','.join(ENCODED_DOC_FEATURES)}: ranker fusions also read this encoded "
        "document evidence (each item's title and sentences encoded too); serve it only from a search "
        "index built with `kindred index --encoded-evidence` (default: none)",
    )
    return p


def _encoded_features_arg(value: str) -> tuple[str, ...]:
    try:
        return check_encoded_features([f.strip() for f in value.split(",") if f.strip()])
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv: Sequence[str] | None = None) -> int:
    from kindred.config import Settings

    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    if args.data_dir is not None:
        settings = settings.replace(data_dir=args.data_dir)
    cfg = TuneConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        inner_folds=args.inner_folds,
        seed=args.seed,
        threads=args.threads,
    )
    try:
        report = run_search_tune(
            Path(settings.data_dir),
            settings.resolved_models_dir,
            cfg,
            version=args.version,
            holdout_fraction=args.holdout_fraction,
            force_promote=args.force_promote,
            fusion_kinds=AUTO_FUSION_KINDS if args.fusion == "auto" else tuple(args.fusion.split(",")),
            doc_features=args.doc_features,
            encoded_features=args.encoded_features,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"trainer search-tune: {exc}", file=sys.stderr)
        return 1
    print(f"[search-tune] done: {report.version}, {report.record['decision']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "AUTO_FUSION_KINDS",
    "COVERAGE",
    "DENSE_BASE",
    "DENSE_TUNED",
    "DOC_FEATURES",
    "DOC_LEN",
    "FUSION_FILE",
    "FUSION_KINDS",
    "FUSION_SELECTION_FOLDS",
    "QUERY_ENCODER_NAME",
    "TITLE_BM25",
    "TITLE_DENSE",
    "ExactRetrievers",
    "FusionChoice",
    "SearchLog",
    "SearchTuneReport",
    "TrainingQueries",
    "TuneConfig",
    "catalogue_documents",
    "catalogue_retrievers",
    "catalogue_titles",
    "check_encoded_features",
    "cross_fitted_examples",
    "cross_fitted_fusion",
    "evaluate_search",
    "export_query_encoder",
    "fit_fusion",
    "fit_ranked_fusion",
    "fused_ndcg",
    "hard_negatives_of",
    "load_query_side",
    "main",
    "ndcg_at",
    "relevance_groups",
    "run_search_tune",
    "search_log",
    "select_fusion",
    "shared_document_groups",
    "split_groups",
    "torch_encode",
    "tune_query_encoder",
]
