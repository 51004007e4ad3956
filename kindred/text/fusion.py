"""Hybrid-search score fusion: per-retriever normalised scores combined with learned weights.

The service asks each retriever (BM25 sparse, dense, ...) for its top hits, then calls

    model = FusionModel.load(path)            # or FusionModel.default()
    hits = model.fuse({"bm25": [(doc_id, score), ...], "dense": [(doc_id, score), ...]}, limit=10)
    hits[0].doc_id, hits[0].score, hits[0].contributions   # {"bm25:minmax": 0.31, "dense:minmax": 0.52}

Stable API: `FusionModel.default()`, `FusionModel.load(path)`, `.save(path)`,
`.fuse(hits, limit=None, rescored=None)`, `.retrievers` (the names `fuse` reads; other keys are ignored,
a missing one contributes nothing), `.rescore`, `.kind`, `.with_term(term)`, `FusionModel.fit(examples,
...)` (what the trainer runs), `FusedHit`, `FusionTerm`.

The model is a weighted sum of terms, each term one retriever's score under one normalisation, computed
per query over that retriever's own hit list (so it needs nothing but the lists the engine returns):
- "minmax": (s - min) / (max - min) over the list; 0 for the list's last hit.
- "zscore": (s - mean) / std over the list.
- "rrf":    1 / (rrf_k + rank), rank from 1 (reciprocal-rank fusion's term).
A document absent from a retriever's list is scored as if it sat just below that list's last hit
(minmax 0, zscore the list's lowest z, rrf 1 / (rrf_k + len + 1)): the retriever did not vouch for it.
Ties in the fused score break by document id, ascending, so a ranking is reproducible.

Union rescoring (`rescore`): a document one retriever returned but another did not is not really
"below that list" — the other retriever just did not rank it that high. When the caller passes
`fuse(hits, rescored={retriever: {doc: score}})` (the service: one batched engine call over the union's
ids, see retrieval_svc/search/query.py; the trainer: exact scores) every candidate of the union gets every
retriever's real score, and each retriever's list is re-formed over the whole union before normalising
(min-max / z-score / rank are then over the union's scores). A model with `rescore` true was fitted on
such lists; without `rescored` it still fuses the plain lists (the absent-document rule above).

Learned-to-rank kind (`kind: "lambdarank"`): a LightGBM LambdaRank booster over per-retriever features
(`ranker_features`: raw, min-max, z-score, gap to the query's top score, reciprocal rank — over the
rescored union — reciprocal rank in the retriever's own list, and the query's top score and list length
per retriever; the graph may add a linear base score over the same features, see trainer.lgbm_onnx),
fitted by trainer.search_tuning.fit_ranked_fusion and served as ONNX (trainer.lgbm_onnx writes the
graph; onnxruntime runs it through kindred.models.open_session). The file is `fusion.json` plus
`<stem>.onnx` beside it (`fusion.onnx`: in a query-encoder directory `model.onnx` is the encoder), whose
sha256 `fusion.json` records and `load` checks. Linear terms, if any, add to the ranker's score (the
service adds a name-matching term that way: `with_term`).

`fit` learns the weights by coordinate ascent on mean NDCG@10 over training queries (the metric the
benchmark reports, optimised directly; a handful of weights hardly overfits 600+ queries, which is why
the trainer picks between the kinds — and the ranker's rounds — by inner cross-validation). Files are
JSON (`format: kindred.fusion/1`); `load` refuses unknown normalisations or malformed weights with
InvalidArgument naming the field, so a bad file fails the start, not a query.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from kindred.errors import InvalidArgument
from kindred.fileio import write_bytes_atomic

FORMAT: Final = "kindred.fusion/1"
KINDS: Final = ("linear", "lambdarank")
RANKER_INPUT: Final = "features"
RANKER_OUTPUT: Final = "score"
# Per retriever (raw, min-max, z-score, gap and rrf_union on the rescored union; rrf on its own list),
# then per query.
RANKER_DOC_FEATURES: Final = ("raw", "minmax", "zscore", "gap_top", "rrf", "rrf_union")
RANKER_QUERY_FEATURES: Final = ("top", "listed")
NORMS: Final = ("minmax", "zscore", "rrf")
DEFAULT_RRF_K: Final = 60
# Measured on BEIR SciFact training queries (bench/bench_search_scifact.py): the convex min-max mix of
# BM25 and base MiniLM picked 0.40-0.45 for BM25 in every cross-validation fold.
_DEFAULT_TERMS: Final = (("bm25", "minmax", 0.45), ("dense", "minmax", 0.55))

# Document evidence a ranker may read as "rescored-only retrievers" (no hit list of their own; every
# candidate's value comes in `fuse(..., rescored=...)`): BM25 of the title alone, the share of the
# query's distinct terms the item contains, log(1 + the item's length in terms) — all stored by the
# search index from the text alone (retrieval_svc/search/index.py).
TITLE_BM25: Final = "bm25_title"
COVERAGE: Final = "coverage"
DOC_LEN: Final = "doc_len"
DOC_FEATURES: Final = (TITLE_BM25, COVERAGE, DOC_LEN)
# Encoded document evidence: needs the item's parts encoded by the *base* document encoder at index time
# (and is scored with the base query vector, so a tuned query encoder does not change it):
# - TITLE_DENSE: cosine of the query to the title alone (a second dense named vector, the title's
#   MiniLM embedding, Cosine).
# - SENT_MAX / SENT_TOP2: the best / mean of the two best cosines of the query to the item's sentences
#   (title + each sentence of the text, one multivector named vector, Cosine with MaxSim comparator).
#   SENT_MAX is the engine's MaxSim score of the one-vector query; SENT_TOP2 reads the candidate's
#   stored multivector (with_vector) returned by that same rescoring query.
# Claims match one sentence of an abstract, which the whole-abstract vector dilutes (BEIR SciFact:
# bench/bench_search_scifact.py measures what they add).
TITLE_DENSE: Final = "title_dense"
SENT_MAX: Final = "sent_max"
SENT_TOP2: Final = "sent_top2"
ENCODED_DOC_FEATURES: Final = (TITLE_DENSE, SENT_MAX, SENT_TOP2)
# A sentence ends at . ! or ? followed by space and an upper-case letter, digit or opening bracket.
_SENTENCE_END: Final = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def item_sentences(title: str, text: str) -> list[str]:
    """The texts whose vectors make an item's sentence multivector (SENT_MAX / SENT_TOP2): its title,
    then each sentence of its text, stripped, empty ones dropped; [""] if nothing is left (a point needs
    at least one vector)."""
    parts = [p.strip() for p in [title, *_SENTENCE_END.split(text)] if p.strip()]
    return parts or [""]


def sentence_evidence(cosines: Sequence[float] | npt.NDArray[np.float64]) -> tuple[float, float]:
    """(SENT_MAX, SENT_TOP2) of one item from its sentences' cosines to the query: the best, and the mean
    of the two best (the best alone for a one-sentence item)."""
    if not len(cosines):
        raise InvalidArgument("cosines", "an item has at least one sentence vector")
    top = np.sort(np.asarray(cosines, dtype=np.float64))[::-1][:2]
    return float(top[0]), float(top.mean())


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
    # Every union candidate's real score per retriever (union rescoring); None: the lists only.
    rescored: Mapping[str, Mapping[str, float]] | None = None


class Ranker:
    """A LambdaRank booster as ONNX over `ranker_features(retrievers)`; scores one query's candidates."""

    def __init__(self, retrievers: Sequence[str], onnx_bytes: bytes, session: Any) -> None:
        if not retrievers:
            raise InvalidArgument("ranker.retrievers", "a ranker reads at least one retriever")
        self.retrievers = tuple(retrievers)
        self.onnx_bytes = onnx_bytes
        self.sha256 = hashlib.sha256(onnx_bytes).hexdigest()
        self.session = session

    @property
    def features(self) -> tuple[str, ...]:
        return ranker_feature_names(self.retrievers)

    @classmethod
    def from_bytes(cls, retrievers: Sequence[str], onnx_bytes: bytes) -> Ranker:
        """In memory (what the trainer just fitted); `FusionModel.load` opens files through open_session."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])
        return cls(retrievers, onnx_bytes, session)

    @classmethod
    def open(cls, path: Path, retrievers: Sequence[str], sha256: str) -> Ranker:
        from kindred.models import open_session, verify_sha256

        if not path.is_file():
            raise InvalidArgument("ranker.file", f"{path} does not exist")
        verify_sha256(path, sha256, label="fusion ranker")
        manifest = {"inputs": [RANKER_INPUT], "outputs": [RANKER_OUTPUT]}
        session = open_session(path, manifest, label="fusion ranker")
        return cls(retrievers, path.read_bytes(), session)

    def score(self, x: npt.NDArray[np.float32]) -> FloatArray:
        if not len(x):
            return np.zeros(0)
        (out,) = self.session.run([RANKER_OUTPUT], {RANKER_INPUT: np.ascontiguousarray(x, dtype=np.float32)})
        return np.asarray(out, dtype=np.float64).reshape(-1)


class FusionModel:
    def __init__(
        self,
        terms: Sequence[FusionTerm],
        *,
        rrf_k: int = DEFAULT_RRF_K,
        info: Mapping[str, Any] | None = None,
        rescore: bool = False,
        ranker: Ranker | None = None,
    ) -> None:
        _validate(terms, rrf_k, has_ranker=ranker is not None)
        self.terms = tuple(terms)
        self.rrf_k = rrf_k
        self.info: dict[str, Any] = dict(info or {})
        self.rescore = rescore
        self.ranker = ranker

    @property
    def kind(self) -> str:
        return "lambdarank" if self.ranker is not None else "linear"

    def with_term(self, term: FusionTerm) -> FusionModel:
        """The same model plus one more linear term added to its score (the service's name matching)."""
        return FusionModel(
            [*self.terms, term], rrf_k=self.rrf_k, info=self.info, rescore=self.rescore, ranker=self.ranker
        )

    # --- construction and files

    @classmethod
    def default(cls) -> FusionModel:
        return cls(
            [FusionTerm(r, n, w) for r, n, w in _DEFAULT_TERMS],
            info={"source": "default (SciFact convex mix)"},
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, directory: Path | None = None) -> FusionModel:
        """`directory`: where a lambdarank model's ONNX file lies (`load` passes the JSON file's)."""
        if data.get("format") != FORMAT:
            raise InvalidArgument("format", f"expected {FORMAT!r}, got {data.get('format')!r}")
        kind = data.get("kind", "linear")
        if kind not in KINDS:
            raise InvalidArgument("kind", f"unknown {kind!r} (known: {', '.join(KINDS)})")
        rescore = data.get("rescore", False)
        if not isinstance(rescore, bool):
            raise InvalidArgument("rescore", "must be true or false")
        ranker = None
        if kind == "lambdarank":
            ranker = _ranker_of(data.get("ranker"), directory)
        raw = data.get("terms", [] if ranker is not None else None)
        if not isinstance(raw, list) or (not raw and ranker is None):
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
        return cls(terms, rrf_k=rrf_k, info=data.get("info") or {}, rescore=rescore, ranker=ranker)

    def to_dict(self, ranker_file: str = "fusion.onnx") -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "kind": self.kind,
            "rescore": self.rescore,
            "terms": [dataclasses.asdict(t) for t in self.terms],
            "rrf_k": self.rrf_k,
            "info": self.info,
        }
        if self.ranker is not None:
            out["ranker"] = {
                "file": ranker_file,
                "sha256": self.ranker.sha256,
                "retrievers": list(self.ranker.retrievers),
                "features": list(self.ranker.features),
            }
        return out

    def files(self, json_name: str) -> dict[str, bytes]:
        """File name → bytes of this model saved as `json_name` (plus its ONNX ranker, if any)."""
        ranker_file = f"{Path(json_name).stem}.onnx"
        text = json.dumps(self.to_dict(ranker_file), indent=2, sort_keys=True) + "\n"
        out = {json_name: text.encode("utf-8")}
        if self.ranker is not None:
            out[ranker_file] = self.ranker.onnx_bytes
        return out

    @classmethod
    def load(cls, path: Path) -> FusionModel:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InvalidArgument("fusion", f"{path} is not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise InvalidArgument("fusion", f"{path} must hold a JSON object")
        return cls.from_dict(data, directory=Path(path).parent)

    def save(self, path: Path) -> None:
        """Writes `path` (JSON) and, for a ranker, its ONNX file beside it — the ONNX first, so the JSON
        never names a file that is not there yet."""
        path = Path(path)
        files = self.files(path.name)
        for name in sorted(files, key=lambda n: n == path.name):
            write_bytes_atomic(path.with_name(name), files[name])

    @property
    def retrievers(self) -> tuple[str, ...]:
        linear = [t.retriever for t in self.terms if t.weight != 0.0]
        return tuple(dict.fromkeys([*(self.ranker.retrievers if self.ranker else ()), *linear]))

    def __repr__(self) -> str:
        parts = [f"{t.name}={t.weight:.3f}" for t in self.terms]
        if self.ranker is not None:
            parts.insert(0, f"lambdarank[{'+'.join(self.ranker.retrievers)}, {self.ranker.sha256[:8]}]")
        return f"FusionModel({', '.join(parts)}{', rescored union' if self.rescore else ''})"

    # --- serving

    def fuse(
        self,
        hits: Mapping[str, Hits],
        *,
        limit: int | None = None,
        rescored: Mapping[str, Mapping[str, float]] | None = None,
    ) -> list[FusedHit]:
        """All documents any used retriever returned, by fused score (best first), at most `limit`.
        `rescored`: every union candidate's real score per retriever (used when the model `rescore`s)."""
        docs, scores, parts, names = self.score_union(hits, rescored)
        if not docs:
            return []
        order = fused_order(docs, scores)
        if limit is not None:
            order = order[: max(0, limit)]
        return [
            FusedHit(docs[i], float(scores[i]), {n: float(p) for n, p in zip(names, parts[i], strict=True)})
            for i in order
        ]

    def score_union(
        self, hits: Mapping[str, Hits], rescored: Mapping[str, Mapping[str, float]] | None = None
    ) -> tuple[list[str], FloatArray, FloatArray, list[str]]:
        """(union candidates sorted by id, fused scores, (n, parts) contributions, part names)."""
        used = self.retrievers
        docs = union_of(hits, used)
        if not docs:
            return [], np.zeros(0), np.zeros((0, 0)), []
        lists = rescore_union(hits, rescored, used) if self.rescore and rescored is not None else hits
        x = normalised_terms(lists, docs, [(t.retriever, t.norm) for t in self.terms], self.rrf_k)
        parts = x * np.array([t.weight for t in self.terms])
        names = [t.name for t in self.terms]
        if self.ranker is not None:
            x_rank = ranker_features(hits, lists, docs, self.ranker.retrievers, self.rrf_k)
            learned = self.ranker.score(x_rank)
            parts = np.column_stack([learned, parts])
            names = ["lambdarank", *names]
        return docs, parts.sum(axis=1), parts, names

    def term_matrix(self, hits: Mapping[str, Hits]) -> tuple[list[str], FloatArray]:
        """The candidate documents (union of the used retrievers' lists) and their (n, terms) values."""
        used = self.retrievers
        docs = union_of(hits, used)
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
        rescore: bool = False,
    ) -> FusionModel:
        """Weights maximising mean NDCG@k over `examples` by coordinate ascent (each term's weight in turn
        over `grid`, the others fixed), starting from the best single term. Deterministic.
        `rescore`: fit (and serve) on union-rescored lists (examples need `rescored`)."""
        if not examples:
            raise InvalidArgument("examples", "need at least one training query")
        if rescore:
            examples = [
                FitExample(rescore_union(ex.hits, ex.rescored, retrievers), ex.relevance, ex.rescored)
                if ex.rescored is not None
                else ex
                for ex in examples
            ]
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
        return cls(terms, rrf_k=rrf_k, info=info, rescore=rescore)


def fused_order(docs: Sequence[str], scores: Sequence[float] | FloatArray) -> list[int]:
    """Positions of `docs` best first: by fused score, ties by id (what `FusionModel.fuse` returns)."""
    return sorted(range(len(docs)), key=lambda i: (-scores[i], docs[i]))


def union_of(hits: Mapping[str, Hits], retrievers: Sequence[str]) -> list[str]:
    return sorted({d for r in retrievers for d, _ in hits.get(r, ())})


def rescore_union(
    hits: Mapping[str, Hits], rescored: Mapping[str, Mapping[str, float]] | None, retrievers: Sequence[str]
) -> dict[str, Hits]:
    """Each retriever's list re-formed over the union of `retrievers`' lists: every candidate with a real
    score from it (its own list's, else `rescored`'s), best first, ties by id. A candidate it has no score
    for (e.g. BM25 shares no term with it) stays absent, so the absent-document rule applies."""
    docs = union_of(hits, retrievers)
    out: dict[str, Hits] = {}
    for r in {*hits, *retrievers}:
        own: dict[str, float] = {}
        for d, s in hits.get(r, ()):
            own.setdefault(d, float(s))
        extra = (rescored or {}).get(r, {})
        merged = {d: own[d] if d in own else float(extra[d]) for d in docs if d in own or d in extra}
        for d, s in own.items():  # documents outside the union (a retriever the model does not read)
            merged.setdefault(d, s)
        out[r] = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))
    return out


def ranker_feature_names(retrievers: Sequence[str]) -> tuple[str, ...]:
    return tuple(
        [f"{r}:{f}" for r in retrievers for f in RANKER_DOC_FEATURES]
        + [f"{r}:{f}" for r in retrievers for f in RANKER_QUERY_FEATURES]
    )


def ranker_features(
    hits: Mapping[str, Hits],
    lists: Mapping[str, Hits],
    docs: Sequence[str],
    retrievers: Sequence[str],
    rrf_k: int,
) -> npt.NDArray[np.float32]:
    """(len(docs), len(ranker_feature_names)) float32, always finite. `hits` are the engine's own lists
    (ranks, list lengths, top scores), `lists` the same after union rescoring (or `hits` itself)."""
    n = len(docs)
    doc_cols: list[FloatArray] = []
    query_cols: list[FloatArray] = []
    for r in retrievers:
        own = list(hits.get(r, ()))
        raw = normalised_terms(lists, docs, [(r, "raw")], rrf_k)[:, 0]
        doc_cols += [
            raw,
            normalised_terms(lists, docs, [(r, "minmax")], rrf_k)[:, 0],
            normalised_terms(lists, docs, [(r, "zscore")], rrf_k)[:, 0],
            raw - (float(raw.max()) if n else 0.0),
            normalised_terms(hits, docs, [(r, "rrf")], rrf_k)[:, 0],
            normalised_terms(lists, docs, [(r, "rrf")], rrf_k)[:, 0],
        ]
        top = float(max((s for _, s in own), default=0.0))
        query_cols += [np.full(n, top), np.full(n, float(len(own)))]
    x = np.column_stack([*doc_cols, *query_cols]) if n else np.zeros((0, len(doc_cols) + len(query_cols)))
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


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
        elif norm == "raw":  # ranker features only (never a linear term: scales differ per retriever)
            values = s
            floor = float(s.min())
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


def _ranker_of(raw: Any, directory: Path | None) -> Ranker:
    if not isinstance(raw, dict):
        raise InvalidArgument("ranker", "a lambdarank fusion needs {file, sha256, retrievers, features}")
    file, sha, retrievers = raw.get("file"), raw.get("sha256"), raw.get("retrievers")
    if not isinstance(file, str) or not file or "/" in file or file.startswith("."):
        raise InvalidArgument("ranker.file", "must be a plain file name beside fusion.json")
    if not isinstance(sha, str) or len(sha) != 64:
        raise InvalidArgument("ranker.sha256", "must be a sha256 hex digest")
    if not isinstance(retrievers, list) or not retrievers or not all(isinstance(r, str) for r in retrievers):
        raise InvalidArgument("ranker.retrievers", "must be a non-empty list of retriever names")
    if raw.get("features") != list(ranker_feature_names(retrievers)):
        raise InvalidArgument("ranker.features", "do not match this version's ranker features")
    if directory is None:
        raise InvalidArgument("ranker.file", "a lambdarank fusion loads from a file (FusionModel.load)")
    return Ranker.open(directory / file, retrievers, sha)


def _validate(terms: Sequence[FusionTerm], rrf_k: int, *, has_ranker: bool = False) -> None:
    if not terms and not has_ranker:
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


__all__ = [
    "COVERAGE",
    "DOC_FEATURES",
    "DOC_LEN",
    "ENCODED_DOC_FEATURES",
    "FORMAT",
    "KINDS",
    "NORMS",
    "RANKER_INPUT",
    "RANKER_OUTPUT",
    "SENT_MAX",
    "SENT_TOP2",
    "TITLE_BM25",
    "TITLE_DENSE",
    "FitExample",
    "FusedHit",
    "FusionModel",
    "FusionTerm",
    "Ranker",
    "fused_order",
    "item_sentences",
    "normalised_terms",
    "ranker_feature_names",
    "ranker_features",
    "rescore_union",
    "sentence_evidence",
    "union_of",
]
