"""The `OnlineStore` port and the factory that picks its adapter from settings.

A store holds rows of JSON-serialisable features (floats, strings, lists) under `(namespace, key)`, e.g.
namespace "fan_features" and key a fan id. `put` replaces whole rows; `get` reads a batch in one round trip
and returns the rows in the order of the keys asked for, None where a key is missing. Readers (the
services) and the writer (the trainer or the events pipeline) may be different processes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from kindred.config import Settings

_NAMESPACE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def validate_namespace(namespace: str) -> str:
    """Namespaces are short identifiers: they become key prefixes and must not contain separators."""
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"namespace {namespace!r} must match {_NAMESPACE.pattern}")
    return namespace


@runtime_checkable
class OnlineStore(Protocol):
    def put(self, namespace: str, rows: Mapping[str, Mapping[str, Any]]) -> None:
        """Writes (replaces) each row; all rows of one call become visible together."""
        ...

    def get(self, namespace: str, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """The rows for `keys`, in order; None for a missing key."""
        ...

    def delete_namespace(self, namespace: str) -> None:
        """Removes every row of the namespace."""
        ...

    def close(self) -> None: ...


def open_online_store(settings: Settings, *, key_prefix: str | None = None) -> OnlineStore:
    """The embedded store under `<data_dir>/online/`, or Redis at `settings.redis_url`.

    `key_prefix` isolates a Redis store (tests); the embedded store is isolated by its directory.
    """
    if settings.online_store == "redis":
        from kindred.store.redis_store import DEFAULT_PREFIX, RedisOnlineStore

        return RedisOnlineStore(settings.redis_url, key_prefix=key_prefix or DEFAULT_PREFIX)
    from kindred.store.embedded import EmbeddedOnlineStore

    return EmbeddedOnlineStore(settings.data_dir / "online")
