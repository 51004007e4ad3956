"""Catalogue records: fans, creators with tiers, posts and friendships.

Plain frozen dataclasses are the in-memory form every package shares; JSON lines (`to_dict`/`from_dict`)
are the on-disk form under `<data_dir>/catalogue/`; the kindred.v1 messages (`to_proto`/`from_proto`) are
the wire form. Times are float epoch seconds, UTC, everywhere in Python; they become
`google.protobuf.Timestamp` only at the proto boundary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf.timestamp_pb2 import Timestamp

from kindred.v1 import common_pb2

# The creator categories of the generated platform (the real data sets bring their own strings).
CATEGORIES: Final[tuple[str, ...]] = (
    "Podcasts",
    "Music",
    "Gaming",
    "Art",
    "Writing",
    "Video",
    "Comedy",
    "Education",
    "Fitness",
    "Cooking",
    "Technology",
    "Photography",
)

ACCESS_LEVELS: Final[tuple[str, ...]] = ("public", "members", "tier")

_ACCESS_TO_PROTO: Final[dict[str, int]] = {
    "public": common_pb2.ACCESS_LEVEL_PUBLIC,
    "members": common_pb2.ACCESS_LEVEL_MEMBERS,
    "tier": common_pb2.ACCESS_LEVEL_TIER,
}
_ACCESS_FROM_PROTO: Final[dict[int, str]] = {v: k for k, v in _ACCESS_TO_PROTO.items()}


def to_timestamp(epoch_s: float) -> Timestamp:
    """Epoch seconds → Timestamp, exact to the microsecond (floats carry no more than that here)."""
    ts = Timestamp()
    set_timestamp(ts, epoch_s)
    return ts


def set_timestamp(ts: Timestamp, epoch_s: float) -> None:
    """Writes `epoch_s` into an existing Timestamp field (messages' sub-fields cannot be assigned)."""
    micros = round(epoch_s * 1_000_000)
    seconds, micros = divmod(micros, 1_000_000)  # floor division keeps nanos ≥ 0 for negative times
    ts.seconds = seconds
    ts.nanos = micros * 1000


def from_timestamp(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def _str_tuple(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value)


@dataclass(frozen=True, slots=True)
class Tier:
    tier_id: str
    name: str
    price_cents: int
    currency: str = "USD"

    def to_dict(self) -> dict[str, Any]:
        return {
            "tier_id": self.tier_id,
            "name": self.name,
            "price_cents": self.price_cents,
            "currency": self.currency,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Tier:
        return cls(str(d["tier_id"]), str(d["name"]), int(d["price_cents"]), str(d.get("currency", "USD")))

    def to_proto(self) -> common_pb2.Tier:
        return common_pb2.Tier(
            tier_id=self.tier_id, name=self.name, price_cents=self.price_cents, currency=self.currency
        )

    @classmethod
    def from_proto(cls, m: common_pb2.Tier) -> Tier:
        return cls(m.tier_id, m.name, int(m.price_cents), m.currency)


@dataclass(frozen=True, slots=True)
class Fan:
    fan_id: str
    locale: str  # BCP-47, e.g. "en-US"; its language part is the fan's language
    time_zone: str  # IANA name
    interests: tuple[str, ...] = ()  # categories picked at onboarding
    created_at: float = 0.0

    @property
    def language(self) -> str:
        return self.locale.split("-", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "fan_id": self.fan_id,
            "locale": self.locale,
            "time_zone": self.time_zone,
            "interests": list(self.interests),
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fan:
        return cls(
            str(d["fan_id"]),
            str(d.get("locale", "")),
            str(d.get("time_zone", "UTC")),
            _str_tuple(d.get("interests", ())),
            float(d.get("created_at", 0.0)),
        )

    def to_proto(self) -> common_pb2.Fan:
        # kindred.v1.Fan has no created_at: it is catalogue bookkeeping, not something services need.
        return common_pb2.Fan(
            fan_id=self.fan_id, locale=self.locale, time_zone=self.time_zone, interests=list(self.interests)
        )

    @classmethod
    def from_proto(cls, m: common_pb2.Fan) -> Fan:
        return cls(m.fan_id, m.locale, m.time_zone, tuple(m.interests))


@dataclass(frozen=True, slots=True)
class Creator:
    creator_id: str
    name: str
    category: str
    tags: tuple[str, ...] = ()
    language: str = "en"
    tiers: tuple[Tier, ...] = ()
    description: str = ""
    mature: bool = False
    created_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "creator_id": self.creator_id,
            "name": self.name,
            "category": self.category,
            "tags": list(self.tags),
            "language": self.language,
            "tiers": [t.to_dict() for t in self.tiers],
            "description": self.description,
            "mature": self.mature,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Creator:
        return cls(
            creator_id=str(d["creator_id"]),
            name=str(d.get("name", "")),
            category=str(d.get("category", "")),
            tags=_str_tuple(d.get("tags", ())),
            language=str(d.get("language", "")),
            tiers=tuple(Tier.from_dict(t) for t in d.get("tiers", ())),
            description=str(d.get("description", "")),
            mature=bool(d.get("mature", False)),
            created_at=float(d.get("created_at", 0.0)),
        )

    def to_proto(self) -> common_pb2.Creator:
        return common_pb2.Creator(
            creator_id=self.creator_id,
            name=self.name,
            category=self.category,
            tags=list(self.tags),
            language=self.language,
            tiers=[t.to_proto() for t in self.tiers],
            description=self.description,
            mature=self.mature,
            created_at=to_timestamp(self.created_at),
        )

    @classmethod
    def from_proto(cls, m: common_pb2.Creator) -> Creator:
        return cls(
            creator_id=m.creator_id,
            name=m.name,
            category=m.category,
            tags=tuple(m.tags),
            language=m.language,
            tiers=tuple(Tier.from_proto(t) for t in m.tiers),
            description=m.description,
            mature=m.mature,
            created_at=from_timestamp(m.created_at) if m.HasField("created_at") else 0.0,
        )


@dataclass(frozen=True, slots=True)
class Post:
    post_id: str
    creator_id: str
    title: str
    text: str
    access_level: str  # one of ACCESS_LEVELS
    published_at: float
    category: str = ""
    language: str = ""

    def __post_init__(self) -> None:
        if self.access_level not in _ACCESS_TO_PROTO:
            raise ValueError(
                f"post {self.post_id}: access_level {self.access_level!r} not in {ACCESS_LEVELS}"
            )
        if math.isnan(self.published_at):
            raise ValueError(f"post {self.post_id}: published_at is NaN")

    def to_dict(self) -> dict[str, Any]:
        return {
            "post_id": self.post_id,
            "creator_id": self.creator_id,
            "title": self.title,
            "text": self.text,
            "access_level": self.access_level,
            "published_at": self.published_at,
            "category": self.category,
            "language": self.language,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Post:
        return cls(
            post_id=str(d["post_id"]),
            creator_id=str(d["creator_id"]),
            title=str(d.get("title", "")),
            text=str(d.get("text", "")),
            access_level=str(d.get("access_level", "public")),
            published_at=float(d.get("published_at", 0.0)),
            category=str(d.get("category", "")),
            language=str(d.get("language", "")),
        )

    def to_proto(self) -> common_pb2.Post:
        return common_pb2.Post(
            post_id=self.post_id,
            creator_id=self.creator_id,
            title=self.title,
            text=self.text,
            access_level=_ACCESS_TO_PROTO[self.access_level],  # type: ignore[arg-type]
            published_at=to_timestamp(self.published_at),
            category=self.category,
            language=self.language,
        )

    @classmethod
    def from_proto(cls, m: common_pb2.Post) -> Post:
        return cls(
            post_id=m.post_id,
            creator_id=m.creator_id,
            title=m.title,
            text=m.text,
            access_level=_ACCESS_FROM_PROTO.get(int(m.access_level), "public"),
            published_at=from_timestamp(m.published_at),
            category=m.category,
            language=m.language,
        )


@dataclass(frozen=True, slots=True)
class Friendship:
    """An undirected friendship, stored once per pair (catalogues keep `fan_id < friend_id`)."""

    fan_id: str
    friend_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"fan_id": self.fan_id, "friend_id": self.friend_id}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Friendship:
        return cls(str(d["fan_id"]), str(d["friend_id"]))

    def to_proto(self) -> tuple[str, str]:
        # kindred.v1 has no Friendship message: the social graph stays server-side.
        return (self.fan_id, self.friend_id)

    @classmethod
    def from_proto(cls, m: tuple[str, str]) -> Friendship:
        return cls(m[0], m[1])

    @classmethod
    def undirected(cls, a: str, b: str) -> Friendship:
        """The canonical record of the pair {a, b}."""
        return cls(a, b) if a <= b else cls(b, a)
