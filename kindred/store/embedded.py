"""The embedded online store: one SQLite database in WAL mode under `<data_dir>/online/`.

WAL lets one writer (the trainer publishing features) and any number of reader processes (the services)
work at once: readers see the last committed `put` and never block it. Each thread gets its own
connection, so concurrent gRPC handlers read in parallel. A batch `get` is one read transaction: the
namespace's version (see kindred.store.cache), then one statement for the keys not cached, whose keys come
in as a JSON array so SQLite prepares it once whatever the batch size.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kindred.errors import Unavailable
from kindred.store.cache import MISS, RowCache, shared
from kindred.store.online import validate_namespace

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS rows (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (namespace, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS versions (
        namespace TEXT PRIMARY KEY,
        version INTEGER NOT NULL
    ) WITHOUT ROWID""",
)
_GET = "SELECT key, value FROM rows WHERE namespace = ? AND key IN (SELECT value FROM json_each(?))"
_PUT = "INSERT OR REPLACE INTO rows (namespace, key, value) VALUES (?, ?, ?)"
_VERSION = "SELECT version FROM versions WHERE namespace = ?"
_BUMP = (
    "INSERT INTO versions (namespace, version) VALUES (?, 1) "
    "ON CONFLICT (namespace) DO UPDATE SET version = version + 1"
)


class EmbeddedOnlineStore:
    def __init__(self, directory: Path, *, cache_rows: int = 50_000, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(directory) / "online.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = busy_timeout_s
        self._cache = RowCache(cache_rows)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        conn = self._conn()
        with _translated(self.path):
            # journal_mode is stored in the database file: set once, it holds for every later connection.
            conn.execute("PRAGMA journal_mode=WAL")
            for ddl in _SCHEMA:
                conn.execute(ddl)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        with self._lock:
            if self._closed:
                raise Unavailable(f"online store {self.path} is closed")
            # isolation_level=None: autocommit, with explicit transactions where they matter.
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            # Features are derived data and can be republished: NORMAL risks the last commits on power
            # loss (never corruption) for writes that do not wait on fsync.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._connections.append(conn)
        self._local.conn = conn
        return conn

    def put(self, namespace: str, rows: Mapping[str, Mapping[str, Any]]) -> None:
        validate_namespace(namespace)
        if not rows:
            return
        params = [(namespace, str(key), json.dumps(row, separators=(",", ":"))) for key, row in rows.items()]
        self._write(namespace, lambda conn: conn.executemany(_PUT, params))

    def delete_namespace(self, namespace: str) -> None:
        validate_namespace(namespace)
        self._write(
            namespace, lambda conn: conn.execute("DELETE FROM rows WHERE namespace = ?", (namespace,))
        )
        self._cache.clear(namespace)

    def _write(self, namespace: str, change: Any) -> None:
        conn = self._conn()
        with _translated(self.path):
            conn.execute("BEGIN IMMEDIATE")
            try:
                change(conn)
                conn.execute(_BUMP, (namespace,))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def get(self, namespace: str, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        if not keys:
            validate_namespace(namespace)
            return []
        return [None if row is None else dict(row) for row in self.get_shared(namespace, keys)[1]]

    def get_shared(self, namespace: str, keys: Sequence[str]) -> tuple[int, list[Mapping[str, Any] | None]]:
        """The namespace's version and the rows for `keys` as cached: shared, never to be changed."""
        validate_namespace(namespace)
        if not keys:
            return self.version(namespace), []
        conn = self._conn()
        with _translated(self.path):
            conn.execute("BEGIN")  # one snapshot for the version and the rows
            try:
                found = conn.execute(_VERSION, (namespace,)).fetchone()
                version = int(found[0]) if found else 0
                slots = self._cache.lookup(namespace, version, keys)
                missing = [k for k, s in zip(keys, slots, strict=True) if s is MISS]
                fetched = (
                    dict(conn.execute(_GET, (namespace, json.dumps(missing))).fetchall()) if missing else {}
                )
            finally:
                conn.execute("COMMIT")
        if not missing:
            return version, [shared(s) for s in slots]
        decoded = {k: json.loads(fetched[k]) if k in fetched else None for k in missing}
        self._cache.store(namespace, version, list(decoded.items()))
        return version, [shared(decoded[k] if s is MISS else s) for k, s in zip(keys, slots, strict=True)]

    def version(self, namespace: str) -> int:
        """How many writes the namespace has seen (0: none); moves with every put and delete."""
        validate_namespace(namespace)
        with _translated(self.path):
            found = self._conn().execute(_VERSION, (namespace,)).fetchone()
        return int(found[0]) if found else 0

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
        self._cache.clear()


class _translated:
    """SQLite's operational errors (locked past the busy timeout, disk trouble) → Unavailable."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, sqlite3.OperationalError):
            raise Unavailable(f"online store {self._path}: {exc}") from exc
