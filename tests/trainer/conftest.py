"""A small synthetic platform for trainer tests: a catalogue plus columnar events with real structure.

Each fan loves one category: it views creators of that category (and, less often, others), and follows
some of the ones it viewed. Popularity differs by creator. Enough signal that a model can beat chance,
small enough that every test runs in well under a second of feature building.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from kindred.data.catalogue import Catalogue
from kindred.data.schema import CATEGORIES, Creator, Fan, Post, Tier
from kindred.features import Interactions
from kindred.v1 import events_pb2

ET = events_pb2.EventType
DAY = 86_400.0
T0 = 1_750_000_000.0


def make_platform(
    n_fans: int = 60, n_creators: int = 16, days: int = 20, seed: int = 0
) -> tuple[Catalogue, Interactions]:
    rng = np.random.default_rng(seed)
    cats = CATEGORIES[:4]
    creators = [
        Creator(
            creator_id=f"c{i:03d}",
            name=f"Creator {i}",
            category=cats[i % 4],
            language="en" if i % 3 else "es",
            tiers=(Tier(f"t{i}a", f"T{i}", 300 + 100 * (i % 5)),),
            mature=i % 7 == 0,
            created_at=T0 - 100 * DAY,
        )
        for i in range(n_creators)
    ]
    fans = [
        Fan(
            fan_id=f"f{i:04d}",
            locale="en-US" if i % 4 else "es-ES",
            time_zone="UTC",
            interests=(cats[i % 4],),
            created_at=T0 - 50 * DAY,
        )
        for i in range(n_fans)
    ]
    posts = [
        Post(
            post_id=f"p{c.creator_id}-{k}",
            creator_id=c.creator_id,
            title="t",
            text="x",
            access_level="public",
            published_at=T0 + k * 3 * DAY,
            category=c.category,
            language=c.language,
        )
        for c in creators
        for k in range(days // 3)
    ]
    pop = rng.lognormal(0, 1, n_creators)
    records: list[dict[str, object]] = []
    for f_i, fan in enumerate(fans):
        loved = f_i % 4
        weights = np.array([pop[c] * (6.0 if c % 4 == loved else 0.5) for c in range(n_creators)])
        weights /= weights.sum()
        followed: set[int] = set()
        for _ in range(rng.poisson(12)):
            c = int(rng.choice(n_creators, p=weights))
            t = T0 + rng.random() * days * DAY
            records.append(
                {
                    "fan_id": fan.fan_id,
                    "creator_id": f"c{c:03d}",
                    "event_type": ET.EVENT_TYPE_CREATOR_VIEW,
                    "ts": t,
                    "value": 10.0,
                }
            )
            if c not in followed and rng.random() < 0.5:
                followed.add(c)
                records.append(
                    {
                        "fan_id": fan.fan_id,
                        "creator_id": f"c{c:03d}",
                        "event_type": ET.EVENT_TYPE_FOLLOW,
                        "ts": t + 30.0,
                        "value": 1.0,
                    }
                )
    catalogue = Catalogue(fans=fans, creators=creators, posts=posts)
    return catalogue, Interactions.from_records(sorted(records, key=lambda r: float(r["ts"])))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def platform() -> tuple[Catalogue, Interactions]:
    return make_platform()


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Small models on a shared 2-core machine: one thread is faster and keeps timings stable.
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
