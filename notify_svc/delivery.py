"""Delivery of DELAY_UNTIL and DIGEST decisions: a claim + ack queue inside the notify state.

Semantics (the same for both backends, which share the test suite):

- A fresh DELAY_UNTIL or DIGEST decision is stored as a scheduled item in the same transaction
  (sqlite) or Lua script (Redis) that records the decision, so an item exists iff its decision does.
- `claim` hands out due items: one `DueNotification` per delayed item and one per fan for all of
  that fan's due digest items. Claiming moves each item's *available-at* time to the end of its
  lease — a single sorted column / sorted set does both jobs, so a claimed item is invisible to
  other collectors until its lease ends, and becomes due again by itself if it is never acked.
  Claims run under the store's write lock (sqlite `BEGIN IMMEDIATE`, or one Lua script), so two
  concurrent collectors never get the same item.
- `ack(claim_id, ids)` deletes the items still held by that claim. An item whose lease ran out and
  was claimed again by another collector is not deleted (the ack counts only what it removed).
- So: exactly-once claim, and at-least-once delivery across collector crashes — a collector that
  crashes after sending but before acking lets the item be sent again after the lease, which is why
  downstream senders dedupe by `notification_id`.
- Items of a fan who opted out meanwhile are dropped at claim time, never handed out.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from kindred.errors import InvalidArgument
from notify_svc.domain import DueKind, DueNotification, ScheduledItem
from notify_svc.timeconv import from_us, to_us

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
DEFAULT_LEASE = timedelta(seconds=60)
MAX_LEASE = timedelta(hours=1)

TokenFn = Callable[[], str]
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def new_claim_id() -> str:
    return os.urandom(12).hex()


def validate_collect(limit: int, worker_id: str, lease_seconds: int) -> tuple[int, timedelta]:
    """Checks a CollectDue request; returns (limit, lease) with defaults applied."""
    if not worker_id:
        raise InvalidArgument("worker_id", "required (it names the claim holder)")
    if limit > MAX_LIMIT:
        raise InvalidArgument("limit", f"at most {MAX_LIMIT}, got {limit}")
    lease = timedelta(seconds=lease_seconds) if lease_seconds else DEFAULT_LEASE
    if lease > MAX_LEASE:
        raise InvalidArgument("lease_seconds", f"at most {int(MAX_LEASE.total_seconds())}")
    return (limit or DEFAULT_LIMIT), lease


def encode_item(item: ScheduledItem) -> str:
    """The item's payload; id, fan and kind are stored beside it (columns / hash fields)."""
    return _COMPACT.encode(
        [item.creator_id, item.post_id, item.trigger, item.channel, to_us(item.deliver_at), item.reason]
    )


def decode_item(notification_id: str, fan_id: str, kind: int, body: str) -> ScheduledItem:
    creator_id, post_id, trigger, channel, at_us, reason = json.loads(body)
    return ScheduledItem(
        notification_id=notification_id,
        fan_id=fan_id,
        creator_id=creator_id,
        post_id=post_id,
        trigger=int(trigger),
        channel=int(channel),
        deliver_at=from_us(int(at_us)),
        reason=reason,
        kind=DueKind(int(kind)),
    )


# --------------------------------------------------------------------------------------- sqlite

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS scheduled (
    notification_id TEXT PRIMARY KEY,
    fan_id TEXT NOT NULL,
    kind INTEGER NOT NULL,
    available_us INTEGER NOT NULL,  -- due time, or the end of the lease while claimed
    body TEXT NOT NULL,
    claim_id TEXT,
    worker_id TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS scheduled_by_time ON scheduled (available_us);
CREATE INDEX IF NOT EXISTS scheduled_by_fan ON scheduled (fan_id, kind, available_us);
"""


def sqlite_schedule_many(conn: sqlite3.Connection, items: Sequence[ScheduledItem]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO scheduled (notification_id, fan_id, kind, available_us, body)"
        " VALUES (?, ?, ?, ?, ?)",
        [(i.notification_id, i.fan_id, int(i.kind), to_us(i.deliver_at), encode_item(i)) for i in items],
    )


def sqlite_claim(
    conn: sqlite3.Connection,
    now: datetime,
    limit: int,
    worker_id: str,
    lease: timedelta,
    new_token: TokenFn = new_claim_id,
) -> list[DueNotification]:
    """Claims up to `limit` due notifications; the caller holds the write transaction."""
    now_us, until = to_us(now), now + lease
    until_us = to_us(until)
    out: list[DueNotification] = []
    opted_out: dict[str, bool] = {}
    while len(out) < limit:
        rows = conn.execute(
            "SELECT notification_id, fan_id, kind, body FROM scheduled WHERE available_us <= ?"
            " ORDER BY available_us LIMIT ?",
            (now_us, limit - len(out)),
        ).fetchall()
        if not rows:
            break
        for nid, fan_id, kind, body in rows:
            if len(out) >= limit:
                break
            if fan_id not in opted_out:
                row = conn.execute("SELECT opted_out FROM fans WHERE fan_id = ?", (fan_id,)).fetchone()
                opted_out[fan_id] = bool(row and row[0])
            if opted_out[fan_id]:
                conn.execute("DELETE FROM scheduled WHERE fan_id = ?", (fan_id,))
                continue
            token = new_token()
            if kind == DueKind.DELAYED:
                members = [(nid, body)]
                conn.execute(
                    "UPDATE scheduled SET available_us = ?, claim_id = ?, worker_id = ?"
                    " WHERE notification_id = ?",
                    (until_us, token, worker_id, nid),
                )
            else:
                # Every due digest item of the fan; empty if an earlier row of this pass took them.
                members = conn.execute(
                    "SELECT notification_id, body FROM scheduled"
                    " WHERE fan_id = ? AND kind = ? AND available_us <= ? ORDER BY available_us",
                    (fan_id, int(DueKind.DIGEST), now_us),
                ).fetchall()
                if not members:
                    continue
                conn.execute(
                    "UPDATE scheduled SET available_us = ?, claim_id = ?, worker_id = ?"
                    " WHERE fan_id = ? AND kind = ? AND available_us <= ?",
                    (until_us, token, worker_id, fan_id, int(DueKind.DIGEST), now_us),
                )
            items = tuple(decode_item(m_id, fan_id, kind, m_body) for m_id, m_body in members)
            out.append(DueNotification(token, fan_id, DueKind(kind), items, until))
    return out


def sqlite_ack(conn: sqlite3.Connection, claim_id: str, notification_ids: list[str]) -> int:
    acked = 0
    for nid in notification_ids:
        acked += conn.execute(
            "DELETE FROM scheduled WHERE notification_id = ? AND claim_id = ?", (nid, claim_id)
        ).rowcount
    return acked


# ---------------------------------------------------------------------------------------- Redis
# Keys under the store prefix: `item:<id>` (hash: b body, f fan, k kind, c claim, w worker),
# `due` (sorted set of every item by available-at µs) and `digest:<fan>` (the fan's digest items,
# same scores), kept in step by the scripts below and by the decision commit script in state.py.

# KEYS[1] due. ARGV: 1 prefix, 2 now µs, 3 lease end µs, 4 limit, 5 worker, 6.. one token per message.
# Returns a list of {token, fan, kind, id1, body1, id2, body2, ...}.
REDIS_CLAIM_LUA = """
local p, now, lease_end, limit, worker = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local out = {}
local function take(ik, id, token, digest_key)
  redis.call('HSET', ik, 'c', token, 'w', worker)
  redis.call('ZADD', KEYS[1], lease_end, id)
  if digest_key then redis.call('ZADD', digest_key, lease_end, id) end
end
while #out < limit do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit - #out)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    if #out >= limit then break end
    local ik = p .. 'item:' .. id
    local meta = redis.call('HMGET', ik, 'f', 'k', 'b')
    local fan, kind, body = meta[1], meta[2], meta[3]
    local score = redis.call('ZSCORE', KEYS[1], id)
    if not score or tonumber(score) > tonumber(now) then
      -- taken a moment ago with an earlier id's digest in this same pass
    elseif not fan then
      redis.call('ZREM', KEYS[1], id)
    elseif redis.call('HGET', p .. 'fan:' .. fan, 'opt') == '1' then
      redis.call('DEL', ik)
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZREM', p .. 'digest:' .. fan, id)
    else
      local token = ARGV[6 + #out]
      local entry = {token, fan, kind}
      if kind == '2' then
        local dk = p .. 'digest:' .. fan
        local members = redis.call('ZRANGEBYSCORE', dk, '-inf', now)
        if #members == 0 then members = {id} end
        for _, m in ipairs(members) do
          local mk = p .. 'item:' .. m
          take(mk, m, token, dk)
          entry[#entry + 1] = m
          entry[#entry + 1] = redis.call('HGET', mk, 'b')
        end
      else
        take(ik, id, token, nil)
        entry[#entry + 1] = id
        entry[#entry + 1] = body
      end
      out[#out + 1] = entry
    end
  end
end
return out
"""

# KEYS[1] due. ARGV: 1 prefix, 2 claim token, 3.. notification ids. Returns how many were removed.
REDIS_ACK_LUA = """
local p, token, n = ARGV[1], ARGV[2], 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local ik = p .. 'item:' .. id
  local meta = redis.call('HMGET', ik, 'c', 'f')
  if meta[1] == token then
    redis.call('DEL', ik)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', p .. 'digest:' .. meta[2], id)
    n = n + 1
  end
end
return n
"""


def redis_schedule_fields(item: ScheduledItem) -> dict[str, str]:
    """What the decision commit script needs to schedule `item` (see state.py _COMMIT_LUA)."""
    return {
        "ib": encode_item(item),
        "ik": str(int(item.kind)),
        "iat": str(to_us(item.deliver_at)),
    }


class RedisDelivery:
    """Claim and ack over the keys the Redis state store writes."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._prefix = prefix
        self._due_key = f"{prefix}due"
        self._claim = client.register_script(REDIS_CLAIM_LUA)
        self._ack = client.register_script(REDIS_ACK_LUA)

    def claim(
        self, now: datetime, limit: int, worker_id: str, lease: timedelta, new_token: TokenFn = new_claim_id
    ) -> list[DueNotification]:
        until = now + lease
        tokens = [new_token() for _ in range(limit)]
        args = [self._prefix, to_us(now), to_us(until), limit, worker_id, *tokens]
        out: list[DueNotification] = []
        for entry in self._claim(keys=[self._due_key], args=args):
            token, fan_id, kind = entry[0], entry[1], int(entry[2])
            pairs = entry[3:]
            items = tuple(decode_item(pairs[i], fan_id, kind, pairs[i + 1]) for i in range(0, len(pairs), 2))
            out.append(DueNotification(token, fan_id, DueKind(kind), items, until))
        return out

    def ack(self, claim_id: str, notification_ids: list[str]) -> int:
        if not notification_ids:
            return 0
        return int(self._ack(keys=[self._due_key], args=[self._prefix, claim_id, *notification_ids]))
