"""A generated creator platform with real signal: fans with tastes, creators with styles, and behaviour.

The world, in the order it is built (everything from one seed, so the same seed gives the same bytes):

- Communities of fans share a taste over categories and mostly one language; each fan's taste mixes its
  community's with a personal Dirichlet draw (a few favourite categories), plus a preference over the
  four subtopics of every category, an activity level, a budget and a time zone. Friendships form mostly
  inside communities (homophily: friends share tastes).
- Creators have a category (and a minor second one), a mix of subtopics that shows in their text, a
  language, paid tiers, and a log-normal popularity (a heavy, power-law-like tail).
- Posts carry titles and text drawn from the creator's words, so text search has something to find.
- A fan's affinity for a creator is  a·log(popularity) + b·log(taste · creator categories)
  + g·(subtopic match) + log(language factor);  every interaction is sampled from it. Popularity alone
  therefore explains some of the behaviour, and taste, style and language the rest.
- Behaviour over `days` of simulated time, appended day by day to the event log: follows and unfollows,
  memberships (when a tier's price fits the fan's budget) and their ends, creator and post views, likes,
  searches whose queries come from the target creator's words and the clicks that follow, and
  notifications for new posts — opened more when the fan likes the creator and less at night in the fan's
  time zone or after many sends that day, and disabled more often under the same fatigue.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import math
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from kindred.data import vocab
from kindred.data.catalogue import Catalogue
from kindred.data.schema import CATEGORIES, Creator, Fan, Friendship, Post, Tier, set_timestamp
from kindred.eventlog import EventLog
from kindred.v1 import events_pb2

DAY: Final = 86_400.0
DEFAULT_END_TIME: Final = 1_767_225_600.0  # 2026-01-01T00:00:00Z: fixed, so a seed fully determines the data

# (locale, IANA time zone, UTC offset in hours, share of fans). Offsets are standard time: the simulation
# ignores daylight saving, which shifts nothing a model could learn from.
LOCALES: Final = (
    ("en-US", "America/New_York", -5.0, 0.20),
    ("en-US", "America/Chicago", -6.0, 0.06),
    ("en-US", "America/Los_Angeles", -8.0, 0.10),
    ("en-GB", "Europe/London", 0.0, 0.09),
    ("en-AU", "Australia/Sydney", 10.0, 0.04),
    ("en-IN", "Asia/Kolkata", 5.5, 0.05),
    ("es-ES", "Europe/Madrid", 1.0, 0.06),
    ("es-MX", "America/Mexico_City", -6.0, 0.08),
    ("pt-BR", "America/Sao_Paulo", -3.0, 0.10),
    ("fr-FR", "Europe/Paris", 1.0, 0.08),
    ("de-DE", "Europe/Berlin", 1.0, 0.08),
    ("ja-JP", "Asia/Tokyo", 9.0, 0.06),
)
LANGUAGES: Final = ("en", "es", "pt", "fr", "de", "ja")
CREATOR_LANGUAGE_SHARES: Final = (0.55, 0.12, 0.10, 0.08, 0.08, 0.07)
# Relative activity by local hour: quiet at night, peaks in the evening.
HOURLY_PROFILE: Final = (
    0.3,
    0.2,
    0.1,
    0.1,
    0.1,
    0.2,
    0.5,
    0.9,
    1.1,
    1.0,
    0.9,
    0.9,
    1.1,
    1.0,
    0.9,
    0.9,
    1.0,
    1.2,
    1.5,
    1.8,
    2.0,
    1.9,
    1.4,
    0.8,
)
N_SUB: Final = 4  # subtopics per category (see vocab.SUBTOPICS)

ET = events_pb2.EventType


@dataclass(frozen=True)
class GeneratorConfig:
    fans: int = 2000
    creators: int = 300
    days: int = 30
    seed: int = 7
    end_time: float = DEFAULT_END_TIME
    # --- the affinity model: logit = a·log_pop + b·log(taste) + g·style + log(language factor) ---
    popularity_sigma: float = 1.1  # log-normal spread of creator popularity
    popularity_weight: float = 1.0  # a
    taste_weight: float = 1.5  # b: > 1 sharpens fans' favourite categories
    style_weight: float = 0.8  # g
    fan_taste_alpha: float = 0.3  # personal Dirichlet concentration: small = a few favourites
    community_size: int = 40
    foreign_language_factor: float = 0.04  # fan and creator share no language
    english_factor: float = 0.3  # a non-English fan and an English creator
    considered_creators: int = 120  # creators each fan would ever consider (sampled ∝ affinity)
    # --- behaviour ---
    social_discovery: float = 0.2  # share of discovery that starts from a friend's follows
    back_catalogue_days: float = 45.0  # posts exist from before the simulated window


@dataclass(frozen=True)
class GenerateSummary:
    data_dir: Path
    fans: int
    creators: int
    posts: int
    friendships: int
    events: int
    events_by_type: dict[str, int]
    start_time: float
    end_time: float
    seconds: float


@dataclass
class World:
    """The latent truth behind a generated catalogue (tests and notebooks use it; it is not written)."""

    config: GeneratorConfig
    start_time: float
    catalogue: Catalogue
    fan_taste: NDArray[np.float64]  # (F, K) rows sum to 1
    fan_sub: NDArray[np.float64]  # (F, K·S) per-category subtopic preference
    fan_lang: NDArray[np.int64]  # (F,) index into LANGUAGES
    fan_offset_h: NDArray[np.float64]  # (F,) UTC offset
    fan_activity: NDArray[np.float64]  # (F,) mean sessions-ish
    fan_budget: NDArray[np.float64]  # (F,) dollars a month
    fan_search: NDArray[np.float64]  # (F,) p(search) per session
    fan_notify: NDArray[np.float64]  # (F,) propensity to open notifications
    fan_created: NDArray[np.float64]
    creator_cat: NDArray[np.int64]  # (C,)
    creator_catvec: NDArray[np.float64]  # (C, K)
    creator_sub: NDArray[np.float64]  # (C, S)
    creator_lang: NDArray[np.int64]
    creator_log_pop: NDArray[np.float64]
    creator_created: NDArray[np.float64]
    creator_words: list[tuple[list[str], list[float]]]  # topical vocabulary and its cumulative weights
    friends: list[list[int]] = field(default_factory=list)

    @property
    def lang_log_factor(self) -> NDArray[np.float64]:
        """(fan language, creator language) → log factor."""
        n = len(LANGUAGES)
        m = np.full((n, n), math.log(self.config.foreign_language_factor))
        m[:, 0] = math.log(self.config.english_factor)
        np.fill_diagonal(m, 0.0)
        return m

    def match(
        self, fans: NDArray[np.int64], creators: NDArray[np.int64] | None = None
    ) -> NDArray[np.float64]:
        """Personal affinity without popularity, (len(fans), C or len(creators))."""
        c = slice(None) if creators is None else creators
        cfg = self.config
        taste = self.fan_taste[fans] @ self.creator_catvec[c].T
        block = _style_blocks(self.creator_cat[c], self.creator_sub[c])
        style = N_SUB * (self.fan_sub[fans] @ block.T) - 1.0
        lang = self.lang_log_factor[self.fan_lang[fans]][:, self.creator_lang[c]]
        out: NDArray[np.float64] = cfg.taste_weight * np.log(taste + 1e-3) + cfg.style_weight * style + lang
        return out


def _style_blocks(cat: NDArray[np.int64], sub: NDArray[np.float64]) -> NDArray[np.float64]:
    """(C, K·S): each creator's subtopic mix placed in its category's block."""
    k = len(CATEGORIES)
    blocks = np.zeros((len(cat), k * N_SUB))
    for s in range(N_SUB):
        blocks[np.arange(len(cat)), cat * N_SUB + s] = sub[:, s]
    return blocks


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --------------------------------------------------------------------------------------------------
# The catalogue
# --------------------------------------------------------------------------------------------------


def build_world(config: GeneratorConfig) -> World:
    """Fans, creators, posts and friendships with their latent traits (no behaviour yet)."""
    rng = np.random.default_rng(config.seed)
    start = config.end_time - config.days * DAY
    k = len(CATEGORIES)

    # --- fans: communities share taste and language ---
    n_f = config.fans
    n_comm = max(4, n_f // config.community_size)
    comm_taste = rng.dirichlet(np.full(k, 0.3), size=n_comm)
    locale_shares = np.array([loc[3] for loc in LOCALES])
    locale_shares /= locale_shares.sum()
    locale_lang = np.array([LANGUAGES.index(loc[0].split("-")[0]) for loc in LOCALES])
    comm_lang = locale_lang[rng.choice(len(LOCALES), size=n_comm, p=locale_shares)]
    comm_weights = rng.pareto(1.5, size=n_comm) + 1.0
    fan_comm = rng.choice(n_comm, size=n_f, p=comm_weights / comm_weights.sum())
    own_lang = rng.random(n_f) < 0.8
    fan_locale = np.empty(n_f, dtype=np.int64)
    for i in range(n_f):
        shares = locale_shares * (locale_lang == comm_lang[fan_comm[i]]) if own_lang[i] else locale_shares
        fan_locale[i] = rng.choice(len(LOCALES), p=shares / shares.sum())
    personal = rng.dirichlet(np.full(k, config.fan_taste_alpha), size=n_f)
    fan_taste = 0.5 * comm_taste[fan_comm] + 0.5 * personal
    fan_sub = rng.dirichlet(np.full(N_SUB, 0.7), size=(n_f, k)).reshape(n_f, k * N_SUB)
    fan_activity = np.exp(rng.normal(0.0, 0.8, size=n_f))
    fan_budget = np.exp(rng.normal(math.log(7.0), 0.7, size=n_f))
    fan_search = rng.uniform(0.05, 0.5, size=n_f)
    fan_notify = rng.normal(0.0, 0.7, size=n_f)
    joined_late = rng.random(n_f) < 0.1  # cold-start fans join during the window
    fan_created = np.where(
        joined_late,
        start + rng.uniform(0, config.days * DAY * 0.9, size=n_f),
        start - rng.uniform(DAY, 365 * DAY, size=n_f),
    )
    fans: list[Fan] = []
    for i in range(n_f):
        order = np.argsort(-fan_taste[i], kind="stable")
        n_int = int(rng.choice([0, 1, 2, 3], p=[0.15, 0.25, 0.35, 0.25]))
        interests = [CATEGORIES[int(j)] for j in order[:n_int]]
        if interests and rng.random() < 0.25:  # onboarding answers are noisy
            interests[-1] = CATEGORIES[int(rng.integers(k))]
        locale, tz, _, _ = LOCALES[fan_locale[i]]
        fans.append(
            Fan(f"f{i:06d}", locale, tz, tuple(dict.fromkeys(interests)), round(float(fan_created[i]), 3))
        )

    # --- friendships: mostly inside the community ---
    members_of: dict[int, list[int]] = {}
    for i, c in enumerate(fan_comm.tolist()):
        members_of.setdefault(c, []).append(i)
    pairs: set[tuple[int, int]] = set()
    n_friends = rng.poisson(np.exp(rng.normal(math.log(3.0), 0.6, size=n_f)))
    for i in range(n_f):
        group = members_of[int(fan_comm[i])]
        for _ in range(int(n_friends[i])):
            j = int(group[rng.integers(len(group))]) if rng.random() < 0.8 else int(rng.integers(n_f))
            if j != i:
                pairs.add((min(i, j), max(i, j)))
    pair_list = sorted(pairs)
    friends: list[list[int]] = [[] for _ in range(n_f)]
    for a, b in pair_list:
        friends[a].append(b)
        friends[b].append(a)

    # --- creators ---
    n_c = config.creators
    cat_weights = rng.dirichlet(np.full(k, 6.0))
    creator_cat = rng.choice(k, size=n_c, p=cat_weights)
    cat2 = (creator_cat + rng.integers(1, k, size=n_c)) % k
    catvec = np.zeros((n_c, k))
    catvec[np.arange(n_c), creator_cat] = 0.85
    catvec[np.arange(n_c), cat2] += 0.15
    creator_sub = rng.dirichlet(np.full(N_SUB, 0.5), size=n_c)
    creator_lang = rng.choice(len(LANGUAGES), size=n_c, p=np.array(CREATOR_LANGUAGE_SHARES))
    log_pop = rng.normal(0.0, config.popularity_sigma, size=n_c)
    created_late = rng.random(n_c) < 0.1  # new creators appear during the window (cold start)
    creator_created = np.where(
        created_late,
        start + rng.uniform(0, config.days * DAY * 0.9, size=n_c),
        start - rng.uniform(10 * DAY, 3 * 365 * DAY, size=n_c),
    )
    mature = rng.random(n_c) < 0.05
    post_rate = np.minimum(np.exp(rng.normal(math.log(1.5), 0.6, size=n_c)), 14.0)  # posts a week
    base_price = np.exp(rng.normal(math.log(5.0), 0.5, size=n_c))

    creators: list[Creator] = []
    creator_words: list[tuple[list[str], list[float]]] = []
    for c in range(n_c):
        cat, second = CATEGORIES[int(creator_cat[c])], CATEGORIES[int(cat2[c])]
        subs = list(vocab.SUBTOPICS[cat].items())
        words: list[str] = []
        weights: list[float] = []
        for s, (_, ws) in enumerate(subs):
            words.extend(ws)
            weights.extend([0.85 * float(creator_sub[c, s]) / len(ws)] * len(ws))
        for ws in vocab.SUBTOPICS[second].values():
            words.extend(ws)
            weights.extend([0.15 / (N_SUB * len(ws))] * len(ws))
        creator_words.append((words, np.cumsum(weights).tolist()))
        sub_order = np.argsort(-creator_sub[c], kind="stable")
        top_subs = [subs[int(s)][0] for s in sub_order[:2]]
        name = " ".join(
            w
            for w in (
                vocab.ADJECTIVES[int(rng.integers(len(vocab.ADJECTIVES)))],
                vocab.NAME_NOUNS[cat][int(rng.integers(len(vocab.NAME_NOUNS[cat])))],
                vocab.NAME_SUFFIXES[int(rng.integers(len(vocab.NAME_SUFFIXES)))],
            )
            if w
        )
        n_tiers = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
        prices: list[int] = []
        for level in range(n_tiers):
            # Each tier costs more than the one below it, even when rounding would make them equal.
            cents = _price_cents(base_price[c] * (1.0, 2.5, 6.0)[level])
            prices.append(max(cents, prices[-1] + 100) if prices else cents)
        tiers = tuple(
            Tier(f"c{c:05d}-t{level + 1}", vocab.TIER_NAMES[level], price)
            for level, price in enumerate(prices)
        )
        signature = _sample_words(rng, words, creator_words[-1][1], 4)
        tags = tuple(dict.fromkeys([cat.lower(), *top_subs, *signature]))
        description = (
            f"{name} makes {cat.lower()} about {top_subs[0].replace('-', ' ')} and "
            f"{top_subs[1].replace('-', ' ')}. "
            + " ".join(_sample_words(rng, words, creator_words[-1][1], 12))
        )
        creators.append(
            Creator(
                creator_id=f"c{c:05d}",
                name=name,
                category=cat,
                tags=tags,
                language=LANGUAGES[int(creator_lang[c])],
                tiers=tiers,
                description=description,
                mature=bool(mature[c]),
                created_at=round(float(creator_created[c]), 3),
            )
        )

    # --- posts: a back catalogue before the window, then a steady stream ---
    post_specs: list[tuple[float, int]] = []
    for c in range(n_c):
        lo = max(float(creator_created[c]), start - config.back_catalogue_days * DAY)
        n_posts = int(rng.poisson(post_rate[c] * (config.end_time - lo) / (7 * DAY)))
        for t in np.sort(rng.uniform(lo, config.end_time, size=n_posts)).tolist():
            post_specs.append((round(t, 3), c))
    post_specs.sort()
    posts: list[Post] = []
    for i, (t, c) in enumerate(post_specs):
        creator = creators[c]
        words, cum = creator_words[c]
        access_draw = rng.random()
        access = (
            "public"
            if access_draw < 0.55
            else ("members" if access_draw < 0.85 or len(creator.tiers) < 2 else "tier")
        )
        posts.append(
            Post(
                post_id=f"p{i:07d}",
                creator_id=creator.creator_id,
                title=_title(rng, words, cum),
                text=_text(rng, words, cum, creator.language),
                access_level=access,
                published_at=t,
                category=creator.category,
                language=creator.language,
            )
        )

    catalogue = Catalogue(
        fans=fans,
        creators=creators,
        posts=posts,
        friendships=[Friendship.undirected(fans[a].fan_id, fans[b].fan_id) for a, b in pair_list],
    )
    return World(
        config=config,
        start_time=start,
        catalogue=catalogue,
        fan_taste=fan_taste,
        fan_sub=fan_sub,
        fan_lang=locale_lang[fan_locale],
        fan_offset_h=np.array([LOCALES[i][2] for i in fan_locale]),
        fan_activity=fan_activity,
        fan_budget=fan_budget,
        fan_search=fan_search,
        fan_notify=fan_notify,
        fan_created=fan_created,
        creator_cat=creator_cat,
        creator_catvec=catvec,
        creator_sub=creator_sub,
        creator_lang=creator_lang,
        creator_log_pop=log_pop,
        creator_created=creator_created,
        creator_words=creator_words,
        friends=friends,
    )


def _price_cents(dollars: float) -> int:
    return max(1, round(dollars)) * 100 - 1  # $4.99-style prices


def _sample_words(rng: np.random.Generator, words: Sequence[str], cum: Sequence[float], n: int) -> list[str]:
    total = cum[-1]
    return [words[min(bisect.bisect_right(cum, u * total), len(words) - 1)] for u in rng.random(n).tolist()]


def _title(rng: np.random.Generator, words: Sequence[str], cum: Sequence[float]) -> str:
    a, b, c = _sample_words(rng, words, cum, 3)
    template = vocab.TITLE_TEMPLATES[int(rng.integers(len(vocab.TITLE_TEMPLATES)))]
    return template.format(
        a=a,
        b=b,
        c=c,
        A=a.capitalize(),
        n=int(rng.integers(1, 120)),
        adj=vocab.ADJECTIVES[int(rng.integers(len(vocab.ADJECTIVES)))].lower(),
        verb=vocab.VERBS[int(rng.integers(len(vocab.VERBS)))],
    )


def _text(rng: np.random.Generator, words: Sequence[str], cum: Sequence[float], language: str) -> str:
    function = vocab.FUNCTION_WORDS[language]
    sentences = []
    for _ in range(int(rng.integers(2, 4))):
        n = int(rng.integers(6, 14))
        topical = _sample_words(rng, words, cum, n)
        kinds = rng.random(n).tolist()
        tokens = [
            w
            if u < 0.6
            else (
                function[int(u * 1000) % len(function)]
                if u < 0.85
                else vocab.FILLER[int(u * 10_000) % len(vocab.FILLER)]
            )
            for w, u in zip(topical, kinds, strict=True)
        ]
        sentences.append(" ".join(tokens).capitalize() + ".")
    return " ".join(sentences)


# --------------------------------------------------------------------------------------------------
# Behaviour
# --------------------------------------------------------------------------------------------------

# (time, type, fan, creator, post, query, tier_id, value, attributes): converted to protos per day.
_Row = tuple[float, events_pb2.EventType, int, int, int, str, str, float, dict[str, str] | None]


class _Simulator:
    def __init__(self, world: World, rnd: random.Random, np_rng: np.random.Generator) -> None:
        self.w = world
        self.cfg = world.config
        self.rnd = rnd
        cat = world.catalogue
        self.fan_ids = [f.fan_id for f in cat.fans]
        self.creator_ids = [c.creator_id for c in cat.creators]
        self.post_ids = [p.post_id for p in cat.posts]
        self.post_creator = [0] * len(cat.posts)
        index = {cid: i for i, cid in enumerate(self.creator_ids)}
        self.post_times: list[list[float]] = [[] for _ in self.creator_ids]
        self.post_list: list[list[int]] = [[] for _ in self.creator_ids]
        self.post_access = [p.access_level for p in cat.posts]
        self.post_time = [p.published_at for p in cat.posts]
        self.post_title_words = [
            set(p.title.lower().replace(":", " ").replace(",", " ").split()) for p in cat.posts
        ]
        for i, p in enumerate(cat.posts):
            c = index[p.creator_id]
            self.post_creator[i] = c
            self.post_times[c].append(p.published_at)
            self.post_list[c].append(i)
        self.creator_names = [c.name.lower() for c in cat.creators]
        self.tiers = [[(t.tier_id, t.price_cents / 100.0) for t in c.tiers] for c in cat.creators]
        self.created = world.creator_created.tolist()
        self.fan_created = world.fan_created.tolist()
        self.offset = world.fan_offset_h.tolist()
        self.budget = world.fan_budget.tolist()
        self.search_p = world.fan_search.tolist()
        self.notify_p = world.fan_notify.tolist()
        self.activity = world.fan_activity.tolist()
        self._consider(np_rng)
        n_f, n_c = len(self.fan_ids), len(self.creator_ids)
        self.follows: list[dict[int, None]] = [{} for _ in range(n_f)]
        self.followers: list[dict[int, None]] = [{} for _ in range(n_c)]
        self.members: list[dict[int, int]] = [{} for _ in range(n_f)]
        self.disabled: set[tuple[int, int]] = set()
        self.viewed: list[set[int]] = [set() for _ in range(n_f)]
        self.rows: list[_Row] = []
        self.notifications = 0
        self.sent_today: dict[int, int] = {}
        # Session start times by UTC quarter hour, weighted by each fan's local-hour profile.
        self.hour_cum: dict[float, list[float]] = {}
        for off in set(self.offset):
            weights = [HOURLY_PROFILE[int((q / 4 + off) % 24)] for q in range(96)]
            self.hour_cum[off] = np.cumsum(weights).tolist()

    def _consider(self, np_rng: np.random.Generator) -> None:
        """Each fan's candidates: creators sampled ∝ exp(affinity) without replacement (Gumbel top-k)."""
        w, cfg = self.w, self.cfg
        n_f, n_c = len(self.fan_ids), len(self.creator_ids)
        m = min(cfg.considered_creators, n_c)
        self.cand: list[list[int]] = []
        self.cand_cum: list[list[float]] = []
        self.z: list[dict[int, float]] = []
        raw_matches: list[NDArray[np.float64]] = []
        chunk = max(1, 2_000_000 // max(n_c, 1))
        for lo in range(0, n_f, chunk):
            fans = np.arange(lo, min(n_f, lo + chunk))
            match = w.match(fans)
            logits = cfg.popularity_weight * w.creator_log_pop[None, :] + match
            keys = logits + np_rng.gumbel(size=logits.shape)
            top = np.argpartition(-keys, m - 1, axis=1)[:, :m]
            for row in range(len(fans)):
                idx = top[row][np.argsort(-keys[row, top[row]], kind="stable")]
                lg = logits[row, idx]
                self.cand.append(idx.tolist())
                self.cand_cum.append(np.cumsum(np.exp(lg - lg.max())).tolist())
                raw_matches.append(match[row, idx])
        allm = np.concatenate(raw_matches) if raw_matches else np.zeros(1)
        mu, sd = float(allm.mean()), float(allm.std() or 1.0)
        self.match_mu, self.match_sd = mu, sd
        for f in range(n_f):
            self.z.append(dict(zip(self.cand[f], ((raw_matches[f] - mu) / sd).tolist(), strict=True)))

    def zscore(self, f: int, c: int) -> float:
        z = self.z[f].get(c)
        if z is None:  # a creator outside the fan's consideration set (reached through a friend)
            z = float((self.w.match(np.array([f]), np.array([c]))[0, 0] - self.match_mu) / self.match_sd)
            self.z[f][c] = z
        return z

    # --- emit ---
    def emit(
        self,
        t: float,
        etype: events_pb2.EventType,
        f: int,
        c: int = -1,
        p: int = -1,
        query: str = "",
        tier: str = "",
        value: float = 0.0,
        attrs: dict[str, str] | None = None,
    ) -> None:
        self.rows.append((t, etype, f, c, p, query, tier, value, attrs))

    def sample_creator(self, f: int) -> int:
        cum = self.cand_cum[f]
        i = bisect.bisect_right(cum, self.rnd.random() * cum[-1])
        return self.cand[f][min(i, len(cum) - 1)]

    # --- actions ---
    def follow(self, t: float, f: int, c: int) -> None:
        self.follows[f][c] = None
        self.followers[c][f] = None
        self.emit(t, ET.EVENT_TYPE_FOLLOW, f, c, value=1.0)

    def join(self, t: float, f: int, c: int) -> bool:
        tiers = self.tiers[c]
        if not tiers or c in self.members[f]:
            return False
        budget = self.budget[f] * math.exp(self.rnd.gauss(0.0, 0.3))
        affordable = [i for i, (_, price) in enumerate(tiers) if price <= budget]
        i = affordable[-1] if affordable else 0
        self.members[f][c] = i
        tier_id, price = tiers[i]
        self.emit(t, ET.EVENT_TYPE_MEMBERSHIP_START, f, c, tier=tier_id, value=price)
        return True

    def price_fit(self, f: int, c: int) -> float:
        tiers = self.tiers[c]
        return math.log(self.budget[f] / tiers[0][1]) if tiers else -5.0

    def maybe_follow(self, t: float, f: int, c: int, boost: float = 0.0) -> None:
        if c in self.follows[f]:
            return
        if self.rnd.random() < _sigmoid(-1.6 + 1.4 * self.zscore(f, c) + boost):
            self.follow(t, f, c)

    def view_post(self, t: float, f: int, p: int) -> None:
        c = self.post_creator[p]
        z = self.zscore(f, c)
        self.viewed[f].add(p)
        dwell = 30.0 * math.exp(0.6 * z + self.rnd.gauss(0.0, 0.6))
        self.emit(t, ET.EVENT_TYPE_POST_VIEW, f, c, p, value=round(dwell, 1))
        if self.rnd.random() < _sigmoid(-1.8 + 1.2 * z + (0.6 if c in self.members[f] else 0.0)):
            self.emit(t + dwell, ET.EVENT_TYPE_POST_LIKE, f, c, p, value=1.0)

    def accessible(self, f: int, p: int) -> bool:
        return self.post_access[p] == "public" or self.post_creator[p] in self.members[f]

    def recent_posts(self, c: int, lo: float, hi: float) -> list[int]:
        times = self.post_times[c]
        return self.post_list[c][bisect.bisect_left(times, lo) : bisect.bisect_left(times, hi)]

    def query_for(self, c: int) -> tuple[str, str]:
        """A query a fan looking for creator `c` would type, and its main word."""
        if self.rnd.random() < 0.15:  # navigational: the creator's name
            name = self.creator_names[c]
            return name, name.split()[-1]
        words, cum = self.w.creator_words[c]
        picks = [
            words[min(bisect.bisect_right(cum, self.rnd.random() * cum[-1]), len(words) - 1)]
            for _ in range(2)
        ]
        if self.rnd.random() < 0.5 or picks[0] == picks[1]:
            return picks[0], picks[0]
        return " ".join(picks), picks[0]

    # --- phases ---
    def backfill(self) -> None:
        """State before the window: earlier follows and memberships, dated before it starts."""
        start = self.w.start_time
        for f in range(len(self.fan_ids)):
            if self.fan_created[f] >= start:
                continue
            for _ in range(_poisson(self.rnd, 2.0 + 3.0 * min(self.activity[f], 3.0))):
                c = self.sample_creator(f)
                lo = max(self.fan_created[f], self.created[c])
                if lo >= start or c in self.follows[f]:
                    continue
                t = lo + self.rnd.random() * (start - lo)
                self.follow(t, f, c)
                if self.rnd.random() < _sigmoid(-3.2 + 1.0 * self.zscore(f, c) + 0.8 * self.price_fit(f, c)):
                    self.join(t + self.rnd.random() * (start - t), f, c)

    def notify(self, p: int, day_end: float) -> None:
        c = self.post_creator[p]
        t0 = self.post_time[p]
        for f in list(self.followers[c]):
            if (f, c) in self.disabled or self.fan_created[f] > t0:
                continue
            self.notifications += 1
            nid = f"n{self.cfg.seed}-{self.notifications:08d}"
            sent = min(t0 + 60.0 + self.rnd.random() * 540.0, day_end - 1.0)
            n = self.sent_today.get(f, 0) + 1
            self.sent_today[f] = n
            local_hour = ((sent / 3600.0) + self.offset[f]) % 24.0
            quiet = local_hour >= 23.0 or local_hour < 7.0
            z = self.zscore(f, c)
            member = c in self.members[f]
            attrs = {"notification_id": nid, "trigger": "new_post", "channel": "push"}
            self.emit(sent, ET.EVENT_TYPE_NOTIFICATION_SENT, f, c, p, attrs=attrs)
            p_open = _sigmoid(
                -1.3
                + 1.0 * z
                + (0.8 if member else 0.0)
                - 0.35 * (n - 1)
                - (1.3 if quiet else 0.0)
                + self.notify_p[f]
            )
            if self.rnd.random() < p_open:
                opened = min(sent + self.rnd.expovariate(1.0 / 900.0), day_end - 0.5)
                self.emit(opened, ET.EVENT_TYPE_NOTIFICATION_OPEN, f, c, p, attrs=attrs)
                if self.accessible(f, p) and p not in self.viewed[f]:
                    self.view_post(opened + 1.0, f, p)
            elif self.rnd.random() < _sigmoid(
                -4.2 - 0.8 * z + 0.45 * (n - 1) + (0.8 if quiet else 0.0) - 0.5 * self.notify_p[f]
            ):
                self.disabled.add((f, c))
                self.emit(
                    min(sent + self.rnd.expovariate(1.0 / 1800.0), day_end - 0.5),
                    ET.EVENT_TYPE_NOTIFICATION_DISABLE,
                    f,
                    c,
                    p,
                    attrs=attrs,
                )

    def session(self, t: float, f: int) -> None:
        rnd = self.rnd
        # Feed: fresh posts from followed creators.
        views = 0
        for c in list(self.follows[f]):
            for p in self.recent_posts(c, t - 3 * DAY, t):
                if views >= 8 or p in self.viewed[f] or not self.accessible(f, p):
                    continue
                if rnd.random() < 0.25 + 0.45 * _sigmoid(self.zscore(f, c)):
                    t += 5.0 + rnd.expovariate(1.0 / 40.0)
                    self.view_post(t, f, p)
                    views += 1
        # Discovery: creator pages, from the fan's own tastes or a friend's follows.
        if rnd.random() < 0.75:
            for _ in range(1 + (rnd.random() < 0.5) + (rnd.random() < 0.2)):
                social = False
                friends = self.w.friends[f]
                if friends and rnd.random() < self.cfg.social_discovery:
                    friend_follows = list(self.follows[friends[int(rnd.random() * len(friends))]])
                    if not friend_follows:
                        continue
                    c = friend_follows[int(rnd.random() * len(friend_follows))]
                    social = True
                else:
                    c = self.sample_creator(f)
                if self.created[c] > t:
                    continue
                t += 5.0 + rnd.expovariate(1.0 / 30.0)
                self.creator_view(t, f, c, boost=0.5 if social else 0.0)
        # Search: the fan has a creator in mind and types words it is known for.
        if rnd.random() < self.search_p[f]:
            c = self.sample_creator(f)
            if self.created[c] <= t:
                query, word = self.query_for(c)
                t += 5.0 + rnd.expovariate(1.0 / 30.0)
                self.emit(t, ET.EVENT_TYPE_SEARCH, f, query=query)
                if rnd.random() < 0.75:
                    t += 2.0 + rnd.expovariate(1.0 / 8.0)
                    post = -1
                    if rnd.random() < 0.3:
                        for p in reversed(self.recent_posts(c, 0.0, t)[-10:]):
                            if word in self.post_title_words[p]:
                                post = p
                                break
                    self.emit(t, ET.EVENT_TYPE_SEARCH_CLICK, f, c, post, query=query)
                    t += 1.0
                    if post >= 0 and self.accessible(f, post) and post not in self.viewed[f]:
                        self.view_post(t, f, post)
                    else:
                        self.creator_view(t, f, c)
        # Membership: a followed creator the fan likes, at a price that fits.
        if self.follows[f] and rnd.random() < 0.3:
            followed = list(self.follows[f])
            c = followed[int(rnd.random() * len(followed))]
            if (
                c not in self.members[f]
                and self.tiers[c]
                and rnd.random() < _sigmoid(-4.0 + 1.2 * self.zscore(f, c) + 1.0 * self.price_fit(f, c))
            ):
                self.join(t + 30.0, f, c)

    def creator_view(self, t: float, f: int, c: int, boost: float = 0.0) -> None:
        z = self.zscore(f, c)
        dwell = 10.0 * math.exp(0.5 * z + self.rnd.gauss(0.0, 0.5))
        self.emit(t, ET.EVENT_TYPE_CREATOR_VIEW, f, c, value=round(dwell, 1))
        self.maybe_follow(t + dwell, f, c, boost)
        for p in reversed(self.recent_posts(c, t - 30 * DAY, t)[-3:]):
            if self.post_access[p] == "public" and p not in self.viewed[f] and self.rnd.random() < 0.4:
                t += dwell
                self.view_post(t, f, p)

    def churn(self, day_start: float) -> None:
        rnd = self.rnd
        for f in range(len(self.fan_ids)):
            members = self.members[f]
            if members and rnd.random() < 0.008 * len(members):
                c = list(members)[int(rnd.random() * len(members))]
                tier_id, price = self.tiers[c][members[c]]
                # Overpriced memberships end more often; keep the loyal ones.
                if rnd.random() < _sigmoid(math.log(price / self.budget[f]) - 0.5 * self.zscore(f, c)):
                    del members[c]
                    self.emit(
                        day_start + rnd.random() * DAY,
                        ET.EVENT_TYPE_MEMBERSHIP_END,
                        f,
                        c,
                        tier=tier_id,
                        value=price,
                    )
            follows = self.follows[f]
            if follows and rnd.random() < 0.004 * len(follows):
                c = list(follows)[int(rnd.random() * len(follows))]
                if c not in members and rnd.random() < _sigmoid(-1.0 - 1.5 * self.zscore(f, c)):
                    del follows[c]
                    del self.followers[c][f]
                    self.emit(day_start + rnd.random() * DAY, ET.EVENT_TYPE_UNFOLLOW, f, c)

    def day(self, day_start: float) -> None:
        day_end = day_start + DAY
        self.sent_today = {}
        lo = bisect.bisect_left(self.post_time, day_start)
        hi = bisect.bisect_left(self.post_time, day_end)
        for p in range(lo, hi):
            self.notify(p, day_end)
        rnd = self.rnd
        for f in range(len(self.fan_ids)):
            if self.fan_created[f] >= day_end:
                continue
            act = self.activity[f]
            if rnd.random() >= min(0.95, 0.35 * act + 0.05):
                continue
            cum = self.hour_cum[self.offset[f]]
            times = sorted(
                day_start + (bisect.bisect_right(cum, rnd.random() * cum[-1]) + rnd.random()) * 900.0
                for _ in range(1 + min(_poisson(rnd, 0.6 * act), 4))
            )
            for t in times:
                if t >= self.fan_created[f]:
                    self.session(t, f)
        self.churn(day_start)

    def take_events(self, first_id: int, upto: float) -> list[events_pb2.Event]:
        """Converts buffered rows before `upto` into Events ordered by time, ids from `first_id`."""
        rows = sorted(((r for r in self.rows if r[0] < upto)), key=lambda r: r[0])
        self.rows = [r for r in self.rows if r[0] >= upto]
        out: list[events_pb2.Event] = []
        seed = self.cfg.seed
        for n, (t, etype, f, c, p, query, tier, value, attrs) in enumerate(rows, first_id):
            e = events_pb2.Event(event_id=f"g{seed}-{n:09d}", type=etype, fan_id=self.fan_ids[f])
            if c >= 0:
                e.creator_id = self.creator_ids[c]
            if p >= 0:
                e.post_id = self.post_ids[p]
            if query:
                e.query = query
            if tier:
                e.tier_id = tier
            if value:
                e.value = value
            if attrs:
                e.attributes.update(attrs)
            set_timestamp(e.occurred_at, round(t, 3))
            out.append(e)
        return out


def _poisson(rnd: random.Random, lam: float) -> int:
    # Knuth's method: fine for the small rates used here, and driven by the same seeded stream.
    limit, k, p = math.exp(-lam), 0, rnd.random()
    while p > limit:
        k += 1
        p *= rnd.random()
    return k


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def generate_platform(
    data_dir: Path,
    *,
    fans: int,
    creators: int,
    days: int,
    seed: int,
    progress: bool = True,
    end_time: float = DEFAULT_END_TIME,
    overwrite: bool = False,
) -> GenerateSummary:
    """Generates a platform into `data_dir` (catalogue + event log); the same arguments give the same bytes.

    Refuses to mix two worlds in one data directory: an existing catalogue or event log is an error unless
    `overwrite`, which deletes both first.
    """
    if fans < 1 or creators < 1 or days < 1:
        raise ValueError("fans, creators and days must be positive")
    started = time.perf_counter()
    data_dir = Path(data_dir)
    events_dir = data_dir / "events"
    catalogue_dir = Catalogue.directory(data_dir)
    existing = Catalogue.exists(data_dir) or (events_dir.is_dir() and any(events_dir.glob("segment-*.log")))
    if existing:
        if not overwrite:
            raise FileExistsError(f"{data_dir} already holds a catalogue or events; pass overwrite=True")
        shutil.rmtree(catalogue_dir, ignore_errors=True)
        shutil.rmtree(events_dir, ignore_errors=True)

    config = GeneratorConfig(fans=fans, creators=creators, days=days, seed=seed, end_time=float(end_time))
    world = build_world(config)
    world.catalogue.write(data_dir)
    np_rng = np.random.default_rng([seed, 1])  # a separate stream: behaviour never shifts the catalogue
    sim = _Simulator(world, random.Random(seed * 1_000_003 + 17), np_rng)

    counts: Counter[str] = Counter()
    n_events = 0
    with EventLog(events_dir) as log:

        def flush(upto: float) -> None:
            nonlocal n_events
            batch = sim.take_events(n_events, upto)
            if batch:
                log.append(batch)
                n_events += len(batch)
                counts.update(ET.Name(e.type) for e in batch)

        sim.backfill()
        flush(world.start_time)
        for d in tqdm(range(days), desc="simulating days", unit="day", disable=not progress):
            day_start = world.start_time + d * DAY
            sim.day(day_start)
            flush(day_start + DAY)
        flush(math.inf)

    summary = GenerateSummary(
        data_dir=data_dir,
        fans=fans,
        creators=creators,
        posts=len(world.catalogue.posts),
        friendships=len(world.catalogue.friendships),
        events=n_events,
        events_by_type={k.removeprefix("EVENT_TYPE_").lower(): v for k, v in sorted(counts.items())},
        start_time=world.start_time,
        end_time=config.end_time,
        seconds=round(time.perf_counter() - started, 2),
    )
    meta = {
        "generator": asdict(config),
        **{k: v for k, v in asdict(summary).items() if k not in {"data_dir", "seconds"}},
    }
    (catalogue_dir / "generated.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return summary


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fans", type=int, default=GeneratorConfig.fans, help="number of fans")
    parser.add_argument("--creators", type=int, default=GeneratorConfig.creators, help="number of creators")
    parser.add_argument("--days", type=int, default=GeneratorConfig.days, help="days of simulated behaviour")
    parser.add_argument(
        "--seed", type=int, default=GeneratorConfig.seed, help="random seed (same seed → same data)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="output directory (default: KINDRED_DATA_DIR or var/data)"
    )
    parser.add_argument(
        "--end-date",
        default=None,
        help="end of the simulated window, YYYY-MM-DD in UTC (default 2026-01-01; "
        "'today' ends it at the start of today)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing catalogue and event log"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_end_date(value: str | None) -> float:
    if value is None:
        return DEFAULT_END_TIME
    day = dt.datetime.now(dt.UTC).date() if value == "today" else dt.date.fromisoformat(value)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def run_generate(args: argparse.Namespace) -> int:
    data_dir: Path | None = args.data_dir
    if data_dir is None:
        from kindred.config import Settings

        data_dir = Settings.from_env().data_dir
    try:
        summary = generate_platform(
            data_dir,
            fans=args.fans,
            creators=args.creators,
            days=args.days,
            seed=args.seed,
            progress=not args.no_progress,
            end_time=parse_end_date(args.end_date),
            overwrite=args.overwrite,
        )
    except FileExistsError:
        print(f"kindred generate: {data_dir} already holds data; use --overwrite", file=sys.stderr)
        return 2
    report: dict[str, Any] = asdict(summary)
    report["data_dir"] = str(summary.data_dir)
    print(json.dumps(report, indent=2))
    return 0
