"""Candidate tables for retrieval_svc's list-based sources, and how much the candidate pool recalls.

    tables = build_candidate_tables(events, catalogue, as_of=t)   # events strictly before t only
    write_candidate_tables(store, tables)                          # the online store namespaces below

- **creator_neighbors** `{creator_id: {"ids", "scores"}}`: each creator's top `neighbors_k` co-engagement
  neighbours. Similarity is the cosine between two creators' audience vectors in the binary
  fan × creator matrix of follows and memberships held at `t` (a fan who follows both counts once),
  shrunk towards 0 when few fans support it: `cos(a, b) · co / (co + shrinkage)`, so two niche creators
  sharing one fan do not look identical. Fans following more than `max_follows_per_fan` creators
  contribute their first ones only (by creator id, deterministic): co-occurrence cost grows with the
  square of a fan's follows and such accounts say little about any pair.
- **social** `{fan_id: {"ids", "scores", "friends"}}`: creators the fan's friends (the catalogue's
  friendship graph) follow or support at `t` and the fan does not, by number of such friends (ties: the
  friends' summed interaction weight with the creator, then id); `scores` = n / (n + 1).
  Every fan with friends gets a row, empty when there is nothing to suggest, so a rerun overwrites stale
  rows.
- **trending** `{key: {"ids", "scores"}}` under "global", "category:<c>", "language:<l>": creators whose
  interaction weight over the last `trending_window_days` exceeds what their own rate over the
  `trending_baseline_days` before predicts, scored like a Poisson z-score
  `(recent − expected) / sqrt(expected + prior)` — growth that is both steep and not tiny. The same keys
  prefixed "new:" list creators created within `new_creator_days` with at most
  `new_creator_max_followers` followers, by interaction weight per day since creation (those nobody has
  found yet at the end, newest first): the exploration share retrieval reserves for them. Scores are
  divided by the largest in their family, so they lie in [0, 1].
- **mf** (not a store namespace): ALS creator factors fitted on the follow state at `t` (trainer.mf).
  Serving loads them from the two-tower user model's version (kindred.mf); offline, the tables carry the
  model fitted as of their own `t`, so a pool drawn at a training cut scores with factors that never saw
  what came after it.

The pipeline writes tables as of the end of the data (what serving needs, like the "fan" rows) and
measures the candidate pool on the hold-out with tables as of the train end (`candidate_pool_recall`):
the pool is built by retrieval_svc's own source logic and quota merge, so the number is what serving
would retrieve for those fans (exact two-tower search instead of HNSW; no request filters).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from kindred.data.catalogue import Catalogue
from kindred.data.schema import Creator
from kindred.features import DAY, Interactions, build_popular_lists, following_pairs, pair_weights
from kindred.mf import MfModel, MfParams
from retrieval_svc.sources import SourceHit

if TYPE_CHECKING:
    from trainer.config import TrainConfig
    from trainer.datasets import Snapshot

NEIGHBORS = "creator_neighbors"
SOCIAL = "social"
TRENDING = "trending"
NEW_PREFIX = "new:"

Table = dict[str, dict[str, list[Any]]]
# What retrieval served before the list-based sources: the comparison point of the evaluation.
TWO_SOURCE_SHARES: Mapping[str, float] = {"two_tower": 0.7, "popular": 0.3}


@dataclasses.dataclass(frozen=True)
class CandidatesConfig:
    """How the tables are built. Defaults are what the pipeline uses; this belongs in TrainConfig as a
    `[candidates]` table (trainer/config.py was being changed by the promotion work when this landed)."""

    neighbors_k: int = 50  # neighbours kept per creator
    # Measured on the seed-7 demo platform (item-to-item alone, hold-out recall@20 / @50 of its own
    # list): shrinkage 0 → 0.425 / 0.699, 1 → 0.415 / 0.689, 2 → 0.413 / 0.682, 5 → 0.408 / 0.668,
    # 10 → 0.405 / 0.661. Its 300 creators share many fans, so shrinkage only costs there; it guards the
    # sparse pairs of a large catalogue, where one shared fan is the common case. Follows beat any
    # interaction ≥ 1 as the audience (0.36 / 0.63 at shrinkage 5).
    shrinkage: float = 1.0
    max_follows_per_fan: int = 200
    social_k: int = 100  # creators kept per fan
    trending_k: int = 200  # creators kept per trending list
    trending_window_days: float = 7.0  # "recent"
    trending_baseline_days: float = 21.0  # the creator's own rate before that
    trending_prior: float = 5.0  # pseudo-count of interaction weight: damps the growth of tiny creators
    new_creator_days: float = 30.0  # "new": created at most this long ago ...
    new_creator_max_followers: int = 20  # ... and followed by at most this many fans
    # The mf source's model (TrainConfig's `[mf]`); None: no mf source in the pools.
    mf: MfParams | None = dataclasses.field(default_factory=MfParams)
    seed: int = 0  # ALS's initialisation


def candidates_config(cfg: TrainConfig) -> CandidatesConfig:
    """The tables' config a training run uses: the defaults, with the run's `[mf]` and seed."""
    return CandidatesConfig(mf=cfg.mf, seed=cfg.seed)


@dataclasses.dataclass(frozen=True)
class CandidateTables:
    neighbors: Table
    social: Table
    trending: Table
    mf: MfModel | None = None

    def summary(self) -> str:
        new = sum(1 for k in self.trending if k.startswith(NEW_PREFIX))
        return (
            f"{len(self.neighbors):,} creators with neighbours, {len(self.social):,} fans with a social row, "
            f"{len(self.trending) - new} trending + {new} new-creator lists"
            + (f", mf factors for {len(self.mf.creator_ids):,} creators" if self.mf is not None else "")
        )


# --------------------------------------------------------------------------------------------------
# Item-to-item
# --------------------------------------------------------------------------------------------------


def co_engagement_neighbors(
    following: Mapping[str, Iterable[str]], *, k: int, shrinkage: float, max_follows_per_fan: int = 200
) -> Table:
    """creator → its top-k neighbours by shrunk audience cosine (see the module docstring)."""
    creators = sorted({c for cs in following.values() for c in cs})
    if not creators:
        return {}
    index = {c: i for i, c in enumerate(creators)}
    n_c = len(creators)
    fan_col: list[int] = []
    item_col: list[int] = []
    for f, (_, cs) in enumerate(sorted(following.items())):
        mine = sorted(index[c] for c in set(cs))[:max_follows_per_fan]
        fan_col += [f] * len(mine)
        item_col += mine
    fans = np.asarray(fan_col, dtype=np.int64)
    items = np.asarray(item_col, dtype=np.int64)  # sorted within each fan
    audience = np.bincount(items, minlength=n_c).astype(np.float64)
    # Every (a, b) pair with a < b followed by one fan: compare each entry with the one d places on.
    keys = []
    for d in range(1, min(max_follows_per_fan, len(items))):
        same = fans[:-d] == fans[d:]
        if not same.any():
            break
        keys.append(items[:-d][same] * n_c + items[d:][same])
    if not keys:
        return {}
    pairs, co = np.unique(np.concatenate(keys), return_counts=True)
    a, b = pairs // n_c, pairs % n_c
    sim = co / np.sqrt(audience[a] * audience[b]) * (co / (co + shrinkage))
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    score = np.concatenate([sim, sim])
    order = np.lexsort((dst, -score, src))  # by source, best first, ties by id
    src, dst, score = src[order], dst[order], score[order]
    starts = np.searchsorted(src, np.arange(n_c))
    ends = np.searchsorted(src, np.arange(n_c), side="right")
    out: Table = {}
    for c in range(n_c):
        lo, hi = int(starts[c]), min(int(ends[c]), int(starts[c]) + k)
        if hi > lo:
            out[creators[c]] = {
                "ids": [creators[int(j)] for j in dst[lo:hi]],
                "scores": [round(float(s), 6) for s in score[lo:hi]],
            }
    return out


# --------------------------------------------------------------------------------------------------
# Social
# --------------------------------------------------------------------------------------------------


def social_lists(
    following: Mapping[str, set[str]],
    friends: Mapping[str, set[str]],
    *,
    k: int,
    strength: Mapping[tuple[str, str], float] | None = None,
) -> Table:
    """fan → creators its friends follow or support and it does not (see the module docstring).

    `strength[(fan, creator)]`: how much a friend engages with a creator, the tie-break between creators
    with as many friends (e.g. summed interaction weight); absent pairs count 0.
    """
    strength = strength or {}
    out: Table = {}
    for fan in sorted(friends):
        own = following.get(fan, set())
        count: dict[str, int] = {}
        weight: dict[str, float] = {}
        for friend in friends[fan]:
            for c in following.get(friend, ()):
                if c in own:
                    continue
                count[c] = count.get(c, 0) + 1
                weight[c] = weight.get(c, 0.0) + strength.get((friend, c), 0.0)
        ranked = sorted(count, key=lambda c: (-count[c], -weight[c], c))[:k]
        out[fan] = {
            "ids": ranked,
            "scores": [round(count[c] / (count[c] + 1.0), 6) for c in ranked],
            "friends": [count[c] for c in ranked],
        }
    return out


# --------------------------------------------------------------------------------------------------
# Trending and new creators
# --------------------------------------------------------------------------------------------------


def trending_lists(
    events: Interactions,
    creators: Sequence[Creator],
    following: Mapping[str, set[str]],
    *,
    as_of: float,
    cfg: CandidatesConfig,
) -> Table:
    """The "global", "category:<c>", "language:<l>" trending lists and their "new:" twins."""
    ids = [c.creator_id for c in creators]
    index = {c: i for i, c in enumerate(ids)}
    n = len(ids)
    if n == 0:
        return {}
    ev = events.before(as_of)
    known = np.array([c in index for c in ev.creator_id.tolist()], dtype=bool)
    ev = ev.select(known & (ev.weight > 0))
    ci = np.array([index[c] for c in ev.creator_id.tolist()], dtype=np.int64)
    w = ev.weight
    window = cfg.trending_window_days * DAY
    baseline = cfg.trending_baseline_days * DAY
    recent_start, base_start = as_of - window, as_of - window - baseline
    in_recent = ev.ts >= recent_start
    in_base = (ev.ts >= base_start) & ~in_recent
    recent = np.bincount(ci[in_recent], weights=w[in_recent], minlength=n)
    base = np.bincount(ci[in_base], weights=w[in_base], minlength=n)
    total = np.bincount(ci, weights=w, minlength=n)
    created = np.array([c.created_at for c in creators], dtype=np.float64)
    # The baseline rate counts only the part of the baseline window the creator existed for.
    lived = np.clip(recent_start - np.maximum(created, base_start), 0.0, baseline)
    rate = np.divide(base, lived, out=np.zeros(n), where=lived > 0)
    expected = rate * window
    growth = (recent - expected) / np.sqrt(expected + cfg.trending_prior)

    followers = np.zeros(n, dtype=np.int64)
    for cs in following.values():
        for c in cs:
            if c in index:
                followers[index[c]] += 1
    age_days = (as_of - created) / DAY
    is_new = (created < as_of) & (age_days <= cfg.new_creator_days)
    is_new &= followers <= cfg.new_creator_max_followers
    traction = total / np.maximum(age_days, 1.0)

    trend_order = [
        i for i in np.lexsort((np.array(ids), -growth)).tolist() if growth[i] > 0 and recent[i] > 0
    ]
    new_order = [i for i in np.lexsort((np.array(ids), -created, -traction)).tolist() if is_new[i]]
    out: Table = {}
    for prefix, order, score in (("", trend_order, growth), (NEW_PREFIX, new_order, traction)):
        top = max((float(score[i]) for i in order), default=0.0)
        groups: dict[str, list[int]] = {"global": order}
        for i in order:
            groups.setdefault(f"category:{creators[i].category}", []).append(i)
            groups.setdefault(f"language:{creators[i].language}", []).append(i)
        for key, members in groups.items():
            chosen = members[: cfg.trending_k]
            out[prefix + key] = {
                "ids": [ids[i] for i in chosen],
                "scores": [round(float(score[i]) / top, 6) if top > 0 else 0.0 for i in chosen],
            }
    return out


# --------------------------------------------------------------------------------------------------
# All tables, writing, evaluation
# --------------------------------------------------------------------------------------------------


def build_candidate_tables(
    events: Interactions,
    catalogue: Catalogue,
    *,
    as_of: float,
    cfg: CandidatesConfig | None = None,
    with_mf: bool = True,
) -> CandidateTables:
    """The three tables from events strictly before `as_of` and the catalogue's friendships, and the mf
    model fitted on the same follows (unless `with_mf` is False or the config has none)."""
    from trainer.mf import fit_mf

    cfg = cfg or CandidatesConfig()
    past = events.before(as_of)
    following = following_pairs(past)
    pf, pc, pw, _ = pair_weights(past)
    strength = {(f, c): float(w) for f, c, w in zip(pf.tolist(), pc.tolist(), pw.tolist(), strict=True)}
    mf = None
    if with_mf and cfg.mf is not None:
        mf = fit_mf(following, [c.creator_id for c in catalogue.creators], cfg.mf, seed=cfg.seed)
    return CandidateTables(
        neighbors=co_engagement_neighbors(
            following, k=cfg.neighbors_k, shrinkage=cfg.shrinkage, max_follows_per_fan=cfg.max_follows_per_fan
        ),
        social=social_lists(following, catalogue.friends_of(), k=cfg.social_k, strength=strength),
        trending=trending_lists(past, catalogue.creators, following, as_of=as_of, cfg=cfg),
        mf=mf,
    )


class TableWriter(Protocol):
    """The write side of the online store (kindred.store.online.OnlineStore)."""

    def put(self, namespace: str, rows: Mapping[str, Mapping[str, Any]]) -> None: ...


def write_candidate_tables(store: TableWriter, tables: CandidateTables) -> None:
    """Writes the three namespaces (each `put` becomes visible at once; see kindred.store.online)."""
    store.put(NEIGHBORS, tables.neighbors)
    store.put(SOCIAL, tables.social)
    store.put(TRENDING, tables.trending)


def source_hits(
    fan_id: str,
    fan: Mapping[str, Any],
    two_tower_scores: npt.NDArray[np.float32] | None,
    creator_ids: Sequence[str],
    tables: CandidateTables,
    popular: Mapping[str, Mapping[str, Any]],
    *,
    sources: Iterable[str],
    n: int,
    mf_scores: npt.NDArray[np.float32] | None = None,
) -> dict[str, list[SourceHit]]:
    """Each source's top `n` for one fan, by the serving sources' own list logic; the fan's `following`
    is excluded as the serving filter would (there is no engine offline: a set does it). `mf_scores`:
    the fan's mf scores when the caller already has them (else folded in here from `tables.mf`)."""
    from retrieval_svc.sources import item_to_item as i2i
    from retrieval_svc.sources import mf as mfs
    from retrieval_svc.sources import popular as pop
    from retrieval_svc.sources import social as soc
    from retrieval_svc.sources import trending as tr

    seen = {str(c) for c in fan.get("following") or ()}

    def keep(hits: Iterable[SourceHit]) -> list[SourceHit]:
        # Lazily: the two-tower list is the whole catalogue, of which only the first n unseen are kept.
        return list(itertools.islice((h for h in hits if h.item_id not in seen), n))

    wanted = set(sources)
    hits: dict[str, list[SourceHit]] = {}
    if "two_tower" in wanted and two_tower_scores is not None:
        order = np.argsort(-two_tower_scores, kind="stable")
        hits["two_tower"] = keep(SourceHit(creator_ids[j], float(two_tower_scores[j]), "") for j in order)
    if "mf" in wanted and tables.mf is not None:
        following = [str(c) for c in fan.get("following") or ()]
        scores = mf_scores if mf_scores is not None else mfs.fan_scores(tables.mf, following)
        hits["mf"] = [] if scores is None else mfs.ranked_hits(tables.mf, scores, n, following)
    if "item_to_item" in wanted:
        seeds = i2i.seeds_of(fan)
        hits["item_to_item"] = keep(i2i.aggregate(seeds, [tables.neighbors.get(s) for s in seeds]))
    if "social" in wanted:
        hits["social"] = keep(soc.hits_from_row(tables.social.get(fan_id)))
    if "trending" in wanted:
        names = tr.list_keys(tr.categories_for([], fan), tr.languages_for([], fan))
        trend = keep(tr.merge_lists([tables.trending.get(k) for k in names], names, new=False))
        new_rows = [tables.trending.get(tr.NEW_PREFIX + k) for k in names]
        new = keep(tr.merge_lists(new_rows, names, new=True))
        hits["trending"] = tr.mix(trend, new[: round(n * tr.DEFAULT_NEW_SHARE)], n, tr.DEFAULT_NEW_SHARE)
    if "popular" in wanted:
        lists = [(f"category:{c}", f"popular in {c}") for c in pop.interest_categories([], fan)]
        lists.append((pop.GLOBAL_KEY, pop.REASON_GLOBAL))
        rows = [dict(popular[key]) if key in popular else None for key, _ in lists]
        hits["popular"] = keep(pop.merge_lists(rows, [r for _, r in lists]))
    return hits


def pool(hits: Mapping[str, Sequence[SourceHit]], shares: Mapping[str, float], k: int) -> set[str]:
    """The ids retrieval_svc's merge keeps from these hits: k candidates at the `shares` quotas."""
    from retrieval_svc.retriever import merge, resolve_quotas

    present = {name: hs for name, hs in hits.items() if name in shares}
    return {c.item_id for c in merge(present, resolve_quotas(k, shares, {}), k)}


def candidate_pool_recall(
    fan_ids: Sequence[str],
    labels: Sequence[set[str]],
    fan_rows: Mapping[str, Mapping[str, Any]],
    two_tower_scores: npt.NDArray[np.float32],
    creator_ids: Sequence[str],
    tables: CandidateTables,
    popular: Mapping[str, Mapping[str, Any]],
    *,
    ks: Sequence[int],
    shares: Mapping[str, float],
) -> dict[str, float]:
    """Mean recall@k of the candidate pool retrieval_svc would return (k candidates at `shares` quotas).

    `two_tower_scores` (U, C): cosine of each fan in `fan_ids` with every creator of `creator_ids`;
    `labels`: creators each fan discovered afterwards (non-empty). Sources are those named in `shares`,
    in its order (the serving priority order). Also reports each source alone ("<source>@k").
    """
    sums: dict[str, float] = {}
    for row_i, (fan_id, relevant) in enumerate(zip(fan_ids, labels, strict=True)):
        fan = fan_rows.get(fan_id) or {}
        hits = source_hits(
            fan_id, fan, two_tower_scores[row_i], creator_ids, tables, popular, sources=shares, n=max(ks)
        )
        for k in ks:
            found = {f"recall@{k}": pool(hits, shares, k)}
            found |= {f"{name}@{k}": {h.item_id for h in hs[:k]} for name, hs in hits.items()}
            for key, ids in found.items():
                sums[key] = sums.get(key, 0.0) + len(ids & relevant) / len(relevant)
    return {key: value / max(len(fan_ids), 1) for key, value in sums.items()}


@dataclasses.dataclass(frozen=True)
class Holdout:
    """What the candidate-pool evaluation needs from the pipeline's hold-out snapshot."""

    fan_ids: Sequence[str]
    labels: Sequence[set[str]]
    fan_rows: Mapping[str, Mapping[str, Any]]
    creator_rows: Mapping[str, Mapping[str, Any]]
    two_tower_scores: npt.NDArray[np.float32]  # (U, C)
    creator_ids: Sequence[str]
    as_of: float  # the train end: tables for the evaluation are built from events before it

    @classmethod
    def from_snapshot(
        cls,
        test: Snapshot,
        user_vecs: npt.NDArray[np.float32],
        creator_vecs: npt.NDArray[np.float32],
        creator_ids: Sequence[str],
    ) -> Holdout:
        """The pipeline's hold-out snapshot (fans with a discovery) and the two-tower's vectors for it."""
        rows = [i for i, y in enumerate(test.labels) if y]
        return cls(
            fan_ids=[test.fan_ids[i] for i in rows],
            labels=[{creator_ids[c] for c in test.labels[i]} for i in rows],
            fan_rows=test.fan_rows,
            creator_rows=test.creator_rows,
            two_tower_scores=user_vecs[rows] @ creator_vecs.T,  # (U, C) cosines: the towers normalise
            creator_ids=creator_ids,
            as_of=test.cut,
        )


def publish_candidates(
    store: TableWriter,
    events: Interactions,
    catalogue: Catalogue,
    *,
    as_of: float,
    holdout: Holdout | None = None,
    cfg: CandidatesConfig | None = None,
    popular_k: int = 500,
    report: Path | None = None,
    note: Callable[[str], None] = print,
) -> dict[str, float]:
    """The pipeline's one call: serving tables as of `as_of` into `store`; with `holdout`, the candidate
    pool's hold-out recall with and without the list-based sources (printed, and written to `report`)."""
    from retrieval_svc.retriever import DEFAULT_QUOTA_SHARES

    cfg = cfg or CandidatesConfig()
    # The serving mf model goes out with the models (pipeline's export step), not into the store.
    tables = build_candidate_tables(events, catalogue, as_of=as_of, cfg=cfg, with_mf=False)
    write_candidate_tables(store, tables)
    note(f"candidate tables: {tables.summary()}")
    if holdout is None:
        return {}
    past_tables = build_candidate_tables(events, catalogue, as_of=holdout.as_of, cfg=cfg)
    popular = build_popular_lists(holdout.creator_rows, k=popular_k)
    ks = (50, 100)
    args = (
        holdout.fan_ids,
        holdout.labels,
        holdout.fan_rows,
        holdout.two_tower_scores,
        holdout.creator_ids,
        past_tables,
        popular,
    )
    full = candidate_pool_recall(*args, ks=ks, shares=DEFAULT_QUOTA_SHARES)
    base = candidate_pool_recall(*args, ks=ks, shares=TWO_SOURCE_SHARES)
    metrics = {f"candidate_recall@{k}": full[f"recall@{k}"] for k in ks}
    metrics |= {f"candidate_recall@{k}_two_tower+popular": base[f"recall@{k}"] for k in ks}
    metrics |= {f"source_recall:{key}": v for key, v in full.items() if not key.startswith("recall@")}
    for k in ks:
        note(
            f"candidate pool recall@{k} (hold-out): {full[f'recall@{k}']:.4f} with every source, "
            f"{base[f'recall@{k}']:.4f} with two-tower + popular only"
        )
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        body = {"metrics": metrics, "config": dataclasses.asdict(cfg), "shares": dict(DEFAULT_QUOTA_SHARES)}
        report.write_text(json.dumps(body, indent=2) + "\n")
    return metrics


# --------------------------------------------------------------------------------------------------
# The serving pool, offline: what the ranker trains and is evaluated on
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One retrieved candidate as the ranker sees it (the offline twin of retrieval_svc's Candidate)."""

    creator: int  # index in the catalogue creator order
    source: str  # the source that claimed it ("two_tower", "item_to_item", "social", "trending", "popular")
    two_tower_score: float | None  # None where serving would not know it
    retrieval_score: float  # the claiming source's own score (serving's scores["retrieval"])
    sources: tuple[str, ...] = ()  # every source that proposed it, claiming source first
    # retrieval's per-candidate facts (retrieval_svc.sources.ItemFacts), whichever source proposed it
    co_engagement: float = 0.0  # summed neighbour similarity to the fan's creators
    social_friends: float = 0.0  # the fan's friends who follow it
    mf_score: float = 0.0  # the fan's ALS score for it (0: no mf model, or no known follows)


class ServingPool:
    """Draws one fan's candidates the way retrieval_svc does, from tables as of one time.

    Sources are the serving sources' own list logic (`source_hits`) over `tables` and `popular`, each
    asked for its quota plus slack like `Retriever.retrieve`, merged by retrieval_svc's `merge` at
    `shares` (default: the serving quotas). A candidate carries `scores["two_tower"]` only when the
    two-tower proposed it, as at serving time. The two-tower list is taken from an argpartition of the
    fan's scores: O(catalogue) per fan, nothing per (fan × catalogue) is kept.
    """

    def __init__(
        self,
        tables: CandidateTables,
        popular: Mapping[str, Mapping[str, Any]],
        creator_ids: Sequence[str],
        *,
        k: int,
        shares: Mapping[str, float] | None = None,
    ) -> None:
        from retrieval_svc.retriever import DEFAULT_QUOTA_SHARES, MIN_SLACK, resolve_quotas

        self.tables = tables
        self.popular = popular
        self.creator_ids = list(creator_ids)
        self.index = {c: i for i, c in enumerate(self.creator_ids)}
        self.k = k
        self.shares = dict(DEFAULT_QUOTA_SHARES if shares is None else shares)
        self.quotas = resolve_quotas(k, self.shares, {})
        self.asked = {n: min(k, q + max(MIN_SLACK, q // 4)) for n, q in self.quotas.items()}

    @classmethod
    def as_of(
        cls,
        events: Interactions,
        catalogue: Catalogue,
        creator_rows: Mapping[str, Mapping[str, Any]],
        *,
        as_of: float,
        k: int,
        popular_k: int = 500,
        cfg: CandidatesConfig | None = None,
    ) -> ServingPool:
        """Tables from events strictly before `as_of`; popular lists from `creator_rows` (rows as of it)."""
        tables = build_candidate_tables(events, catalogue, as_of=as_of, cfg=cfg)
        popular = build_popular_lists(creator_rows, k=popular_k)
        return cls(tables, popular, [c.creator_id for c in catalogue.creators], k=k)

    def draw(
        self,
        fan_id: str,
        fan_row: Mapping[str, Any] | None,
        two_tower_scores: npt.NDArray[np.floating] | None,
    ) -> list[Candidate]:
        from retrieval_svc.retriever import merge
        from retrieval_svc.sources import mf as mfs

        fan = fan_row or {}
        wanted = [n for n, q in self.quotas.items() if q > 0]
        mf_scores = None
        # Facts whatever the quotas, as serving records them (retrieval_svc.sources.FactRecorder).
        if self.tables.mf is not None:  # once: the hits and every candidate's fact
            mf_scores = mfs.fan_scores(self.tables.mf, [str(c) for c in fan.get("following") or ()])
        # Each source's list up to k: serving first asks for quota + slack and, when the merge comes out
        # short, asks the sources that had more for up to k (its backfill). Both views come from these.
        full = source_hits(
            fan_id,
            fan,
            None,
            self.creator_ids,
            self.tables,
            self.popular,
            sources=[n for n in wanted if n != "two_tower"],
            n=self.k,
            mf_scores=mf_scores,
        )
        if "two_tower" in wanted and two_tower_scores is not None:
            full["two_tower"] = self._two_tower_hits(fan, two_tower_scores, self.k)
        present = [n for n in wanted if n in full]
        hits = {n: full[n][: self.asked[n]] for n in present}
        merged = merge(hits, self.quotas, self.k)
        if len(merged) < self.k:
            hits = {n: full[n] if len(hits[n]) >= self.asked[n] else hits[n] for n in present}
            merged = merge(hits, self.quotas, self.k)
        co, friends = self._facts(fan_id, fan)
        out = []
        for c in merged:
            i = self.index.get(c.item_id)
            if i is None:
                continue
            tt = c.scores.get("two_tower") if "two_tower" in c.sources else None
            retrieval = float(c.scores["retrieval"])
            mf_row = self.tables.mf.row_of(c.item_id) if mf_scores is not None and self.tables.mf else None
            facts = (
                co.get(c.item_id, 0.0),
                friends.get(c.item_id, 0.0),
                0.0 if mf_row is None or mf_scores is None else float(mf_scores[mf_row]),
            )
            out.append(Candidate(i, c.source, tt, retrieval, tuple(c.sources), *facts))
        return out

    def _facts(self, fan_id: str, fan: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
        """What serving's item-to-item and social sources leave in the request's facts for this fan,
        whether or not their quotas are 0 (retrieval_svc.sources.FactRecorder): every neighbour's summed
        similarity, every creator the friends follow with their count."""
        from retrieval_svc.sources import item_to_item as i2i
        from retrieval_svc.sources import social as soc

        co: dict[str, float] = {}
        seeds = i2i.seeds_of(fan)
        if seeds:
            co = i2i.summed_neighbours(seeds, [self.tables.neighbors.get(s) for s in seeds])[1]
        hits = soc.hits_from_row(self.tables.social.get(fan_id))
        friends = {h.item_id: h.extra[soc.FRIENDS_KEY] for h in hits}
        return co, friends

    def _two_tower_hits(
        self, fan: Mapping[str, Any], scores: npt.NDArray[np.floating], n: int
    ) -> list[SourceHit]:
        seen = {self.index[str(c)] for c in fan.get("following") or () if str(c) in self.index}
        take = min(len(scores), n + len(seen))
        top = np.argpartition(-scores, take - 1)[:take] if take < len(scores) else np.arange(len(scores))
        # Ties by index, like a stable argsort over the whole row.
        top = top[np.lexsort((top, -scores[top]))]
        return [SourceHit(self.creator_ids[j], float(scores[j]), "") for j in top if j not in seen][:n]


__all__ = [
    "Candidate",
    "CandidateTables",
    "CandidatesConfig",
    "Holdout",
    "ServingPool",
    "build_candidate_tables",
    "candidate_pool_recall",
    "candidates_config",
    "co_engagement_neighbors",
    "publish_candidates",
    "social_lists",
    "trending_lists",
    "write_candidate_tables",
]
