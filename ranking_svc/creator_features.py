"""Creator rows and their creator-tower feature vectors for the ranker, cached per store version.

Every Recommend reads ~100 candidate creator rows plus the fan's followed creators, and the creator part
of the ranker's input (`kindred.features.creator_tower_features`, ~40 values a row built in Python) is
the same for every fan. So the vector of each creator is built once and kept, keyed by creator id, for
the online store's version of the "creator" namespace it was built from.

Staleness rule: the store reports the namespace's version with every read (`get_shared`); when it moved
(the trainer or a pipeline wrote creator rows), every kept vector is dropped before this read's rows are
used, so a vector never outlives the row it came from. A store without `get_shared` (tests' fakes) gets
no caching: vectors are built on every read. Memory: at most `max_rows` vectors (then it starts over).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kindred.features import CREATOR_TOWER_FEATURES, FloatArray, creator_tower_features
from ranking_svc.domain import FeatureReader

NAMESPACE = "creator"
Row = Mapping[str, Any]


@runtime_checkable
class SharedReader(Protocol):
    """A store that hands out its cached rows with their version (kindred.store's stores)."""

    def get_shared(self, namespace: str, keys: Sequence[str]) -> tuple[int, list[Row | None]]: ...


class CreatorFeatureCache:
    def __init__(self, store: FeatureReader, *, max_rows: int = 200_000) -> None:
        self._store = store
        self._shared = store if isinstance(store, SharedReader) else None
        self._max_rows = max_rows
        self._lock = threading.Lock()
        # (store version, creator id → vector), replaced whole so a reader sees a matching pair.
        self._space: tuple[int, dict[str, FloatArray]] = (-1, {})

    @property
    def cached(self) -> int:
        return len(self._space[1])

    def read(self, ids: Sequence[str], n_vectors: int | None = None) -> tuple[list[Row | None], FloatArray]:
        """Rows of `ids` (None where the store has none; shared: do not change them) and the creator
        tower vectors of the first `n_vectors` of them (default: all), as one (n_vectors, F) matrix."""
        n = len(ids) if n_vectors is None else n_vectors
        if self._shared is None:
            plain: list[Row | None] = list(self._store.get(NAMESPACE, list(ids)))
            return plain, _stack([creator_tower_features(r) for r in plain[:n]])
        version, rows = self._shared.get_shared(NAMESPACE, ids)
        kept, vectors = self._space
        if version != kept:
            with self._lock:
                kept, vectors = self._space
                if version > kept:  # the namespace moved on: start over
                    vectors = {}
                    self._space = (version, vectors)
                elif version < kept:  # a read older than the cache (a race with a write): keep nothing
                    vectors = {}
        out: list[FloatArray] = []
        for key, row in zip(ids[:n], rows[:n], strict=True):
            vec = vectors.get(key)
            if vec is None:
                vec = creator_tower_features(row)
                if len(vectors) >= self._max_rows:
                    vectors.clear()
                vectors[key] = vec
            out.append(vec)
        return rows, _stack(out)


def _stack(vectors: list[FloatArray]) -> FloatArray:
    if not vectors:
        return np.zeros((0, len(CREATOR_TOWER_FEATURES)), dtype=np.float32)
    return np.stack(vectors)
