"""Local wall-clock arithmetic in a fan's IANA time zone, correct across daylight-saving changes.

All instants in and out are timezone-aware UTC `datetime`s; wall-clock times (`datetime.time`) are
only ever interpreted in the fan's zone. Two DST facts drive the code:

- In a spring-forward gap a wall time does not exist (02:30 on 2024-03-10 in New York). The first
  instant whose wall clock is at or past it is the transition itself (03:00 EDT), so that is what
  `first_instant_at` returns — never `fold=0`'s answer, which lands half an hour late.
- In a fall-back overlap a wall time happens twice, and a backward jump can carry the wall clock
  out of (or back into) the quiet window. Quiet hours therefore end at the earliest *instant*
  whose wall-clock reading is outside the window — found by walking offset periods, not by
  building a local datetime for "08:00" and hoping it exists once.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kindred.errors import InvalidArgument


@lru_cache(maxsize=1024)
def _load_zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def resolve_zone(name: str, field: str = "candidate.fan_time_zone") -> ZoneInfo:
    """Returns the IANA zone `name`, or raises InvalidArgument naming `field`."""
    # ZoneInfo accepts relative file paths such as "../etc/zone"; the IANA names never contain them.
    if not name or name.startswith(("/", ".")) or ".." in name or "\\" in name:
        raise InvalidArgument(field, f"unknown IANA time zone {name!r}")
    try:
        return _load_zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidArgument(field, f"unknown IANA time zone {name!r}") from exc


def local_wall(instant: datetime, zone: ZoneInfo) -> datetime:
    """The naive local wall-clock reading of `instant` in `zone`."""
    return instant.astimezone(zone).replace(tzinfo=None)


def in_window(wall: time, start: time, end: time) -> bool:
    """Whether wall time `wall` lies in [start, end), a window that may wrap past midnight."""
    if start == end:
        return False
    if start < end:
        return start <= wall < end
    return wall >= start or wall < end


def is_quiet(instant: datetime, zone: ZoneInfo, start: time, end: time) -> bool:
    """Whether `instant` falls in the quiet window [start, end) of the fan's local wall clock."""
    return in_window(local_wall(instant, zone).time(), start, end)


def first_instant_at(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The earliest instant on local `day` whose wall clock reads `wall` or later (UTC).

    Normal and repeated wall times give their first occurrence; a wall time inside a DST gap gives
    the transition instant that skips over it.
    """
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if local_wall(first, zone) == naive:
        # In an overlap fold=0 is the earlier reading; otherwise both folds agree.
        return first
    # A gap: the two fold readings bracket the transition that skips `wall`.
    other = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    lo = min(first, other)
    return _next_transition(lo, max(first, other), zone, _offset(lo, zone))


def quiet_end(instant: datetime, zone: ZoneInfo, start: time, end: time) -> datetime:
    """The earliest instant at or after `instant` that is outside the quiet window [start, end).

    Returns `instant` itself when it is not quiet. Walks forward one offset period at a time: within
    a period the wall clock runs linearly, so the window ends when it reads `end`; a DST transition
    on the way may end the window early (a jump out of it) or move the wall clock and restart the
    count. Assumes at most one transition per step, which holds for every zone's modern rules.
    """
    t = instant
    for _ in range(8):
        local = t.astimezone(zone)
        wall = local.replace(tzinfo=None)
        if not in_window(wall.time(), start, end):
            return t
        until_end = (datetime.combine(wall.date(), end) - wall) % _DAY
        candidate = t + until_end
        offset = local.utcoffset()
        if _offset(candidate, zone) == offset:
            return candidate
        t = _next_transition(t, candidate, zone, offset)
    raise ValueError(f"no end of quiet window {start}-{end} after {instant} in {zone.key}")


def next_wall_time(instant: datetime, zone: ZoneInfo, wall: time) -> datetime:
    """The first instant strictly after `instant` whose local wall clock reads `wall` (UTC)."""
    day = local_wall(instant, zone).date()
    for offset in range(3):
        candidate = first_instant_at(day + timedelta(days=offset), wall, zone)
        if candidate > instant:
            return candidate
    raise ValueError(f"no {wall} after {instant} in {zone.key}")


_DAY = timedelta(days=1)


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta | None:
    return instant.astimezone(zone).utcoffset()


def _next_transition(lo: datetime, hi: datetime, zone: ZoneInfo, offset: timedelta | None) -> datetime:
    """The first instant in (lo, hi] whose UTC offset differs from `offset` (the one in force at lo).

    Bisects on whole seconds: every transition in the tz database falls on a whole second.
    """
    lo_s, hi_s = math.floor(lo.timestamp()), math.ceil(hi.timestamp())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if _offset(datetime.fromtimestamp(mid, UTC), zone) == offset:
            lo_s = mid
        else:
            hi_s = mid
    return datetime.fromtimestamp(hi_s, UTC)
