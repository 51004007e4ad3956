"""The simulated population and the stream of notification candidates (hidden truth + what is observable).

Assumptions, stated so they can be argued with (bench/notify/README section in RESULTS.md repeats them):

- Fans live in 7 IANA zones (both hemispheres, with and without DST); the run starts on Monday
  2026-03-02 so the US (Mar 8) and EU (Mar 29) spring-forward changes fall inside the 30 days.
- Hidden per fan: a base open propensity (logit-normal, median ≈ 6%), an activity profile over the
  local day (two bumps, morning and evening, shifted by a per-fan chronotype; asleep ≈ 5% of peak),
  a fatigue sensitivity for opens and one for disabling, and a base disable hazard.
- Hidden per (fan, creator): affinity, higher on average for members and higher tiers. Membership
  and tier are observable (the candidate producer knows them); affinity is not.
- Creators post at daytime in their own zone (rate log-normal, median ≈ 0.3/day, popular creators
  somewhat more), go live ≈ 0.08/day; followers get NEW_POST / LIVE_STARTED candidates. Each fan also
  gets ≈ 0.1 COMMENT_REPLY a day, ≈ 1 CREATOR_RECOMMENDATION a day (a creator drawn by popularity),
  and members get transactional PAYMENT_FAILED / MEMBERSHIP_CHANGED at ≈ 1% and 0.5% a day.
- The candidate stream depends only on the seed, never on the policy: every policy in a seed faces
  the same candidates. Outcomes (opens, disables) are drawn in bench/notify/sim.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from notify_svc.domain import Trigger

START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
ZONES: tuple[str, ...] = (
    "America/New_York",
    "America/Los_Angeles",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/Sao_Paulo",
)
ZONE_WEIGHTS = np.array([0.25, 0.15, 0.15, 0.15, 0.1, 0.1, 0.1])
# Triggers in the order of the candidate arrays' `trigger` codes (IntEnum values).
VALUE_BY_TRIGGER: dict[Trigger, float] = {
    Trigger.NEW_POST: 1.0,
    Trigger.LIVE_STARTED: 1.5,
    Trigger.CREATOR_RECOMMENDATION: 0.5,
    Trigger.COMMENT_REPLY: 2.0,
    Trigger.PAYMENT_FAILED: 3.0,
    Trigger.MEMBERSHIP_CHANGED: 3.0,
}
TRANSACTIONAL = (Trigger.PAYMENT_FAILED, Trigger.MEMBERSHIP_CHANGED)


def sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


@dataclass(frozen=True)
class WorldConfig:
    fans: int = 2000
    days: int = 30
    creators_per_fan: float = 0.1  # creators = fans × this
    follows_mean: float = 5.0
    member_rate: float = 0.25
    post_rate_median: float = 0.3
    live_rate: float = 0.08
    reply_rate: float = 0.1
    recommendation_rate: float = 1.0
    payment_failed_rate: float = 0.01
    membership_changed_rate: float = 0.005


@dataclass
class Candidates:
    """The whole run's candidates, sorted by creation hour. Arrays share one index."""

    hour: npt.NDArray[np.int64]  # hour since START when created
    fan: npt.NDArray[np.int64]
    creator: npt.NDArray[np.int64]  # the recommended creator for CREATOR_RECOMMENDATION
    trigger: npt.NDArray[np.int64]
    post: npt.NDArray[np.int64]  # content id (post / live / reply / rec event), for dedupe keys

    def __len__(self) -> int:
        return len(self.hour)


@dataclass
class World:
    """Hidden truth (names start with `h_`) plus observable facts about fans and creators."""

    config: WorldConfig
    n_fans: int
    n_creators: int
    zone: npt.NDArray[np.int64]  # per fan, index into ZONES (observable: the fan's time zone)
    local_hour: npt.NDArray[np.int64]  # (len(ZONES), hours) local wall hour of each simulated hour
    h_base_logit: npt.NDArray[np.float64]  # per fan
    h_activity: npt.NDArray[np.float64]  # (fans, 24) by local hour, max 1
    h_fatigue_open: npt.NDArray[np.float64]  # per fan: open logit lost per unit of recent volume
    h_fatigue_disable: npt.NDArray[np.float64]  # per fan: disable logit gained per unit of volume
    h_disable_logit: npt.NDArray[np.float64]  # per fan base disable hazard (per delivery)
    h_affinity: npt.NDArray[np.float64]  # (fans, creators)
    member: npt.NDArray[np.bool_]  # (fans, creators) observable
    tier: npt.NDArray[np.int64]  # (fans, creators) 0 or 1..3, observable
    follows: npt.NDArray[np.bool_]  # (fans, creators)
    candidates: Candidates

    @property
    def hours(self) -> int:
        return self.config.days * 24

    def zone_name(self, fan: int) -> str:
        return ZONES[int(self.zone[fan])]


def local_hour_table(hours: int) -> npt.NDArray[np.int64]:
    """Local wall-clock hour of each simulated UTC hour in each zone (DST from the tz database)."""
    table = np.zeros((len(ZONES), hours), dtype=np.int64)
    for z, name in enumerate(ZONES):
        zone = ZoneInfo(name)
        table[z] = [(START + timedelta(hours=h)).astimezone(zone).hour for h in range(hours)]
    return table


def _activity(rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
    hours = np.arange(24)[None, :]
    shift = rng.normal(0.0, 1.5, size=(n, 1))
    morning = 8.0 + shift
    evening = 20.0 + shift + rng.normal(0.0, 1.0, size=(n, 1))
    w_morning = rng.uniform(0.2, 1.0, size=(n, 1))

    def bump(center: npt.NDArray[np.float64], width: float) -> npt.NDArray[np.float64]:
        d = np.abs(((hours - center) + 12.0) % 24.0 - 12.0)
        return np.asarray(np.exp(-0.5 * (d / width) ** 2), dtype=np.float64)

    awake = ((hours >= 7 + shift) & (hours < 23 + shift)).astype(np.float64)
    act = w_morning * bump(morning, 1.5) + bump(evening, 2.0) + 0.25 * awake + 0.05
    return np.asarray(act / act.max(axis=1, keepdims=True), dtype=np.float64)


def make_world(seed: int, config: WorldConfig | None = None) -> World:
    cfg = config or WorldConfig()
    rng = np.random.default_rng(seed)
    n, m = cfg.fans, max(10, int(cfg.fans * cfg.creators_per_fan))
    hours = cfg.days * 24
    zone = rng.choice(len(ZONES), size=n, p=ZONE_WEIGHTS)
    creator_zone = rng.choice(len(ZONES), size=m, p=ZONE_WEIGHTS)
    popularity = rng.pareto(1.2, size=m) + 1.0
    popularity /= popularity.sum()

    follows = np.zeros((n, m), dtype=bool)
    k = np.clip(rng.poisson(cfg.follows_mean, size=n), 1, m)
    for f in range(n):
        follows[f, rng.choice(m, size=k[f], replace=False, p=popularity)] = True
    member = follows & (rng.random((n, m)) < cfg.member_rate)
    tier = np.where(member, rng.choice([1, 2, 3], size=(n, m), p=[0.6, 0.3, 0.1]), 0)
    affinity = rng.normal(0.0, 0.7, size=(n, m)) + 0.5 * member + 0.2 * tier

    world = World(
        config=cfg,
        n_fans=n,
        n_creators=m,
        zone=zone,
        local_hour=local_hour_table(hours),
        h_base_logit=rng.normal(np.log(0.06 / 0.94), 0.9, size=n),
        h_activity=_activity(rng, n),
        h_fatigue_open=rng.lognormal(np.log(0.15), 0.5, size=n),
        h_fatigue_disable=rng.lognormal(np.log(0.25), 0.5, size=n),
        h_disable_logit=rng.normal(np.log(0.0015), 0.6, size=n),
        h_affinity=affinity,
        member=member,
        tier=tier.astype(np.int64),
        follows=follows,
        candidates=Candidates(*(np.zeros(0, dtype=np.int64) for _ in range(5))),
    )
    world.candidates = _candidates(rng, world, creator_zone, popularity)
    return world


def _candidates(
    rng: np.random.Generator,
    w: World,
    creator_zone: npt.NDArray[np.int64],
    popularity: npt.NDArray[np.float64],
) -> Candidates:
    cfg, n, m, hours = w.config, w.n_fans, w.n_creators, w.hours
    parts: list[tuple[npt.NDArray[np.int64], ...]] = []
    # Creators' posts and lives: daytime 09-21 in the creator's zone.
    post_rate = rng.lognormal(np.log(cfg.post_rate_median), 0.6, size=m) * (1 + 10 * popularity)
    daytime = (w.local_hour[creator_zone] >= 9) & (w.local_hour[creator_zone] < 21)  # (m, hours)
    content = 0
    for trigger, rate in ((Trigger.NEW_POST, post_rate), (Trigger.LIVE_STARTED, np.full(m, cfg.live_rate))):
        per_hour = np.where(daytime, (rate / 12.0)[:, None], 0.0)
        counts = rng.poisson(per_hour)
        cs, hs = np.nonzero(counts)
        for c, h in zip(cs, hs, strict=True):
            fans = np.nonzero(w.follows[:, c])[0]
            if fans.size == 0:
                continue
            size = fans.size
            parts.append(
                (
                    np.full(size, h),
                    fans,
                    np.full(size, c),
                    np.full(size, int(trigger)),
                    np.full(size, content),
                )
            )
            content += 1
    # Per-fan triggers at random hours.
    for trigger, daily, who in (
        (Trigger.COMMENT_REPLY, cfg.reply_rate, w.follows.any(axis=1)),
        (Trigger.CREATOR_RECOMMENDATION, cfg.recommendation_rate, np.ones(n, dtype=bool)),
        (Trigger.PAYMENT_FAILED, cfg.payment_failed_rate, w.member.any(axis=1)),
        (Trigger.MEMBERSHIP_CHANGED, cfg.membership_changed_rate, w.member.any(axis=1)),
    ):
        count = rng.poisson(daily * cfg.days, size=n) * who
        fans = np.repeat(np.arange(n), count)
        hs = rng.integers(0, hours, size=fans.size)
        if trigger is Trigger.CREATOR_RECOMMENDATION:
            creators = rng.choice(m, size=fans.size, p=popularity)
        elif trigger in TRANSACTIONAL:
            creators = np.array([rng.choice(np.nonzero(w.member[f])[0]) for f in fans], dtype=np.int64)
        else:
            creators = np.array([rng.choice(np.nonzero(w.follows[f])[0]) for f in fans], dtype=np.int64)
        ids = np.arange(content, content + fans.size)
        content += fans.size
        parts.append((hs, fans, creators, np.full(fans.size, int(trigger)), ids))
    cols = [np.concatenate([p[i] for p in parts]).astype(np.int64) for i in range(5)]
    order = np.lexsort((cols[1], cols[0]))
    return Candidates(*(c[order] for c in cols))
