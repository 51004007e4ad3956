"""Instants as integer microseconds since the epoch, the form both state backends store.

Exact in sqlite and in a Redis score (a double: < 2**53), so spacing computed on read-back is
never off by rounding.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_us(instant: datetime) -> int:
    return (instant - _EPOCH) // _US


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)
