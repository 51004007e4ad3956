"""The notification outcome log the p(open) / p(disable) models train on: records and a JSON-lines file.

Torch-free, so the simulator and services can write logs without importing the trainer's stack.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LogEvent:
    """One outcome event. `creator_id`, `trigger`, `time_zone` are set on "delivered" events."""

    kind: str  # "delivered" | "opened" | "disabled"
    at: datetime
    notification_id: str
    fan_id: str
    creator_id: str = ""
    trigger: int = 0
    time_zone: str = ""

    def to_json(self) -> str:
        row = asdict(self)
        row["at"] = self.at.isoformat()
        return json.dumps(row, separators=(",", ":"))


@dataclass(frozen=True)
class MembershipRow:
    fan_id: str
    creator_id: str
    tier: int


def write_log(path: Path, events: Iterable[LogEvent], memberships: Iterable[MembershipRow]) -> None:
    """JSON lines: membership rows first, then events."""
    with open(path, "w", encoding="utf-8") as fh:
        for m in memberships:
            fh.write(json.dumps({"kind": "membership", **asdict(m)}, separators=(",", ":")) + "\n")
        for e in events:
            fh.write(e.to_json() + "\n")


def read_log(path: Path) -> tuple[list[LogEvent], list[MembershipRow]]:
    events: list[LogEvent] = []
    memberships: list[MembershipRow] = []
    for row in _lines(path):
        if row["kind"] == "membership":
            memberships.append(MembershipRow(row["fan_id"], row["creator_id"], int(row["tier"])))
        else:
            at = datetime.fromisoformat(row.pop("at")).astimezone(UTC)
            events.append(LogEvent(at=at, **row))
    return events, memberships


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
