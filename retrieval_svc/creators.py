"""Creator-index operations besides Retrieve: similar creators, payload updates, deletions.

Creator vectors come from the trainer's creator tower; this service has no creator tower of its own
yet, so an upsert can refresh what filters read (category, language, mature, name...) of a creator
already in the index, while a brand-new creator waits for the next training run to get a vector.
These writes go to the served index version; the next version is rebuilt from the catalogue.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kindred import telemetry_schema as schema
from kindred.errors import FailedPrecondition, InvalidArgument, NotFound, validate_count
from kindred.telemetry import get_tracer
from kindred.vectorstore import IndexPoint, PayloadFilter, ScoredPoint, VectorIndex, search_ef
from retrieval_svc.retriever import MAX_K

SIMILAR_SOURCE = "item_to_item"


class CreatorCatalogue:
    def __init__(
        self,
        index: VectorIndex,
        *,
        hnsw_ef: int = 128,
        on_write: Sequence[Callable[[], None]] = (),
    ) -> None:
        """`on_write`: called after every index write (e.g. to drop caches of filtered results)."""
        self._index = index
        self._hnsw_ef = hnsw_ef
        self._on_write = list(on_write)
        self._tracer = get_tracer(__name__)

    @property
    def index_version(self) -> str:
        return self._index.version

    def similar(self, creator_id: str, k: int, flt: PayloadFilter) -> list[ScoredPoint]:
        """The k creators nearest to `creator_id` in two-tower space (itself excluded), filtered."""
        if not creator_id.strip():
            raise InvalidArgument("creator_id", "is required")
        validate_count(k, MAX_K)
        found = self._index.fetch([creator_id], with_vectors=True)
        if not found or found[0].vector is None:
            raise NotFound(f"creator {creator_id!r} is not in creator index {self._index.version!r}")
        with self._tracer.start_as_current_span(schema.SPAN_QDRANT_QUERY) as span:
            span.set_attribute(schema.SOURCE, SIMILAR_SOURCE)
            flt = flt.excluding([creator_id])
            return self._index.search(found[0].vector, k, flt, hnsw_ef=search_ef(k, self._hnsw_ef))

    def update_payloads(self, updates: Sequence[Mapping[str, Any]], *, skip_unknown: bool = False) -> int:
        """Merges each update (keyed by "creator_id") into an indexed creator's payload; all or nothing.

        A creator without a vector is an error, unless `skip_unknown` (search already took it and the
        trainer embeds it later): then it is left out. Returns how many payloads were updated.
        """
        ids = []
        for i, update in enumerate(updates):
            cid = str(update.get("creator_id") or "").strip()
            if not cid:
                raise InvalidArgument(f"creators[{i}].creator_id", "is required")
            ids.append(cid)
        if not ids:
            return 0
        existing = {p.point_id: p for p in self._index.fetch(ids, with_vectors=True)}
        missing = [cid for cid in ids if cid not in existing]
        if missing and skip_unknown:
            kept = [(cid, u) for cid, u in zip(ids, updates, strict=True) if cid in existing]
            ids, updates = [cid for cid, _ in kept], [u for _, u in kept]
            if not ids:
                return 0
        elif missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise FailedPrecondition(
                f"{len(missing)} creator(s) have no vector yet ({shown}): new creators are embedded by the "
                "trainer's next run; UpsertCreators only updates creators already in the index"
            )
        points = []
        for cid, update in zip(ids, updates, strict=True):
            stored = existing[cid]
            assert stored.vector is not None  # fetched with vectors
            points.append(IndexPoint(cid, stored.vector, {**stored.payload, **update}))
        self._index.upsert(points)
        self._written()
        return len(points)

    def delete(self, ids: Sequence[str]) -> int:
        if not ids or any(not i.strip() for i in ids):
            raise InvalidArgument("item_ids", "must be a non-empty list of non-empty ids")
        deleted = self._index.delete(list(dict.fromkeys(ids)))
        self._written()
        return deleted

    def _written(self) -> None:
        for callback in self._on_write:
            callback()
