"""Catalogue records survive JSON lines and the kindred.v1 protos unchanged."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kindred.data.catalogue import Catalogue
from kindred.data.schema import (
    ACCESS_LEVELS,
    CATEGORIES,
    Creator,
    Fan,
    Friendship,
    Post,
    Tier,
    from_timestamp,
    to_timestamp,
)

TIERS = (Tier("c1-t1", "Supporter", 499), Tier("c1-t2", "Insider", 1299, "EUR"))
FAN = Fan("f1", "pt-BR", "America/Sao_Paulo", ("Music", "Art"), 1_700_000_000.25)
CREATOR = Creator(
    "c1", "Velvet Groove", "Music", ("music", "jazz"), "pt", TIERS, "Jazz à noite", True, 1_690_000_000.5
)
POST = Post(
    "p1", "c1", "Episode 3: jazz", "Saxophone trio — ao vivo", "tier", 1_700_000_123.125, "Music", "pt"
)
FRIENDSHIP = Friendship("f1", "f2")


@pytest.mark.parametrize("record", [TIERS[0], TIERS[1], FAN, CREATOR, POST, FRIENDSHIP])
def test_dict_round_trip_through_json(record: object) -> None:
    restored = type(record).from_dict(json.loads(json.dumps(record.to_dict())))  # type: ignore[attr-defined]
    assert restored == record


@pytest.mark.parametrize("record", [TIERS[1], CREATOR, POST])
def test_proto_round_trip(record: object) -> None:
    message = record.to_proto()  # type: ignore[attr-defined]
    reparsed = type(message).FromString(message.SerializeToString())
    assert type(record).from_proto(reparsed) == record  # type: ignore[attr-defined]


def test_fan_proto_keeps_everything_but_created_at() -> None:
    message = FAN.to_proto()
    assert list(message.interests) == ["Music", "Art"]
    assert Fan.from_proto(message) == dataclasses.replace(FAN, created_at=0.0)


def test_post_access_levels_map_to_distinct_enum_values() -> None:
    values = {dataclasses.replace(POST, access_level=a).to_proto().access_level for a in ACCESS_LEVELS}
    assert len(values) == len(ACCESS_LEVELS) and 0 not in values


def test_post_rejects_unknown_access_level() -> None:
    with pytest.raises(ValueError, match="access_level"):
        dataclasses.replace(POST, access_level="secret")


def test_records_are_frozen_and_slotted() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        FAN.fan_id = "other"  # type: ignore[misc]
    assert not hasattr(FAN, "__dict__")


def test_categories_are_unique() -> None:
    assert len(set(CATEGORIES)) == len(CATEGORIES) >= 10


def test_friendship_undirected_is_canonical() -> None:
    assert Friendship.undirected("f9", "f1") == Friendship.undirected("f1", "f9") == Friendship("f1", "f9")


@given(st.floats(min_value=-2e9, max_value=4e9, allow_nan=False))
def test_timestamps_round_trip_to_the_microsecond(t: float) -> None:
    ts = to_timestamp(t)
    assert 0 <= ts.nanos < 1_000_000_000
    assert from_timestamp(ts) == pytest.approx(t, abs=1e-6)


def test_catalogue_write_and_load(tmp_path: Path) -> None:
    catalogue = Catalogue(
        fans=[FAN, Fan("f2", "en-US", "America/New_York")],
        creators=[CREATOR],
        posts=[POST],
        friendships=[FRIENDSHIP],
    )
    directory = catalogue.write(tmp_path)
    assert sorted(p.name for p in directory.iterdir()) == [
        "creators.jsonl",
        "fans.jsonl",
        "friends.jsonl",
        "posts.jsonl",
    ]
    assert Catalogue.load(tmp_path) == catalogue
    assert Catalogue.exists(tmp_path)
    assert catalogue.friends_of() == {"f1": {"f2"}, "f2": {"f1"}}
    assert catalogue.posts_by_creator() == {"c1": [POST]}


def test_catalogue_load_tolerates_missing_files_and_names_bad_lines(tmp_path: Path) -> None:
    directory = tmp_path / "catalogue"
    directory.mkdir()
    (directory / "creators.jsonl").write_text(json.dumps(CREATOR.to_dict()) + "\n\n")
    loaded = Catalogue.load(tmp_path)
    assert loaded.creators == [CREATOR] and loaded.posts == [] and loaded.fans == []
    (directory / "fans.jsonl").write_text('{"locale": "en-US"}\n')
    with pytest.raises(ValueError, match=r"fans.jsonl:1"):
        Catalogue.load(tmp_path)


def test_catalogue_load_without_directory_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="kindred generate"):
        Catalogue.load(tmp_path)
