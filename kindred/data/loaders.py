"""Loaders that map the public data sets onto Kindred's catalogue and events (for the quality benchmarks).

- HetRec 2011 Last.fm 2k: users → fans, artists → creators (their most-used tags become tags and the top
  tag the category), listening pairs → one event each with value = play count, friendships → undirected.
  The files are tab-separated with a header row and CRLF endings (artists.dat: LF); tags.dat is Latin-1.
  Listening pairs carry no time, so their events are stamped with one fixed time (the data's release).
- MovieLens (ml-latest-small): movies → creators with their genres, ratings → CREATOR_VIEW events at their
  own timestamps with value = the rating (0.5–5), for a temporal-split check.

Ids are prefixed ("u2", "a51", "m1") so a fan and a creator never share an id. Nothing here is copied
into the project: the files are read in place.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from kindred.data.catalogue import Catalogue
from kindred.data.schema import Creator, Fan, Friendship, set_timestamp
from kindred.v1 import events_pb2

HETREC_TIME: Final = 1_304_208_000.0  # 2011-05-01T00:00:00Z: HetRec 2011 release; the pairs have no time
HETREC_TOP_TAGS: Final = 8

EventType = events_pb2.EventType


def _read_tsv(path: Path, encoding: str = "utf-8") -> Iterator[list[str]]:
    """Rows of a tab-separated HetRec file without its header, CR stripped."""
    with path.open(encoding=encoding, newline="") as fh:
        next(fh, None)
        for line in fh:
            line = line.rstrip("\r\n")
            if line:
                yield line.split("\t")


def _event(
    event_id: str, etype: events_pb2.EventType, fan_id: str, creator_id: str, value: float, at: float
) -> events_pb2.Event:
    e = events_pb2.Event(event_id=event_id, type=etype, fan_id=fan_id, creator_id=creator_id, value=value)
    set_timestamp(e.occurred_at, at)
    return e


def load_hetrec_lastfm(
    path: Path, *, event_type: events_pb2.EventType = EventType.EVENT_TYPE_FOLLOW
) -> tuple[Catalogue, list[events_pb2.Event]]:
    """Loads `hetrec2011-lastfm-2k/` → (catalogue, one event per user-artist pair, in file order).

    `event_type` is FOLLOW by default (a listened-to artist is an implicit positive); CREATOR_VIEW is the
    other sensible choice. Every event's value is the play count.
    """
    path = Path(path)
    names = {row[0]: row[1] for row in _read_tsv(path / "artists.dat")}
    tag_names = {row[0]: row[1] for row in _read_tsv(path / "tags.dat", encoding="latin-1")}
    tag_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row in _read_tsv(path / "user_taggedartists.dat"):
        tag_counts[row[1]][row[2]] += 1

    pairs = [(row[0], row[1], float(row[2])) for row in _read_tsv(path / "user_artists.dat")]
    friend_rows = list(_read_tsv(path / "user_friends.dat"))

    artist_ids = sorted(set(names) | {a for _, a, _ in pairs}, key=int)
    creators = []
    for artist in artist_ids:
        # Most-used tags first; ties by tag id so the order is stable.
        ranked = sorted(tag_counts.get(artist, Counter()).items(), key=lambda kv: (-kv[1], int(kv[0])))
        tags = tuple(dict.fromkeys(tag_names[t] for t, _ in ranked if t in tag_names))[:HETREC_TOP_TAGS]
        name = names.get(artist, f"artist {artist}")
        creators.append(
            Creator(
                creator_id=f"a{artist}",
                name=name,
                category=tags[0] if tags else "untagged",
                tags=tags,
                language="",
                description=f"{name}: {', '.join(tags)}" if tags else name,
            )
        )

    user_ids = sorted(
        {u for u, _, _ in pairs} | {r[0] for r in friend_rows} | {r[1] for r in friend_rows}, key=int
    )
    fans = [Fan(fan_id=f"u{u}", locale="", time_zone="UTC") for u in user_ids]
    friendships = sorted(
        {Friendship.undirected(f"u{a}", f"u{b}") for a, b in friend_rows if a != b},
        key=lambda f: (f.fan_id, f.friend_id),
    )
    events = [_event(f"lastfm-{u}-{a}", event_type, f"u{u}", f"a{a}", w, HETREC_TIME) for u, a, w in pairs]
    return Catalogue(fans=fans, creators=creators, posts=[], friendships=friendships), events


def load_movielens(path: Path) -> tuple[Catalogue, list[events_pb2.Event]]:
    """Loads `ml-latest-small/` → (catalogue, one CREATOR_VIEW event per rating, in time order)."""
    path = Path(path)
    creators = []
    with (path / "movies.csv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            genres = tuple(g for g in row["genres"].split("|") if g and g != "(no genres listed)")
            creators.append(
                Creator(
                    creator_id=f"m{row['movieId']}",
                    name=row["title"],
                    category=genres[0] if genres else "unknown",
                    tags=genres,
                    language="",
                    description=f"{row['title']}: {', '.join(genres)}",
                )
            )
    events = []
    users: set[int] = set()
    with (path / "ratings.csv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            user, movie = row["userId"], row["movieId"]
            users.add(int(user))
            events.append(
                _event(
                    f"ml-{user}-{movie}",
                    EventType.EVENT_TYPE_CREATOR_VIEW,
                    f"u{user}",
                    f"m{movie}",
                    float(row["rating"]),
                    float(row["timestamp"]),
                )
            )
    events.sort(key=lambda e: (e.occurred_at.seconds, e.event_id))
    fans = [Fan(fan_id=f"u{u}", locale="", time_zone="UTC") for u in sorted(users)]
    return Catalogue(fans=fans, creators=creators, posts=[], friendships=[]), events
