"""Effect of re-ranking on the trainer's time hold-out (NDCG/Recall@10, category coverage, exposure).

Same protocol as trainer.evaluate.evaluate_holdout's "two_tower+ranker" row (features as of the train
end, candidates = the five-source serving pool as of then — or two-tower top-n ∪ popular top-n for a
config with `ranker.pool = "two_source"` — ranker = the promoted ONNX ranker), then the page of
10 re-ranked by ranking_svc.rerank with each configuration, with a bootstrap CI of each NDCG change.

    python bench/bench_rerank_effect.py [DATA_DIR]     (default var/demo, what `make demo` builds)

Replaces the "## Re-ranking effect" section of bench/RESULTS.md with the printed tables. GRID=1 adds an
MMR λ × cap grid, CAL=1 a calibration λ × explore grid. `miscal` is Steck's miscalibration C_KL of the page:
KL(fan's category shares among the creators it follows at the cut || the page's, smoothed with α 0.01).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import shlex
import sys
from collections import Counter
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script (make bench): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_md import write_section
from kindred.models import current_version
from ranking_svc.domain import ScoredCandidate
from ranking_svc.rerank import (
    CalibrationParams,
    CapParams,
    DiversityParams,
    ExposureParams,
    FreshnessParams,
    RerankConfig,
    Reranker,
    Slate,
)
from trainer.config import load_config
from trainer.datasets import load_platform_holdout
from trainer.evaluate import holdout_pool, ndcg_at_k, rank_by, recall_at_k
from trainer.promotion import RegistryModels
from trainer.ranker import draw_candidates, featurize

K = 10
data_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "var/demo")
if not (data_dir / "models").is_dir():
    print(f"no trained demo in {data_dir}: run `make demo` first (or pass a data dir)")
    sys.exit(0)
lines: list[str] = []


def out(line: str) -> None:
    print(line)
    lines.append(line)


cfg = load_config("default")
platform_holdout = load_platform_holdout(data_dir, cfg.split.test_fraction, cfg.split.label_types)
catalogue, creator_ids = platform_holdout.catalogue, platform_holdout.creator_ids
events, split, test = platform_holdout.events, platform_holdout.split, platform_holdout.test
models_dir = data_dir / "models"
version = current_version(models_dir, "ranker")
assert version is not None
models = RegistryModels(models_dir, version, version)
user_vecs = models.user_vectors(test.user_x)
creator_vecs = models.creator_vectors(creator_ids, test.creator_x)
tt_scores = user_vecs @ creator_vecs.T
rows = [i for i, y in enumerate(test.labels) if y]
category = [str((test.creator_rows.get(c) or {}).get("category", "")) for c in creator_ids]
followers = np.array([float((test.creator_rows.get(c) or {}).get("n_followers", 0)) for c in creator_ids])
age = np.array(
    [
        (
            (test.creator_rows.get(c) or {}).get("as_of", 0)
            - (test.creator_rows.get(c) or {}).get("created_at", 0)
        )
        / 86400
        for c in creator_ids
    ]
)
qualifies = (followers < ExposureParams().max_followers) | (age < ExposureParams().new_days)

# The fan's category weights as ranking gives them to calibration: its follows at the cut, by category.
interests = {i: dict(Counter(category[c] for c in test.seen[i] if category[c])) for i in rows}


def miscalibration(fan: dict[str, int], page: Counter[str], alpha: float = 0.01) -> float:
    """Steck's C_KL: KL(p || (1 - alpha) q + alpha p) over the fan's categories (0 without follows)."""
    total, size = sum(fan.values()), sum(page.values())
    if not total or not size:
        return 0.0
    return sum(
        w / total * np.log((w / total) / ((1 - alpha) * page.get(c, 0) / size + alpha * w / total))
        for c, w in fan.items()
    )


pool = holdout_pool(cfg, events, catalogue, test, split.train_end)  # what evaluate_holdout ranks

# Per fan: the ranker's ordered head (as evaluate_holdout builds it), then the rest in two-tower order.
fans = []
for i in rows:
    cands = draw_candidates(
        test,
        i,
        tt_scores[i],
        pool,
        n_two_tower=cfg.eval.candidates_two_tower,
        n_popular=cfg.eval.candidates_popular,
        two_tower_score_for_popular=cfg.ranker.two_tower_score_for_popular,
    )
    s = models.ranker_scores(featurize(test, i, cands, creator_ids))
    order = np.argsort(-s, kind="stable")
    head = [cands[j].creator for j in order]
    taken = set(head)
    tail = [c for c in rank_by(tt_scores[i], test.seen[i]) if c not in taken]
    fans.append((i, head, [float(s[j]) for j in order], tail))

out(
    f"hold-out: {len(fans)} fans, {sum(len(test.labels[i]) for i, *_ in fans)} discoveries, "
    f"{len(creator_ids)} creators; ranker {version}; candidates per fan: "
    + (
        f"the five-source serving pool of {cfg.eval.pool_size}"
        if pool is not None
        else f"{cfg.eval.candidates_two_tower} two-tower + {cfg.eval.candidates_popular} popular"
    )
)

GRIDS = ("CAL", "GRID", "EXPO")  # environment switches that add rows (recorded with the command)
OFF = RerankConfig(freshness=None, diversity=None, exposure=None, cap=None, calibration=None)


def only(**steps: object) -> RerankConfig:
    """Every step off but those named (with their parameters)."""
    return dataclasses.replace(OFF, **steps)


MMR_AND_CAP = only(
    freshness=FreshnessParams(),
    diversity=DiversityParams(),
    exposure=ExposureParams(),
    cap=CapParams(max_per_category=3),
)
configs = {
    "ranker only (no re-rank)": OFF,
    "freshness only (w 0.05)": only(freshness=FreshnessParams()),
    "freshness only (w 0.1)": only(freshness=FreshnessParams(weight=0.1)),
    "calibration only (lam 0.2)": only(calibration=CalibrationParams()),
    "MMR only (lam 0.93)": only(diversity=DiversityParams()),
    "exposure only": only(exposure=ExposureParams()),
    "cap only (3/category)": only(cap=CapParams(max_per_category=3)),
    "MMR 0.93 + cap 3 (old default)": MMR_AND_CAP,
    "default": RerankConfig(),
}
if os.environ.get("EXPO") == "1":
    configs = {"ranker only (no re-rank)": OFF}
    for mr in (0.3, 0.4, 0.5, 0.6):
        configs[f"default, min_rel {mr}"] = RerankConfig(exposure=ExposureParams(min_relevance=mr))
    configs["default, no exposure"] = RerankConfig(exposure=None)
if os.environ.get("CAL") == "1":
    for lam in (0.02, 0.05, 0.1, 0.2, 0.3):
        for explore in (0.1, 0.2, 0.3):
            calibrated = CalibrationParams(lam=lam, explore=explore)
            configs[f"calib only, lam {lam}, exp {explore}"] = only(calibration=calibrated)
            configs[f"f+calib+exp, lam {lam}, exp {explore}"] = RerankConfig(calibration=calibrated)
if os.environ.get("GRID") == "1":
    for lam in (0.85, 0.9, 0.93, 0.95, 0.97):
        for cap in (2, 3):
            configs[f"MMR+cap, lam {lam}, cap {cap}"] = dataclasses.replace(
                MMR_AND_CAP, diversity=DiversityParams(lam), cap=CapParams(max_per_category=cap)
            )
small_line = ExposureParams().max_followers
index = {c: j for j, c in enumerate(creator_ids)}  # creator id → column, once
per_fan: dict[str, np.ndarray] = {}
out(
    f"{'configuration':<32}{'ndcg@10':>9}{'recall@10':>11}{'cats@10':>9}{'max/cat':>9}{'ILD':>7}{'miscal':>8}"
    f"{'small@10':>10}{'pages w/ new|small':>19}"
)
for name, config in configs.items():
    reranker = Reranker.from_config(config)
    ndcg, recall, cats, maxcat, ild, miscal, small, expo = [], [], [], [], [], [], [], []
    for i, head, scores, tail in fans:
        slate_items = [
            ScoredCandidate(creator_ids[c], "two_tower", scores={"ranker": sc})
            for c, sc in zip(head, scores, strict=True)
        ]
        slate = Slate.from_rows(
            slate_items, [test.creator_rows.get(creator_ids[c]) for c in head], interests=interests[i]
        )
        page_ids = [c.item_id for c in reranker.rerank(slate, K)]
        page = [index[c] for c in page_ids]
        ranked = page + [c for c in head if c not in set(page)] + tail
        ndcg.append(ndcg_at_k(ranked, test.labels[i], K))
        recall.append(recall_at_k(ranked, test.labels[i], K))
        counts = Counter(category[c] for c in page)
        cats.append(len(counts))
        maxcat.append(max(counts.values()))
        same = sum(n * (n - 1) for n in counts.values()) / (len(page) * (len(page) - 1))
        ild.append(1.0 - same)
        miscal.append(miscalibration(interests[i], counts))
        small.append(sum(followers[c] < small_line for c in page))
        expo.append(any(qualifies[c] for c in page))
    per_fan[name] = np.array(ndcg)
    out(
        f"{name:<32}{np.mean(ndcg):9.4f}{np.mean(recall):11.4f}{np.mean(cats):9.2f}{np.mean(maxcat):9.2f}"
        f"{np.mean(ild):7.3f}{np.mean(miscal):8.3f}{np.mean(small):10.2f}{np.mean(expo):19.2f}"
    )
# Spread: bootstrap over fans of the NDCG@10 difference to ranker-only.
rng = np.random.default_rng(0)
base = per_fan["ranker only (no re-rank)"]
for name, v in per_fan.items():
    d = v - base
    boots = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(1000)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    out(f"  Δndcg@10 {name:<32} {d.mean():+.4f}  95% CI [{lo:+.4f}, {hi:+.4f}]")

switches = [f"{name}=1" for name in GRIDS if os.environ.get(name) == "1"]
section = "\n".join(
    [
        "## Re-ranking effect",
        "",
        f"- Command: `{' '.join([*switches, shlex.join(['python', *sys.argv])])}`",
        f"- Machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
        f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        "```",
        *lines,
        "```",
        "",
    ]
)
write_section("rerank_effect", section)
