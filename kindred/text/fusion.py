"""Hybrid-search score fusion: per-retriever normalised scores combined with learned weights.

The service asks each retriever (BM25 sparse, dense, ...) for its top hits, then calls

    model = FusionModel.load(path)            # or FusionModel.default()
    hits = model.fuse({"bm25": [(doc_id, score), ...], "dense": [(doc_id, score), ...]}, limit=10)
    hits[0].doc_id, hits[0].score, hits[0].contributions   # {"bm25:minmax": 0.31, "dense:minmax": 0.52}

Stable API: `FusionModel.default()`, `FusionModel.load(path)`, `.save(path)`, `.fuse(hits, limit=None)`,
`.retrievers` (the names `fuse` reads; other keys are ignored, a missing one contributes nothing),
`FusionModel.fit(examples, ...)` (what the trainer runs), `FusedHit`, `FusionTerm`.

The model is a weighted sum of terms, each term one retriever's score under one normalisation, computed
per query over that retriever's own hit list (so it needs nothing but the lists the engine returns):
- "minmax": (s - min) / (max - min) over the list; 0 for the list's last hit.
- "zscore": (s - mean) / std over the list.
- "rrf":    1 / (rrf_k + rank), rank from 1 (reciprocal-rank fusion's term).
A document absent from a retriever's list is scored as if it sat just below that list's last hit
(minmax 0, zscore the list's lowest z, rrf 1 / (rrf_k + len + 1)): the retriever did not vouch for it.
Ties in the fused score break by document id, ascending, so a ranking is reproducible.

`fit` learns the weights by coordinate ascent on mean NDCG@10 over training queries (the metric the
benchmark reports, optimised directly; a handful of weights cannot overfit 600+ queries the way a tree
ranker can). Files are JSON (`format: kindred.fusion/1`); `load` refuses unknown normalisations or
malformed weights with InvalidArgument naming the field, so a bad file fails the start, not a query.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from kindred.errors import InvalidArgument

FORMAT: Final = "kindred.fusion/1"
NORMS: Final = ("minmax", "zscore", "rrf")
DEFAULT_RRF_K: Final = 60
# Measured on BEIR SciFact training queries (bench/bench_search_scifact.py): the convex min-max mix of
# BM25 and base MiniLM picked 0.40-0.45 for BM25 in every cross-validation fold.
_DEFAULT_TERMS: Final = (("bm25", "minmax", 0.45), ("dense", "minmax", 0.55))

Hits = Sequence[tuple[str, float]]  # one retriever's hits, best first: (doc id, engine score)
FloatArray = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class FusionTerm:
    retriever: str
    norm: str
    weight: float

    @property
    def name(self) -> str:
        return f"{self.retriever}:{self.norm}"


@dataclasses.dataclass(frozen=True)
class FusedHit:
    doc_id: str
    score: float
    contributions: dict[str, float]  # term name → weight × normalised score (they sum to `score`)


@dataclasses.dataclass(frozen=True)
class FitExample:
    """One training query: each retriever's hits and the judged relevance of documents (clicks)."""

    hits: Mapping[str, Hits]
    relevance: Mapping[str, float]


class FusionModel:
    def __init__(
        self,
        terms: Sequence[FusionTerm],
        *,
        rrf_k: int = DEFAULT_RRF_K,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        _validate(terms, rrf_k)
        self.terms = tuple(terms)
        self.rrf_k = rrf_k
        self.info: dict[str, Any] = dict(info or {})

    # --- construction and files

    @classmethod
    def default(cls) -> FusionModel:
        return cls(
            [FusionTerm(r, n, w) for r, n, w in _DEFAULT_TERMS],
            info={"source": "default (SciFact convex mix)"},
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FusionModel:
        if data.get("format") != FORMAT:
            raise InvalidArgument("format", f"expected {FORMAT!r}, got {data.get('format')!r}")
        raw = data.get("terms")
        if not isinstance(raw, list) or not raw:
            raise InvalidArgument("terms", "a non-empty list of {retriever, norm, weight}")
        terms = []
        for i, t in enumerate(raw):
            if not isinstance(t, dict) or set(t) != {"retriever", "norm", "weight"}:
                raise InvalidArgument(f"terms[{i}]", "needs exactly retriever, norm and weight")
            if not isinstance(t["weight"], int | float) or isinstance(t["weight"], bool):
                raise InvalidArgument(f"terms[{i}].weight", "must be a number")
            terms.append(FusionTerm(str(t["retriever"]), str(t["norm"]), float(t["weight"])))
        rrf_k = data.get("rrf_k", DEFAULT_RRF_K)
        if not isinstance(rrf_k, int) or isinstance(rrf_k, bool):
            raise InvalidArgument("rrf_k", "must be an integer")
        return cls(terms, rrf_k=rrf_k, info=data.get("info") or {})

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "terms": [dataclasses.asdict(t) for t in self.terms],
            "rrf_k": self.rrf_k,
            "info": self.info,
        }

    @classmethod
    def load(cls, path: Path) -> FusionModel:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InvalidArgument("fusion", f"{path} is not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise InvalidArgument("fusion", f"{path} must hold a JSON object")
        return cls.from_dict(data)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @property
    def retrievers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.retriever for t in self.terms if t.weight != 0.0))

    def __repr__(self) -> str:
        inner = ", ".join(f"{t.name}={t.weight:.3f}" for t in self.terms)
        return f"FusionModel({inner})"

    # --- serving

    def fuse(self, hits: Mapping[str, Hits], *, limit: int | None = None) -> list[FusedHit]:
        """All documents any used retriever returned, by fused score (best first), at most `limit`."""
        docs, x = self.term_matrix(hits)
        if not docs:
            return []
        weights = np.array([t.weight for t in self.terms])
        parts = x * weights
        scores = parts.sum(axis=1)
        order = sorted(range(len(docs)), key=lambda i: (-scores[i], docs[i]))
        if limit is not None:
            order = order[: max(0, limit)]
        names = [t.name for t in self.terms]
        return [
            FusedHit(docs[i], float(scores[i]), {n: float(p) for n, p in zip(names, parts[i], strict=True)})
            for i in order
        ]

    def term_matrix(self, hits: Mapping[str, Hits]) -> tuple[list[str], FloatArray]:
        """The candidate documents (union of the used retrievers' lists) and their (n, terms) values."""
        used = self.retrievers
        docs = sorted({d for r in used for d, _ in hits.get(r, ())})
        return docs, normalised_terms(hits, docs, [(t.retriever, t.norm) for t in self.terms], self.rrf_k)

    # --- learning

    @classmethod
    def fit(
        cls,
        examples: Sequence[FitExample],
        *,
        retrievers: Sequence[str],
        norms: Sequence[str] = ("minmax", "zscore", "rrf"),
        rrf_k: int = DEFAULT_RRF_K,
        k: int = 10,
        grid: Sequence[float] = tuple(i / 10 for i in range(11)),
        passes: int = 4,
    ) -> FusionModel:
        """Weights maximising mean NDCG@k over `examples` by coordinate ascent (each term's weight in turn
        over `grid`, the others fixed), starting from the best single term. Deterministic."""
        if not examples:
            raise InvalidArgument("examples", "need at least one training query")
        specs = [(r, n) for r in retrievers for n in norms]
        for n in norms:
            if n not in NORMS:
                raise InvalidArgument("norms", f"unknown normalisation {n!r} (known: {', '.join(NORMS)})")
        batch = _Batch.build(examples, specs, retrievers, rrf_k, k)
        best_w = np.zeros(len(specs))
        singles = []
        for j in range(len(specs)):
            w = np.zeros(len(specs))
            w[j] = 1.0
            singles.append(batch.ndcg(w))
        best_w[int(np.argmax(singles))] = 1.0
        best = batch.ndcg(best_w)
        for _ in range(passes):
            improved = False
            for j in range(len(specs)):
                for value in grid:
                    if value == best_w[j]:
                        continue
                    w = best_w.copy()
                    w[j] = value
                    if not w.any():
                        continue
                    score = batch.ndcg(w)
                    if score > best + 1e-9:
                        best, best_w, improved = score, w, True
            if not improved:
                break
        total = float(np.abs(best_w).sum())
        terms = [
            FusionTerm(r, n, round(float(w) / total, 6))
            for (r, n), w in zip(specs, best_w, strict=True)
            if w != 0.0
        ]
        info = {
            "objective": f"mean ndcg@{k}",
            "train_ndcg": round(best, 6),
            "train_queries": len(examples),
            "candidate_terms": [f"{r}:{n}" for r, n in specs],
        }
        return cls(terms, rrf_k=rrf_k, info=info)


def normalised_terms(
    hits: Mapping[str, Hits], docs: Sequence[str], specs: Sequence[tuple[str, str]], rrf_k: int
) -> FloatArray:
    """(len(docs), len(specs)) normalised scores; see the module docstring for absent documents."""
    x = np.zeros((len(docs), len(specs)), dtype=np.float64)
    pos = {d: i for i, d in enumerate(docs)}
    for j, (retriever, norm) in enumerate(specs):
        lst = list(hits.get(retriever, ()))
        if not lst:
            continue  # a retriever that returned nothing contributes nothing
        s = np.array([float(v) for _, v in lst], dtype=np.float64)
        if norm == "minmax":
            lo, hi = float(s.min()), float(s.max())
            values = (s - lo) / (hi - lo) if hi > lo else np.ones_like(s)
            floor = 0.0
        elif norm == "zscore":
            sd = float(s.std())
            values = (s - float(s.mean())) / sd if sd > 0 else np.zeros_like(s)
            floor = float(values.min())
        else:  # rrf (validated)
            values = 1.0 / (rrf_k + np.arange(1, len(s) + 1, dtype=np.float64))
            floor = 1.0 / (rrf_k + len(s) + 1)
        x[:, j] = floor
        seen: set[int] = set()
        for (doc, _), v in zip(lst, values, strict=True):
            i = pos.get(doc)
            if i is not None and i not in seen:  # a duplicated id keeps its first (best) entry
                x[i, j] = v
                seen.add(i)
    return x


@dataclasses.dataclass
class _Batch:
    """Every training query's term matrix padded into one array, for vectorised NDCG@k."""

    x: FloatArray  # (queries, max candidates, terms)
    gains: FloatArray  # (queries, max candidates); padding has gain 0
    valid: npt.NDArray[np.bool_]
    idcg: FloatArray
    k: int

    @classmethod
    def build(
        cls,
        examples: Sequence[FitExample],
        specs: Sequence[tuple[str, str]],
        retrievers: Sequence[str],
        rrf_k: int,
        k: int,
    ) -> _Batch:
        mats, gains = [], []
        idcg = np.zeros(len(examples))
        for q, ex in enumerate(examples):
            docs = sorted({d for r in retrievers for d, _ in ex.hits.get(r, ())})
            mats.append(normalised_terms(ex.hits, docs, specs, rrf_k))
            gains.append(np.array([max(0.0, float(ex.relevance.get(d, 0.0))) for d in docs]))
            ideal = sorted((g for g in ex.relevance.values() if g > 0), reverse=True)[:k]
            idcg[q] = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        n = max([len(g) for g in gains] + [1])
        x = np.zeros((len(examples), n, len(specs)))
        g = np.zeros((len(examples), n))
        valid = np.zeros((len(examples), n), dtype=bool)
        for q, (m, gq) in enumerate(zip(mats, gains, strict=True)):
            x[q, : len(gq)] = m
            g[q, : len(gq)] = gq
            valid[q, : len(gq)] = True
        return cls(x, g, valid, idcg, k)

    def ndcg(self, w: FloatArray) -> float:
        scores = np.where(self.valid, self.x @ w, -np.inf)
        kk = min(self.k, scores.shape[1])
        # Stable sort on the negated score: equal scores keep document-id order, as fuse() does.
        top = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
        got = np.take_along_axis(self.gains, top, axis=1)
        dcg = (got / np.log2(np.arange(2, kk + 2))).sum(axis=1)
        ok = self.idcg > 0
        return float(np.where(ok, dcg / np.where(ok, self.idcg, 1.0), 0.0).mean())


def _validate(terms: Sequence[FusionTerm], rrf_k: int) -> None:
    if not terms:
        raise InvalidArgument("terms", "a fusion model needs at least one term")
    for i, t in enumerate(terms):
        if not t.retriever:
            raise InvalidArgument(f"terms[{i}].retriever", "must be a non-empty name")
        if t.norm not in NORMS:
            raise InvalidArgument(f"terms[{i}].norm", f"unknown {t.norm!r} (known: {', '.join(NORMS)})")
        if not math.isfinite(t.weight):
            raise InvalidArgument(f"terms[{i}].weight", "must be finite")
    if rrf_k < 1:
        raise InvalidArgument("rrf_k", "must be at least 1")


__all__ = ["FORMAT", "NORMS", "FitExample", "FusedHit", "FusionModel", "FusionTerm", "normalised_terms"]
