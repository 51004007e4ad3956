"""VectorIndex on a Qdrant server through qdrant-client (the cluster deployment).

The same adapter runs against qdrant-client's local mode (`:memory:` or a directory), which the tests
use: local mode searches exactly and ignores payload indexes and HNSW parameters, so it is for small
collections only (STACK.md measured ~2 s per filtered query at 100k points).

`Settings.qdrant_url` selects the client: `http(s)://host:port` is a server's gRPC endpoint (6334),
`:memory:` an in-process throwaway store, `file:///some/dir` local mode persisted in a directory.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

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

_FIELD_TYPES: dict[str, qm.PayloadSchemaType] = {
    "keyword": qm.PayloadSchemaType.KEYWORD,
    "integer": qm.PayloadSchemaType.INTEGER,
    "float": qm.PayloadSchemaType.FLOAT,
    "bool": qm.PayloadSchemaType.BOOL,
    "text": qm.PayloadSchemaType.TEXT,
    "datetime": qm.PayloadSchemaType.DATETIME,
}
_DISTANCES: dict[str, qm.Distance] = {"cosine": qm.Distance.COSINE, "dot": qm.Distance.DOT}

UPSERT_BATCH = 512


def connect(qdrant_url: str) -> tuple[QdrantClient, bool]:
    """A client for `qdrant_url`, and whether it is local mode (exact search, no indexes)."""
    if qdrant_url == ":memory:":
        return QdrantClient(location=":memory:"), True
    parsed = urlparse(qdrant_url)
    if parsed.scheme == "file":
        # gRPC handlers run on a thread pool; ServerIndex serialises local-mode calls itself.
        return QdrantClient(path=parsed.path, force_disable_check_same_thread=True), True
    if parsed.scheme in ("http", "https") and parsed.hostname:
        return (
            QdrantClient(
                host=parsed.hostname,
                grpc_port=parsed.port or 6334,
                prefer_grpc=True,
                https=parsed.scheme == "https",
            ),
            False,
        )
    raise ValueError(f"qdrant_url {qdrant_url!r}: expected http(s)://host:port, :memory: or file:///dir")


def create_collection(
    client: QdrantClient,
    name: str,
    *,
    dim: int,
    vector_name: str,
    local: bool,
    distance: Distance = "cosine",
    payload_indexes: Mapping[str, FieldType] | None = None,
    hnsw: HnswParams | None = None,
) -> None:
    """Creates an empty collection (fails if it exists) with its payload indexes."""
    hnsw = hnsw or HnswParams()
    client.create_collection(
        name,
        vectors_config={vector_name: qm.VectorParams(size=dim, distance=_DISTANCES[distance])},
        hnsw_config=qm.HnswConfigDiff(
            m=hnsw.m, ef_construct=hnsw.ef_construct, full_scan_threshold=hnsw.full_scan_threshold_kb
        ),
    )
    if not local:  # local mode ignores payload indexes (and warns about each one)
        for field, kind in (payload_indexes or {}).items():
            client.create_payload_index(name, field, _FIELD_TYPES[kind], wait=True)


class ServerIndex:
    """One Qdrant collection (or alias) holding one named dense vector per point."""

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        *,
        vector_name: str,
        dim: int,
        version: str = "",
        local: bool = False,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._collection = collection
        self._vector_name = vector_name
        self._dim = dim
        self._version = version
        self._local = local
        self._owns_client = owns_client
        # Local mode keeps plain Python structures (and sqlite when persisted): one call at a time.
        self._lock: threading.Lock | None = threading.Lock() if local else None

    @property
    def version(self) -> str:
        return self._version

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def collection(self) -> str:
        return self._collection

    def upsert(self, points: Sequence[IndexPoint]) -> None:
        structs = [
            qm.PointStruct(
                id=str(point_uuid(p.item_id)),
                vector={self._vector_name: as_vector(p.vector, self._dim)},
                payload=to_engine_payload(p.item_id, p.payload),
            )
            for p in points
        ]
        for start in range(0, len(structs), UPSERT_BATCH):
            with self._guard():
                self._client.upsert(self._collection, structs[start : start + UPSERT_BATCH], wait=True)

    def delete(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        point_ids: list[qm.ExtendedPointId] = [str(point_uuid(i)) for i in ids]
        with self._guard():
            existing = self._client.retrieve(self._collection, point_ids, with_payload=False)
            self._client.delete(self._collection, qm.PointIdsList(points=point_ids), wait=True)
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
        query = as_vector(vector, self._dim)
        params = None if self._local else qm.SearchParams(hnsw_ef=hnsw_ef, exact=exact)
        with self._guard():
            response = self._client.query_points(
                self._collection,
                query=query,
                using=self._vector_name,
                query_filter=server_filter(filter),
                search_params=params,
                limit=k,
                with_payload=True if with_payload else [ITEM_ID_KEY],
            )
        out = []
        for hit in response.points:
            item_id, payload = from_engine_payload(hit.payload)
            out.append(
                ScoredPoint(point_id=item_id, score=float(hit.score), payload=payload if with_payload else {})
            )
        return out

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
        point_ids: list[qm.ExtendedPointId] = [str(point_uuid(i)) for i in ids]
        engine_filter = server_filter(filter)
        payload_fields: bool | list[str] = True if with_payload else [ITEM_ID_KEY]
        with self._guard():
            if engine_filter is None:
                records = self._client.retrieve(
                    self._collection, point_ids, with_payload=payload_fields, with_vectors=with_vectors
                )
            else:
                restricted = qm.Filter(must=[qm.HasIdCondition(has_id=point_ids), engine_filter])
                records, _next = self._client.scroll(
                    self._collection,
                    scroll_filter=restricted,
                    limit=len(point_ids),
                    with_payload=payload_fields,
                    with_vectors=with_vectors,
                )
        by_id: dict[str, StoredPoint] = {}
        for rec in records:
            item_id, payload = from_engine_payload(rec.payload)
            if not with_payload:
                payload = {}
            vector = None
            if with_vectors and isinstance(rec.vector, dict):
                vector = np.asarray(rec.vector[self._vector_name], dtype=np.float32)
            by_id[item_id] = StoredPoint(point_id=item_id, payload=payload, vector=vector)
        return [by_id[i] for i in dict.fromkeys(ids) if i in by_id]

    def count(self) -> int:
        with self._guard():
            return int(self._client.count(self._collection, exact=True).count)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            if self._lock is None:
                yield
            else:
                with self._lock:
                    yield
        except Exception as exc:
            raise VectorIndexError(f"qdrant ({self._collection}): {exc}") from exc


def server_filter(flt: PayloadFilter | None) -> qm.Filter | None:
    """PayloadFilter → qdrant-client Filter (None when there is nothing to filter)."""
    if flt is None or flt.is_empty:
        return None
    must: list[Any] = []
    must_not: list[Any] = []
    if flt.languages:
        must.append(qm.FieldCondition(key=LANGUAGE_KEY, match=qm.MatchAny(any=sorted(flt.languages))))
    if flt.categories:
        must.append(qm.FieldCondition(key=CATEGORY_KEY, match=qm.MatchAny(any=sorted(flt.categories))))
    if flt.exclude_ids:
        must_not.append(qm.HasIdCondition(has_id=[str(point_uuid(i)) for i in sorted(flt.exclude_ids)]))
    if flt.exclude_mature:
        must_not.append(qm.FieldCondition(key=MATURE_KEY, match=qm.MatchAny(any=[1])))
    return qm.Filter(must=must or None, must_not=must_not or None)
