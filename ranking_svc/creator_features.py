"""Creator rows and their creator-tower feature vectors for the ranker, cached per store version.

Every Recommend reads ~100 candidate creator rows plus the fan's followed creators, and the creator part
of the ranker's input (`kindred.features.creator_tower_features`, ~40 values a row built in Python) is
the same for every fan. So the vector of each creator is built once and kept, keyed by creator id, for
the online store's version of the "creator" namespace it was built from — together with the other
per-creator facts a request reads of the row: those of the ranker's cross features
(`kindred.features.creator_cross_facts`) and those of re-ranking (`ranking_svc.rerank.slate_facts`).

Every id read is kept, with its row: a request whose ids are all kept for the version the store serves
now reads only that version (`version`), not the rows (`get_shared`, whose own cache lookups cost more).

Staleness rule: the store reports the namespace's version with every read (`get_shared`, `version`); when
it moved (the trainer or a pipeline wrote creator rows), everything kept is dropped before this read's
rows are used, so neither a row nor what is derived from it outlives its version. A store without
`get_shared` (tests' fakes) gets no caching: everything is built on every read. Memory: at most about
`max_rows` creators (then it starts over).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, cast, runtime_checkable

import numpy as np
import numpy.typing as npt

from kindred.features import (
    CREATOR_TOWER_FEATURES,
    CreatorCrossFacts,
    FloatArray,
    creator_cross_facts,
    creator_tower_features,
)
from ranking_svc.domain import FeatureReader
from ranking_svc.rerank import SLATE_NUMBERS, SlateFacts, slate_facts, slate_numbers

NAMESPACE = "creator"
Row = Mapping[str, Any]


class _Derived(NamedTuple):
    """One creator's row (shared: do not change it) and everything the ranker and the re-ranker derive
    from it alone; its tower vector and slate numbers are row `slot` of its `_Space`'s matrices."""

    row: Row | None
    slot: int
    cross: CreatorCrossFacts  # what the ranker's cross features read
    slate: SlateFacts  # what re-ranking reads
    regular: bool  # its slate numbers are in the matrix (rerank.slate_numbers was not None)


@dataclasses.dataclass(frozen=True)
class CreatorBatch:
    """A read: rows of every id asked for (None where the store has none; shared: do not change them),
    and for the first `n` of them the tower vectors as one (n, F) matrix, cross facts and slate facts,
    and the slate facts' numbers as one (n, len(SLATE_NUMBERS)) matrix (None when one is malformed)."""

    rows: list[Row | None]
    vectors: FloatArray
    cross: list[CreatorCrossFacts]
    slate: list[SlateFacts]
    numbers: npt.NDArray[np.float64] | None = None


@runtime_checkable
class SharedReader(Protocol):
    """A store that hands out its cached rows with their version (kindred.store's stores)."""

    def get_shared(self, namespace: str, keys: Sequence[str]) -> tuple[int, list[Row | None]]: ...

    def version(self, namespace: str) -> int: ...


class _Space:
    """What was derived from one version of the namespace: entries by creator id, their vectors and slate
    numbers as rows of two matrices (a request gathers its ~100 rows with one index, instead of stacking
    ~100 arrays). Entries are added under `_lock`, each after its matrix rows are written; a reader that
    found its entries then reads the matrices, which hold every published slot (growing copies them)."""

    def __init__(self, version: int, capacity: int = 1024) -> None:
        self.version = version
        self.entries: dict[str, _Derived] = {}
        self.vectors = np.zeros((capacity, len(CREATOR_TOWER_FEATURES)), dtype=np.float32)
        self.numbers = np.zeros((capacity, len(SLATE_NUMBERS)), dtype=np.float64)
        self._lock = threading.Lock()

    def add(self, key: str, row: Row | None) -> _Derived:
        vector, slate = creator_tower_features(row), slate_facts(row)
        numbers = slate_numbers(slate)
        with self._lock:
            entry = self.entries.get(key)
            if entry is not None:
                return entry
            slot = len(self.entries)
            if slot == len(self.vectors):
                self.vectors = np.concatenate([self.vectors, np.zeros_like(self.vectors)])
                self.numbers = np.concatenate([self.numbers, np.zeros_like(self.numbers)])
            self.vectors[slot] = vector
            if numbers is not None:
                self.numbers[slot] = numbers
            entry = _Derived(row, slot, creator_cross_facts(row), slate, numbers is not None)
            self.entries[key] = entry
        return entry


class CreatorFeatureCache:
    def __init__(self, store: FeatureReader, *, max_rows: int = 200_000) -> None:
        self._store = store
        self._shared = store if isinstance(store, SharedReader) else None
        self._max_rows = max_rows
        self._lock = threading.Lock()
        self._space = _Space(-1)  # replaced whole when the namespace moves on or it is full

    @property
    def cached(self) -> int:
        return len(self._space.entries)

    def read(self, ids: Sequence[str], n_vectors: int | None = None) -> tuple[list[Row | None], FloatArray]:
        """Rows of `ids` (None where the store has none; shared: do not change them) and the creator
        tower vectors of the first `n_vectors` of them (default: all), as one (n_vectors, F) matrix."""
        batch = self.read_batch(ids, n_vectors)
        return batch.rows, batch.vectors

    def read_batch(self, ids: Sequence[str], n: int | None = None) -> CreatorBatch:
        """`read`, with the cross and slate facts (and slate numbers) of the first `n` too."""
        n = len(ids) if n is None else n
        if self._shared is None:
            plain: list[Row | None] = list(self._store.get(NAMESPACE, list(ids)))
            return _plain_batch(plain, n)
        space = self._space
        # The common case: every id already derived from the version the store still serves. One version
        # read instead of the rows (their cache's lookups cost more than the entries' own).
        if space.version == self._shared.version(NAMESPACE):
            found = list(map(space.entries.get, ids))
            if None not in found:
                return _batch(space, cast("list[_Derived]", found), n)
        version, rows = self._shared.get_shared(NAMESPACE, ids)
        space = self._space_for(version)
        entries = space.entries
        derived = []
        for key, row in zip(ids, rows, strict=True):
            entry = entries.get(key)
            derived.append(entry if entry is not None else space.add(key, row))
        return _batch(space, derived, n)

    def _space_for(self, version: int) -> _Space:
        """The space of `version`: a new one when the namespace moved on (or the current one is full); a
        private one for a read older than the cache (a race with a write), so it keeps nothing."""
        space = self._space
        if version == space.version and len(space.entries) < self._max_rows:
            return space
        with self._lock:
            space = self._space
            if version > space.version or (version == space.version and len(space.entries) >= self._max_rows):
                space = self._space = _Space(version)
            elif version < space.version:
                return _Space(version)
            return space


def _batch(space: _Space, derived: Sequence[_Derived], n: int) -> CreatorBatch:
    if not derived:
        return _plain_batch([], 0)
    rows, slots, cross, slate, regular = zip(*derived, strict=True)  # the columns, in one C call
    head = list(slots[:n])
    return CreatorBatch(
        list(rows),
        space.vectors[head],
        list(cross[:n]),
        list(slate[:n]),
        space.numbers[head] if all(regular[:n]) else None,
    )


def _plain_batch(rows: list[Row | None], n: int) -> CreatorBatch:
    """A read without a versioned store: everything built afresh."""
    head = rows[:n]
    vectors = [creator_tower_features(r) for r in head]
    return CreatorBatch(
        rows,
        _stack(vectors),
        [creator_cross_facts(r) for r in head],
        [slate_facts(r) for r in head],
    )


def _stack(vectors: list[FloatArray]) -> FloatArray:
    if not vectors:
        return np.zeros((0, len(CREATOR_TOWER_FEATURES)), dtype=np.float32)
    # np.array of equal-length float32 rows: the same matrix as np.stack, in half the time at ~100 rows.
    return np.array(vectors, dtype=np.float32)
