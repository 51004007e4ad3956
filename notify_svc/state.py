"""Per-fan notification state behind one Protocol: sqlite on one machine, Redis on the cluster.

The store owns atomicity. `decide()` runs read → policy → record as one atomic step per
candidate, so that

- a notification id is decided once: replays (and the losers of concurrent identical calls) get
  the recorded decision back with `duplicate=True`;
- caps and spacing hold under concurrency: two different notifications for the same fan never
  both decide from the same stale view of the fan's sends.

How each backend gets there:

- `EmbeddedNotifyState`: one sqlite file; candidates are decided inside `BEGIN IMMEDIATE`
  transactions of up to 256 (the database write lock, so other threads and processes wait), and
  the decision row goes in with `INSERT OR IGNORE` on the notification id as the idempotency
  backstop.
- `RedisNotifyState`: optimistic concurrency. A Lua script reads everything one candidate needs;
  Python runs the policy; a second Lua script records the decision only if the id is still
  undecided *and* the fan's version token is the one that was read, setting a fresh random
  token. A conflict re-reads and re-decides. Both scripts are pipelined over a whole chunk, and
  candidates of the same fan inside a chunk chain their tokens so they commit in order.

Times are stored as integer microseconds since the epoch (exact in sqlite and in a Redis score,
which is a double: < 2**53), so spacing computed on read-back is never off by rounding.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from kindred.errors import Unavailable
from notify_svc.domain import (
    Action,
    Candidate,
    Decision,
    FanState,
    Outcome,
    OutcomeEvent,
    Verdict,
    content_key,
)

DecideFn = Callable[[Candidate, FanState], Verdict]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class Retention:
    """How long the store keeps each kind of record (and how far back it reads sends)."""

    history: timedelta = timedelta(days=7)  # sends: at least the policy's longest cap window
    dedupe: timedelta = timedelta(hours=24)  # content claims: the policy's dedupe window
    idempotency: timedelta = timedelta(days=7)  # decisions, for replays of a notification id

    @classmethod
    def for_policy(cls, history: timedelta, dedupe: timedelta) -> Retention:
        return cls(history=history, dedupe=dedupe, idempotency=max(timedelta(days=7), history))


class NotifyState(Protocol):
    def decide(self, candidates: Sequence[Candidate], decide: DecideFn, now: datetime) -> list[Decision]:
        """Decides each candidate atomically with recording it; results are in input order."""
        ...

    def record_outcome(self, event: OutcomeEvent) -> None: ...

    def fan_state(self, fan_id: str, now: datetime) -> FanState:
        """The fan's sends in the history window, opt-out and zone (no content claim)."""
        ...

    def decision(self, notification_id: str) -> Decision | None:
        """The recorded decision for an id, marked duplicate, or None."""
        ...

    def close(self) -> None: ...


def to_us(instant: datetime) -> int:
    return (instant - _EPOCH) // _US


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def encode_decision(decision: Decision) -> str:
    return json.dumps(
        {
            "id": decision.notification_id,
            "a": int(decision.action),
            "r": decision.reason,
            "t": None if decision.deliver_at is None else to_us(decision.deliver_at),
            "s": decision.scores,
        },
        separators=(",", ":"),
    )


def decode_decision(body: str, *, duplicate: bool) -> Decision:
    data = json.loads(body)
    return Decision(
        notification_id=data["id"],
        action=Action(data["a"]),
        reason=data["r"],
        deliver_at=None if data["t"] is None else from_us(data["t"]),
        scores={k: float(v) for k, v in data["s"].items()},
        duplicate=duplicate,
    )


# --------------------------------------------------------------------------------------- sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    notification_id TEXT PRIMARY KEY,
    fan_id TEXT NOT NULL,
    decided_us INTEGER NOT NULL,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (decided_us);
CREATE TABLE IF NOT EXISTS sends (
    fan_id TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    notification_id TEXT NOT NULL,
    PRIMARY KEY (fan_id, at_us, notification_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS content (
    fan_id TEXT NOT NULL,
    content_key TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    PRIMARY KEY (fan_id, content_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fans (
    fan_id TEXT PRIMARY KEY,
    opted_out INTEGER NOT NULL DEFAULT 0,
    time_zone TEXT NOT NULL DEFAULT '',
    delivered INTEGER NOT NULL DEFAULT 0,
    opened INTEGER NOT NULL DEFAULT 0,
    dismissed INTEGER NOT NULL DEFAULT 0,
    last_outcome_us INTEGER
) WITHOUT ROWID;
"""

# Whole-table pruning of expired decisions and content claims runs every this many decisions.
_PRUNE_EVERY = 4096
# Candidates decided per write transaction.
_TRANSACTION_SIZE = 256


class EmbeddedNotifyState:
    """The single-machine store: one sqlite file (WAL), safe across threads and processes.

    `synchronous="NORMAL"` (the default) survives a process crash — a recorded decision is never
    lost, so a replay after the crash returns it; `"FULL"` also survives power loss, at one fsync
    per chunk.
    """

    FILENAME = "state.sqlite3"

    def __init__(
        self, path: Path | str, retention: Retention | None = None, *, synchronous: str = "NORMAL"
    ) -> None:
        if synchronous not in {"NORMAL", "FULL"}:
            raise ValueError("synchronous must be NORMAL or FULL")
        self.path = str(path)
        self.retention = retention or Retention()
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, taking the write lock up front so
        # two writers never both read before either writes.
        self._conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._since_prune = 0
        with self._lock:
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            self._conn.executescript(_SCHEMA)

    @classmethod
    def open(cls, directory: Path, retention: Retention | None = None) -> EmbeddedNotifyState:
        """Opens (creating if needed) the store in `directory`, e.g. <data_dir>/notify."""
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / cls.FILENAME, retention)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # another process held the lock past the timeout
                raise Unavailable(f"notify state is busy: {exc}") from exc
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def decide(self, candidates: Sequence[Candidate], decide: DecideFn, now: datetime) -> list[Decision]:
        out: list[Decision] = []
        # Atomicity is per candidate; committing every few hundred keeps a large fan-out chunk from
        # holding the write lock (and every concurrent Decide) for the whole chunk.
        for start in range(0, len(candidates), _TRANSACTION_SIZE):
            with self._transaction() as conn:
                out.extend(
                    self._decide_one(conn, c, decide, now)
                    for c in candidates[start : start + _TRANSACTION_SIZE]
                )
                self._since_prune += min(_TRANSACTION_SIZE, len(candidates) - start)
                if self._since_prune >= _PRUNE_EVERY:
                    self._prune(conn, now)
        return out

    def _decide_one(
        self, conn: sqlite3.Connection, c: Candidate, decide: DecideFn, now: datetime
    ) -> Decision:
        row = conn.execute(
            "SELECT body FROM decisions WHERE notification_id = ?", (c.notification_id,)
        ).fetchone()
        if row is not None:
            return decode_decision(row[0], duplicate=True)
        key = content_key(c)
        verdict = decide(c, self._load(conn, c.fan_id, now, key))
        decision = verdict.decision
        inserted = conn.execute(
            "INSERT OR IGNORE INTO decisions (notification_id, fan_id, decided_us, body) VALUES (?, ?, ?, ?)",
            (c.notification_id, c.fan_id, to_us(now), encode_decision(decision)),
        ).rowcount
        if inserted == 0:  # unreachable while we hold the write lock; the id is the backstop anyway
            row = conn.execute(
                "SELECT body FROM decisions WHERE notification_id = ?", (c.notification_id,)
            ).fetchone()
            return decode_decision(row[0], duplicate=True)
        if verdict.send_at is not None:
            conn.execute(
                "INSERT OR IGNORE INTO sends (fan_id, at_us, notification_id) VALUES (?, ?, ?)",
                (c.fan_id, to_us(verdict.send_at), c.notification_id),
            )
            conn.execute(
                "DELETE FROM sends WHERE fan_id = ? AND at_us <= ?",
                (c.fan_id, to_us(now - self.retention.history)),
            )
        if verdict.claim_content:
            conn.execute(
                "INSERT OR REPLACE INTO content (fan_id, content_key, at_us) VALUES (?, ?, ?)",
                (c.fan_id, key, to_us(now)),
            )
        if c.fan_time_zone:
            conn.execute(
                "INSERT INTO fans (fan_id, time_zone) VALUES (?, ?)"
                " ON CONFLICT (fan_id) DO UPDATE SET time_zone = excluded.time_zone",
                (c.fan_id, c.fan_time_zone),
            )
        return decision

    def _load(self, conn: sqlite3.Connection, fan_id: str, now: datetime, key: str | None) -> FanState:
        sends = tuple(
            from_us(r[0])
            for r in conn.execute(
                "SELECT at_us FROM sends WHERE fan_id = ? AND at_us > ? ORDER BY at_us",
                (fan_id, to_us(now - self.retention.history)),
            )
        )
        row = conn.execute("SELECT opted_out, time_zone FROM fans WHERE fan_id = ?", (fan_id,)).fetchone()
        last_same: datetime | None = None
        if key is not None:
            hit = conn.execute(
                "SELECT at_us FROM content WHERE fan_id = ? AND content_key = ? AND at_us > ?",
                (fan_id, key, to_us(now - self.retention.dedupe)),
            ).fetchone()
            last_same = None if hit is None else from_us(hit[0])
        return FanState(
            sends=sends,
            opted_out=bool(row[0]) if row else False,
            time_zone=row[1] if row else "",
            last_same_content=last_same,
        )

    def _prune(self, conn: sqlite3.Connection, now: datetime) -> None:
        self._since_prune = 0
        conn.execute("DELETE FROM decisions WHERE decided_us < ?", (to_us(now - self.retention.idempotency),))
        conn.execute("DELETE FROM content WHERE at_us < ?", (to_us(now - self.retention.dedupe),))

    def record_outcome(self, event: OutcomeEvent) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO fans (fan_id) VALUES (?) ON CONFLICT (fan_id) DO NOTHING", (event.fan_id,)
            )
            conn.execute(
                "UPDATE fans SET opted_out = MAX(opted_out, ?), delivered = delivered + ?,"
                " opened = opened + ?, dismissed = dismissed + ?, last_outcome_us = ? WHERE fan_id = ?",
                (
                    int(event.outcome is Outcome.DISABLED),
                    int(event.outcome is Outcome.DELIVERED),
                    int(event.outcome is Outcome.OPENED),
                    int(event.outcome is Outcome.DISMISSED),
                    to_us(event.occurred_at),
                    event.fan_id,
                ),
            )

    def fan_state(self, fan_id: str, now: datetime) -> FanState:
        with self._lock:
            return self._load(self._conn, fan_id, now, None)

    def decision(self, notification_id: str) -> Decision | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT body FROM decisions WHERE notification_id = ?", (notification_id,)
            ).fetchone()
        return None if row is None else decode_decision(row[0], duplicate=True)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# ---------------------------------------------------------------------------------------- Redis

# KEYS: decision, fan hash, sends zset, content zset.
# ARGV: sends after (us, exclusive), content key, content after (us, exclusive).
# Returns {decision body} for a decided id, else {false, version, opted_out, zone, sends, content_us}.
_READ_LUA = """
local d = redis.call('GET', KEYS[1])
if d then return {d} end
local meta = redis.call('HMGET', KEYS[2], 'v', 'opt', 'tz')
local sends = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[1], '+inf', 'WITHSCORES')
local c = redis.call('ZSCORE', KEYS[4], ARGV[2])
if c and tonumber(c) <= tonumber(ARGV[3]) then c = false end
return {false, meta[1] or '', meta[2] or '0', meta[3] or '', sends, c or ''}
"""

# KEYS: decision, fan hash, sends zset, content zset.
# ARGV: 1 expected version, 2 new version, 3 decision body, 4 decision ttl (s),
#       5 send at (us) or '', 6 notification id, 7 prune sends at or before (us), 8 sends ttl (s),
#       9 content key or '', 10 now (us), 11 prune content at or before (us), 12 content ttl (s),
#       13 fan zone or ''.
# Returns {'dup', body} if the id was decided meanwhile, {'retry'} if the fan changed, else {'ok'}.
_COMMIT_LUA = """
local d = redis.call('GET', KEYS[1])
if d then return {'dup', d} end
local v = redis.call('HGET', KEYS[2], 'v') or ''
if v ~= ARGV[1] then return {'retry'} end
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[4])
redis.call('HSET', KEYS[2], 'v', ARGV[2])
if ARGV[13] ~= '' then redis.call('HSET', KEYS[2], 'tz', ARGV[13]) end
if ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[7])
  redis.call('EXPIRE', KEYS[3], ARGV[8])
end
if ARGV[9] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[10], ARGV[9])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[11])
  redis.call('EXPIRE', KEYS[4], ARGV[12])
end
return {'ok'}
"""

# A chunk whose commits keep conflicting gives up after this many read-decide-commit rounds.
_MAX_ROUNDS = 32


@dataclass
class _FanView:
    """One fan as read in this round, advanced locally by the decisions planned so far."""

    version: str
    sends: list[datetime]
    opted_out: bool
    time_zone: str
    claims: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class _Planned:
    index: int
    verdict: Verdict
    expected: str
    version: str
    content_key: str


class RedisNotifyState:
    """The cluster store: a real Redis server (single node; keys are not hash-tagged for Cluster).

    Keys under `prefix`: `decision:<id>` (decision JSON, expires after the idempotency retention),
    `fan:<fan>` (hash: version token, opt-out, zone, outcome counters; never expires because the
    opt-out must not), `sends:<fan>` and `content:<fan>` (sorted sets scored by microseconds).
    """

    def __init__(
        self, client: Any, retention: Retention | None = None, *, prefix: str = "kindred:notify:"
    ) -> None:
        self._r = client
        self.retention = retention or Retention()
        self.prefix = prefix
        self._read = client.register_script(_READ_LUA)
        self._commit = client.register_script(_COMMIT_LUA)

    @classmethod
    def from_url(
        cls, url: str, retention: Retention | None = None, *, prefix: str = "kindred:notify:"
    ) -> RedisNotifyState:
        import redis

        client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        return cls(client, retention, prefix=prefix)

    def _keys(self, notification_id: str, fan_id: str) -> list[str]:
        p = self.prefix
        return [
            f"{p}decision:{notification_id}",
            f"{p}fan:{fan_id}",
            f"{p}sends:{fan_id}",
            f"{p}content:{fan_id}",
        ]

    def _run(self, calls: list[tuple[Any, list[str], list[Any]]]) -> list[Any]:
        """Runs script calls: one directly (one round trip), several in one pipeline."""
        with _redis_errors():
            if len(calls) == 1:
                script, keys, args = calls[0]
                return [script(keys=keys, args=args)]
            pipe = self._r.pipeline(transaction=False)
            for script, keys, args in calls:
                script(keys=keys, args=args, client=pipe)
            return list(pipe.execute())

    def decide(self, candidates: Sequence[Candidate], decide: DecideFn, now: datetime) -> list[Decision]:
        results: list[Decision | None] = [None] * len(candidates)
        pending = list(range(len(candidates)))
        history_after = to_us(now - self.retention.history)
        dedupe_after = to_us(now - self.retention.dedupe)
        for _ in range(_MAX_ROUNDS):
            if not pending:
                break
            reads = self._run(
                [
                    (
                        self._read,
                        self._keys(candidates[i].notification_id, candidates[i].fan_id),
                        [history_after, content_key(candidates[i]), dedupe_after],
                    )
                    for i in pending
                ]
            )
            views: dict[str, _FanView] = {}
            planned: list[_Planned] = []
            leader_of: dict[str, int] = {}
            followers: list[tuple[int, int]] = []
            for i, raw in zip(pending, reads, strict=True):
                c = candidates[i]
                if raw[0] is not None:
                    results[i] = decode_decision(raw[0], duplicate=True)
                    continue
                if c.notification_id in leader_of:  # the same id twice in one chunk
                    followers.append((i, leader_of[c.notification_id]))
                    continue
                view = views.get(c.fan_id)
                if view is None:
                    view = views[c.fan_id] = _FanView(
                        version=raw[1],
                        sends=[from_us(int(float(s))) for s in raw[4][1::2]],
                        opted_out=raw[2] == "1",
                        time_zone=raw[3],
                    )
                key = content_key(c)
                last_same = view.claims.get(key) or (from_us(int(float(raw[5]))) if raw[5] else None)
                verdict = decide(c, FanState(tuple(view.sends), view.opted_out, view.time_zone, last_same))
                token = os.urandom(8).hex()
                planned.append(_Planned(i, verdict, view.version, token, key))
                leader_of[c.notification_id] = i
                view.version = token
                if verdict.send_at is not None:
                    bisect.insort(view.sends, verdict.send_at)
                if verdict.claim_content:
                    view.claims[key] = now
                if c.fan_time_zone:
                    view.time_zone = c.fan_time_zone
            replies = (
                self._run([self._commit_call(candidates[p.index], p, now) for p in planned])
                if planned
                else []
            )
            retry: list[int] = []
            for p, reply in zip(planned, replies, strict=True):
                if reply[0] == "ok":
                    results[p.index] = p.verdict.decision
                elif reply[0] == "dup":
                    results[p.index] = decode_decision(reply[1], duplicate=True)
                else:
                    retry.append(p.index)
            for i, leader in followers:
                decided = results[leader]
                if decided is None:
                    retry.append(i)
                else:
                    results[i] = replace(decided, duplicate=True)
            pending = sorted(retry)
        if pending:
            raise Unavailable(
                f"notify state: {len(pending)} decisions kept conflicting on the same fans; retry"
            )
        return [d for d in results if d is not None]

    def _commit_call(self, c: Candidate, p: _Planned, now: datetime) -> tuple[Any, list[str], list[Any]]:
        r = self.retention
        send_at = p.verdict.send_at
        # The sends set must outlive its newest (possibly scheduled) member by the history window.
        horizon = (max(send_at, now) if send_at is not None else now) - now + r.history
        args: list[Any] = [
            p.expected,
            p.version,
            encode_decision(p.verdict.decision),
            _seconds(r.idempotency),
            "" if send_at is None else to_us(send_at),
            c.notification_id,
            to_us(now - r.history),
            _seconds(horizon),
            p.content_key if p.verdict.claim_content else "",
            to_us(now),
            to_us(now - r.dedupe),
            _seconds(r.dedupe),
            c.fan_time_zone,
        ]
        return self._commit, self._keys(c.notification_id, c.fan_id), args

    def record_outcome(self, event: OutcomeEvent) -> None:
        fan_key = f"{self.prefix}fan:{event.fan_id}"
        counter = {Outcome.DELIVERED: "delivered", Outcome.OPENED: "opened", Outcome.DISMISSED: "dismissed"}
        with _redis_errors():
            pipe = self._r.pipeline(transaction=True)
            if event.outcome is Outcome.DISABLED:
                # A new version token makes any decision in flight for this fan re-read and see it.
                pipe.hset(fan_key, mapping={"opt": "1", "v": os.urandom(8).hex()})
            else:
                pipe.hincrby(fan_key, counter[event.outcome], 1)
            pipe.hset(fan_key, "last_outcome_us", to_us(event.occurred_at))
            pipe.execute()

    def fan_state(self, fan_id: str, now: datetime) -> FanState:
        p = self.prefix
        with _redis_errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.hmget(f"{p}fan:{fan_id}", ["opt", "tz"])
            pipe.zrangebyscore(
                f"{p}sends:{fan_id}", f"({to_us(now - self.retention.history)}", "+inf", withscores=True
            )
            (opt, zone), sends = pipe.execute()
        return FanState(
            sends=tuple(from_us(int(score)) for _, score in sends),
            opted_out=opt == "1",
            time_zone=zone or "",
        )

    def decision(self, notification_id: str) -> Decision | None:
        with _redis_errors():
            body = self._r.get(f"{self.prefix}decision:{notification_id}")
        return None if body is None else decode_decision(body, duplicate=True)

    def close(self) -> None:
        self._r.close()


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


@contextmanager
def _redis_errors() -> Iterator[None]:
    import redis

    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise Unavailable(f"notify state (redis) unavailable: {exc}") from exc
