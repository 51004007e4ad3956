"""A process-local cache of decoded rows, invalidated by a per-namespace version the writer bumps.

Decoding JSON dominates a batch read (several µs a row), and the same creator rows are read for every
fan, so the stores keep decoded rows here. Every `put` or `delete_namespace` increments the namespace's
version in the backing store in the same transaction; a reader compares it with the version its cached
rows belong to — one cheap read per `get` — and drops the namespace's rows when it moved. So a reader never
serves a row older than the version it just read, even when the writer is another process.

`get` hands out shallow copies (callers may add keys). `get_shared` hands out the cached rows themselves
with the version they belong to: for hot paths that only read them, and that keep values derived from
rows (feature vectors) valid for exactly that version (see ranking_svc.creator_features).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final


class _Sentinel:
    __slots__ = ()


MISS: Final = _Sentinel()  # not in the cache: ask the store
ABSENT: Final = _Sentinel()  # cached knowledge that the store has no such row

Row = dict[str, Any]
Slot = Row | _Sentinel


class RowCache:
    """LRU of at most `max_rows` decoded rows per namespace (0 disables caching). Thread-safe."""

    def __init__(self, max_rows: int = 50_000) -> None:
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._spaces: dict[str, tuple[int, OrderedDict[str, Slot]]] = {}

    def lookup(self, namespace: str, version: int, keys: Sequence[str]) -> list[Slot]:
        """Cached slots for `keys` if the cache holds `version` of the namespace, else all MISS."""
        if self.max_rows <= 0:
            return [MISS] * len(keys)
        with self._lock:
            space = self._spaces.get(namespace)
            if space is None or space[0] != version:
                if space is None or space[0] < version:  # never downgrade to a reader's older snapshot
                    self._spaces[namespace] = (version, OrderedDict())
                return [MISS] * len(keys)
            rows = space[1]
            out: list[Slot] = []
            for key in keys:
                slot = rows.get(key, MISS)
                if slot is not MISS:
                    rows.move_to_end(key)
                out.append(slot)
            return out

    def version_of(self, namespace: str) -> int | None:
        with self._lock:
            space = self._spaces.get(namespace)
            return None if space is None else space[0]

    def store(self, namespace: str, version: int, rows: Sequence[tuple[str, Row | None]]) -> None:
        """Remembers rows read at `version` (None = no such row); ignored if the cache moved on."""
        if self.max_rows <= 0:
            return
        with self._lock:
            space = self._spaces.get(namespace)
            if space is None or space[0] != version:
                if space is not None and space[0] > version:
                    return  # a concurrent reader already saw a newer version: these rows are older
                space = (version, OrderedDict())
                self._spaces[namespace] = space
            cached = space[1]
            for key, row in rows:
                cached[key] = ABSENT if row is None else row
                cached.move_to_end(key)
            while len(cached) > self.max_rows:
                cached.popitem(last=False)

    def clear(self, namespace: str | None = None) -> None:
        with self._lock:
            if namespace is None:
                self._spaces.clear()
            else:
                self._spaces.pop(namespace, None)


def resolve(slot: Slot | None) -> Row | None:
    """A caller's copy of a cached row (shallow, so callers can add keys without corrupting the cache)."""
    if isinstance(slot, dict):
        return dict(slot)
    return None


def shared(slot: Slot | None) -> Row | None:
    """The cached row itself, for `get_shared` callers that promise not to change it (no copy)."""
    return slot if isinstance(slot, dict) else None
