"""Search replicas: several processes serve Search, each from its own copy of the search index, kept
equal by one ordered write log (a Redis stream).

Why processes: qdrant-edge's Python binding holds the GIL for a whole engine query (bench/bench_engine_gil.py:
two querying threads get no more done than one, two processes 2.09×), so one process answers one Search at
a time however many cores it has. N replicas behind a least-request client (kindred.grpc_client.make_channel
with several addresses; kindred.least_request) answer N at a time.

The protocol (`WriteLog`):
- A write (UpsertCreators, UpsertPosts, DeleteItems) reaching any replica is validated there and appended
  to the stream as one entry (XADD); it is not applied on the spot.
- Every replica's applier thread reads the stream in order (XREAD, blocking) and applies each entry to its
  copy, the receiving replica's included. One order everywhere keeps the copies equal even when two
  replicas take writes to the same item at the same moment.
- Each replica records the last entry it applied, and when it last looked, in the hash `<log>:replicas`.
  The receiving replica answers once every live replica (seen in the last LIVE_S seconds) has applied the
  entry, so when a write returns, a Search on any replica sees it and no replica returns a deleted item.
  A replica that has not applied it within `ack_timeout_s` (stalled) does not block writes: the call
  returns once the receiving replica applied it, and the laggard is logged and counted.
- A replica's copy keeps its position in `<copy>/replica.json`; on start it applies everything logged
  since (`catch_up`) before it serves. A new replica's copy is the bulk index (`kindred index`) plus the
  whole log replayed onto it: entries are whole-item upserts and deletes, so replaying what a copy already
  holds changes nothing.

The log is the history of API writes since the bulk index: Redis must keep it (persistence on in
production; it is never trimmed here). Each replica encodes the documents of an upsert itself (entries
carry the items, not their vectors): writes cost N encodings, reads stay local.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import redis

from kindred import replicas
from kindred import telemetry_schema as schema
from kindred.errors import Unavailable
from kindred.fileio import write_text_atomic
from kindred.telemetry import get_meter

if TYPE_CHECKING:
    from kindred.config import Settings

log = logging.getLogger(__name__)

STATE_FILE: Final = "replica.json"
START: Final = "0-0"  # before the first entry of any stream
LIVE_S: Final = 5.0  # a replica not seen for this long is not waited for
BLOCK_MS: Final = 500  # one XREAD waits at most this long, so the heartbeat runs at least this often
BATCH: Final = 256
POLL_S: Final = 0.002
OWN_APPLY_TIMEOUT_S: Final = 10.0  # the receiving replica's own apply: longer means its applier is stuck
RESULTS_KEPT: Final = 4096  # results of the latest entries, for their submitters to read
Op = dict[str, Any]
Apply = Callable[[Op], Any]


def entry_key(entry_id: str) -> tuple[int, int]:
    """Stream entry ids ("<ms>-<seq>") in their order."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def check_replica_name(name: str) -> str:
    """A replica's name names its index copy's directory and its entry in the replicas hash."""
    return replicas.check_replica_name(name, what="search replica")


def search_replicas_dir(settings: Settings) -> Path:
    """Where the search replicas' index copies live: `<data dir>/index/search-replicas/`."""
    return settings.data_dir / "index" / "search-replicas"


def replica_root(replicas_dir: Path, name: str, base: Path) -> Path:
    """`<replicas_dir>/<name>`: this replica's copy of the search index, made from the bulk index at
    `base` on its first start (an empty index if there is none yet; the log then holds everything).
    Nothing may write `base` while a copy is made (`kindred index` runs before replicas start)."""

    def start_of_log(copy: Path) -> None:
        write_text_atomic(copy / STATE_FILE, json.dumps({"applied": START}) + "\n")

    return replicas.copy_once(base, replicas_dir / check_replica_name(name), prepare=start_of_log)


class WriteLog:
    """One replica's side of the log: `submit` a validated write, and an applier that applies every
    entry, in order, through `apply`. Start with `catch_up` then `start`; `close` stops the applier."""

    def __init__(
        self,
        redis_url: str,
        key: str,
        replica: str,
        root: Path,
        apply: Apply,
        *,
        ack_timeout_s: float = 2.0,
        meter: Any = None,
    ) -> None:
        """`meter`: where the fault counter (METRIC_SEARCH_REPLICATION) goes; the process's by default."""
        self.key, self.replica, self.ack_timeout_s = key, check_replica_name(replica), ack_timeout_s
        self._replicas_key = f"{key}:replicas"
        self._state = root / STATE_FILE
        self._apply = apply
        self._redis = redis.Redis.from_url(redis_url)
        self._reader = redis.Redis.from_url(redis_url)  # blocking reads hold their own connection
        self._applied = _read_state(self._state)
        self._cond = threading.Condition()
        self._results: OrderedDict[str, Any] = OrderedDict()  # entry id → what apply returned here
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed_entries = 0  # entries whose apply raised (logged; the applier moves on)
        self.lagging_acks = 0  # writes answered before every live replica applied them
        self._faults = (meter or get_meter(__name__)).create_counter(schema.METRIC_SEARCH_REPLICATION)

    @property
    def applied(self) -> str:
        return self._applied

    # -- the write path -------------------------------------------------------------------------------

    def submit(self, op: Op) -> Any:
        """Appends `op`, waits until this replica applied it, then (up to ack_timeout_s) until every live
        replica did; returns what applying it here returned (None if that raised)."""
        try:
            entry_id = _text(self._redis.xadd(self.key, {"op": json.dumps(op, separators=(",", ":"))}))
        except redis.RedisError as exc:  # a retry is safe: entries are whole-item upserts and deletes
            self._fault("log_unreachable")
            raise Unavailable(f"the search write log ({self.key}) is unreachable: {exc}") from exc
        deadline = time.monotonic() + self.ack_timeout_s
        want = entry_key(entry_id)
        own_deadline = time.monotonic() + max(self.ack_timeout_s, OWN_APPLY_TIMEOUT_S)
        with self._cond:
            while entry_key(self._applied) < want:
                if self._thread is None or not self._thread.is_alive():
                    raise Unavailable("this search replica's write-log applier is not running")
                if time.monotonic() >= own_deadline:  # e.g. Redis went away after the append
                    raise Unavailable(f"write {entry_id} is logged but not applied yet; a retry is safe")
                self._cond.wait(timeout=0.05)
            result = self._results.pop(entry_id, None)
        while True:
            try:
                behind = [name for name, at in self.replicas().items() if entry_key(at) < want]
            except redis.RedisError:  # applied here and logged: the others follow the log
                behind = ["?"]
            if not behind:
                return result
            if time.monotonic() >= deadline:
                self.lagging_acks += 1
                self._fault("ack_lagging")
                log.warning("write %s answered before replicas %s applied it", entry_id, behind)
                return result
            time.sleep(POLL_S)

    def replicas(self, live_s: float = LIVE_S) -> dict[str, str]:
        """Live replicas → the last entry each applied."""
        now = time.time()
        out = {}
        for name, raw in self._redis.hgetall(self._replicas_key).items():
            state = json.loads(raw)
            if now - float(state["at"]) <= live_s:
                out[_text(name)] = str(state["applied"])
        return out

    # -- the applier ----------------------------------------------------------------------------------

    def catch_up(self) -> int:
        """Applies every entry already logged after this replica's position; how many."""
        done = 0
        while True:
            n = self._read_and_apply(block_ms=None)
            if n == 0:
                self._heartbeat()
                return done
            done += n

    def start(self) -> WriteLog:
        self._heartbeat()
        name = f"search-write-log-{self.replica}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=BLOCK_MS / 1000 + 5)
        try:
            self._redis.hdel(self._replicas_key, self.replica)  # not waited for once gone
        except redis.RedisError:  # then the others stop waiting for it after LIVE_S
            log.warning("search replica %s: could not leave %s", self.replica, self._replicas_key)
        self._redis.close()
        self._reader.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._read_and_apply(block_ms=BLOCK_MS)
                self._heartbeat()
            except Exception:  # Redis away: keep trying, the replica serves what it holds
                log.exception("search write log: reading %s failed; retrying", self.key)
                self._stop.wait(1.0)

    def _read_and_apply(self, block_ms: int | None) -> int:
        got: Any = self._reader.xread({self.key: self._applied}, count=BATCH, block=block_ms)
        entries = [(_text(i), dict(fields)) for _stream, items in got or () for i, fields in items]
        for entry_id, fields in entries:
            result = None
            try:
                result = self._apply(json.loads(_text(fields.get(b"op", fields.get("op")))))
            except Exception:
                self.failed_entries += 1
                self._fault("apply_failed")
                log.exception("search write log: entry %s failed to apply on %s", entry_id, self.replica)
            with self._cond:
                self._applied = entry_id
                self._results[entry_id] = result
                while len(self._results) > RESULTS_KEPT:
                    self._results.popitem(last=False)
                self._cond.notify_all()
        if entries:
            write_text_atomic(self._state, json.dumps({"applied": self._applied}) + "\n")
        return len(entries)

    def _fault(self, event: str) -> None:
        self._faults.add(1, {schema.REPLICATION_EVENT: event})

    def _heartbeat(self) -> None:
        state = json.dumps({"applied": self._applied, "at": time.time()})
        self._redis.hset(self._replicas_key, self.replica, state)


def _read_state(path: Path) -> str:
    try:
        state: Mapping[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return START
    applied = str(state.get("applied", START))
    entry_key(applied)  # a malformed position fails the start, not the first read
    return applied


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = [
    "LIVE_S",
    "START",
    "STATE_FILE",
    "WriteLog",
    "check_replica_name",
    "entry_key",
    "replica_root",
    "search_replicas_dir",
]
