"""Re-ranking after scoring: small composable steps over the ranker's order, each leaving a trace.

The ranker orders candidates by predicted engagement; a page built only from that is repetitive
(five Music creators in a row) and starves creators the model knows little about. Re-ranking fixes
the page, not the model. Pipeline (`Reranker.from_config`), each step optional:

1. **freshness**  adds up to `weight` to the relevance of creators more active lately than the
                  other candidates (posts in the last 30 days, engagement trend), then re-sorts.
2. **diversity**  MMR (Carbonell & Goldstein 1998) picks the page greedily by
                  `lam * relevance - (1 - lam) * max similarity to what is already on the page`;
                  similarity is 1 for the same category (and the cosine of creator vectors when
                  every item has one).
   **calibration** (Steck 2018, "Calibrated Recommendations") instead picks the page (greedily, then
                  shown by relevance) by `(1 - lam) * summed relevance - lam * KL(target || page's
                  categories)`, the target being the fan's own spread over categories (from the
                  creators it follows, else its onboarding interests) with an `explore` share spread
                  evenly over the candidates' categories: a fan who follows mostly Music keeps mostly
                  Music, with room for the rest, where MMR pulls every fan toward one creator per
                  category.
3. **exposure**   reserves `page // slot_every` slots for new or small creators, filled by the best
                  such candidate with relevance >= `min_relevance` if the page has too few already.
4. **cap**        at most `max_per_group` posts of one creator on the page, and (when
                  `max_per_category` > 0) at most that many creators of one category; overflow moves
                  just below the page. A page is never shortened: when nothing else is left, the cap
                  gives way.

Relevance is the ranker's score min-max scaled over the request's candidates, so the parameters
mean the same whatever the ranker's output scale. The returned page records what happened to each
item: `scores["relevance"]`, `scores["ranker_position"]` (1-based, before re-ranking),
`scores["freshness"]` (the boost), `scores["mmr"]` (its MMR value when picked), `scores["exposure"]`
(1 = took a reserved slot), `scores["final"]` (relevance plus boosts), and reasons such as
"boosted: new creator", "diversity: adds Cooking to the page", "moved up: at most 3 per category on
a page", so the console can show why an item moved.

Candidates' facts live in a columnar `Slate` (numpy per field): this runs on every Recommend, and
only the items returned get per-item Python work (reasons, scores). A step is a `RerankStep`:
`apply(slate, order, page)` returns the order (indices, best first) with the page first, and
`reasons(slate, items)` words what it did to the items on the page.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from kindred.features import DAY
from ranking_svc.domain import ScoredCandidate

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

POST = "post"
# The cap's group keys: a post's creator, a creator's category (see `Slate.group`).
CREATOR_GROUP = "creator:"
CATEGORY_GROUP = "category:"
TRENDING_NEW = "trending_new"  # set by retrieval's trending source on new creators
P = TypeVar("P", bound="DataclassInstance")


# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FreshnessParams:
    """Activity is measured against the other candidates of the request (their median), not on an
    absolute scale: how many posts a month is "active" differs by platform and category, and the
    trend's level depends on how long the event history is (see kindred.features `trend`)."""

    # Largest boost, in relevance units ([0, 1] over the request): enough to reorder close calls only.
    weight: float = 0.05
    # Posts in the last 30 days above the candidates' median that earn the whole boost.
    posts_30d_scale: float = 8.0
    # Engagement trend (log of last-7-days engagement over the usual) above the candidates' median
    # that earns the whole boost: 1.0 ≈ 2.7x the engagement growth of the median candidate.
    trend_scale: float = 1.0
    # Boosts below this are not worth a reason (nor a change of order).
    min_boost: float = 0.01


@dataclasses.dataclass(frozen=True)
class DiversityParams:
    # MMR trade-off: 1 = pure relevance, 0 = pure novelty. 0.93 lets a second item of a category
    # through only when it leads the best new-category item by more than 0.07/0.93 ≈ 0.075 relevance.
    # On the demo hold-out (2,000 fans x 300 creators) with the cap of 3: NDCG@10 -3.5% for +55%
    # categories in the top 10; 0.85 cost -9% (numbers in the change that set it).
    lam: float = 0.93


@dataclasses.dataclass(frozen=True)
class CalibrationParams:
    # Steck's lambda: weight of the page's miscalibration (KL divergence) against its summed relevance.
    # On the demo hold-out (seed 7, 1,087 fans) 0.2 alone cuts the ranker's miscalibration C_KL
    # 0.91 -> 0.50 and adds 0.7 categories to the top 10 for -0.002 NDCG@10; MMR 0.93 + a cap of 3 cut
    # it to 0.72 for -0.021 (bench_rerank_effect; README "Why calibration").
    lam: float = 0.2
    # Share of the target spread evenly over the candidates' categories, so a fan who follows a single
    # category still sees others that the ranker rates well (and a fan with no history gets variety).
    explore: float = 0.2
    # Steck's alpha: the page's distribution is mixed with this much of the target, keeping KL finite.
    alpha: float = 0.01


@dataclasses.dataclass(frozen=True)
class ExposureParams:
    # One reserved slot per this many page slots (a page of 10 reserves 1; of 5, none).
    slot_every: int = 10
    # "Small": fewer current followers than this.
    max_followers: int = 20
    # "New": joined fewer than this many days ago.
    new_days: float = 30.0
    # A reserved slot is only filled by a candidate the ranker rates at least this well (relevance).
    min_relevance: float = 0.5


@dataclasses.dataclass(frozen=True)
class CapParams:
    # At most this many posts of one creator on a page.
    max_per_group: int = 3
    # At most this many creators of one category on a page; 0 = no such cap (the default: calibration
    # sets the category mix, and a fixed cap pulls every fan toward one creator per category).
    max_per_category: int = 0

    def limit(self, group: str) -> int | None:
        """The cap of one of the slate's groups ("creator:…" for posts, "category:…" for creators);
        None = uncapped (creators without a category, or no per-category cap)."""
        if group.startswith(CREATOR_GROUP):
            return self.max_per_group
        if group.startswith(CATEGORY_GROUP) and self.max_per_category > 0:
            return self.max_per_category
        return None


@dataclasses.dataclass(frozen=True)
class RerankConfig:
    """Which steps run and with what parameters; `None` switches a step off."""

    freshness: FreshnessParams | None = FreshnessParams()
    # Off by default since calibration (below) picks the page: MMR and a per-category cap pull every
    # fan toward one creator per category, calibration toward the fan's own mix (bench_rerank_effect).
    diversity: DiversityParams | None = None
    exposure: ExposureParams | None = ExposureParams()
    # Posts per creator; creators per category only when max_per_category is set (calibration sets the mix).
    cap: CapParams | None = CapParams()
    calibration: CalibrationParams | None = CalibrationParams()

    def __post_init__(self) -> None:
        if self.diversity and self.calibration:
            raise ValueError("diversity and calibration both pick the page: configure one of them")
        if self.calibration and not (
            0.0 <= self.calibration.lam <= 1.0
            and 0.0 <= self.calibration.explore <= 1.0
            and 0.0 < self.calibration.alpha <= 1.0
        ):
            raise ValueError(
                f"calibration: lam and explore must be in [0, 1] and alpha in (0, 1], got {self.calibration}"
            )
        if self.freshness and self.freshness.weight < 0:
            raise ValueError("freshness: weight must be >= 0")
        if self.freshness and not (self.freshness.posts_30d_scale > 0 and self.freshness.trend_scale > 0):
            raise ValueError("freshness: posts_30d_scale and trend_scale must be > 0")
        if self.diversity and not 0.0 <= self.diversity.lam <= 1.0:
            raise ValueError(f"diversity: lam must be in [0, 1], got {self.diversity.lam}")
        if self.exposure and self.exposure.slot_every < 1:
            raise ValueError("exposure: slot_every must be >= 1")
        if self.cap and (self.cap.max_per_group < 1 or self.cap.max_per_category < 0):
            raise ValueError("cap: max_per_group must be >= 1 and max_per_category >= 0")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RerankConfig:
        """From JSON-like data, e.g. {"diversity": {"lam": 0.7}, "exposure": null}; unknown keys fail.

        A step not mentioned keeps its defaults; `null` switches it off.
        """
        steps: dict[str, type[Any]] = {
            "freshness": FreshnessParams,
            "diversity": DiversityParams,
            "exposure": ExposureParams,
            "cap": CapParams,
            "calibration": CalibrationParams,
        }
        unknown = set(data) - set(steps)
        if unknown:
            raise ValueError(f"unknown re-rank steps {sorted(unknown)}; known: {sorted(steps)}")
        chosen: dict[str, Any] = {
            name: None if params is None else params_from_mapping(steps[name], params, where=name)
            for name, params in data.items()
        }
        # Diversity and calibration are alternatives: configuring one switches off the other's default.
        for one, other in (("diversity", "calibration"), ("calibration", "diversity")):
            if chosen.get(one) is not None and other not in chosen:
                chosen[other] = None
        return cls(**chosen)


def params_from_mapping(cls: type[P], data: Any, *, where: str) -> P:
    """A frozen parameters dataclass from a JSON object: unknown keys fail, numbers take the field's type."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    default = cls()
    known = {f.name for f in dataclasses.fields(default)}
    bad = set(data) - known
    if bad:
        raise ValueError(f"{where}: unknown parameters {sorted(bad)}; known: {sorted(known)}")
    values = {}
    for key, value in data.items():
        kind = type(getattr(default, key))
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (kind is int and value != int(value))
        ):
            raise ValueError(f"{where}.{key}: expected a {kind.__name__}, got {value!r}")
        values[key] = kind(value)
    return dataclasses.replace(default, **values)


# --------------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------------

FloatArray = npt.NDArray[np.float64]
NAN = float("nan")


@dataclasses.dataclass(frozen=True)
class ItemFacts:
    """What the rules know about one item (tests and callers without rows; rows go `Slate.from_rows`)."""

    category: str = ""
    group: str = ""  # the cap's key
    n_followers: int | None = None
    age_days: float | None = None
    posts_30d: int | None = None
    trend: float | None = None
    vector: npt.NDArray[np.float32] | None = None  # an embedding, when one is at hand
    flagged_new: bool = False  # retrieval's trending source says so (scores["trending_new"])


def _num(v: Any) -> float:
    """A row value as a float; NaN when absent or not a finite number (the rules then ignore it)."""
    if v.__class__ is float or v.__class__ is int:  # JSON numbers: the fast, common case
        return float(v)
    try:
        return float(v) if v is not None and not isinstance(v, bool | str) else NAN
    except (TypeError, ValueError):
        return NAN


def _values_column(values: Sequence[Any]) -> FloatArray:
    """One numeric field of every row; missing (None) and malformed values become NaN."""
    try:
        return np.array(values, dtype=np.float64)  # None → NaN: the common, fast path
    except (TypeError, ValueError):
        return np.array([_num(v) for v in values], dtype=np.float64)


# The numeric row fields the slate reads, in `SlateFacts` order.
SLATE_NUMBERS = ("created_at", "as_of", "n_followers", "n_posts_30d", "trend")
# (category as the slate reads it, then the raw SLATE_NUMBERS values): what `Slate.from_rows` needs of a
# creator row, the same for every fan, so ranking keeps it per creator (ranking_svc.creator_features).
SlateFacts = tuple[str, Any, Any, Any, Any, Any]


def slate_facts(row: Mapping[str, Any] | None) -> SlateFacts:
    r = row or {}
    return (str(r.get("category") or ""), *map(r.get, SLATE_NUMBERS))  # type: ignore[return-value]


def slate_numbers(facts: SlateFacts) -> FloatArray | None:
    """The SLATE_NUMBERS of one item's facts as a float row, exactly as `_number_columns` reads them in
    any batch where no row is malformed; None for a malformed row (a batch with one is read column by
    column, so its values then depend on the other rows: the caller passes no numbers for it)."""
    try:
        return np.array(facts[1:], dtype=np.float64)  # None → NaN, as in the batch
    except (TypeError, ValueError, OverflowError):
        return None


def _number_columns(facts: Sequence[SlateFacts]) -> list[FloatArray]:
    """The SLATE_NUMBERS columns of `facts`, each exactly as `_values_column` builds it alone."""
    raw = [f[1:] for f in facts]
    try:
        matrix = np.array(raw, dtype=np.float64).reshape(len(raw), len(SLATE_NUMBERS))
    except (TypeError, ValueError):  # a malformed value somewhere: column by column
        return [_values_column([f[1 + j] for f in facts]) for j in range(len(SLATE_NUMBERS))]
    return [matrix[:, j].copy() for j in range(len(SLATE_NUMBERS))]


@dataclasses.dataclass
class Slate:
    """The request's candidates in the ranker's order with their facts as columns, as the steps see them.

    Columns keep the steps vectorised and the per-item Python work to the items actually returned:
    this runs on every Recommend. Steps record per-item results in `stage` (NaN = not applied);
    the Reranker writes them into the returned candidates' scores.
    """

    candidates: Sequence[ScoredCandidate]
    category: list[str]
    group: list[str]
    n_followers: FloatArray
    age_days: FloatArray
    posts_30d: FloatArray
    trend: FloatArray
    flagged_new: npt.NDArray[np.bool_]
    vectors: FloatArray | None = None  # (n, d) unit rows, when every item has a vector
    # The fan's weight per category (how many of the creators it follows are in each; onboarding
    # interests count 1 each when it follows none): the calibration step's target. Empty = unknown.
    interests: Mapping[str, float] = dataclasses.field(default_factory=dict)
    interests_from_follows: bool = True  # False: the weights are onboarding interests (reasons say so)
    relevance: FloatArray = dataclasses.field(default_factory=lambda: np.zeros(0))
    score: FloatArray = dataclasses.field(default_factory=lambda: np.zeros(0))  # relevance + boosts
    stage: dict[str, FloatArray] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.candidates)

    def stage_array(self, name: str) -> FloatArray:
        if name not in self.stage:
            self.stage[name] = np.full(len(self), np.nan)
        return self.stage[name]

    @classmethod
    def from_rows(
        cls,
        candidates: Sequence[ScoredCandidate],
        rows: Sequence[Mapping[str, Any] | None],
        facts: Sequence[SlateFacts] | None = None,
        numbers: FloatArray | None = None,
        *,
        interests: Mapping[str, float] | None = None,
        interests_from_follows: bool = True,
    ) -> Slate:
        """From "creator" rows (for posts: post rows carrying creator_id and category), one per candidate.

        `facts`: the rows' `slate_facts`, when the caller keeps them (they must be exactly those);
        `numbers`: with them, their `slate_numbers` rows as one (n, len(SLATE_NUMBERS)) matrix, when the
        caller keeps those too (none of them None)."""
        if len(rows) != len(candidates):
            raise ValueError("Slate.from_rows: one row per candidate")
        if facts is None:
            facts = [slate_facts(r) for r in rows]
        elif len(facts) != len(candidates):
            raise ValueError("Slate.from_rows: one SlateFacts per candidate")
        if numbers is not None and numbers.shape != (len(candidates), len(SLATE_NUMBERS)):
            raise ValueError(f"Slate.from_rows: numbers of shape {numbers.shape} for {len(candidates)} items")
        category = [f[0] for f in facts]
        labels = {c: f"{CATEGORY_GROUP}{c}" for c in set(category) if c}
        group = [
            f"{CREATOR_GROUP}{(r or {}).get('creator_id') or c.item_id}"
            if c.kind == POST
            else labels.get(cat, c.item_id)
            for c, r, cat in zip(candidates, rows, category, strict=True)
        ]
        # NaN (unknown) compares False, so the rules ignore what a row does not say.
        columns = _number_columns(facts) if numbers is None else [c.copy() for c in numbers.T]
        created, as_of, n_followers, posts_30d, trend = columns
        # Age as of the row (the features' convention): the row is what we know about the creator.
        age = np.where((created > 0) & (as_of > 0), np.maximum(as_of - created, 0.0) / DAY, np.nan)
        return cls(
            candidates=candidates,
            category=category,
            group=group,
            n_followers=n_followers,
            age_days=age,
            posts_30d=posts_30d,
            trend=trend,
            flagged_new=np.array([c.scores.get(TRENDING_NEW, 0.0) > 0 for c in candidates], dtype=bool),
            interests=dict(interests or {}),
            interests_from_follows=interests_from_follows,
        )

    @classmethod
    def from_facts(
        cls,
        candidates: Sequence[ScoredCandidate],
        facts: Sequence[ItemFacts],
        *,
        interests: Mapping[str, float] | None = None,
    ) -> Slate:
        if len(facts) != len(candidates):
            raise ValueError("Slate.from_facts: one ItemFacts per candidate")

        def col(values: Sequence[float | None]) -> FloatArray:
            return np.array([NAN if v is None else float(v) for v in values])

        vs = [f.vector for f in facts]
        vectors = None
        if vs and all(v is not None for v in vs):
            m = np.stack([np.asarray(v, dtype=np.float64) for v in vs if v is not None])
            norms = np.linalg.norm(m, axis=1, keepdims=True)
            vectors = m / np.where(norms > 0, norms, 1.0)
        return cls(
            candidates=candidates,
            category=[f.category for f in facts],
            group=[f.group or c.item_id for f, c in zip(facts, candidates, strict=True)],
            n_followers=col([f.n_followers for f in facts]),
            age_days=col([f.age_days for f in facts]),
            posts_30d=col([f.posts_30d for f in facts]),
            trend=col([f.trend for f in facts]),
            flagged_new=np.array([f.flagged_new for f in facts], dtype=bool),
            vectors=vectors,
            interests=dict(interests or {}),
        )


class RerankStep(Protocol):
    """One rule. `apply` reorders `order` (indices into the slate, best first; the first `page` are
    the page); `reasons` words what the step did to those of `items` (the page) it touched."""

    @property
    def name(self) -> str: ...

    def apply(self, slate: Slate, order: list[int], page: int) -> list[int]: ...

    def reasons(self, slate: Slate, items: list[int]) -> dict[int, str]: ...


# --------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Freshness:
    params: FreshnessParams
    name: str = "freshness"

    def apply(self, slate: Slate, order: list[int], page: int) -> list[int]:
        p = self.params
        posts = _above_median(slate.posts_30d, p.posts_30d_scale)
        trend = _above_median(slate.trend, p.trend_scale)
        boost = p.weight * np.maximum(posts, trend)
        boost[boost < p.min_boost] = 0.0
        slate.score += boost
        slate.stage["freshness"] = np.where(boost > 0, boost, np.nan)
        slate.stage["_trending"] = np.where(trend > posts, 1.0, np.nan)
        idx = np.asarray(order)
        return idx[np.argsort(-slate.score[idx], kind="stable")].tolist()  # stable: ties keep their order

    def reasons(self, slate: Slate, items: list[int]) -> dict[int, str]:
        trending = slate.stage_array("_trending")
        return {
            i: "boosted: trending this week"
            if trending[i] == 1.0
            else f"boosted: active lately ({int(slate.posts_30d[i])} posts in 30 days)"
            for i in _marked(slate.stage_array("freshness"), items)
        }


def _marked(values: FloatArray, items: list[int]) -> list[int]:
    """The items (of `items`) for which a step recorded a value (not NaN)."""
    idx = np.asarray(items, dtype=np.int64)
    return [int(i) for i in idx[~np.isnan(values[idx])]]


def _above_median(values: FloatArray, scale: float) -> FloatArray:
    """How far each value lies above the median of the known values, in units of `scale`, in [0, 1];
    0 for unknown (NaN) values."""
    known = np.sort(values[~np.isnan(values)])  # np.median costs ten times more on a slate this small
    n = known.size
    if n == 0:
        return np.zeros(len(values))
    median = 0.5 * (float(known[(n - 1) // 2]) + float(known[n // 2]))
    excess = (values - median) / scale
    return np.where(excess > 0, np.minimum(excess, 1.0), 0.0)  # NaN compares False: 0


@dataclasses.dataclass(frozen=True)
class Diversity:
    params: DiversityParams
    name: str = "diversity"

    def apply(self, slate: Slate, order: list[int], page: int) -> list[int]:
        depth = min(page, len(order))
        if depth < 1:
            return order
        if slate.vectors is not None:
            chosen = self._pick_by_vectors(slate, order, depth)
        else:
            chosen = self._pick_by_category(slate, order, depth)
        taken = set(chosen)
        return chosen + [i for i in order if i not in taken]

    def _pick_by_category(self, slate: Slate, order: list[int], depth: int) -> list[int]:
        """MMR when similarity is "same category": max similarity is 0 or 1 per category, so a step
        only compares the best remaining item of each category, and once every category left has been
        picked from, all carry the same penalty and the rest goes in relevance order. O(depth x
        categories) at worst, no similarity matrix."""
        lam, penalty = self.params.lam, 1.0 - self.params.lam
        score = slate.score.tolist()
        idx = np.asarray(order)
        ranked_arr = idx[np.argsort(-slate.score[idx], kind="stable")]  # stable: ties keep their order
        ranked = ranked_arr.tolist()
        pos = np.zeros(len(score), dtype=np.int64)
        pos[ranked_arr] = np.arange(len(ranked))
        position = pos.tolist()
        buckets: dict[str, list[int]] = {}
        for i in reversed(ranked):  # each bucket best-last, so the best pops off the end
            # Unknown categories are buckets of one: not knowing is no evidence of similarity.
            buckets.setdefault(slate.category[i] or f"\0{i}", []).append(i)
        seen: set[str] = set()
        mmr_out = slate.stage_array("mmr")
        jump = slate.stage_array("_diversity_jump")
        chosen: list[int] = []
        while len(chosen) < depth:
            if len(seen) == len(buckets):  # every category left is on the page: relevance decides
                taken = set(chosen)
                rest = [i for i in ranked if i not in taken][: depth - len(chosen)]
                for i in rest:
                    mmr_out[i] = lam * score[i] - penalty
                chosen.extend(rest)
                break
            best_key, best_mmr, best_pos, top_rel = "", -math.inf, 0, -math.inf
            for key, bucket in buckets.items():
                head = bucket[-1]
                rel = score[head]
                value = lam * rel - (penalty if key in seen else 0.0)
                if rel > top_rel:
                    top_rel = rel
                if value > best_mmr or (value == best_mmr and position[head] < best_pos):
                    best_key, best_mmr, best_pos = key, value, position[head]
            bucket = buckets[best_key]
            i = bucket.pop()
            if not bucket:
                del buckets[best_key]
                seen.discard(best_key)
            else:
                seen.add(best_key)
            mmr_out[i] = best_mmr
            if chosen and score[i] < top_rel:
                jump[i] = 1.0  # picked over a more relevant but more similar item
            chosen.append(i)
        return chosen

    def _pick_by_vectors(self, slate: Slate, order: list[int], depth: int) -> list[int]:
        """MMR with similarity max(same category, cosine of the items' vectors)."""
        assert slate.vectors is not None
        lam = self.params.lam
        idx = np.asarray(order)
        rel = slate.score[idx]
        codes: dict[str, int] = {}
        cat = np.array(
            [codes.setdefault(slate.category[i], len(codes)) if slate.category[i] else -1 - i for i in order]
        )
        vectors = slate.vectors[idx]
        max_sim = np.zeros(len(order))
        open_ = np.ones(len(order), dtype=bool)
        mmr_out = slate.stage_array("mmr")
        jump = slate.stage_array("_diversity_jump")
        chosen: list[int] = []
        for step in range(depth):
            mmr = np.where(open_, lam * rel - (1.0 - lam) * max_sim, -np.inf)
            j = int(np.argmax(mmr))
            mmr_out[order[j]] = mmr[j]
            if step and rel[j] < rel[open_].max():
                jump[order[j]] = 1.0
            chosen.append(order[j])
            open_[j] = False
            np.maximum(
                max_sim, np.maximum((cat == cat[j]).astype(np.float64), vectors @ vectors[j]), out=max_sim
            )
        return chosen

    def reasons(self, slate: Slate, items: list[int]) -> dict[int, str]:
        return {
            i: f"diversity: adds {slate.category[i] or 'a new kind of creator'} to the page"
            for i in _marked(slate.stage_array("_diversity_jump"), items)
        }


def _log1p_ratio(delta: float, base: float) -> float:
    """log(1 + delta / base) for base > 0, finite even when base is so small (a tiny exploration share)
    that delta / base overflows to inf: an infinite gain turns `lam · gain` into inf, or NaN at lam 0,
    and no category then wins the step."""
    ratio = delta / base
    if math.isinf(ratio):
        return math.log(base + delta) - math.log(base)
    return math.log1p(ratio)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Calibrated re-ranking (Steck, "Calibrated Recommendations", RecSys 2018) over categories.

    The page is the set of items that maximises `(1 - lam) * summed relevance - lam * KL(p || q~)`,
    found greedily (each pick maximises the objective of the page so far) and shown by relevance, where
    p is the target (the fan's category shares mixed with `explore` spread evenly over the candidates'
    categories) and q~ = (1 - alpha) * q + alpha * p, q being the categories' shares on the page. Only
    the best remaining item of each category can win a step (the KL term depends on the category
    alone), and adding an item of category j changes KL by a term in p_j alone:
    KL(after) = const - p_j * log(1 + (1 - alpha) / ((t + 1) * b_j)), with b_j the smoothed share before
    the pick scaled to t + 1 items. So a step is O(categories), no divergence is ever summed. Items of
    unknown category are each a category of their own outside the target: they gain nothing but are
    never penalised beyond taking a slot.
    """

    params: CalibrationParams
    name: str = "calibration"

    def target(self, slate: Slate, categories: list[str]) -> FloatArray:
        """p over `categories` (the candidates' known categories): may sum to less than 1 when the fan
        follows categories no candidate has (that mass is constant in KL and changes no pick)."""
        explore = self.params.explore
        weights = {c: max(float(w), 0.0) for c, w in slate.interests.items() if c}
        total = sum(weights.values())
        if total <= 0:  # nothing known about the fan: variety across what was retrieved
            explore = 1.0
        fan = np.array([weights.get(c, 0.0) / total if total > 0 else 0.0 for c in categories])
        return (1.0 - explore) * fan + explore / max(len(categories), 1)

    def apply(self, slate: Slate, order: list[int], page: int) -> list[int]:
        depth = min(page, len(order))
        if depth < 1:
            return order
        lam, alpha = self.params.lam, self.params.alpha
        score = slate.score.tolist()
        idx = np.asarray(order)
        ranked = idx[np.argsort(-slate.score[idx], kind="stable")].tolist()  # stable: ties keep their order
        position = {i: k for k, i in enumerate(ranked)}
        categories = sorted({slate.category[i] for i in ranked if slate.category[i]})
        column = {c: k for k, c in enumerate(categories)}
        p = self.target(slate, categories).tolist()
        buckets: dict[int, list[int]] = {}  # column (or -1 - item for unknown) -> items, best last
        for i in reversed(ranked):
            key = column.get(slate.category[i], -1 - i)
            buckets.setdefault(key, []).append(i)
        on_page = [0] * len(categories)
        value_out = slate.stage_array("calibration")
        jump = slate.stage_array("_calibration_jump")
        chosen: list[int] = []
        for t in range(depth):
            delta = (1.0 - alpha) / (t + 1)
            best_key, best_value, best_pos = 0, -math.inf, 0
            for key, bucket in buckets.items():
                head = bucket[-1]
                gain = 0.0
                if key >= 0 and p[key] > 0:
                    base = (1.0 - alpha) * on_page[key] / (t + 1) + alpha * p[key]
                    # base is 0 only when alpha · p underflows (a subnormal share): p · log(1/p) → 0 there.
                    gain = p[key] * _log1p_ratio(delta, base) if base > 0 else 0.0
                value = (1.0 - lam) * score[head] + lam * gain
                if value > best_value or (value == best_value and position[head] < best_pos):
                    best_key, best_value, best_pos = key, value, position[head]
            bucket = buckets[best_key]
            i = bucket.pop()
            if not bucket:
                del buckets[best_key]
            if best_key >= 0:
                on_page[best_key] += 1
            value_out[i] = best_value
            chosen.append(i)
        # The objective is one of the page as a set (summed relevance, the categories' shares), so the
        # greedy's pick order means nothing: the page shows its items by relevance, and an item is
        # calibration's doing when relevance alone would have left it off the page.
        chosen.sort(key=position.__getitem__)
        for i in chosen:
            if position[i] >= depth:
                jump[i] = 1.0
        taken = set(chosen)
        return chosen + [i for i in order if i not in taken]

    def reasons(self, slate: Slate, items: list[int]) -> dict[int, str]:
        total = sum(w for c, w in slate.interests.items() if c and w > 0)
        out: dict[int, str] = {}
        for i in _marked(slate.stage_array("_calibration_jump"), items):
            category = slate.category[i]
            share = slate.interests.get(category, 0.0) / total if total > 0 and category else 0.0
            if share <= 0:
                out[i] = f"diversity: adds {category or 'a new kind of creator'} to the page"
            elif slate.interests_from_follows:
                out[i] = f"balance: {round(100 * share)}% of the creators you follow are in {category}"
            else:
                out[i] = f"balance: {category} is one of your interests"
        return out


@dataclasses.dataclass(frozen=True)
class Exposure:
    params: ExposureParams
    cap: CapParams | None = None  # the cap's limits, so a reserved slot never breaks them
    name: str = "exposure"

    def qualifies(self, slate: Slate) -> npt.NDArray[np.bool_]:
        """New (by age or retrieval's flag) or small (by followers) creators: NaN facts never qualify."""
        p = self.params
        return slate.flagged_new | (slate.age_days < p.new_days) | (slate.n_followers < p.max_followers)

    def apply(self, slate: Slate, order: list[int], page: int) -> list[int]:
        p = self.params
        page = min(page, len(order))
        reserved = page // p.slot_every
        if reserved == 0:
            return order
        ok = self.qualifies(slate)
        head, tail = list(order[:page]), list(order[page:])
        have = int(ok[head].sum())
        mark = slate.stage_array("exposure")
        for slot in range(have, reserved):
            # The displaced item: the lowest one on the page that does not itself qualify.
            out = next((k for k in range(len(head) - 1, -1, -1) if not ok[head[k]]), None)
            if out is None:
                break
            groups = Counter(slate.group[i] for k, i in enumerate(head) if k != out)
            pick = next(
                (
                    k
                    for k, i in enumerate(tail)
                    if ok[i]
                    and slate.relevance[i] >= p.min_relevance
                    and not self._breaks_cap(groups, slate.group[i])
                ),
                None,
            )
            if pick is None:
                break
            promoted, displaced = tail.pop(pick), head.pop(out)
            mark[promoted], mark[displaced] = 1.0, -1.0
            # The reserved slot closes its block of `slot_every` (slot 10 of 10, 20 of 20, ...).
            head.insert(min(len(head), (slot + 1) * p.slot_every - 1), promoted)
            tail.insert(0, displaced)
        return head + tail

    def _breaks_cap(self, groups: Counter[str], group: str) -> bool:
        """Whether one more item of `group` on the page (holding `groups`) would exceed the cap."""
        limit = self.cap.limit(group) if self.cap is not None else None
        return limit is not None and groups[group] >= limit

    def reasons(self, slate: Slate, items: list[int]) -> dict[int, str]:
        mark, new_days = slate.stage_array("exposure"), self.params.new_days
        return {
            i: "boosted: new creator"
            if slate.flagged_new[i] or slate.age_days[i] < new_days
            else f"boosted: small creator ({int(slate.n_followers[i])} followers)"
            for i in _marked(mark, items)
            if mark[i] == 1.0
        }


@dataclasses.dataclass(frozen=True)
class GroupCap:
    params: CapParams
    name: str = "cap"

    def apply(self, slate: Slate, order: list[int], page: int) -> list[int]:
        limits = {g: self.params.limit(g) for g in set(slate.group)}
        if all(limit is None for limit in limits.values()):
            return order  # creators without a per-category cap: nothing on this slate is capped
        head: list[int] = []
        over: list[int] = []
        counts: Counter[str] = Counter()
        for k, i in enumerate(order):
            if len(head) == page:
                over.extend(order[k:])
                break
            g = slate.group[i]
            limit = limits[g]
            if limit is None or counts[g] < limit:
                counts[g] += 1
                head.append(i)
            else:
                over.append(i)
        # The cap gives way rather than shorten the page: refill in order from what it held back, and
        # keep the page in the order the items came in (when it gives way, nothing moves).
        refill = page - len(head)
        if refill > 0:
            position = {i: k for k, i in enumerate(order)}
            head = sorted(head + over[:refill], key=position.__getitem__)
            over = over[refill:]
        held = slate.stage_array("capped")
        moved_up = slate.stage_array("_cap_moved_up")
        was_on_page = set(order[:page])
        for i in over:
            if i in was_on_page:
                held[i] = 1.0
        for i in head:
            if i not in was_on_page:
                moved_up[i] = 1.0
        return head + over

    def reasons(self, slate: Slate, items: list[int]) -> dict[int, str]:
        p = self.params
        return {
            i: f"moved up: at most {p.max_per_group} posts per creator on a page"
            if slate.group[i].startswith(CREATOR_GROUP)
            else f"moved up: at most {p.max_per_category} per category on a page"
            for i in _marked(slate.stage_array("_cap_moved_up"), items)
        }


class Reranker:
    """Runs the steps in order over the ranker's output and records on the page what each did."""

    def __init__(self, steps: Sequence[RerankStep]) -> None:
        self.steps = list(steps)

    @classmethod
    def from_config(cls, config: RerankConfig) -> Reranker:
        steps: list[RerankStep] = []
        if config.freshness is not None:
            steps.append(Freshness(config.freshness))
        if config.diversity is not None:
            steps.append(Diversity(config.diversity))
        if config.calibration is not None:
            steps.append(Calibration(config.calibration))
        if config.exposure is not None:
            steps.append(Exposure(config.exposure, config.cap))
        if config.cap is not None:
            steps.append(GroupCap(config.cap))
        return cls(steps)

    def rerank(self, slate: Slate, page: int) -> list[ScoredCandidate]:
        """The page: the first `page` items after every step, annotated; `slate.candidates` must be in
        the ranker's order (best first) with finite scores["ranker"] (ranking_svc.recommender answers a
        ranker that returns others with retrieval's order, flagged, and never re-ranks them)."""
        return self.annotate(slate, self.choose(slate, page))

    def choose(self, slate: Slate, page: int) -> list[int]:
        """The first half of `rerank`: the page's items (indices into the slate) after every step, with
        what each step did recorded in the slate, but not yet in the candidates."""
        n = len(slate)
        raw = np.array([c.scores.get("ranker", 0.0) for c in slate.candidates], dtype=np.float64)
        lo, hi = (float(raw.min()), float(raw.max())) if n else (0.0, 0.0)
        slate.relevance = (raw - lo) / (hi - lo) if hi > lo else np.ones(n)
        slate.score = slate.relevance.copy()
        page = max(0, min(page, n))
        order = list(range(n))
        for step in self.steps:
            order = step.apply(slate, order, page)
        return order[:page]

    def annotate(self, slate: Slate, chosen: list[int]) -> list[ScoredCandidate]:
        """The second half of `rerank`: the `chosen` candidates (`choose` of the same slate), with each
        step's scores and reasons written into them."""
        idx = np.asarray(chosen, dtype=np.int64)
        # Per-item work only for the page, and as plain Python values (numpy scalars are slow to index).
        columns = [
            ("relevance", slate.relevance[idx].tolist()),
            ("ranker_position", (idx + 1).astype(np.float64).tolist()),
            *(
                (name, values[idx].tolist())
                for name, values in slate.stage.items()
                if not name.startswith("_")
            ),
            ("final", slate.score[idx].tolist()),
        ]
        said = [step.reasons(slate, chosen) for step in self.steps]
        out = []
        for k, i in enumerate(chosen):
            c = slate.candidates[i]
            for name, values in columns:
                if values[k] == values[k]:  # not NaN: the step applied to this item
                    c.scores[name] = values[k]
            for texts in said:
                text = texts.get(i)
                if text is not None and text not in c.reasons:
                    c.reasons.append(text)
            out.append(c)
        return out
