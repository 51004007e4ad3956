"""The Redis online store: one string key per row, `<prefix><namespace>:<key>` → the row as JSON.

A `put` is one MULTI/EXEC transaction (MSETs plus a bump of the namespace's version in the hash
`<prefix>__versions__`), so readers see all rows of a put or none. A batch `get` is one round trip — the
version and an MGET of the keys not in the process-local cache (see kindred.store.cache), atomically —
plus a second only when the version moved. Redis being down surfaces as `Unavailable`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kindred.errors import Unavailable
from kindred.store.cache import MISS, RowCache, shared
from kindred.store.online import validate_namespace

DEFAULT_PREFIX: Final = "kindred:"
_CHUNK: Final = 1000
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
_ERRORS = (RedisConnectionError, RedisTimeoutError)


class RedisOnlineStore:
    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = DEFAULT_PREFIX,
        cache_rows: int = 50_000,
        timeout_s: float = 2.0,
        client: redis.Redis | None = None,
    ) -> None:
        self.key_prefix = key_prefix
        self._versions_key = f"{key_prefix}__versions__"
        self._cache = RowCache(cache_rows)
        self._client = (
            client
            if client is not None
            else redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        )

    def _key(self, namespace: str, key: str) -> str:
        return f"{self.key_prefix}{namespace}:{key}"

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except _ERRORS as exc:
            raise Unavailable(f"redis: {exc}") from exc

    def put(self, namespace: str, rows: Mapping[str, Mapping[str, Any]]) -> None:
        validate_namespace(namespace)
        if not rows:
            return
        items = [
            (self._key(namespace, str(k)), json.dumps(row, separators=(",", ":"))) for k, row in rows.items()
        ]
        try:
            pipe = self._client.pipeline(transaction=True)
            for i in range(0, len(items), _CHUNK):
                pipe.mset(dict(items[i : i + _CHUNK]))
            pipe.hincrby(self._versions_key, namespace, 1)
            pipe.execute()
        except _ERRORS as exc:
            raise Unavailable(f"redis: {exc}") from exc

    def get(self, namespace: str, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        if not keys:
            validate_namespace(namespace)
            return []
        return [None if row is None else dict(row) for row in self.get_shared(namespace, keys)[1]]

    def version(self, namespace: str) -> int:
        """How many writes the namespace has seen (0: none); moves with every put and delete."""
        validate_namespace(namespace)
        try:
            return self._fetch(namespace, [])[0]
        except _ERRORS as exc:
            raise Unavailable(f"redis: {exc}") from exc

    def get_shared(self, namespace: str, keys: Sequence[str]) -> tuple[int, list[Mapping[str, Any] | None]]:
        """The namespace's version and the rows for `keys` as cached: shared, never to be changed."""
        validate_namespace(namespace)
        if not keys:
            return self.version(namespace), []
        # Optimistic: assume the cached version is current and fetch only what is not cached.
        cached_version = self._cache.version_of(namespace)
        slots = self._cache.lookup(namespace, cached_version, keys) if cached_version is not None else None
        missing = list(keys) if slots is None else [k for k, s in zip(keys, slots, strict=True) if s is MISS]
        try:
            version, raw = self._fetch(namespace, missing)
            if slots is not None and version != cached_version:
                # Someone wrote since: the cached rows may be stale, so read every key afresh.
                slots, missing = None, list(keys)
                version, raw = self._fetch(namespace, missing)
        except _ERRORS as exc:
            raise Unavailable(f"redis: {exc}") from exc
        decoded = {k: None if v is None else json.loads(v) for k, v in zip(missing, raw, strict=True)}
        self._cache.store(namespace, version, list(decoded.items()))
        if slots is None:
            return version, [decoded[k] for k in keys]
        return version, [shared(decoded[k] if s is MISS else s) for k, s in zip(keys, slots, strict=True)]

    def _fetch(self, namespace: str, keys: Sequence[str]) -> tuple[int, list[bytes | None]]:
        """The namespace's version and the raw rows, read atomically (MULTI/EXEC) in one round trip."""
        pipe = self._client.pipeline(transaction=bool(keys))
        pipe.hget(self._versions_key, namespace)
        if keys:
            pipe.mget([self._key(namespace, k) for k in keys])
        results = pipe.execute()
        return int(results[0] or 0), (results[1] if keys else [])

    def delete_namespace(self, namespace: str) -> None:
        validate_namespace(namespace)
        pattern = _GLOB_SPECIAL.sub(r"\\\1", self._key(namespace, "")) + "*"
        try:
            batch: list[bytes] = []
            for key in self._client.scan_iter(match=pattern, count=_CHUNK):
                batch.append(key)
                if len(batch) >= _CHUNK:
                    self._client.unlink(*batch)
                    batch = []
            if batch:
                self._client.unlink(*batch)
            self._client.hincrby(self._versions_key, namespace, 1)
        except _ERRORS as exc:
            raise Unavailable(f"redis: {exc}") from exc
        self._cache.clear(namespace)

    def close(self) -> None:
        self._cache.clear()
        self._client.close()
