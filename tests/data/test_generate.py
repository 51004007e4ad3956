"""The generated platform: deterministic, internally consistent, and carrying learnable signal."""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import hashlib
import json
import math
import zoneinfo
from pathlib import Path

import numpy as np
import pytest
from data_testkit import PLATFORM, Platform

from events_svc.domain import validate_event
from kindred.data.catalogue import Catalogue
from kindred.data.generate import (
    DEFAULT_END_TIME,
    GeneratorConfig,
    add_generate_arguments,
    build_world,
    generate_platform,
    run_generate,
)
from kindred.data.schema import CATEGORIES
from kindred.v1 import events_pb2

ET = events_pb2.EventType
INTERACTIONS = {
    ET.EVENT_TYPE_FOLLOW,
    ET.EVENT_TYPE_CREATOR_VIEW,
    ET.EVENT_TYPE_POST_VIEW,
    ET.EVENT_TYPE_MEMBERSHIP_START,
}


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != "LOCK"
    }


def _t(e: events_pb2.Event) -> float:
    return e.occurred_at.seconds + e.occurred_at.nanos / 1e9


# --- determinism and bookkeeping ---


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    small = {"fans": 150, "creators": 40, "days": 5, "progress": False}
    generate_platform(tmp_path / "a", seed=11, **small)  # type: ignore[arg-type]
    generate_platform(tmp_path / "b", seed=11, **small)  # type: ignore[arg-type]
    generate_platform(tmp_path / "c", seed=12, **small)  # type: ignore[arg-type]
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert "events/segment-00000001.log" in a and "catalogue/posts.jsonl" in a
    assert a["events/segment-00000001.log"] != c["events/segment-00000001.log"]
    assert a["catalogue/creators.jsonl"] != c["catalogue/creators.jsonl"]


def test_refuses_to_mix_two_worlds_unless_overwriting(tmp_path: Path) -> None:
    small = {"fans": 30, "creators": 10, "days": 2, "progress": False}
    generate_platform(tmp_path, seed=1, **small)  # type: ignore[arg-type]
    with pytest.raises(FileExistsError):
        generate_platform(tmp_path, seed=2, **small)  # type: ignore[arg-type]
    summary = generate_platform(tmp_path, seed=2, overwrite=True, **small)  # type: ignore[arg-type]
    from kindred.eventlog import EventLog

    with EventLog(tmp_path / "events") as log:
        assert sum(1 for _ in log.read()) == summary.events
        assert all(e.event_id.startswith("g2-") for e in log.read())


def test_summary_matches_what_was_written(platform: Platform) -> None:
    s = platform.summary
    assert (s.fans, s.creators) == (PLATFORM["fans"], PLATFORM["creators"])
    assert s.posts == len(platform.catalogue.posts) > 0
    assert s.events == len(platform.events) == sum(s.events_by_type.values())
    assert s.end_time == DEFAULT_END_TIME and s.start_time == DEFAULT_END_TIME - PLATFORM["days"] * 86_400
    every_type = {ET.Name(v).removeprefix("EVENT_TYPE_").lower() for v in ET.values()} - {"unspecified"}
    assert set(s.events_by_type) == every_type, "every event type should occur"
    meta = json.loads((platform.data_dir / "catalogue" / "generated.json").read_text())
    assert meta["generator"]["seed"] == PLATFORM["seed"] and meta["events"] == s.events


# --- consistency ---


def test_events_are_valid_ordered_unique_and_reference_the_catalogue(platform: Platform) -> None:
    cat = platform.catalogue
    fans, creators, posts = cat.fans_by_id(), cat.creators_by_id(), cat.posts_by_id()
    times = [_t(e) for e in platform.events]
    assert times == sorted(times)
    assert len({e.event_id for e in platform.events}) == len(platform.events)
    for i, e in enumerate(platform.events):
        assert validate_event(e, i, now=DEFAULT_END_TIME) is None, e
        assert e.fan_id in fans
        assert not e.creator_id or e.creator_id in creators
        if e.post_id:
            post = posts[e.post_id]
            assert post.creator_id == e.creator_id and post.published_at <= _t(e) + 1e-3
        if e.tier_id:
            assert e.tier_id in {t.tier_id for t in creators[e.creator_id].tiers}
        if e.type in INTERACTIONS and e.creator_id:
            assert _t(e) >= creators[e.creator_id].created_at


def test_catalogue_is_plausible(platform: Platform) -> None:
    cat = platform.catalogue
    assert {c.category for c in cat.creators} <= set(CATEGORIES)
    assert all(1 <= len(c.tiers) <= 3 for c in cat.creators)
    assert all(
        a.price_cents < b.price_cents
        for c in cat.creators
        for a, b in zip(c.tiers, c.tiers[1:], strict=False)
    )
    assert len({f.locale for f in cat.fans}) >= 5 and len({c.language for c in cat.creators}) >= 4
    assert all(zoneinfo.ZoneInfo(f.time_zone) for f in cat.fans)
    assert all(p.title and len(p.text.split()) >= 10 for p in cat.posts)
    assert all(f.fan_id < f.friend_id for f in cat.friendships)
    # Cold start exists on purpose: some creators and fans appear inside the window.
    start = platform.summary.start_time
    assert any(c.created_at > start for c in cat.creators) and any(f.created_at > start for f in cat.fans)


# --- signal ---


def test_fans_interact_far_more_with_their_interest_categories_than_chance(platform: Platform) -> None:
    cat = platform.catalogue
    fans, creators = cat.fans_by_id(), cat.creators_by_id()
    share = collections.Counter(c.category for c in cat.creators)
    hits = chance = n = 0.0
    for e in platform.events:
        interests = fans[e.fan_id].interests
        if e.type in INTERACTIONS and interests:
            n += 1
            hits += creators[e.creator_id].category in interests
            chance += sum(share[i] for i in interests) / len(cat.creators)
    assert hits / n > 2.0 * chance / n


def test_fans_prefer_creators_in_their_language(platform: Platform) -> None:
    cat = platform.catalogue
    fans, creators = cat.fans_by_id(), cat.creators_by_id()
    pairs = [
        (fans[e.fan_id].language, creators[e.creator_id].language)
        for e in platform.events
        if e.type in INTERACTIONS
    ]
    observed = sum(a == b for a, b in pairs) / len(pairs)
    fan_lang = collections.Counter(a for a, _ in pairs)
    creator_lang = collections.Counter(c.language for c in cat.creators)
    independent = sum(fan_lang[k] / len(pairs) * creator_lang[k] / len(cat.creators) for k in fan_lang)
    assert observed > independent + 0.2


def test_popularity_is_heavy_tailed(platform: Platform) -> None:
    counts = collections.Counter(e.creator_id for e in platform.events if e.type in INTERACTIONS)
    ranked = sorted(counts.values(), reverse=True)
    top_decile = sum(ranked[: len(ranked) // 10]) / sum(ranked)
    assert top_decile > 0.3  # uniform popularity would give 0.1


def _recall_at_10(platform: Platform, scorer_name: str) -> float:
    """Held-out follows of the last week: rank every creator the fan has not interacted with before."""
    cat = platform.catalogue
    creators = cat.creators
    cids = [c.creator_id for c in creators]
    index = {c: i for i, c in enumerate(cids)}
    cut = platform.summary.end_time - 7 * 86_400
    train = [e for e in platform.events if e.type in INTERACTIONS and _t(e) < cut]
    pop = np.ones(len(cids))
    seen: dict[str, set[int]] = collections.defaultdict(set)
    cat_profile: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    lang_profile: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for e in train:
        c = index[e.creator_id]
        pop[c] += 1
        seen[e.fan_id].add(c)
        cat_profile[e.fan_id][creators[c].category] += 1
        lang_profile[e.fan_id][creators[c].language] += 1
    truth: dict[str, set[int]] = collections.defaultdict(set)
    for e in platform.events:
        if e.type == ET.EVENT_TYPE_FOLLOW and _t(e) >= cut and index[e.creator_id] not in seen[e.fan_id]:
            truth[e.fan_id].add(index[e.creator_id])
    categories = np.array([c.category for c in creators])
    languages = np.array([c.language for c in creators])
    hits = total = 0
    for fan, items in truth.items():
        scores = np.log(pop)
        if scorer_name == "taste":
            cats, langs = cat_profile[fan], lang_profile[fan]
            cat_p = np.array([(cats[k] + 0.5) / (sum(cats.values()) + 6.0) for k in categories])
            lang_p = np.array([(langs[k] + 0.5) / (sum(langs.values()) + 3.0) for k in languages])
            scores = scores + 1.5 * np.log(cat_p) + np.log(lang_p)
        scores[list(seen[fan])] = -math.inf
        top = set(np.argsort(-scores, kind="stable")[:10].tolist())
        hits += len(top & items)
        total += len(items)
    assert total > 200, "too few held-out follows to compare scorers"
    return hits / total


def test_a_taste_aware_scorer_beats_popularity_on_held_out_follows(platform: Platform) -> None:
    popularity = _recall_at_10(platform, "popularity")
    taste = _recall_at_10(platform, "taste")
    assert taste > 1.15 * popularity, (taste, popularity)


def test_friends_share_tastes() -> None:
    world = build_world(GeneratorConfig(fans=400, creators=20, days=1, seed=5))
    taste = world.fan_taste / np.linalg.norm(world.fan_taste, axis=1, keepdims=True)
    friend_pairs = [(a, b) for a, fs in enumerate(world.friends) for b in fs if a < b]
    rng = np.random.default_rng(0)
    random_pairs = rng.integers(0, 400, size=(len(friend_pairs), 2))
    friends_sim = np.mean([taste[a] @ taste[b] for a, b in friend_pairs])
    random_sim = np.mean([taste[a] @ taste[b] for a, b in random_pairs])
    assert friends_sim > random_sim + 0.15


def test_search_clicks_land_on_creators_whose_text_matches_the_query(platform: Platform) -> None:
    creators = platform.catalogue.creators_by_id()
    words: dict[str, set[str]] = collections.defaultdict(set)
    for c in creators.values():
        words[c.creator_id] |= set(f"{c.name} {c.description} {' '.join(c.tags)}".lower().split())
    for p in platform.catalogue.posts:
        words[p.creator_id] |= set(f"{p.title} {p.text}".lower().replace(":", " ").replace(",", " ").split())
    clicks = [e for e in platform.events if e.type == ET.EVENT_TYPE_SEARCH_CLICK]
    matching = sum(bool(set(e.query.split()) & words[e.creator_id]) for e in clicks)
    assert len(clicks) > 100 and matching / len(clicks) > 0.95


def test_notifications_are_opened_less_at_night_and_fatigue_shows(platform: Platform) -> None:
    fans = platform.catalogue.fans_by_id()
    sent: dict[str, tuple[bool, int, int]] = {}  # id → (quiet hours, local hour, n-th send that day)
    per_day: collections.Counter[tuple[str, int]] = collections.Counter()
    opened: set[str] = set()
    for e in platform.events:
        if e.type == ET.EVENT_TYPE_NOTIFICATION_SENT:
            local = dt.datetime.fromtimestamp(_t(e), zoneinfo.ZoneInfo(fans[e.fan_id].time_zone))
            per_day[e.fan_id, e.occurred_at.seconds // 86_400] += 1
            nth = per_day[e.fan_id, e.occurred_at.seconds // 86_400]
            sent[e.attributes["notification_id"]] = (local.hour >= 23 or local.hour < 7, local.hour, nth)
        elif e.type == ET.EVENT_TYPE_NOTIFICATION_OPEN:
            opened.add(e.attributes["notification_id"])

    def rate(ids: list[str]) -> float:
        assert len(ids) > 100
        return sum(n in opened for n in ids) / len(ids)

    night = [n for n, (quiet, _, _) in sent.items() if quiet]
    day = [n for n, (_, hour, _) in sent.items() if 10 <= hour < 21]
    assert rate(night) < 0.75 * rate(day)
    first = [n for n, (_, _, nth) in sent.items() if nth == 1]
    many = [n for n, (_, _, nth) in sent.items() if nth >= 4]
    assert rate(many) < 0.8 * rate(first)


# --- CLI entry ---


def test_cli_entry_generates_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_generate_arguments(parser)
    argv = [
        "--fans",
        "20",
        "--creators",
        "8",
        "--days",
        "2",
        "--seed",
        "4",
        "--data-dir",
        str(tmp_path),
        "--no-progress",
        "--end-date",
        "2025-03-01",
    ]
    assert run_generate(parser.parse_args(argv)) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fans"] == 20 and report["end_time"] == dt.datetime(2025, 3, 1, tzinfo=dt.UTC).timestamp()
    assert len(Catalogue.load(tmp_path).creators) == 8
    assert run_generate(parser.parse_args(argv)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run_generate(parser.parse_args([*argv, "--overwrite"])) == 0
