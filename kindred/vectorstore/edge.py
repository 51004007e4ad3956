"""VectorIndex on qdrant-edge: the Qdrant engine in-process (the default on one machine).

A shard directory is locked by its write-ahead log, so exactly one process may open it: the trainer
builds and closes a version, then retrieval_svc opens it. Concurrent queries from many threads on
one open shard are fine.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import qdrant_edge as qe

from kindred.config import DEFAULT_ENGINE_SEARCH_THREADS
from kindred.vectorstore.base import (
    CATEGORY_KEY,
    ITEM_ID_KEY,
    LANGUAGE_KEY,
    MATURE_KEY,
    Distance,
    FieldType,
    HnswParams,
    IndexPoint,
    PayloadFilter,
    ScoredPoint,
    StoredPoint,
    VectorIndexError,
    VectorLike,
    as_vector,
    from_engine_payload,
    point_uuid,
    to_engine_payload,
)

_FIELD_TYPES: dict[str, qe.PayloadSchemaType] = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
    "text": qe.PayloadSchemaType.Text,
    "datetime": qe.PayloadSchemaType.Datetime,
}
_DISTANCES: dict[str, qe.Distance] = {"cosine": qe.Distance.Cosine, "dot": qe.Distance.Dot}

# Batches bound the memory of one update call; the engine takes ~15k points/s either way.
UPSERT_BATCH = 1024
# The payload selection of `with_payload=False`: the item id is all the engine converts to Python.
_ID_ONLY = [ITEM_ID_KEY]
# Threads of a served shard's search pool (qdrant-edge runs a query's per-segment reads on it; it starts
# 8 on this 2-CPU machine for a shard opened without a size). One thread costs less CPU per query (every
# thread counted) with no longer wall time: bench_recommend_latency's floor compares the two on the
# 100k-creator index (bench/RESULTS.md, "Recommend latency"). The services pass
# Settings.engine_search_threads, whose default this is.
SEARCH_THREADS = DEFAULT_ENGINE_SEARCH_THREADS


def search_pool_size(threads: int) -> int:
    """EdgeConfig.max_search_threads: always given, since a shard keeps the size it was last opened with
    (qdrant-edge writes it into the shard), so "the engine's default" would depend on the shard's past."""
    if threads < 1:
        raise ValueError(f"search threads must be >= 1, got {threads}")
    return threads


class EdgeIndex:
    """One qdrant-edge shard holding one named dense vector per point.

    An index made by `create` or `open` also keeps every point's item id by point id in memory (~200
    bytes a point), so a search without payload (`with_payload=False`, what the two-tower source asks)
    reads no payload at all (the CPU it saves per two-tower query: bench_recommend_latency's floor,
    bench/RESULTS.md). `open` reads them once (a scroll of every point's item id); writes through
    `upsert` and `delete` keep them current.
    """

    def __init__(
        self,
        shard: qe.EdgeShard,
        *,
        path: Path,
        dim: int,
        vector_name: str,
        version: str,
        item_ids: dict[uuid.UUID, str] | None = None,
    ) -> None:
        """`item_ids`: point id → item id of every point in the shard, kept from then on; None reads the
        ids from the payload on every search."""
        self._shard = shard
        self._path = path
        self._dim = dim
        self._vector_name = vector_name
        self._version = version
        self._item_ids = item_ids

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        dim: int,
        vector_name: str,
        version: str = "",
        distance: Distance = "cosine",
        payload_indexes: Mapping[str, FieldType] | None = None,
        hnsw: HnswParams | None = None,
        index_everything: bool = True,
    ) -> EdgeIndex:
        """Creates an empty shard at `path` (which must not hold segments yet).

        `index_everything`: set the optimizer's indexing threshold to its minimum so `optimize()`
        builds HNSW for every sealed segment however small; otherwise small segments stay plain.
        """
        hnsw = hnsw or HnswParams()
        config = qe.EdgeConfig(
            vectors={vector_name: qe.EdgeVectorParams(size=dim, distance=_DISTANCES[distance])},
            hnsw_config=qe.HnswIndexConfig(
                m=hnsw.m, ef_construct=hnsw.ef_construct, full_scan_threshold=hnsw.full_scan_threshold_kb
            ),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1) if index_everything else None,
        )
        try:
            shard = qe.EdgeShard.create(str(path), config)
            for field, kind in (payload_indexes or {}).items():
                shard.update(qe.UpdateOperation.create_field_index(field, _FIELD_TYPES[kind]))
        except Exception as exc:
            raise VectorIndexError(f"cannot create edge shard at {path}: {exc}") from exc
        return cls(shard, path=path, dim=dim, vector_name=vector_name, version=version, item_ids={})

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        dim: int,
        vector_name: str,
        version: str = "",
        distance: Distance = "cosine",
        search_threads: int = SEARCH_THREADS,
    ) -> EdgeIndex:
        """Opens an existing shard (whose one vector is `vector_name`: `dim`, `distance`) with a search
        pool of `search_threads`; fails if another process holds it."""
        config = qe.EdgeConfig(
            vectors={vector_name: qe.EdgeVectorParams(size=dim, distance=_DISTANCES[distance])},
            max_search_threads=search_pool_size(search_threads),
        )
        try:
            # The engine checks the declared vector against the shard's and writes the pool size into it.
            shard = qe.EdgeShard.load(str(path), config)
        except Exception as exc:
            raise VectorIndexError(f"cannot open edge shard at {path}: {exc}") from exc
        index = cls(shard, path=path, dim=dim, vector_name=vector_name, version=version)
        try:
            index._item_ids = index._read_item_ids()
        except BaseException:
            index.close()
            raise
        return index

    def _read_item_ids(self, page: int = 8192) -> dict[uuid.UUID, str]:
        ids: dict[uuid.UUID, str] = {}
        offset = None
        while True:
            request = qe.ScrollRequest(limit=page, offset=offset, with_payload=_ID_ONLY, with_vector=False)
            records, offset = self._call(self._shard.scroll, request)
            for rec in records:
                ids[rec.id] = str(rec.payload[ITEM_ID_KEY])
            if offset is None:
                return ids

    @property
    def version(self) -> str:
        return self._version

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def path(self) -> Path:
        return self._path

    @property
    def shard(self) -> qe.EdgeShard:
        """The engine's shard itself, for benchmarks timing bare engine queries on it."""
        return self._shard

    def upsert(self, points: Sequence[IndexPoint]) -> None:
        point_ids = [point_uuid(p.item_id) for p in points]
        engine_points = [
            qe.Point(
                point_id,
                {self._vector_name: as_vector(p.vector, self._dim)},
                to_engine_payload(p.item_id, p.payload),
            )
            for point_id, p in zip(point_ids, points, strict=True)
        ]
        for start in range(0, len(engine_points), UPSERT_BATCH):
            end = start + UPSERT_BATCH
            self._call(self._shard.update, qe.UpdateOperation.upsert_points(engine_points[start:end]))
            if self._item_ids is not None:
                self._item_ids.update(
                    zip(point_ids[start:end], (p.item_id for p in points[start:end]), strict=True)
                )

    def delete(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        uuids = [point_uuid(i) for i in ids]
        points = cast("list[qe.PointId]", uuids)  # the same list (PointId exists only in the stub)
        existing = self._call(self._shard.retrieve, points, False, False)
        self._call(self._shard.update, qe.UpdateOperation.delete_points(points))
        if self._item_ids is not None:
            for uid in uuids:
                self._item_ids.pop(uid, None)
        return len(existing)

    def search(
        self,
        vector: VectorLike,
        k: int,
        filter: PayloadFilter | None = None,
        *,
        hnsw_ef: int | None = None,
        exact: bool = False,
        with_payload: bool = True,
    ) -> list[ScoredPoint]:
        if k <= 0:
            return []
        request = qe.QueryRequest(
            limit=k,
            query=qe.Query.Nearest(as_vector(vector, self._dim), using=self._vector_name),
            filter=edge_filter(filter),
            params=qe.SearchParams(hnsw_ef=hnsw_ef, exact=exact),
            with_payload=True if with_payload else (False if self._item_ids is not None else _ID_ONLY),
        )
        hits = self._call(self._shard.query, request)
        if not with_payload:
            if self._item_ids is None:
                return [ScoredPoint(str(h.payload[ITEM_ID_KEY]), float(h.score), {}) for h in hits]
            return [ScoredPoint(self._item_id(h.id), float(h.score), {}) for h in hits]
        out = []
        for hit in hits:
            item_id, payload = from_engine_payload(hit.payload)
            out.append(ScoredPoint(point_id=item_id, score=float(hit.score), payload=payload))
        return out

    def _item_id(self, point_id: uuid.UUID) -> str:
        assert self._item_ids is not None
        try:
            return self._item_ids[point_id]
        except KeyError:  # not written through this object (never expected): read it, keep it
            records = self._call(self._shard.retrieve, [point_id], _ID_ONLY, False)
            if not records:
                raise VectorIndexError(
                    f"qdrant-edge ({self._path.name}): point {point_id} vanished"
                ) from None
            item_id = self._item_ids[point_id] = str(records[0].payload[ITEM_ID_KEY])
            return item_id

    def fetch(
        self,
        ids: Sequence[str],
        filter: PayloadFilter | None = None,
        *,
        with_vectors: bool = False,
        with_payload: bool = True,
    ) -> list[StoredPoint]:
        if not ids:
            return []
        uuids = [point_uuid(i) for i in ids]
        engine_filter = edge_filter(filter)
        payload_fields = True if with_payload else _ID_ONLY
        if engine_filter is None:
            records = self._call(self._shard.retrieve, uuids, payload_fields, with_vectors)
        else:
            restricted = qe.Filter(must=[qe.HasIdCondition(set(uuids)), engine_filter])
            request = qe.ScrollRequest(
                limit=len(uuids), filter=restricted, with_payload=payload_fields, with_vector=with_vectors
            )
            records, _next = self._call(self._shard.scroll, request)
        by_id: dict[str, StoredPoint] = {}
        for rec in records:
            if with_payload:
                item_id, payload = from_engine_payload(rec.payload)
            else:
                item_id, payload = str(rec.payload[ITEM_ID_KEY]), {}
            vector = None
            if with_vectors and isinstance(rec.vector, dict):
                vector = np.asarray(rec.vector[self._vector_name], dtype=np.float32)
            by_id[item_id] = StoredPoint(point_id=item_id, payload=payload, vector=vector)
        return [by_id[i] for i in dict.fromkeys(ids) if i in by_id]

    def count(self) -> int:
        return int(self._call(self._shard.count, qe.CountRequest(exact=True)))

    def optimize(self) -> None:
        """Builds HNSW over sealed segments (blocking); the trainer calls it once after bulk loading."""
        self._call(self._shard.optimize)

    def flush(self) -> None:
        self._call(self._shard.flush)

    def info(self) -> dict[str, Any]:
        info = self._call(self._shard.info)
        return {
            "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count,
            "segments": info.segments_count,
            # The bindings' enums are not Python enums: "PayloadSchemaType.Keyword" → "Keyword".
            "payload_schema": {
                k: str(v.data_type).rsplit(".", 1)[-1] for k, v in info.payload_schema.items()
            },
        }

    def close(self) -> None:
        self._shard.close()

    def _call(self, fn: Any, *args: Any) -> Any:
        # The bindings raise bare Exceptions; give callers one type to catch.
        try:
            return fn(*args)
        except Exception as exc:
            raise VectorIndexError(f"qdrant-edge ({self._path.name}): {exc}") from exc


def edge_filter(flt: PayloadFilter | None) -> qe.Filter | None:
    """PayloadFilter → qdrant-edge Filter (None when there is nothing to filter)."""
    if flt is None or flt.is_empty:
        return None
    must: list[Any] = []
    must_not: list[Any] = []
    if flt.languages:
        must.append(qe.FieldCondition(LANGUAGE_KEY, match=qe.MatchAny(sorted(flt.languages))))
    if flt.categories:
        must.append(qe.FieldCondition(CATEGORY_KEY, match=qe.MatchAny(sorted(flt.categories))))
    if flt.exclude_ids:
        must_not.append(qe.HasIdCondition({point_uuid(i) for i in flt.exclude_ids}))
    if flt.exclude_mature:
        must_not.append(qe.FieldCondition(MATURE_KEY, match=qe.MatchAny([1])))
    return qe.Filter(must=must or None, must_not=must_not or None)


__all__ = ["EdgeIndex", "edge_filter"]
