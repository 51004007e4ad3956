"""The search shard on qdrant-edge: three named vectors per item and one payload schema.

    dense   MiniLM sentence vector of the item's text (cosine)
    bm25    BM25 document weights of the same text; the engine applies IDF (`Modifier.Idf`), so IDF
            follows the live collection as items come and go, with no re-indexing
    name    character-trigram vector of a creator's name (kindred.text.names); posts have none

plus the document evidence a learned fusion reads (kindred.text.fusion): always the text-only
DOC_FEATURES (`bm25_title`, `terms`, payload `doc_len`), and, in an index created with
`encoded_evidence` (`kindred index --encoded-evidence`), the encoded ENCODED_DOC_FEATURES:

    title      MiniLM vector of the item's title (cosine; none for an item without a title)
    sentences  MiniLM vectors of its title and each sentence of its text (kindred.text.fusion.
               item_sentences; one multivector, cosine, MaxSim)

both by the same document encoder as `dense` and without an HNSW graph (m 0): they are only ever
scored exactly over a query's candidates.

Layout: `<data_dir>/index/search/shard/` (the shard, locked by its write-ahead log: one process opens
it) and `meta.json` next to it: vector size, the encoder version the dense vectors came from, and the
BM25 parameters (k1, b, average length, tokenizer) documents must keep being weighted with, and, after
a bulk load, the corpus's common terms (kindred.text.common_terms) queries look candidates up without.

A write is visible to the next query (the engine's appendable segment is searched exactly); `optimize`
builds HNSW over sealed segments after a bulk load.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import qdrant_edge as qe

from kindred.config import Settings
from kindred.errors import FailedPrecondition
from kindred.fileio import write_text_atomic
from kindred.text.common_terms import TermStats
from kindred.text.fusion import TITLE_BM25  # the stored vector is named after the feature it gives
from kindred.text.names import name_vector
from kindred.text.tokenize import Bm25, SparseTerms, TokenizerConfig, tokenize
from kindred.vectorstore.base import (
    CATEGORY_KEY,
    PayloadFilter,
    VectorIndexError,
    from_engine_payload,
    point_uuid,
    to_engine_payload,
)
from kindred.vectorstore.edge import SEARCH_THREADS, edge_filter, search_pool_size
from retrieval_svc.search.documents import (
    ACCESS_KEY,
    CREATOR_KEY,
    KIND_KEY,
    PAYLOAD_INDEXES,
    TITLE_KEY,
    SearchDoc,
    encoded_evidence_texts,
)

DENSE: Final = "dense"
BM25: Final = "bm25"
TERM_STATS_KEY: Final = "bm25_term_stats"  # meta.json: kindred.text.common_terms.TermStats
NAME: Final = "name"
RETRIEVERS: Final = (DENSE, BM25, NAME)
# Document evidence for a learned fusion (trainer.search_tuning.DOC_FEATURES), from the text alone:
# BM25 of the title (payload "title") and a binary term vector (a query weighting each of its n terms
# 1/n scores the share of them the item contains); the text's length in terms as payload DOC_LEN_KEY.
# Indexes created before these exist lack them: the meta's "doc_evidence" says which one has them.
TERMS: Final = "terms"
DOC_LEN_KEY: Final = "doc_len"
TITLE_AVG_LEN: Final = 8.0  # title length in terms for title BM25 until a bulk load measures it
# Encoded document evidence (kindred.text.fusion.ENCODED_DOC_FEATURES), opt-in per index (meta
# "encoded_evidence"): a title vector and a sentence multivector, ~10 more texts to encode per item.
TITLE_VEC: Final = "title"
SENTENCES: Final = "sentences"
META_FILE: Final = "meta.json"
SHARD_DIR: Final = "shard"
UPSERT_BATCH: Final = 512
# HNSW (created with the shard): m 16, ef_construct 128, and the dense vectors also kept as int8
# (scalar quantisation, in RAM): the graph is built and searched on the int8 copy (2.4× less build CPU
# than on float32, measured at 50k points) and the best candidates are re-scored in float32.
HNSW_M: Final = 16
HNSW_EF_CONSTRUCT: Final = 128
# Below this many KB of vectors (~6.7k MiniLM vectors) a filtered dense search scores the payload
# index's matches exactly instead of walking the graph.
FULL_SCAN_THRESHOLD_KB: Final = 10_000
# Payload fields that get extra HNSW links per value ("filterable HNSW"): the facets a fan narrows a
# search by. The other indexed fields (language, access, maturity, creator, published time) keep their
# payload index (exact filtering, cardinality estimates) without extra links: links for every value of
# every field re-inserted the collection several times over (~7× the build CPU at 100k and 200k points,
# bench.latency.hnsw_build; published_at, which no search filters on, alone re-inserts every point
# through its range blocks). Filtered dense queries turn on ACORN (`SearchFilter.needs_acorn`): at 1.1M
# points a language filter kept 0.27 of the exact top 100 without it, 0.88 with it, and even linked
# fields' filters gain from it, at several times the engine time of an unfiltered query.
HNSW_LINKED_FIELDS: Final = frozenset({KIND_KEY, CATEGORY_KEY})
# int8 candidates fetched per result and re-scored in float32: at 1.1M points recall@100 against exact
# search rose from 0.76 to 0.84 with 2 (bench_search_latency), at no measurable latency.
RESCORE_OVERSAMPLING: Final = 2.0

FloatMatrix = npt.NDArray[np.float32]
Encode = Callable[[list[str]], FloatMatrix]  # texts → (len(texts), dim) unit vectors


@dataclasses.dataclass(frozen=True)
class EncodedEvidence:
    """Per document: its title's vector (None: it has no title) and its sentences' vectors (m, dim)."""

    titles: list[FloatMatrix | None]
    sentences: list[FloatMatrix]


def encode_documents(
    docs: Sequence[SearchDoc], encode: Encode, *, evidence: bool
) -> tuple[FloatMatrix, EncodedEvidence | None]:
    """The dense vectors of `docs`' texts and, with `evidence`, their title and sentence vectors — all in
    one `encode` call (kindred.text.encoder batches by length, so short sentences pad among themselves)."""
    texts = [d.text for d in docs]
    if not evidence:
        return encode(texts), None
    parts = [encoded_evidence_texts(d) for d in docs]
    titled = [i for i, (title, _) in enumerate(parts) if title]
    flat = encode(texts + [parts[i][0] for i in titled] + [s for _, sents in parts for s in sents])
    titles: list[FloatMatrix | None] = [None] * len(docs)
    for row, i in enumerate(titled, start=len(docs)):
        titles[i] = flat[row]
    sentences = []
    start = len(docs) + len(titled)
    for _, sents in parts:
        sentences.append(flat[start : start + len(sents)])
        start += len(sents)
    return flat[: len(docs)], EncodedEvidence(titles, sentences)


def search_index_root(settings: Settings) -> Path:
    return settings.data_dir / "index" / "search"


def payload_index_params(field: str, kind: str) -> Any:
    """Index parameters of one payload field: HNSW links only for HNSW_LINKED_FIELDS."""
    links = field in HNSW_LINKED_FIELDS
    if kind == "keyword":
        return qe.KeywordIndexParams(enable_hnsw=links)
    if kind == "integer":
        return qe.IntegerIndexParams(lookup=True, range=True, enable_hnsw=links)
    if kind == "float":
        return qe.FloatIndexParams(enable_hnsw=links)
    raise ValueError(f"no index parameters for payload field {field!r} of type {kind!r}")


def dense_search_params(hnsw_ef: int, *, acorn: bool) -> qe.SearchParams:
    """A dense (HNSW) query's engine parameters: `hnsw_ef`; RESCORE_OVERSAMPLING× the limit of int8
    candidates re-scored in float32; ACORN if `acorn` (see SearchFilter.needs_acorn; the engine then
    uses it only when the filter keeps at most 40% of the points)."""
    return qe.SearchParams(
        hnsw_ef=hnsw_ef,
        quantization=qe.QuantizationSearchParams(rescore=True, oversampling=RESCORE_OVERSAMPLING),
        acorn=qe.AcornSearchParams(enable=True) if acorn else None,
    )


@dataclasses.dataclass(frozen=True)
class SearchFilter:
    """Engine-side filter of a search: the shared PayloadFilter plus kinds, access levels and creators."""

    base: PayloadFilter = dataclasses.field(default_factory=PayloadFilter)
    kinds: frozenset[str] = frozenset()
    access: frozenset[str] = frozenset()
    creator_ids: frozenset[str] = frozenset()

    def to_engine(self) -> qe.Filter | None:
        """The qdrant-edge filter."""
        must: list[Any] = []
        base = edge_filter(self.base)
        if base is not None:
            must.append(base)
        for key, values in (
            (KIND_KEY, self.kinds),
            (ACCESS_KEY, self.access),
            (CREATOR_KEY, self.creator_ids),
        ):
            if values:
                must.append(qe.FieldCondition(key, match=qe.MatchAny(sorted(values))))
        return qe.Filter(must=must) if must else None

    @property
    def needs_acorn(self) -> bool:
        """Whether a dense search under this filter should use ACORN (two-hop graph exploration, which
        keeps recall when a filter strands the graph walk): any filter on kind, category, language or
        access. Creators and excluded ids do not count: a creator's items are few enough for the
        engine's exact path, and exclusions (like exclude_mature) keep almost every point. The engine
        applies it only when the filter keeps at most 40% of the points."""
        return bool(self.kinds or self.base.categories or self.base.languages or self.access)


@dataclasses.dataclass(frozen=True)
class Hit:
    item_id: str
    score: float
    payload: dict[str, Any]
    vectors: Mapping[str, Any] | None = None  # the named vectors a query asked for (with_vector)


class SearchIndex:
    """The shard plus its metadata. Queries from many threads at once are fine; so are writes."""

    def __init__(self, shard: qe.EdgeShard, root: Path, meta: Mapping[str, Any]) -> None:
        self._shard = shard
        self.root = root
        self.meta: dict[str, Any] = dict(meta)
        self.dim = int(meta["dim"])
        self.encoder_version = str(meta.get("encoder_version", ""))
        bm = meta["bm25"]
        self.bm25 = Bm25(k1=float(bm["k1"]), b=float(bm["b"]), avg_len=float(bm["avg_len"]))
        self.doc_evidence = bool(meta.get("doc_evidence", False))
        self.encoded_evidence = bool(meta.get("encoded_evidence", False))
        self.title_bm25 = Bm25(
            k1=self.bm25.k1, b=self.bm25.b, avg_len=float(meta.get("title_avg_len", TITLE_AVG_LEN))
        )
        # None for an index created without a bulk load (or before they were kept): every query term
        # then finds candidates.
        stats = meta.get(TERM_STATS_KEY)
        self.term_stats = TermStats.from_dict(stats) if stats else None
        if bm.get("tokenizer") != TokenizerConfig().to_dict():
            raise FailedPrecondition(
                f"search index at {root} was built with tokenizer {bm.get('tokenizer')}; this code "
                f"tokenizes as {TokenizerConfig().to_dict()}: rebuild it (kindred index --rebuild)"
            )
        self._closed = False
        self._close_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        dim: int,
        bm25: Bm25,
        encoder_version: str,
        title_avg_len: float = TITLE_AVG_LEN,
        encoded_evidence: bool = False,
        term_stats: TermStats | None = None,
        search_threads: int = SEARCH_THREADS,
    ) -> SearchIndex:
        """An empty index at `root` (which must not hold one yet). `encoded_evidence`: it also stores the
        `title` and `sentences` vectors (every write then brings them: `encode_documents`). `term_stats`:
        the common terms of the corpus about to be loaded (`Bm25.fit_with_stats`), kept in meta.json."""
        root = Path(root)
        if (root / META_FILE).exists():
            raise FileExistsError(f"a search index already exists at {root}")
        root.mkdir(parents=True, exist_ok=True)
        vectors, sparse = shard_vectors(dim, encoded_evidence=encoded_evidence, doc_evidence=True)
        config = qe.EdgeConfig(
            vectors=vectors,
            sparse_vectors=sparse,
            hnsw_config=qe.HnswIndexConfig(
                m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=FULL_SCAN_THRESHOLD_KB
            ),
            quantization_config=qe.ScalarQuantizationConfig(
                type=qe.ScalarType.Int8, quantile=0.99, always_ram=True
            ),
            max_search_threads=search_pool_size(search_threads),
        )
        try:
            shard = qe.EdgeShard.create(str(root / SHARD_DIR), config)
            for field, kind in PAYLOAD_INDEXES.items():
                shard.update(qe.UpdateOperation.create_field_index(field, payload_index_params(field, kind)))
        except Exception as exc:
            raise VectorIndexError(f"cannot create the search shard at {root}: {exc}") from exc
        meta = {
            "dim": dim,
            "encoder_version": encoder_version,
            "bm25": bm25.to_dict(),
            "doc_evidence": True,
            "encoded_evidence": encoded_evidence,
            "title_avg_len": title_avg_len,
            **({TERM_STATS_KEY: term_stats.to_dict()} if term_stats is not None else {}),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_text_atomic(root / META_FILE, json.dumps(meta, indent=2) + "\n")
        return cls(shard, root, meta)

    @classmethod
    def open(cls, root: Path, *, search_threads: int = SEARCH_THREADS) -> SearchIndex:
        """The index at `root`, its shard searched by a pool of `search_threads`
        (kindred.vectorstore.edge.SEARCH_THREADS says why one)."""
        root = Path(root)
        try:
            meta = json.loads((root / META_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise FailedPrecondition(f"no search index at {root} (run `kindred index`)") from exc
        vectors, sparse = shard_vectors(
            int(meta["dim"]),
            encoded_evidence=bool(meta.get("encoded_evidence", False)),
            doc_evidence=bool(meta.get("doc_evidence", False)),
        )
        config = qe.EdgeConfig(
            vectors=vectors, sparse_vectors=sparse, max_search_threads=search_pool_size(search_threads)
        )
        try:
            # The engine refuses vectors other than the shard's; it writes the pool size into it.
            shard = qe.EdgeShard.load(str(root / SHARD_DIR), config)
        except Exception as exc:
            raise VectorIndexError(f"cannot open the search shard at {root}: {exc}") from exc
        return cls(shard, root, meta)

    @classmethod
    def open_or_create(
        cls, root: Path, *, dim: int, encoder_version: str, search_threads: int = SEARCH_THREADS
    ) -> SearchIndex:
        """The index at `root`, or a new empty one (BM25 average length: the default until a bulk load)."""
        if (Path(root) / META_FILE).exists():
            return cls.open(root, search_threads=search_threads)
        return cls.create(
            root, dim=dim, bm25=Bm25(), encoder_version=encoder_version, search_threads=search_threads
        )

    def close(self) -> None:
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._shard.close()

    # -- writes ------------------------------------------------------------------------------------

    def upsert(
        self, docs: Sequence[SearchDoc], vectors: FloatMatrix, evidence: EncodedEvidence | None = None
    ) -> None:
        """Inserts or replaces `docs` (same id → same point, so re-indexing never duplicates).
        `evidence`: their title and sentence vectors, required by an index that stores them (see
        `encode_documents`, which makes both arguments), ignored by one that does not."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(docs), self.dim):
            raise ValueError(f"{len(docs)} docs need ({len(docs)}, {self.dim}) vectors, got {vectors.shape}")
        if not np.all(np.isfinite(vectors)):
            raise ValueError("dense vectors contain NaN or infinity")
        encoded: list[dict[str, Any]] = [{} for _ in docs]
        if self.encoded_evidence:
            if evidence is None:
                raise ValueError(
                    f"the search index at {self.root} stores encoded evidence: upserts need the title "
                    "and sentence vectors (encode_documents(..., evidence=True))"
                )
            encoded = self._evidence_vectors(len(docs), evidence)
        points = [
            self._point(doc, vec, extra) for doc, vec, extra in zip(docs, vectors, encoded, strict=True)
        ]
        for start in range(0, len(points), UPSERT_BATCH):
            self._call(
                self._shard.update, qe.UpdateOperation.upsert_points(points[start : start + UPSERT_BATCH])
            )

    def _evidence_vectors(self, n: int, evidence: EncodedEvidence) -> list[dict[str, Any]]:
        """Per document, its `title` (if it has one) and `sentences` named vectors, checked."""
        if len(evidence.titles) != n or len(evidence.sentences) != n:
            raise ValueError(
                f"{n} docs need {n} titles and sentence sets, got "
                f"{len(evidence.titles)} and {len(evidence.sentences)}"
            )
        out: list[dict[str, Any]] = []
        for title, sentences in zip(evidence.titles, evidence.sentences, strict=True):
            sent = np.asarray(sentences, dtype=np.float32)
            if sent.ndim != 2 or sent.shape[0] < 1 or sent.shape[1] != self.dim:
                raise ValueError(f"sentence vectors must be (m >= 1, {self.dim}), got {sent.shape}")
            vectors: dict[str, Any] = {SENTENCES: sent.tolist()}
            if title is not None:
                vec = np.asarray(title, dtype=np.float32)
                if vec.shape != (self.dim,):
                    raise ValueError(f"a title vector must be ({self.dim},), got {vec.shape}")
                vectors[TITLE_VEC] = vec.tolist()
            if not all(np.all(np.isfinite(v)) for v in vectors.values()):
                raise ValueError("title or sentence vectors contain NaN or infinity")
            out.append(vectors)
        return out

    def _point(self, doc: SearchDoc, vec: FloatMatrix, encoded: Mapping[str, Any]) -> qe.Point:
        vectors: dict[str, Any] = {DENSE: vec.tolist(), **encoded}
        lexical = self.bm25.document(doc.text)
        if len(lexical):
            vectors[BM25] = _sparse(lexical)
        name = name_vector(doc.name) if doc.name else SparseTerms((), ())
        if len(name):
            vectors[NAME] = _sparse(name)
        payload = doc.payload
        if self.doc_evidence:
            title = self.title_bm25.document(str(payload.get(TITLE_KEY) or ""))
            if len(title):
                vectors[TITLE_BM25] = _sparse(title)
            if len(lexical):
                vectors[TERMS] = _sparse(SparseTerms(lexical.indices, (1.0,) * len(lexical)))
            payload = {**payload, DOC_LEN_KEY: len(tokenize(doc.text, self.bm25.tokenizer))}
        return qe.Point(point_uuid(doc.item_id), vectors, to_engine_payload(doc.item_id, payload))

    def delete(self, ids: Sequence[str], *, kind: str | None = None) -> int:
        """Deletes these items (only those of `kind`, if given); returns how many existed."""
        if not ids:
            return 0
        found = self.fetch(ids)
        doomed = [h.item_id for h in found if kind is None or h.payload.get(KIND_KEY) == kind]
        if doomed:
            uuids: list[qe.PointId] = [point_uuid(i) for i in doomed]
            self._call(self._shard.update, qe.UpdateOperation.delete_points(uuids))
        return len(doomed)

    def optimize(self) -> None:
        self._call(self._shard.optimize)

    def flush(self) -> None:
        self._call(self._shard.flush)

    # -- reads -------------------------------------------------------------------------------------

    def query(self, request: qe.QueryRequest) -> list[Hit]:
        return [self._hit(p) for p in self._call(self._shard.query, request)]

    def query_batch(self, requests: Sequence[qe.QueryRequest]) -> list[list[Hit]]:
        if not requests:
            return []
        return [
            [self._hit(p) for p in hits]
            for hits in self._call(self._shard.query_batch, qe.QueryBatchRequest(list(requests)))
        ]

    def scores_of(self, requests: Sequence[qe.QueryRequest], ids: Sequence[str]) -> list[dict[str, float]]:
        """Each request's scores by item id, for requests whose points are among `ids` (a HasId filter)
        and that ask for no payload: a point's id is point_uuid(its item id), so the item ids come from
        `ids` instead of each hit's payload (turning payloads into dicts is Python work per hit that
        the scores do not need)."""
        if not requests:
            return []
        item_of = {str(point_uuid(i)): i for i in ids}
        return [
            {item_of[str(p.id)]: float(p.score) for p in hits}
            for hits in self._call(self._shard.query_batch, qe.QueryBatchRequest(list(requests)))
        ]

    def fetch(self, ids: Sequence[str]) -> list[Hit]:
        """Stored items among `ids` (score 0), in the order of `ids`."""
        if not ids:
            return []
        records = self._call(self._shard.retrieve, [point_uuid(i) for i in ids], True, False)
        by_id = {h.item_id: h for h in (self._hit(r) for r in records)}
        return [by_id[i] for i in dict.fromkeys(ids) if i in by_id]

    def count(self) -> int:
        return int(self._call(self._shard.count, qe.CountRequest(exact=True)))

    def iter_ids(self, page: int = 1024) -> Iterator[str]:
        """Every stored item id (a scroll over the whole shard; for tools and tests)."""
        offset = None
        while True:
            records, offset = self._call(
                self._shard.scroll, qe.ScrollRequest(limit=page, offset=offset, with_payload=True)
            )
            for rec in records:
                yield from_engine_payload(rec.payload)[0]
            if offset is None:
                return

    def info(self) -> dict[str, Any]:
        info = self._call(self._shard.info)
        return {
            "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count,
            "segments": info.segments_count,
        }

    def _hit(self, point: Any) -> Hit:
        item_id, payload = from_engine_payload(point.payload)
        vectors = getattr(point, "vector", None)
        return Hit(
            item_id=item_id,
            score=float(getattr(point, "score", 0.0) or 0.0),
            payload=payload,
            vectors=vectors if isinstance(vectors, dict) else None,
        )

    def _call(self, fn: Any, *args: Any) -> Any:
        if self._closed:
            raise VectorIndexError(f"search index at {self.root} is closed")
        try:
            return fn(*args)
        except Exception as exc:
            raise VectorIndexError(f"qdrant-edge (search): {exc}") from exc


def shard_vectors(
    dim: int, *, encoded_evidence: bool, doc_evidence: bool
) -> tuple[dict[str, qe.EdgeVectorParams], dict[str, qe.EdgeSparseVectorParams]]:
    """The shard's dense and sparse vectors, as `create` makes them and `open` declares them (the engine
    refuses a load whose vectors differ from the shard's). Indexes built before the document evidence
    lack `bm25_title` and `terms` (meta "doc_evidence")."""
    vectors = {DENSE: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)}
    if encoded_evidence:
        vectors.update(encoded_evidence_params(dim))
    sparse = {
        BM25: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf),
        # Plain dot product: a name vector is unit-norm, so the score is the trigram cosine.
        NAME: qe.EdgeSparseVectorParams(),
    }
    if doc_evidence:
        sparse[TITLE_BM25] = qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)
        sparse[TERMS] = qe.EdgeSparseVectorParams()
    return vectors, sparse


def encoded_evidence_params(dim: int) -> dict[str, qe.EdgeVectorParams]:
    """The `title` and `sentences` vectors: cosine like `dense`, without an HNSW graph (m 0; they are only
    scored exactly over a query's candidates, so a graph would be build time and RAM for nothing)."""
    no_graph = qe.HnswIndexConfig(
        m=0, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=FULL_SCAN_THRESHOLD_KB
    )
    maxsim = qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim)
    return {
        TITLE_VEC: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, hnsw_config=no_graph),
        SENTENCES: qe.EdgeVectorParams(
            size=dim, distance=qe.Distance.Cosine, hnsw_config=no_graph, multivector_config=maxsim
        ),
    }


def _sparse(terms: SparseTerms) -> qe.SparseVector:
    return qe.SparseVector(list(terms.indices), list(terms.values))


def sparse_query(terms: SparseTerms) -> qe.SparseVector:
    return _sparse(terms)


__all__ = [
    "BM25",
    "DENSE",
    "DOC_LEN_KEY",
    "NAME",
    "RETRIEVERS",
    "SENTENCES",
    "TERMS",
    "TITLE_BM25",
    "TITLE_VEC",
    "EncodedEvidence",
    "Hit",
    "SearchFilter",
    "SearchIndex",
    "dense_search_params",
    "encode_documents",
    "encoded_evidence_params",
    "payload_index_params",
    "search_index_root",
    "sparse_query",
]
