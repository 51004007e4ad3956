"""Per-fan notification state behind one Protocol: sqlite on one machine, Redis on the cluster.

The store owns atomicity. `decide()` runs read → policy → record as one atomic step per
candidate, so that

- a notification id is decided once: replays (and the losers of concurrent identical calls) get
  the recorded decision back with `duplicate=True`;
- caps and spacing hold under concurrency: two different notifications for the same fan never
  both decide from the same stale view of the fan's sends;
- a crash between deciding and recording records nothing (the transaction / script never ran),
  so the caller's retry decides afresh and there is never a second send.

Candidates are decided in *waves*: a wave holds each fan and each notification id at most once, so
its fans' states are read together, the whole wave is scored by one `decide_many` call (one ONNX
run for a learned policy), and its records are written together. Later occurrences of a fan in
the same chunk go to the next wave and see the earlier decisions.

How each backend gets there:

- `EmbeddedNotifyState`: one sqlite file; candidates are decided inside `BEGIN IMMEDIATE`
  transactions of up to 512 (the database write lock, so other threads and processes wait), and
  the decision row goes in with `INSERT OR IGNORE` on the notification id as the idempotency
  backstop.
- `RedisNotifyState`: optimistic concurrency. One Lua script reads everything a wave needs;
  Python runs the policy; a second Lua script records each decision only if the id is still
  undecided *and* the fan's version token is the one that was read, setting a fresh random
  token. A conflict re-reads and re-decides in a later round. Each script call carries the whole
  wave as one JSON argument (cjson in the script), which keeps client-side packing off the hot path;
  the commit does the fewest Redis calls that keep those guarantees (version check, `SET NX` of the
  decision, the state writes; expired sends and claims are pruned on a sample of commits).

Fresh DELAY_UNTIL and DIGEST decisions are also stored as scheduled items, in the same atomic
step, for delivery through claim + ack (see delivery.py).

Times are stored as integer microseconds since the epoch (timeconv.py).
"""

from __future__ import annotations

import json
import math
import os
import random
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from kindred.errors import Unavailable
from notify_svc import delivery
from notify_svc.domain import (
    Action,
    Candidate,
    Decision,
    DueNotification,
    FanState,
    Outcome,
    OutcomeEvent,
    Verdict,
    content_key,
    scheduled_item,
)
from notify_svc.features import HISTORY_WINDOW as ENGAGEMENT_WINDOW  # the journal's retention
from notify_svc.timeconv import from_us, to_us

# Scores a wave: candidates and their fans' states, in the same order; one verdict each.
DecideManyFn = Callable[[Sequence[Candidate], Sequence[FanState]], list[Verdict]]
DecideFn = Callable[[Candidate, FanState], Verdict]


def per_candidate(decide: DecideFn) -> DecideManyFn:
    """A DecideManyFn from a one-at-a-time decision function."""

    def decide_many(candidates: Sequence[Candidate], fans: Sequence[FanState]) -> list[Verdict]:
        return [decide(c, f) for c, f in zip(candidates, fans, strict=True)]

    return decide_many


def waves(candidates: Sequence[Candidate], indices: Sequence[int]) -> tuple[list[int], list[int]]:
    """Splits `indices` into a wave (each fan and id at most once, first come) and the rest, in order."""
    wave: list[int] = []
    later: list[int] = []
    fans: set[str] = set()
    ids: set[str] = set()
    for i in indices:
        c = candidates[i]
        if c.fan_id in fans or c.notification_id in ids:
            later.append(i)
        else:
            fans.add(c.fan_id)
            ids.add(c.notification_id)
            wave.append(i)
    return wave, later


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
    def decide(
        self, candidates: Sequence[Candidate], decide_many: DecideManyFn, now: datetime
    ) -> list[Decision]:
        """Decides each candidate atomically with recording it; results are in input order."""
        ...

    def collect_due(
        self, now: datetime, limit: int, worker_id: str, lease: timedelta
    ) -> list[DueNotification]:
        """Claims due delayed items and digests for `worker_id` until `now + lease` (delivery.py)."""
        ...

    def ack_due(self, claim_id: str, notification_ids: Sequence[str]) -> int:
        """Removes the items still held by `claim_id`; returns how many."""
        ...

    def record_outcome(self, event: OutcomeEvent) -> None: ...

    def fan_state(self, fan_id: str, now: datetime) -> FanState:
        """The fan's sends in the history window, opt-out and zone (no content claim)."""
        ...

    def decision(self, notification_id: str) -> Decision | None:
        """The recorded decision for an id, marked duplicate, or None."""
        ...

    def close(self) -> None: ...


# One encoder for every record: json.dumps with non-default separators builds a new one per call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def encode_decision(decision: Decision) -> str:
    return _COMPACT.encode(
        {
            "id": decision.notification_id,
            "a": int(decision.action),
            "r": decision.reason,
            "t": None if decision.deliver_at is None else to_us(decision.deliver_at),
            "s": decision.scores,
        }
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

_SCHEMA = (
    """
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
-- The learned policy's engagement journal (notify_svc.features.EngagementJournal): JSON records.
CREATE TABLE IF NOT EXISTS engagement (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_us INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS engagement_by_time ON engagement (at_us);
"""
    + delivery.SQLITE_SCHEMA
)

# Whole-table pruning of expired decisions and content claims runs every this many decisions.
_PRUNE_EVERY = 4096
# Candidates decided per write transaction.
_TRANSACTION_SIZE = 512


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

    def decide(
        self, candidates: Sequence[Candidate], decide_many: DecideManyFn, now: datetime
    ) -> list[Decision]:
        out: list[Decision] = []
        # Atomicity is per candidate; committing every few hundred keeps a large fan-out chunk from
        # holding the write lock (and every concurrent Decide) for the whole chunk.
        for start in range(0, len(candidates), _TRANSACTION_SIZE):
            part = candidates[start : start + _TRANSACTION_SIZE]
            with self._transaction() as conn:
                out.extend(self._decide_part(conn, part, decide_many, now))
                self._since_prune += len(part)
                if self._since_prune >= _PRUNE_EVERY:
                    self._prune(conn, now)
        return out

    def _decide_part(
        self, conn: sqlite3.Connection, part: Sequence[Candidate], decide_many: DecideManyFn, now: datetime
    ) -> list[Decision]:
        results: list[Decision | None] = [None] * len(part)
        remaining = list(range(len(part)))
        while remaining:
            wave, remaining = waves(part, remaining)
            decided = _rows_by_key(
                conn,
                "SELECT notification_id, body FROM decisions WHERE notification_id IN ({})",
                [part[i].notification_id for i in wave],
            )
            todo: list[int] = []
            for i in wave:
                row = decided.get(part[i].notification_id)
                if row is None:
                    todo.append(i)
                else:
                    results[i] = decode_decision(row[0], duplicate=True)
            if not todo:
                continue
            cands = [part[i] for i in todo]
            keys = [content_key(c) for c in cands]
            fans = self._load_wave(conn, cands, keys, now)
            verdicts = decide_many(cands, fans)
            self._record_wave(conn, cands, keys, fans, verdicts, now)
            for i, verdict in zip(todo, verdicts, strict=True):
                results[i] = verdict.decision
        return [d for d in results if d is not None]

    def _load_wave(
        self, conn: sqlite3.Connection, cands: Sequence[Candidate], keys: Sequence[str], now: datetime
    ) -> list[FanState]:
        """The fans of one wave (each fan once), read with three statements instead of three per fan."""
        fan_ids = [c.fan_id for c in cands]
        marks = ",".join("?" * len(fan_ids))
        sends: dict[str, list[datetime]] = {}
        for fan_id, at_us in conn.execute(
            f"SELECT fan_id, at_us FROM sends WHERE fan_id IN ({marks}) AND at_us > ? ORDER BY fan_id, at_us",
            [*fan_ids, to_us(now - self.retention.history)],
        ):
            sends.setdefault(fan_id, []).append(from_us(at_us))
        meta = _rows_by_key(
            conn, "SELECT fan_id, opted_out, time_zone FROM fans WHERE fan_id IN ({})", fan_ids
        )
        claims = {
            (fan_id, key): at_us
            for fan_id, key, at_us in conn.execute(
                f"SELECT fan_id, content_key, at_us FROM content WHERE fan_id IN ({marks}) AND at_us > ?",
                [*fan_ids, to_us(now - self.retention.dedupe)],
            )
        }
        out = []
        for c, key in zip(cands, keys, strict=True):
            row = meta.get(c.fan_id)
            last = claims.get((c.fan_id, key))
            out.append(
                FanState(
                    sends=tuple(sends.get(c.fan_id, ())),
                    opted_out=bool(row[0]) if row else False,
                    time_zone=row[1] if row else "",
                    last_same_content=None if last is None else from_us(last),
                )
            )
        return out

    def _record_wave(
        self,
        conn: sqlite3.Connection,
        cands: Sequence[Candidate],
        keys: Sequence[str],
        fans: Sequence[FanState],
        verdicts: Sequence[Verdict],
        now: datetime,
    ) -> None:
        now_us = to_us(now)
        rows = list(zip(cands, keys, fans, verdicts, strict=True))
        # The ids are unique in a wave and undecided, and we hold the write lock since reading them.
        conn.executemany(
            "INSERT OR IGNORE INTO decisions (notification_id, fan_id, decided_us, body) VALUES (?, ?, ?, ?)",
            [(c.notification_id, c.fan_id, now_us, encode_decision(v.decision)) for c, _, _, v in rows],
        )
        sends = [
            (c.fan_id, to_us(v.send_at), c.notification_id) for c, _, _, v in rows if v.send_at is not None
        ]
        if sends:
            conn.executemany(
                "INSERT OR IGNORE INTO sends (fan_id, at_us, notification_id) VALUES (?, ?, ?)", sends
            )
            fan_ids = [fan_id for fan_id, _, _ in sends]
            conn.execute(
                f"DELETE FROM sends WHERE fan_id IN ({','.join('?' * len(fan_ids))}) AND at_us <= ?",
                [*fan_ids, to_us(now - self.retention.history)],
            )
        conn.executemany(
            "INSERT OR REPLACE INTO content (fan_id, content_key, at_us) VALUES (?, ?, ?)",
            [(c.fan_id, key, now_us) for c, key, _, v in rows if v.claim_content],
        )
        conn.executemany(
            "INSERT INTO fans (fan_id, time_zone) VALUES (?, ?)"
            " ON CONFLICT (fan_id) DO UPDATE SET time_zone = excluded.time_zone",
            [
                (c.fan_id, c.fan_time_zone)
                for c, _, f, _ in rows
                if c.fan_time_zone and c.fan_time_zone != f.time_zone
            ],
        )
        items = [item for c, _, _, v in rows if (item := scheduled_item(c, v.decision)) is not None]
        if items:
            delivery.sqlite_schedule_many(conn, items)

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

    def collect_due(
        self, now: datetime, limit: int, worker_id: str, lease: timedelta
    ) -> list[DueNotification]:
        with self._transaction() as conn:
            return delivery.sqlite_claim(conn, now, limit, worker_id, lease)

    def ack_due(self, claim_id: str, notification_ids: Sequence[str]) -> int:
        with self._transaction() as conn:
            return delivery.sqlite_ack(conn, claim_id, list(notification_ids))

    def append_engagement(self, records: Sequence[tuple[datetime, str]]) -> None:
        """Journal records for the learned policy's features; keeps the last ENGAGEMENT_WINDOW."""
        if not records:
            return
        newest = max(at for at, _ in records)
        with self._transaction() as conn:
            rows = [(to_us(at), body) for at, body in records]
            conn.executemany("INSERT INTO engagement (at_us, body) VALUES (?, ?)", rows)
            conn.execute("DELETE FROM engagement WHERE at_us < ?", (to_us(newest - ENGAGEMENT_WINDOW),))

    def engagement_since(self, since: datetime) -> list[str]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT body FROM engagement WHERE at_us >= ? ORDER BY at_us, seq", (to_us(since),)
            ).fetchall()
        return [body for (body,) in rows]

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

# ARGV[1]: JSON {p: prefix, c: [[notification id, fan, content key], ...]}.
# Returns JSON: per candidate [decision body] if decided, else [false, version, opted_out, zone,
# sends, content claim µs or ""] — sends as stored ("µs,µs,..."; the caller drops those outside the
# history window). Numbers travel as strings: cjson would round µs to 14 digits.
_READ_LUA = """
local req = cjson.decode(ARGV[1])
local p = req.p
local out = {}
for i, c in ipairs(req.c) do
  local d = redis.call('GET', p .. 'decision:' .. c[1])
  if d then
    out[i] = {d}
  else
    local m = redis.call('HMGET', p .. 'fan:' .. c[2], 'v', 'opt', 'tz', 's', 'c:' .. c[3])
    out[i] = {false, m[1] or '', m[2] or '0', m[3] or '', m[4] or '', m[5] or ''}
  end
end
return cjson.encode(out)
"""

# ARGV[1]: JSON {p: prefix, ttl: decision ttl (s), now: µs, cprune: drop content claims at or
#               before (µs), c: [commit, ...]}, each commit a list:
#   1 id, 2 fan, 3 expected version, 4 new version, 5 decision body, 6 the fan's sends after this
#   decision ("µs,µs,...") or "" if it spends nothing, 7 content key or "", 8 fan zone to store or "",
#   9 scheduled item body or "", 10 item kind, 11 item due µs, 12 "1" to prune expired claims now.
# Returns JSON: per commit "ok", "retry" (the fan changed since the read) or the decision body of
# an earlier decision of the same id (a duplicate).
#
# The version check comes first: a fan whose version is still the one read has had no decision
# committed since, so the id was undecided then and still is — unless the same id was committed
# for another fan, which `SET NX` catches (the existing body is returned as the duplicate). A fan
# that changed is retried; the re-read then finds the decision if there is one. The unchanged
# version also means the sends the caller read are still the fan's sends, so the caller writes the
# whole new list (read ∩ history window, plus this send): one HSET updates version, zone, sends and
# the content claim together. Expired claims are pruned on a sample of commits (12).
_COMMIT_LUA = """
local req = cjson.decode(ARGV[1])
local p = req.p
local cprune = tonumber(req.cprune)
local out = {}
for i, c in ipairs(req.c) do
  local fk = p .. 'fan:' .. c[2]
  if (redis.call('HGET', fk, 'v') or '') ~= c[3] then
    out[i] = 'retry'
  else
    local dk = p .. 'decision:' .. c[1]
    if not redis.call('SET', dk, c[5], 'NX', 'EX', req.ttl) then
      out[i] = redis.call('GET', dk)
    else
      local f = {'v', c[4]}
      if c[8] ~= '' then f[#f + 1] = 'tz'; f[#f + 1] = c[8] end
      if c[6] ~= '' then f[#f + 1] = 's'; f[#f + 1] = c[6] end
      if c[7] ~= '' then f[#f + 1] = 'c:' .. c[7]; f[#f + 1] = req.now end
      redis.call('HSET', fk, unpack(f))
      if c[12] == '1' then
        local all = redis.call('HGETALL', fk)
        for j = 1, #all, 2 do
          if string.sub(all[j], 1, 2) == 'c:' and tonumber(all[j + 1]) <= cprune then
            redis.call('HDEL', fk, all[j])
          end
        end
      end
      if c[9] ~= '' then
        redis.call('HSET', p .. 'item:' .. c[1], 'b', c[9], 'f', c[2], 'k', c[10])
        redis.call('ZADD', p .. 'due', c[11], c[1])
        if c[10] == '2' then redis.call('ZADD', p .. 'digest:' .. c[2], c[11], c[1]) end
      end
      out[i] = 'ok'
    end
  end
end
return cjson.encode(out)
"""

# A chunk whose commits keep conflicting gives up after this many read-decide-commit rounds.
_MAX_ROUNDS = 32
# About one commit in this many also prunes the fan's expired sends and content claims.
_PRUNE_ONE_IN = 8


def _prune_sample(n: int) -> list[bool]:
    """Which of `n` commits prune: a random ~1/_PRUNE_ONE_IN of them (one call for the wave)."""
    bits = random.getrandbits(8 * n) if n else 0
    return [(bits >> (8 * k)) & 0xFF < 256 // _PRUNE_ONE_IN for k in range(n)]


@dataclass(frozen=True)
class _Read:
    """A wave member as read: the fan's state and the version token its commit must still find."""

    index: int
    fan: FanState
    version: str
    content_key: str
    sends_us: tuple[int, ...]  # the fan's sends inside the history window, as read, ascending


class RedisNotifyState:
    """The cluster store: a real Redis server (single node; keys are not hash-tagged for Cluster).

    Keys under `prefix`: `decision:<id>` (decision JSON, expires after the idempotency retention),
    `fan:<fan>` (hash: version token `v`, opt-out `opt`, zone `tz`, sends `s` ("µs,µs,..." inside the
    history window as of the fan's last send), content claims `c:<content key>` (µs; expired ones are
    pruned on a sample of commits), outcome counters; never expires because the opt-out must not), and
    the delivery keys of delivery.py (`item:<id>`, `due`, `digest:<fan>`). One hash per fan keeps a
    decision to two Redis calls to read it and three to commit it (plus the scheduled item's).
    """

    def __init__(
        self, client: Any, retention: Retention | None = None, *, prefix: str = "kindred:notify:"
    ) -> None:
        self._r = client
        self.retention = retention or Retention()
        self.prefix = prefix
        self._read = client.register_script(_READ_LUA)
        self._commit = client.register_script(_COMMIT_LUA)
        self._delivery = delivery.RedisDelivery(client, prefix)

    @classmethod
    def from_url(
        cls, url: str, retention: Retention | None = None, *, prefix: str = "kindred:notify:"
    ) -> RedisNotifyState:
        import redis

        client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        return cls(client, retention, prefix=prefix)

    def decide(
        self, candidates: Sequence[Candidate], decide_many: DecideManyFn, now: datetime
    ) -> list[Decision]:
        results: list[Decision | None] = [None] * len(candidates)
        pending = list(range(len(candidates)))
        for _ in range(_MAX_ROUNDS):
            if not pending:
                break
            wave, later = waves(candidates, pending)
            retry = self._decide_wave(candidates, wave, decide_many, now, results)
            pending = sorted(retry + later)
        if pending:
            raise Unavailable(
                f"notify state: {len(pending)} decisions kept conflicting on the same fans; retry"
            )
        return [d for d in results if d is not None]

    def _decide_wave(
        self,
        candidates: Sequence[Candidate],
        wave: list[int],
        decide_many: DecideManyFn,
        now: datetime,
        results: list[Decision | None],
    ) -> list[int]:
        """Reads, decides and commits one wave into `results`; returns the indices to retry."""
        r = self.retention
        keys = [content_key(candidates[i]) for i in wave]
        request = {
            "p": self.prefix,
            "c": [
                [candidates[i].notification_id, candidates[i].fan_id, k]
                for i, k in zip(wave, keys, strict=True)
            ],
        }
        with _redis_errors():
            replies = json.loads(self._read(args=[_COMPACT.encode(request)]))
        history_after = to_us(now - r.history)
        dedupe_after = to_us(now - r.dedupe)
        reads: list[_Read] = []
        for i, key, raw in zip(wave, keys, replies, strict=True):
            if raw[0] is not False:
                results[i] = decode_decision(raw[0], duplicate=True)
                continue
            sends = _sends_after(raw[4], history_after)
            claim = int(raw[5]) if raw[5] else 0
            reads.append(
                _Read(
                    i,
                    FanState(
                        sends=tuple(from_us(us) for us in sends),
                        opted_out=raw[2] == "1",
                        time_zone=raw[3],
                        last_same_content=from_us(claim) if claim > dedupe_after else None,
                    ),
                    raw[1],
                    key,
                    sends,
                )
            )
        if not reads:
            return []
        verdicts = decide_many([candidates[x.index] for x in reads], [x.fan for x in reads])
        token = os.urandom(8).hex()  # + the position: unique per commit, one syscall per wave
        commit_request = {
            "p": self.prefix,
            "ttl": str(_seconds(r.idempotency)),
            "now": str(to_us(now)),
            "cprune": str(dedupe_after),
            "c": [
                self._commit_fields(candidates[x.index], x, v, f"{token}-{n}", prune)
                for n, (x, v, prune) in enumerate(
                    zip(reads, verdicts, _prune_sample(len(reads)), strict=True)
                )
            ],
        }
        with _redis_errors():
            outcomes = json.loads(self._commit(args=[_COMPACT.encode(commit_request)]))
        retry: list[int] = []
        for x, verdict, outcome in zip(reads, verdicts, outcomes, strict=True):
            if outcome == "ok":
                results[x.index] = verdict.decision
            elif outcome == "retry":
                retry.append(x.index)
            else:
                results[x.index] = decode_decision(outcome, duplicate=True)
        return retry

    @staticmethod
    def _commit_fields(c: Candidate, read: _Read, verdict: Verdict, version: str, prune: bool) -> list[str]:
        sends = ""
        if verdict.send_at is not None:
            # The fan's sends as read (inside the history window) plus this one: the commit only
            # applies while the fan's version is the one read, i.e. while that list is still current.
            sends = ",".join(map(str, sorted((*read.sends_us, to_us(verdict.send_at)))))
        item = scheduled_item(c, verdict.decision) if verdict.decision.deliver_at is not None else None
        return [
            c.notification_id,
            c.fan_id,
            read.version,
            version,
            encode_decision(verdict.decision),
            sends,
            read.content_key if verdict.claim_content else "",
            c.fan_time_zone if c.fan_time_zone != read.fan.time_zone else "",
            "" if item is None else delivery.encode_item(item),
            "" if item is None else str(int(item.kind)),
            "" if item is None else str(to_us(item.deliver_at)),
            "1" if prune else "",
        ]

    def collect_due(
        self, now: datetime, limit: int, worker_id: str, lease: timedelta
    ) -> list[DueNotification]:
        with _redis_errors():
            return self._delivery.claim(now, limit, worker_id, lease)

    def ack_due(self, claim_id: str, notification_ids: Sequence[str]) -> int:
        with _redis_errors():
            return self._delivery.ack(claim_id, list(notification_ids))

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
            opt, zone, sends = self._r.hmget(f"{p}fan:{fan_id}", ["opt", "tz", "s"])
        return FanState(
            sends=tuple(from_us(us) for us in _sends_after(sends or "", to_us(now - self.retention.history))),
            opted_out=opt == "1",
            time_zone=zone or "",
        )

    def append_engagement(self, records: Sequence[tuple[datetime, str]]) -> None:
        """Journal records for the learned policy's features (`engagement`, a sorted set by µs).

        One key for every replica: a restarting replica replays what all of them observed.
        """
        if not records:
            return
        newest = max(at for at, _ in records)
        key = f"{self.prefix}engagement"
        with _redis_errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.zadd(key, {body: to_us(at) for at, body in records})
            pipe.zremrangebyscore(key, "-inf", f"({to_us(newest - ENGAGEMENT_WINDOW)}")
            pipe.execute()

    def engagement_since(self, since: datetime) -> list[str]:
        with _redis_errors():
            return [str(b) for b in self._r.zrangebyscore(f"{self.prefix}engagement", to_us(since), "+inf")]

    def decision(self, notification_id: str) -> Decision | None:
        with _redis_errors():
            body = self._r.get(f"{self.prefix}decision:{notification_id}")
        return None if body is None else decode_decision(body, duplicate=True)

    def close(self) -> None:
        self._r.close()


def _rows_by_key(conn: sqlite3.Connection, sql: str, keys: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """Rows of `sql` (whose `IN ({})` takes `keys`) by their first column."""
    rows = conn.execute(sql.format(",".join("?" * len(keys))), list(keys))
    return {row[0]: tuple(row[1:]) for row in rows}


def _sends_after(stored: str, after_us: int) -> tuple[int, ...]:
    """The sends of a fan hash's `s` field later than `after_us`, ascending."""
    if not stored:
        return ()
    return tuple(sorted(us for us in map(int, stored.split(",")) if us > after_us))


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


@contextmanager
def _redis_errors() -> Iterator[None]:
    import redis

    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise Unavailable(f"notify state (redis) unavailable: {exc}") from exc
