"""EdgeIndex's item ids kept by point id: a search without payload names the same items as one with it,
for an index opened from disk, after writes through it, and when a point was never seen by it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from vs_data import random_catalogue

from kindred.vectorstore import CREATOR_PAYLOAD_INDEXES, CREATOR_VECTOR, PayloadFilter
from kindred.vectorstore.base import IndexPoint, point_uuid
from kindred.vectorstore.edge import EdgeIndex

DIM = 16


def _built(tmp_path: Path) -> tuple[Path, np.ndarray]:
    points, vectors = random_catalogue(300, DIM, seed=4)
    path = tmp_path / "shard"
    index = EdgeIndex.create(
        path, dim=DIM, vector_name=CREATOR_VECTOR, payload_indexes=CREATOR_PAYLOAD_INDEXES
    )
    index.upsert(points)
    index.optimize()
    index.close()
    return path, vectors


def _ids(index: EdgeIndex, vector: np.ndarray, k: int = 20, **kw: object) -> list[str]:
    return [h.point_id for h in index.search(vector, k, exact=True, **kw)]  # type: ignore[arg-type]


def test_an_opened_index_names_the_same_items_without_payload(tmp_path: Path) -> None:
    path, vectors = _built(tmp_path)
    index = EdgeIndex.open(path, dim=DIM, vector_name=CREATOR_VECTOR)
    try:
        # Every point's id read at open: searches need not fall back to reading payloads.
        assert index._item_ids == {point_uuid(f"c{i}"): f"c{i}" for i in range(300)}
        flt = PayloadFilter.build(exclude_ids=["c3"])
        for q in (3, 50, 299):
            assert _ids(index, vectors[q], with_payload=False) == _ids(index, vectors[q])
            assert _ids(index, vectors[q], filter=flt, with_payload=False) == _ids(
                index, vectors[q], filter=flt
            )
        assert _ids(index, vectors[50], 1, with_payload=False) == ["c50"]
    finally:
        index.close()


def test_writes_through_the_index_keep_the_ids_current(tmp_path: Path) -> None:
    path, vectors = _built(tmp_path)
    index = EdgeIndex.open(path, dim=DIM, vector_name=CREATOR_VECTOR)
    try:
        index.upsert([IndexPoint("new-1", vectors[7] * 1.0001, {"category": "Music"})])
        # Kept by the write itself, not by a search reading the unknown point afterwards.
        assert index._item_ids is not None and index._item_ids[point_uuid("new-1")] == "new-1"
        assert set(_ids(index, vectors[7], 2, with_payload=False)) == {"c7", "new-1"}
        index.delete(["c7"])
        top = _ids(index, vectors[7], 2, with_payload=False)
        assert top[0] == "new-1" and "c7" not in top
        assert point_uuid("c7") not in index._item_ids  # type: ignore[operator]
    finally:
        index.close()


def test_a_point_it_does_not_know_is_read_once_and_kept(tmp_path: Path) -> None:
    path, vectors = _built(tmp_path)
    index = EdgeIndex.open(path, dim=DIM, vector_name=CREATOR_VECTOR)
    try:
        assert index._item_ids is not None
        del index._item_ids[point_uuid("c9")]  # as if written by something else
        assert _ids(index, vectors[9], 1, with_payload=False) == ["c9"]
        assert index._item_ids[point_uuid("c9")] == "c9"
    finally:
        index.close()
