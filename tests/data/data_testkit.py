"""Shared helpers for the data tests (imported by name: pytest puts this directory on sys.path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kindred.data.catalogue import Catalogue
from kindred.data.generate import GenerateSummary, generate_platform
from kindred.eventlog import EventLog
from kindred.v1 import events_pb2

# Small enough to generate in about two seconds, big enough for the signal checks to be meaningful.
PLATFORM: dict[str, int] = {"fans": 500, "creators": 100, "days": 21, "seed": 3}


@dataclass
class Platform:
    data_dir: Path
    summary: GenerateSummary
    catalogue: Catalogue
    events: list[events_pb2.Event]


def make_platform(data_dir: Path) -> Platform:
    summary = generate_platform(
        data_dir,
        fans=PLATFORM["fans"],
        creators=PLATFORM["creators"],
        days=PLATFORM["days"],
        seed=PLATFORM["seed"],
        progress=False,
    )
    with EventLog(data_dir / "events") as log:
        events = list(log.read())
    return Platform(data_dir, summary, Catalogue.load(data_dir), events)
