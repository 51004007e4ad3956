"""The public-data loaders map HetRec Last.fm and MovieLens faithfully (skipped where the data is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kindred.data.loaders import HETREC_TIME, load_hetrec_lastfm, load_movielens
from kindred.v1 import events_pb2

SHARED_DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
LASTFM = SHARED_DATA / "hetrec2011-lastfm-2k"
MOVIELENS = SHARED_DATA / "ml-latest-small"

ET = events_pb2.EventType


@pytest.mark.skipif(not LASTFM.is_dir(), reason=f"HetRec Last.fm not present at {LASTFM} (benchmark data)")
def test_hetrec_lastfm_counts_match_the_published_data() -> None:
    catalogue, events = load_hetrec_lastfm(LASTFM)
    # The figures of ../shared/data/README.md.
    assert len(events) == 92_834
    assert len({e.fan_id for e in events}) == 1_892
    assert len(catalogue.creators) == 17_632
    assert len(catalogue.friendships) == 12_717
    assert all(f.fan_id < f.friend_id for f in catalogue.friendships)
    assert len({e.event_id for e in events}) == len(events)
    first = events[0]
    assert (first.fan_id, first.creator_id, first.value, first.type) == (
        "u2",
        "a51",
        13_883.0,
        ET.EVENT_TYPE_FOLLOW,
    )
    assert first.occurred_at.seconds == HETREC_TIME
    creators = catalogue.creators_by_id()
    assert creators["a51"].name == "Duran Duran"
    assert {e.creator_id for e in events} <= set(creators)
    assert {e.fan_id for e in events} <= {f.fan_id for f in catalogue.fans}


@pytest.mark.skipif(not LASTFM.is_dir(), reason=f"HetRec Last.fm not present at {LASTFM} (benchmark data)")
def test_hetrec_tags_are_decoded_as_latin1_and_ranked_by_use() -> None:
    catalogue, _ = load_hetrec_lastfm(LASTFM, event_type=ET.EVENT_TYPE_CREATOR_VIEW)
    tags = {t for c in catalogue.creators for t in c.tags}
    assert any(not t.isascii() for t in tags), "Latin-1 tags (e.g. accented letters) should survive decoding"
    assert not any("\ufffd" in t or "\r" in t for t in tags)
    by_id = catalogue.creators_by_id()
    assert by_id["a1"].category == by_id["a1"].tags[0]  # the top tag is the category
    assert sum(c.category != "untagged" for c in catalogue.creators) > 10_000


@pytest.mark.skipif(not MOVIELENS.is_dir(), reason=f"MovieLens not present at {MOVIELENS} (benchmark data)")
def test_movielens_ratings_become_timed_events() -> None:
    catalogue, events = load_movielens(MOVIELENS)
    assert len(events) == 100_836
    assert len(catalogue.fans) == 610 and len(catalogue.creators) == 9_742
    times = [e.occurred_at.seconds for e in events]
    assert times == sorted(times)
    assert {e.value for e in events} <= {x / 2 for x in range(1, 11)}
    assert all(e.type == ET.EVENT_TYPE_CREATOR_VIEW for e in events)
    toy_story = catalogue.creators_by_id()["m1"]
    assert toy_story.name == "Toy Story (1995)" and "Animation" in toy_story.tags
