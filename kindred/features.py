"""The one feature builder shared by the trainer and the services (numpy only: no torch, no ray).

Two layers, both pure functions:

1. **Rows.** `build_fan_rows` / `build_creator_rows` aggregate behaviour events (columnar
   `Interactions`, every event strictly before `as_of`) plus the catalogue into plain JSON-able dicts.
   These dicts are exactly what the online store holds under the namespaces "fan" and "creator", and
   what the trainer writes to Parquet. `build_popular_lists` derives the "popular" namespace.
2. **Vectors.** `user_tower_features`, `creator_tower_features` and `ranker_features` turn rows into
   float32 vectors in the fixed orders `USER_TOWER_FEATURES`, `CREATOR_TOWER_FEATURES` and
   `RANKER_FEATURES`. Every model manifest records the order it was trained with, and
   `kindred.models.load_model` refuses a model whose order differs from these lists.

The trainer builds rows "as of" past cut-off times and calls the vector functions on them; the services
read the rows from the online store and call the same vector functions. One code path, so there is no
train/serve skew to chase. Missing rows (a fan who signed up after the last training run) are `None` or
`{}` and produce well-defined defaults: zero counts, no history, `has_row = 0`.

Scaling is deliberately simple and fixed (log1p counts, capped ratios): the models standardise their
inputs with statistics stored inside the exported ONNX graph, so serving feeds these raw values.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from kindred.data.schema import CATEGORIES, Creator, Fan, Post
from kindred.v1 import events_pb2

FloatArray = npt.NDArray[np.float32]
Row = Mapping[str, Any]

# Bumped whenever the row layout or a vector's meaning changes; recorded in rows and manifests.
FEATURE_SCHEMA_VERSION: Final = 1

DAY: Final = 86_400.0

# Languages with their own one-hot slot; anything else lands in "other". The generated platform and
# the public data sets only use these; a new market gets a slot (and a schema version bump) when it matters.
LANGUAGES: Final[tuple[str, ...]] = ("en", "es", "pt", "fr", "de", "it", "ja", "ko")

# Candidate sources the ranker can tell apart (kindred.v1.CandidateSource names, without the prefix).
SOURCES: Final[tuple[str, ...]] = (
    "two_tower",
    "popular",
    "item_to_item",
    "mf",
    "social",
    "followed_fresh",
    "trending",
    "search",
    "other",
)

# Hashed bag of the fan's history: lets a fixed-width MLP see *which* creators a fan engaged with without
# a creator vocabulary in the serving path (a vocabulary would tie the feature vector to one model version).
HISTORY_BUCKETS: Final = 256
# How many top creators a fan row keeps (also what the services use to exclude already-known creators).
HISTORY_LEN: Final = 100

# How much one event of each type says about a fan's interest in a creator. Zero-weight types are not
# interactions (a notification sent is something we did, not something the fan did).
ET = events_pb2.EventType
INTERACTION_WEIGHTS: Final[Mapping[int, float]] = {
    ET.EVENT_TYPE_FOLLOW: 3.0,
    ET.EVENT_TYPE_MEMBERSHIP_START: 5.0,
    ET.EVENT_TYPE_POST_VIEW: 0.5,
    ET.EVENT_TYPE_POST_LIKE: 1.5,
    ET.EVENT_TYPE_SEARCH_CLICK: 2.0,
    ET.EVENT_TYPE_NOTIFICATION_OPEN: 1.0,
    ET.EVENT_TYPE_CREATOR_VIEW: 1.0,
}
# Per-type counts kept in the fan row (name → event type).
COUNTED_TYPES: Final[Mapping[str, int]] = {
    "follows": ET.EVENT_TYPE_FOLLOW,
    "unfollows": ET.EVENT_TYPE_UNFOLLOW,
    "memberships": ET.EVENT_TYPE_MEMBERSHIP_START,
    "post_views": ET.EVENT_TYPE_POST_VIEW,
    "post_likes": ET.EVENT_TYPE_POST_LIKE,
    "searches": ET.EVENT_TYPE_SEARCH,
    "search_clicks": ET.EVENT_TYPE_SEARCH_CLICK,
    "creator_views": ET.EVENT_TYPE_CREATOR_VIEW,
    "notifications_sent": ET.EVENT_TYPE_NOTIFICATION_SENT,
    "notifications_opened": ET.EVENT_TYPE_NOTIFICATION_OPEN,
}
# Popularity decays with this half-life, so "popular" means popular lately, not popular once.
POPULARITY_HALF_LIFE_DAYS: Final = 7.0
RECENCY_CAP_DAYS: Final = 90.0


# --------------------------------------------------------------------------------------------------
# Feature orders. Names are the contract with exported models: append-only within a schema version.
# --------------------------------------------------------------------------------------------------

_FAN_SCALARS: Final[tuple[str, ...]] = (
    "log_n_events",
    "log_n_follows",
    "log_n_memberships",
    "log_n_post_views",
    "log_n_post_likes",
    "log_n_searches",
    "log_n_search_clicks",
    "log_n_creator_views",
    "log_n_creators",
    "log_active_days",
    "recency",
    "has_history",
    "log_price_level",
    "notif_open_rate",
)
USER_TOWER_FEATURES: Final[tuple[str, ...]] = (
    *_FAN_SCALARS,
    *(f"affinity:{c}" for c in CATEGORIES),
    *(f"interest:{c}" for c in CATEGORIES),
    *(f"lang:{lang}" for lang in (*LANGUAGES, "other")),
    *(f"hist:{i:03d}" for i in range(HISTORY_BUCKETS)),
)

_CREATOR_SCALARS: Final[tuple[str, ...]] = (
    "has_row",
    "popularity",
    "log_n_fans",
    "log_n_followers",
    "log_n_members",
    "log_n_posts",
    "log_n_posts_30d",
    "trend",
    "log_min_price",
    "mature",
    "log_age_days",
)
CREATOR_TOWER_FEATURES: Final[tuple[str, ...]] = (
    *_CREATOR_SCALARS,
    *(f"category:{c}" for c in CATEGORIES),
    *(f"lang:{lang}" for lang in (*LANGUAGES, "other")),
)

_RANKER_FAN: Final[tuple[str, ...]] = (
    "log_n_events",
    "log_n_follows",
    "log_n_memberships",
    "log_n_creators",
    "log_active_days",
    "recency",
    "has_history",
    "log_price_level",
    "notif_open_rate",
)
_RANKER_CROSS: Final[tuple[str, ...]] = (
    "two_tower_score",
    "two_tower_missing",
    "retrieval_score",
    "category_affinity",
    "category_interest",
    "language_match",
    "price_gap",
    "in_history",
    "history_weight",
    # Facts retrieval knows about every candidate, whichever source proposed it (retrieval_svc's
    # `ItemFacts`): the summed co-engagement similarity to the fan's creators, and how many of the fan's
    # friends follow it. Both squashed to [0, 1) as x / (1 + x), like the sources' own scores.
    "co_engagement",
    "social_friends",
    # The fan-creator ALS score (kindred.mf: the fan folded in from its follows), raw: x · y is already
    # small and centred near 0; 0 where unknown (no known follows, a creator newer than the model).
    "mf_score",
    # The same scores relative to the rest of the candidate list: z-scored over the list (0 for a list
    # of one or of equal scores), and mf's rank in it (1 best, 0 worst). Their raw scales move with the
    # fan's history — a summed similarity and an ALS fold-in grow with the follows — and the ranker
    # learns at training cuts, where every fan has fewer follows than when served; within the list the
    # scale cancels.
    "mf_score_list_z",
    "mf_score_list_rank",
    "co_engagement_list_z",
    "two_tower_score_list_z",
)
# The candidate's scores keys those two facts arrive under (retrieval's Candidate.scores; the mf score's:
# kindred.mf.MF_SCORE_KEY).
CO_ENGAGEMENT_KEY: Final = "co_engagement"
SOCIAL_FRIENDS_KEY: Final = "social_friends"
RANKER_FEATURES: Final[tuple[str, ...]] = (
    *(f"fan.{n}" for n in _RANKER_FAN),
    *(f"creator.{n}" for n in CREATOR_TOWER_FEATURES),
    *(f"cross.{n}" for n in _RANKER_CROSS),
    *(f"source:{s}" for s in SOURCES),
)
# The served models (kindred.models names) and the feature order each must have been trained on: what
# ranking_svc and retrieval_svc load them with, and what `kindred.models.stale_promoted` checks.
SERVED_MODEL_FEATURES: Final[Mapping[str, tuple[str, ...]]] = {
    "ranker": RANKER_FEATURES,
    "two_tower_user": USER_TOWER_FEATURES,
}

_CAT_INDEX: Final[dict[str, int]] = {c: i for i, c in enumerate(CATEGORIES)}
_LANG_INDEX: Final[dict[str, int]] = {lang: i for i, lang in enumerate(LANGUAGES)}


# --------------------------------------------------------------------------------------------------
# Events as columns
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Interactions:
    """Behaviour events as parallel columns (one entry per event), the trainer's working form.

    `creator_id` is "" for events without a creator (e.g. SEARCH). Times are epoch seconds.
    """

    fan_id: npt.NDArray[np.str_]
    creator_id: npt.NDArray[np.str_]
    event_type: npt.NDArray[np.int16]
    ts: npt.NDArray[np.float64]
    value: npt.NDArray[np.float64]
    tier_id: npt.NDArray[np.str_]

    def __post_init__(self) -> None:
        n = len(self.fan_id)
        for f in dataclasses.fields(self):
            if len(getattr(self, f.name)) != n:
                raise ValueError(f"Interactions.{f.name} has {len(getattr(self, f.name))} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.fan_id)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> Interactions:
        """From dicts with keys fan_id, creator_id, event_type (int), ts, and optionally value, tier_id."""
        rows = list(records)
        return cls(
            fan_id=np.array([str(r["fan_id"]) for r in rows], dtype=np.str_),
            creator_id=np.array([str(r.get("creator_id", "")) for r in rows], dtype=np.str_),
            event_type=np.array([int(r["event_type"]) for r in rows], dtype=np.int16),
            ts=np.array([float(r["ts"]) for r in rows], dtype=np.float64),
            value=np.array([float(r.get("value", 0.0)) for r in rows], dtype=np.float64),
            tier_id=np.array([str(r.get("tier_id", "")) for r in rows], dtype=np.str_),
        )

    def select(self, mask: npt.NDArray[np.bool_]) -> Interactions:
        return Interactions(**{f.name: getattr(self, f.name)[mask] for f in dataclasses.fields(self)})

    def before(self, as_of: float) -> Interactions:
        """The events strictly before `as_of` (what was knowable at that time)."""
        return self.select(self.ts < as_of)

    def between(self, start: float, end: float) -> Interactions:
        return self.select((self.ts >= start) & (self.ts < end))

    @property
    def weight(self) -> npt.NDArray[np.float64]:
        """Interest weight of each event (0 for events that are not fan→creator interactions)."""
        lut = np.zeros(max(INTERACTION_WEIGHTS) + 1, dtype=np.float64)
        for event_type, w in INTERACTION_WEIGHTS.items():
            lut[event_type] = w
        et = self.event_type.astype(np.int64)
        out = np.zeros(len(et), dtype=np.float64)
        known = (et >= 0) & (et < len(lut))
        out[known] = lut[et[known]]
        out[self.creator_id == ""] = 0.0
        return out


def pair_weights(events: Interactions) -> tuple[npt.NDArray[Any], ...]:
    """Aggregates interactions per (fan, creator): (fan ids, creator ids, summed weight, last time)."""
    w = events.weight
    keep = w > 0
    fans, creators, w, ts = events.fan_id[keep], events.creator_id[keep], w[keep], events.ts[keep]
    if len(fans) == 0:
        empty = np.array([], dtype=np.str_)
        return empty, empty, np.array([], np.float64), np.array([], np.float64)
    fan_u, fan_i = np.unique(fans, return_inverse=True)
    cre_u, cre_i = np.unique(creators, return_inverse=True)
    key = fan_i.astype(np.int64) * len(cre_u) + cre_i
    pair_u, pair_i = np.unique(key, return_inverse=True)
    total = np.bincount(pair_i, weights=w, minlength=len(pair_u))
    last = np.full(len(pair_u), -np.inf)
    np.maximum.at(last, pair_i, ts)
    return fan_u[pair_u // len(cre_u)], cre_u[pair_u % len(cre_u)], total, last


def following_pairs(events: Interactions) -> dict[str, set[str]]:
    """fan → creators the fan follows or is a member of after `events` (the last start/end wins).

    These are the creators a fan already "has": recommendations exclude them, and discovering a creator
    means starting to follow (or join) one that is not in this set.
    """
    flips = {
        ET.EVENT_TYPE_FOLLOW: ("follow", True),
        ET.EVENT_TYPE_UNFOLLOW: ("follow", False),
        ET.EVENT_TYPE_MEMBERSHIP_START: ("member", True),
        ET.EVENT_TYPE_MEMBERSHIP_END: ("member", False),
    }
    sel = np.isin(events.event_type, np.array(list(flips), dtype=np.int16)) & (events.creator_id != "")
    order = np.argsort(events.ts[sel], kind="stable")
    state: dict[tuple[str, str, str], bool] = {}
    for f, c, t in zip(
        events.fan_id[sel][order].tolist(),
        events.creator_id[sel][order].tolist(),
        events.event_type[sel][order].tolist(),
        strict=True,
    ):
        kind, on = flips[t]
        state[(f, c, kind)] = on
    out: dict[str, set[str]] = {}
    for (f, c, _), on in state.items():
        if on:
            out.setdefault(f, set()).add(c)
    return out


# --------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------


def fan_language(locale: str) -> str:
    return locale.split("-", 1)[0].split("_", 1)[0].lower() if locale else ""


def build_fan_rows(
    events: Interactions,
    fans: Sequence[Fan],
    creators: Sequence[Creator],
    *,
    as_of: float,
) -> dict[str, dict[str, Any]]:
    """One row per catalogue fan (plus any fan seen only in events), from events strictly before `as_of`."""
    events = events.before(as_of)
    creator_category = {c.creator_id: c.category for c in creators}
    tier_price = {t.tier_id: t.price_cents for c in creators for t in c.tiers}
    fan_by_id = {f.fan_id: f for f in fans}
    all_ids = sorted(set(fan_by_id) | set(np.unique(events.fan_id).tolist()))
    index = {fid: i for i, fid in enumerate(all_ids)}
    n = len(all_ids)

    fi = np.array([index[f] for f in events.fan_id.tolist()], dtype=np.int64)
    counts = {
        name: np.bincount(fi[events.event_type == et], minlength=n) for name, et in COUNTED_TYPES.items()
    }
    n_events = np.bincount(fi, minlength=n)
    last = np.full(n, -np.inf)
    first = np.full(n, np.inf)
    if len(fi):
        np.maximum.at(last, fi, events.ts)
        np.minimum.at(first, fi, events.ts)
    day_key = np.unique(fi * 100_000 + np.floor(events.ts / DAY).astype(np.int64) % 100_000)
    active_days = np.bincount(day_key // 100_000, minlength=n)

    # Price level: what the fan pays per membership, from the tier when known, else the event's value.
    is_member = events.event_type == ET.EVENT_TYPE_MEMBERSHIP_START
    prices = np.array(
        [
            float(tier_price.get(t, v))
            for t, v in zip(events.tier_id[is_member].tolist(), events.value[is_member].tolist(), strict=True)
        ]
    )
    price_sum = np.bincount(fi[is_member], weights=prices, minlength=n) if len(prices) else np.zeros(n)
    price_n = np.bincount(fi[is_member], minlength=n)

    following = following_pairs(events)
    pf, pc, pw, plast = pair_weights(events)
    affinity = np.zeros((n, len(CATEGORIES)))
    histories: list[list[tuple[float, float, str]]] = [[] for _ in range(n)]
    for f, c, w, t in zip(pf.tolist(), pc.tolist(), pw.tolist(), plast.tolist(), strict=True):
        i = index[f]
        cat = _CAT_INDEX.get(creator_category.get(c, ""))
        if cat is not None:
            affinity[i, cat] += w
        histories[i].append((w, t, c))

    rows: dict[str, dict[str, Any]] = {}
    for fid, i in index.items():
        fan = fan_by_id.get(fid)
        hist = sorted(histories[i], key=lambda x: (-x[0], -x[1], x[2]))[:HISTORY_LEN]
        aff_total = affinity[i].sum()
        sent, opened = int(counts["notifications_sent"][i]), int(counts["notifications_opened"][i])
        rows[fid] = {
            "fan_id": fid,
            "schema": FEATURE_SCHEMA_VERSION,
            "as_of": float(as_of),
            "locale": fan.locale if fan else "",
            "language": fan_language(fan.locale) if fan else "",
            "interests": list(fan.interests) if fan else [],
            "n_events": int(n_events[i]),
            **{f"n_{name}": int(c[i]) for name, c in counts.items()},
            "n_creators": len(histories[i]),
            "active_days": int(active_days[i]),
            "first_event_at": float(first[i]) if np.isfinite(first[i]) else None,
            "last_event_at": float(last[i]) if np.isfinite(last[i]) else None,
            "category_affinity": [float(a / aff_total) if aff_total > 0 else 0.0 for a in affinity[i]],
            "price_level_cents": float(price_sum[i] / price_n[i]) if price_n[i] else 0.0,
            "notif_open_rate": float(min(1.0, opened / sent)) if sent else 0.0,
            "history": [c for _, _, c in hist],
            "history_weights": [round(float(w), 4) for w, _, _ in hist],
            "following": sorted(following.get(fid, ())),
        }
    return rows


def build_creator_rows(
    events: Interactions,
    creators: Sequence[Creator],
    posts: Sequence[Post],
    *,
    as_of: float,
) -> dict[str, dict[str, Any]]:
    """One row per catalogue creator, from events and posts strictly before `as_of`."""
    events = events.before(as_of)
    ids = [c.creator_id for c in creators]
    index = {cid: i for i, cid in enumerate(ids)}
    n = len(ids)
    known = np.array([c in index for c in events.creator_id.tolist()], dtype=bool)
    ev = events.select(known)
    ci = np.array([index[c] for c in ev.creator_id.tolist()], dtype=np.int64)
    w = ev.weight
    age = (as_of - ev.ts) / DAY
    engagement = np.bincount(ci, weights=w, minlength=n)
    engagement_7d = np.bincount(ci[age <= 7], weights=w[age <= 7], minlength=n)
    decayed = np.bincount(ci, weights=w * np.exp2(-age / POPULARITY_HALF_LIFE_DAYS), minlength=n)
    n_events = np.bincount(ci[w > 0], minlength=n)
    span_days = max(7.0, float((as_of - ev.ts.min()) / DAY)) if len(ev) else 7.0

    def net_count(start: int, end: int) -> npt.NDArray[np.int64]:
        # Distinct fans whose starts outnumber their ends: current followers / members.
        sel = (ev.event_type == start) | (ev.event_type == end)
        sign = np.where(ev.event_type[sel] == start, 1, -1)
        out = np.zeros(n, dtype=np.int64)
        net: dict[tuple[int, str], int] = {}
        for c, f, s in zip(ci[sel].tolist(), ev.fan_id[sel].tolist(), sign.tolist(), strict=True):
            net[(c, f)] = net.get((c, f), 0) + s
        for (c, _), v in net.items():
            out[c] += v > 0
        return out

    followers = net_count(ET.EVENT_TYPE_FOLLOW, ET.EVENT_TYPE_UNFOLLOW)
    members = net_count(ET.EVENT_TYPE_MEMBERSHIP_START, ET.EVENT_TYPE_MEMBERSHIP_END)
    engaged = w > 0
    pairs = {(c, f) for c, f in zip(ci[engaged].tolist(), ev.fan_id[engaged].tolist(), strict=True)}
    n_fans = np.bincount(np.array([c for c, _ in pairs], dtype=np.int64), minlength=n)

    n_posts = np.zeros(n, dtype=np.int64)
    n_posts_30d = np.zeros(n, dtype=np.int64)
    for p in posts:
        i = index.get(p.creator_id)
        if i is None or p.published_at >= as_of:
            continue
        n_posts[i] += 1
        n_posts_30d[i] += (as_of - p.published_at) <= 30 * DAY

    log_dec = np.log1p(decayed)
    top = float(log_dec.max()) if n else 0.0
    popularity = log_dec / top if top > 0 else np.zeros(n)
    rows: dict[str, dict[str, Any]] = {}
    for c, i in index.items():
        creator = creators[i]
        prices = [t.price_cents for t in creator.tiers]
        expected_7d = engagement[i] * 7.0 / span_days
        rows[c] = {
            "creator_id": c,
            "schema": FEATURE_SCHEMA_VERSION,
            "as_of": float(as_of),
            "category": creator.category,
            "language": creator.language,
            "mature": bool(creator.mature),
            "created_at": float(creator.created_at),
            "n_tiers": len(prices),
            "min_price_cents": float(min(prices)) if prices else 0.0,
            "n_posts": int(n_posts[i]),
            "n_posts_30d": int(n_posts_30d[i]),
            "n_fans": int(n_fans[i]),
            "n_followers": int(followers[i]),
            "n_members": int(members[i]),
            "n_events": int(n_events[i]),
            "engagement": round(float(engagement[i]), 4),
            "engagement_7d": round(float(engagement_7d[i]), 4),
            "popularity_raw": round(float(decayed[i]), 6),
            "popularity": round(float(popularity[i]), 6),
            "trend": round(float(math.log((engagement_7d[i] + 1.0) / (expected_7d + 1.0))), 6),
        }
    return rows


def build_popular_lists(creator_rows: Mapping[str, Row], *, k: int = 500) -> dict[str, dict[str, list[Any]]]:
    """The "popular" namespace: key "global", "category:<c>" and "language:<l>" → ordered ids and scores."""
    ordered = sorted(
        creator_rows.values(), key=lambda r: (-float(r.get("popularity_raw", 0.0)), r["creator_id"])
    )
    groups: dict[str, list[Row]] = {"global": ordered}
    for r in ordered:
        groups.setdefault(f"category:{r.get('category', '')}", []).append(r)
        groups.setdefault(f"language:{r.get('language', '')}", []).append(r)
    return {
        key: {
            "creator_ids": [r["creator_id"] for r in rs[:k]],
            "scores": [float(r.get("popularity", 0.0)) for r in rs[:k]],
        }
        for key, rs in groups.items()
    }


# --------------------------------------------------------------------------------------------------
# Vectors
# --------------------------------------------------------------------------------------------------


def history_bucket(creator_id: str) -> int:
    """Stable bucket of a creator id (crc32, not `hash()`, which is salted per process)."""
    return zlib.crc32(creator_id.encode("utf-8")) % HISTORY_BUCKETS


def _f(row: Row, key: str, default: float = 0.0) -> float:
    v = row.get(key)
    if v is None:
        return default
    try:
        x = float(v)
    except (TypeError, ValueError):
        return default
    return x if math.isfinite(x) else default


def _recency(row: Row, now: float | None) -> float:
    last = row.get("last_event_at")
    if last is None:
        return 1.0
    ref = now if now is not None else _f(row, "as_of", time.time())
    return min(max(ref - float(last), 0.0) / DAY, RECENCY_CAP_DAYS) / RECENCY_CAP_DAYS


def _fan_scalars(row: Row, now: float | None) -> list[float]:
    log1p = math.log1p
    return [
        log1p(_f(row, "n_events")),
        log1p(_f(row, "n_follows")),
        log1p(_f(row, "n_memberships")),
        log1p(_f(row, "n_post_views")),
        log1p(_f(row, "n_post_likes")),
        log1p(_f(row, "n_searches")),
        log1p(_f(row, "n_search_clicks")),
        log1p(_f(row, "n_creator_views")),
        log1p(_f(row, "n_creators")),
        log1p(_f(row, "active_days")),
        _recency(row, now),
        1.0 if row.get("history") else 0.0,
        log1p(_f(row, "price_level_cents") / 100.0),
        _f(row, "notif_open_rate"),
    ]


def _one_hot_language(language: str) -> list[float]:
    out = [0.0] * (len(LANGUAGES) + 1)
    if language:
        out[_LANG_INDEX.get(language, len(LANGUAGES))] = 1.0
    return out


def _category_vector(values: Any) -> list[float]:
    out = [0.0] * len(CATEGORIES)
    if isinstance(values, Sequence) and len(values) == len(CATEGORIES) and not isinstance(values, str):
        for i, v in enumerate(values):
            try:
                x = float(v)
            except (TypeError, ValueError):
                continue
            out[i] = x if math.isfinite(x) else 0.0
    return out


def user_tower_features(fan_row: Row | None, *, now: float | None = None) -> FloatArray:
    """The user tower's input (len(USER_TOWER_FEATURES),) for one fan row; `None`/`{}` → a new fan.

    `now` is the time recency is measured from; by default the row's own `as_of`, which is what the
    trainer uses. A server may pass the request time.
    """
    row: Row = fan_row or {}
    interests = [0.0] * len(CATEGORIES)
    for c in row.get("interests") or ():
        i = _CAT_INDEX.get(str(c))
        if i is not None:
            interests[i] = 1.0
    hist = [0.0] * HISTORY_BUCKETS
    ids = row.get("history") or []
    weights = row.get("history_weights") or []
    if len(weights) != len(ids):
        weights = [1.0] * len(ids)
    total = float(sum(float(w) for w in weights)) or 1.0
    for cid, w in zip(ids, weights, strict=True):
        hist[history_bucket(str(cid))] += float(w) / total
    vec = [
        *_fan_scalars(row, now),
        *_category_vector(row.get("category_affinity")),
        *interests,
        *_one_hot_language(str(row.get("language") or fan_language(str(row.get("locale") or "")))),
        *hist,
    ]
    return np.asarray(vec, dtype=np.float32)


def user_tower_features_batch(fan_rows: Sequence[Row | None], *, now: float | None = None) -> FloatArray:
    """(B, len(USER_TOWER_FEATURES)) for B fan rows."""
    if not fan_rows:
        return np.zeros((0, len(USER_TOWER_FEATURES)), dtype=np.float32)
    return np.stack([user_tower_features(r, now=now) for r in fan_rows])


def _age_days(row: Row) -> float:
    created, as_of = _f(row, "created_at"), _f(row, "as_of")
    return max(as_of - created, 0.0) / DAY if created > 0 and as_of > 0 else 0.0


def creator_tower_features(creator_row: Row | None) -> FloatArray:
    """The creator tower's input (len(CREATOR_TOWER_FEATURES),); `None`/`{}` → an unknown creator."""
    row: Row = creator_row or {}
    log1p = math.log1p
    category = [0.0] * len(CATEGORIES)
    i = _CAT_INDEX.get(str(row.get("category", "")))
    if i is not None:
        category[i] = 1.0
    vec = [
        1.0 if row else 0.0,
        _f(row, "popularity"),
        log1p(_f(row, "n_fans")),
        log1p(_f(row, "n_followers")),
        log1p(_f(row, "n_members")),
        log1p(_f(row, "n_posts")),
        log1p(_f(row, "n_posts_30d")),
        max(-5.0, min(5.0, _f(row, "trend"))),
        log1p(_f(row, "min_price_cents") / 100.0),
        1.0 if row.get("mature") else 0.0,
        log1p(_age_days(row)),
        *category,
        *_one_hot_language(str(row.get("language") or "")),
    ]
    return np.asarray(vec, dtype=np.float32)


def creator_tower_features_batch(creator_rows: Sequence[Row | None]) -> FloatArray:
    if not creator_rows:
        return np.zeros((0, len(CREATOR_TOWER_FEATURES)), dtype=np.float32)
    return np.stack([creator_tower_features(r) for r in creator_rows])


def normalize_source(source: str) -> str:
    """ "CANDIDATE_SOURCE_TWO_TOWER" / "two_tower" / "SEARCH_HYBRID" → a SOURCES entry."""
    s = str(source).strip().lower().removeprefix("candidate_source_")
    if s.startswith("search"):
        return "search"
    return s if s in SOURCES else "other"


_RANKER_FAN_INDEX: Final = [USER_TOWER_FEATURES.index(n) for n in _RANKER_FAN]
_CROSS_COLUMN: Final[dict[str, int]] = {n: i for i, n in enumerate(_RANKER_CROSS)}
_SOURCE_INDEX: Final[dict[str, int]] = {src: i for i, src in enumerate(SOURCES)}
# Source name as given → its one-hot slot: a handful of distinct names, ~100 lookups a ranked request.
_SOURCE_SLOTS: dict[str, int] = {}


def _source_slot(source: str) -> int:
    slot = _SOURCE_SLOTS.get(source)
    if slot is None:
        slot = _SOURCE_INDEX[normalize_source(source)]
        if len(_SOURCE_SLOTS) < 1024:  # bounded: names come from requests (Rank) too
            _SOURCE_SLOTS[source] = slot
    return slot


def _finite_or(
    values: Sequence[float | None], default: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """(values with None/NaN/inf replaced by `default`, mask of the replaced ones)."""
    arr = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    bad = ~np.isfinite(arr)
    arr[bad] = default
    return arr, bad


class CreatorCrossFacts(NamedTuple):
    """What the ranker's cross features read of one creator row (`creator_cross_facts`): the same for
    every fan, so a server can keep it per creator beside the creator tower vector."""

    category: str
    category_index: int  # into CATEGORIES; -1 for none or an unknown one
    min_price_cents: float
    creator_id: str
    language: str


def creator_cross_facts(creator_row: Row | None) -> CreatorCrossFacts:
    row: Row = creator_row or {}
    category = str(row.get("category", ""))
    return CreatorCrossFacts(
        category,
        _CAT_INDEX.get(category, -1),
        _f(row, "min_price_cents"),
        str(row.get("creator_id", "")),
        str(row.get("language", "")),
    )


def list_z(
    values: npt.NDArray[np.float64], present: npt.NDArray[np.bool_] | None = None
) -> npt.NDArray[np.float64]:
    """`values` z-scored over the list (over the `present` ones; the others 0); 0 everywhere when fewer
    than two are present or they are all equal. Mean and deviation by hand: ndarray.std costs three
    times more on a list of ~100, and this runs three times a ranked request."""
    out = np.zeros(len(values), dtype=np.float64)
    kept = values if present is None else values[present]
    n = len(kept)
    if n < 2:
        return out
    centred = kept - kept.sum() / n
    std = math.sqrt(float(centred @ centred) / n)
    if std < 1e-9:
        return out
    if present is None:
        return centred / std
    out[present] = centred / std
    return out


def list_rank(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each value's place in the list as a share: 1 the highest, 0 the lowest, equal values sharing the
    mean of their places (so the order of equal scores means nothing); 1 for a list of one."""
    n = len(values)
    if n < 2:
        return np.ones(n, dtype=np.float64)
    s = np.sort(values)
    # A value's equal run in the sorted list spans [left, right): its mean place is (left + right - 1) / 2.
    return (np.searchsorted(s, values, "left") + np.searchsorted(s, values, "right") - 1) / (2.0 * (n - 1))


def ranker_features_batch(
    fan_row: Row | None,
    creator_rows: Sequence[Row | None],
    *,
    two_tower_scores: Sequence[float | None],
    retrieval_scores: Sequence[float | None],
    sources: Sequence[str],
    creator_vectors: Sequence[FloatArray] | FloatArray | None = None,
    creator_facts: Sequence[CreatorCrossFacts] | None = None,
    co_engagement: Sequence[float] | None = None,
    social_friends: Sequence[float] | None = None,
    mf_scores: Sequence[float] | None = None,
) -> FloatArray:
    """(N, len(RANKER_FEATURES)) for one fan and N candidate creators (see `ranker_features`).

    `creator_vectors` optionally passes precomputed `creator_tower_features` of the rows (the trainer
    caches them per creator), and `creator_facts` their `creator_cross_facts` (ranking caches both);
    they must be exactly those of `creator_rows`. `co_engagement` / `social_friends`: each candidate's
    raw summed similarity and friend count, `mf_scores` its ALS score (None: unknown, 0).
    """
    n = len(creator_rows)
    if not (len(two_tower_scores) == len(retrieval_scores) == len(sources) == n):
        raise ValueError("ranker_features_batch: creator_rows, scores and sources must have the same length")
    if any(v is not None and len(v) != n for v in (co_engagement, social_friends, mf_scores)):
        raise ValueError(
            "ranker_features_batch: co_engagement, social_friends, mf_scores need one value per row"
        )
    out = np.zeros((n, len(RANKER_FEATURES)), dtype=np.float32)
    if n == 0:
        return out
    row: Row = fan_row or {}
    rows: list[Row] = [r or {} for r in creator_rows]

    # Fan part: the same for every candidate.
    scalars = _fan_scalars(row, None)
    col = 0
    out[:, col : col + len(_RANKER_FAN)] = [scalars[i] for i in _RANKER_FAN_INDEX]
    col += len(_RANKER_FAN)

    # Creator part: exactly the creator tower's input.
    cvec = (
        np.asarray(creator_vectors, dtype=np.float32)
        if creator_vectors is not None
        else creator_tower_features_batch(rows)
    )
    if cvec.shape != (n, len(CREATOR_TOWER_FEATURES)):
        raise ValueError(
            f"creator_vectors has shape {cvec.shape}, expected {(n, len(CREATOR_TOWER_FEATURES))}"
        )
    out[:, col : col + len(CREATOR_TOWER_FEATURES)] = cvec
    col += len(CREATOR_TOWER_FEATURES)

    # Cross part.
    affinity = np.asarray(_category_vector(row.get("category_affinity")), dtype=np.float64)
    interests = {str(c) for c in (row.get("interests") or ())}
    language = str(row.get("language") or fan_language(str(row.get("locale") or "")))
    fan_price = _f(row, "price_level_cents")
    ids = [str(c) for c in (row.get("history") or [])]
    weights = row.get("history_weights") or []
    if len(weights) != len(ids):
        weights = [1.0] * len(ids)
    total = float(sum(float(w) for w in weights)) or 1.0
    history = {c: float(w) / total for c, w in zip(ids, weights, strict=True)}

    tt, tt_missing = _finite_or(two_tower_scores, 0.0)
    rs, _ = _finite_or(retrieval_scores, 0.0)
    facts = [creator_cross_facts(r) for r in rows] if creator_facts is None else creator_facts
    if len(facts) != n:
        raise ValueError(f"creator_facts has {len(facts)} entries, expected {n}")
    # Columns of the facts in one transposition.
    categories, category_indexes, prices, cids, languages = zip(*facts, strict=True)
    cat_idx = np.array(category_indexes, dtype=np.int64)
    c_price = np.array(prices, dtype=np.float64)
    cross = np.zeros((n, len(_RANKER_CROSS)), dtype=np.float64)
    cross[:, 0] = tt
    cross[:, 1] = tt_missing
    cross[:, 2] = rs
    cross[:, 3] = np.where(cat_idx >= 0, affinity[np.maximum(cat_idx, 0)], 0.0)
    # Per-candidate lookups as C iterations (map over a bound method, np.fromiter): ~100 a request.
    cross[:, 4] = np.fromiter(map(interests.__contains__, categories), dtype=bool, count=n)
    if language:
        cross[:, 5] = np.fromiter(map(operator.eq, repeat(language, n), languages), dtype=bool, count=n)
    if fan_price > 0:
        gap = np.abs(math.log1p(fan_price / 100.0) - np.log1p(c_price / 100.0))
        cross[:, 6] = np.where(c_price > 0, gap, 0.0)
    cross[:, 7] = np.fromiter(map(history.__contains__, cids), dtype=bool, count=n)
    cross[:, 8] = np.fromiter(map(history.get, cids, repeat(0.0, n)), dtype=np.float64, count=n)
    x = _CROSS_COLUMN
    if co_engagement is not None:
        raw = np.maximum(_finite_or(co_engagement, 0.0)[0], 0.0)
        cross[:, x["co_engagement"]] = raw / (1.0 + raw)
        cross[:, x["co_engagement_list_z"]] = list_z(raw)
    if social_friends is not None:
        raw = np.maximum(_finite_or(social_friends, 0.0)[0], 0.0)
        cross[:, x["social_friends"]] = raw / (1.0 + raw)
    if mf_scores is not None:
        mf = _finite_or(mf_scores, 0.0)[0]
        cross[:, x["mf_score"]] = mf
        cross[:, x["mf_score_list_z"]] = list_z(mf)
        cross[:, x["mf_score_list_rank"]] = list_rank(mf)
    cross[:, x["two_tower_score_list_z"]] = list_z(tt, ~tt_missing)
    out[:, col : col + len(_RANKER_CROSS)] = cross
    col += len(_RANKER_CROSS)

    # Source one-hot.
    slots = list(map(_SOURCE_SLOTS.get, sources))
    if None in slots:  # a name not seen yet
        slots = [_source_slot(s) for s in sources]
    out[np.arange(n), col + np.array(slots, dtype=np.int64)] = 1.0
    return out


def ranker_features(
    fan_row: Row | None,
    creator_row: Row | None,
    *,
    two_tower_score: float | None,
    retrieval_score: float | None,
    source: str,
) -> FloatArray:
    """The ranker's input (len(RANKER_FEATURES),) for one (fan, candidate creator) pair.

    `two_tower_score`: cosine of the fan's user-tower vector and the creator's vector; `None` when the
    caller does not have it (the model then sees `two_tower_missing = 1`, which it was trained with).
    `retrieval_score`: the score of the source that proposed the candidate (two-tower: the cosine;
    popular: the creator's `popularity`). `source`: a CandidateSource name, with or without prefix.
    A batch of one through `ranker_features_batch`, so the two can never disagree.
    """
    return ranker_features_batch(
        fan_row,
        [creator_row],
        two_tower_scores=[two_tower_score],
        retrieval_scores=[retrieval_score],
        sources=[source],
    )[0]
