"""Kindred's own services on a benchmark split: the platform's trainer, then the ranking service's Recommend.

`bench/recsys/kindred_pipeline.py` rebuilds Kindred's route (multi-source retrieval → learned ranker)
as matrix code over the benchmark's ids. This module runs the product itself instead, so its row answers
"what do the services, as shipped, recommend on real data":

1. The split's *train* pairs become a platform data directory: the catalogue from
   `kindred.data.loaders.load_hetrec_lastfm` (artists → creators with their top tags, users → fans,
   friendships) and one FOLLOW event per train pair (value = play count). The pairs carry no time,
   and the protocol's split is random, so each event gets a random time in a window before a fixed
   end: the trainer's time-based cuts then ask the same question as the protocol (which of a fan's
   pairs, drawn at random, will show up next). Valid and test pairs never reach the data directory.
   An artist's tags are counted over all users' tagging, held-out pairs' taggers included: artist
   metadata, as a catalogue holds it; no fan's own tagging is stored.
2. `python -m trainer train` with a stock config (`default` unless told otherwise): ingest, features,
   two-tower, ranker, ONNX export, the creator index, the online store, promotion — unchanged.
3. Recommend(k) through `ranking_svc`'s servicer with retrieval in its process
   (`KINDRED_RETRIEVAL_TARGET=inprocess`, what `ranking_svc.server.build_deps` builds for a co-located
   deployment: the same sources, quotas, payload filters, ranker, re-ranking and explanations), called
   without gRPC transport. The fan's train artists are excluded by the service itself (they are the
   fan's follows, filtered inside the engine); for test, the valid artists go in the request's
   `exclude_item_ids`, as the protocol masks them.

The pages are scored as the protocol scores a full ranking cut at k: a page shorter than k counts its
missing places as misses, and a page that degraded to a fallback is counted (`fallbacks`), never
dropped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
from numpy.typing import NDArray

from bench.recsys.metrics import ranking_metrics
from bench.recsys.protocol import Interactions, Split, Stage, repo_root

DAY: Final = 86_400.0
# The events' window ends here (fixed, so a seed gives the same bytes); its length is the demo's 30 days.
END_TIME: Final = 1_304_208_000.0  # 2011-05-01T00:00:00Z, HetRec 2011's release
WINDOW_DAYS: Final = 30.0


# ranking_svc's config file with every re-ranking step switched off: the page is the ranker's order.
RERANK_OFF: Final = {
    "rerank": {"freshness": None, "diversity": None, "calibration": None, "exposure": None, "cap": None}
}


@dataclasses.dataclass(frozen=True)
class PlatformConfig:
    trainer_config: str = "default"  # tiny | default | a .toml path (trainer/configs)
    window_days: float = WINDOW_DAYS
    k: int = 10
    # False: serve with the re-ranking rules off (`<data dir>/config/ranking.json`, as a deployment
    # would), i.e. the ranker's order — what they cost in accuracy on this data.
    rerank: bool = True


def write_serving_config(data_dir: Path, config: PlatformConfig) -> None:
    """The ranking config the services start with: none (the defaults), or re-ranking switched off."""
    from ranking_svc.server import CONFIG_FILE

    path = data_dir / CONFIG_FILE
    if config.rerank:
        path.unlink(missing_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(RERANK_OFF), encoding="utf-8")


def train_events(
    events: Sequence[Any], split: Split, inter: Interactions, seed: int, window_days: float
) -> list[Any]:
    """`events` (the loader's, one per pair) cut to the split's train pairs, each at a random time in
    the window, in time order."""
    from kindred.data.schema import set_timestamp

    train = split.train.tocoo()
    rng = np.random.default_rng([seed, 20110501])
    times = END_TIME - rng.random(len(train.data)) * window_days * DAY
    at = {
        (f"u{int(inter.user_ids[u])}", f"a{int(inter.item_ids[i])}"): float(t)
        for u, i, t in zip(train.row, train.col, times, strict=True)
    }
    kept = [e for e in events if (e.fan_id, e.creator_id) in at]
    for e in kept:
        set_timestamp(e.occurred_at, at[(e.fan_id, e.creator_id)])
    kept.sort(key=lambda e: (e.occurred_at.seconds, e.occurred_at.nanos, e.event_id))
    return kept


def write_platform(
    data_dir: Path, hetrec_dir: Path, split: Split, inter: Interactions, window_days: float
) -> int:
    """The catalogue and the train events into a new platform data directory; returns the event count."""
    from kindred.data.loaders import load_hetrec_lastfm
    from kindred.eventlog import EventLog

    if (data_dir / "events").exists() or (data_dir / "catalogue").exists():
        raise FileExistsError(f"{data_dir} already holds a platform; give an empty directory")
    catalogue, events = load_hetrec_lastfm(hetrec_dir)
    catalogue.write(data_dir)
    kept = train_events(events, split, inter, split.seed, window_days)
    if len(kept) != split.train.nnz:
        raise ValueError(
            f"{len(kept)} of the split's {split.train.nnz} train pairs found among the loader's events"
        )
    with EventLog(data_dir / "events") as log:
        log.append(kept)
    return len(kept)


def train_platform(data_dir: Path, trainer_config: str, seed: int) -> float:
    """`python -m trainer train` on the directory, as a trainer would run it; returns its wall seconds."""
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "trainer", "train", "--data-dir", str(data_dir), "--config", trainer_config]
    cmd += ["--seed", str(seed)]
    env = {**os.environ, "KINDRED_DATA_DIR": str(data_dir)}
    subprocess.run(cmd, cwd=repo_root(), env=env, check=True)
    return time.perf_counter() - started


class PageSource(Protocol):
    def page(self, fan_id: str, k: int, exclude: Sequence[str]) -> tuple[list[str], str]: ...


class ServedRecommender:
    """Recommend through ranking_svc's servicer, retrieval in-process (the co-located deployment)."""

    def __init__(self, data_dir: Path) -> None:
        from kindred.config import IN_PROCESS, Settings
        from ranking_svc import server as ranking_server

        self.settings = Settings.from_env(
            {"KINDRED_DATA_DIR": str(data_dir), "KINDRED_RETRIEVAL_TARGET": IN_PROCESS}
        )
        self._deps = ranking_server.build_deps(self.settings)
        self._servicer = ranking_server.make_servicer(self.settings, self._deps)

    def page(self, fan_id: str, k: int, exclude: Sequence[str]) -> tuple[list[str], str]:
        """The page's creator ids, best first, and the fallback that served it ("" if none)."""
        from kindred.v1 import common_pb2, ranking_pb2

        request = ranking_pb2.RecommendRequest(
            fan_id=fan_id, k=k, filters=common_pb2.Filters(exclude_item_ids=list(exclude))
        )
        response = self._servicer.Recommend(request, None)  # type: ignore[arg-type]
        return [item.item_id for item in response.items], response.fallback

    def close(self) -> None:
        self._deps.close()


@dataclasses.dataclass
class StageResult:
    per_user: dict[str, NDArray[np.float64]]
    fallbacks: int
    short_pages: int
    seconds: float


def evaluate_pages(
    recommender: PageSource, split: Split, inter: Interactions, stage: Stage, k: int
) -> StageResult:
    """Per-user metrics of the served pages for the users with held-out items at `stage`."""
    started = time.perf_counter()
    users = split.eval_users(stage)
    target = split.target(stage)
    item_index = {f"a{int(raw)}": i for i, raw in enumerate(inter.item_ids)}
    valid = split.valid
    hits = np.zeros((len(users), k), dtype=bool)
    fallbacks = short = 0
    for row, user in enumerate(users.tolist()):
        exclude: list[str] = []
        if stage == "test":  # the protocol masks train and valid; train items are the fan's follows
            cols = valid.indices[valid.indptr[user] : valid.indptr[user + 1]]
            exclude = [f"a{int(inter.item_ids[c])}" for c in cols]
        page, fallback = recommender.page(f"u{int(inter.user_ids[user])}", k, exclude)
        fallbacks += bool(fallback)
        short += len(page) < k
        relevant = set(target.indices[target.indptr[user] : target.indptr[user + 1]].tolist())
        for rank, item in enumerate(page[:k]):
            hits[row, rank] = item_index.get(item, -1) in relevant
    n_relevant = np.diff(target.indptr)[users]
    return StageResult(ranking_metrics(hits, n_relevant), fallbacks, short, time.perf_counter() - started)


@dataclasses.dataclass(frozen=True)
class TrainedPlatform:
    """A platform `services_row` trained in this process: which split and config, and what it cost."""

    seed: int
    trainer_config: str
    window_days: float
    events: int
    train_seconds: float

    def fits(self, split: Split, config: PlatformConfig) -> bool:
        return (self.seed, self.trainer_config, self.window_days) == (
            split.seed,
            config.trainer_config,
            config.window_days,
        )


def services_row(
    split: Split,
    inter: Interactions,
    hetrec_dir: Path,
    work_dir: Path,
    config: PlatformConfig,
    *,
    trained: TrainedPlatform | None = None,
) -> tuple[dict[str, Any], TrainedPlatform]:
    """The platform built, trained and served on `split`: a results row shaped like a tuned peer's
    (`test`, `valid_ndcg@10`, `params`, `trials`, `seconds`), and the trained platform. Nothing is tuned
    on valid: the trainer runs its stock config, so valid is only reported. `work_dir` is emptied and
    trained first, unless `trained` — the platform this process trained there for the same split and
    trainer config — is given: then only the serving config changes, and both rows serve the very same
    models (a paired comparison, at half the cost)."""
    from bench.recsys.protocol import mean_metrics

    started = time.perf_counter()
    reused = trained is not None and trained.fits(split, config)
    if trained is None or not reused:
        if work_dir.exists():
            shutil.rmtree(work_dir)
        work_dir.mkdir(parents=True)
        n_events = write_platform(work_dir, hetrec_dir, split, inter, config.window_days)
        train_s = train_platform(work_dir, config.trainer_config, split.seed)
        trained = TrainedPlatform(split.seed, config.trainer_config, config.window_days, n_events, train_s)
    write_serving_config(work_dir, config)
    served = ServedRecommender(work_dir)
    try:
        valid = evaluate_pages(served, split, inter, "valid", config.k)
        test = evaluate_pages(served, split, inter, "test", config.k)
    finally:
        served.close()
    n_users = len(split.eval_users("test"))
    return {
        "test": mean_metrics(test.per_user),
        "valid_ndcg@10": mean_metrics(valid.per_user)[f"ndcg@{config.k}"],
        "params": {
            "trainer_config": config.trainer_config,
            "rerank": "default rules" if config.rerank else "off",
            "train_events": trained.events,
            "window_days": config.window_days,
            "train_seconds": round(trained.train_seconds, 1),
            # True: served the platform an earlier row of this run trained (the same models).
            "platform_reused": reused,
            "recommend_ms_per_fan": round(1000 * test.seconds / max(n_users, 1), 2),
            "fallbacks": {"valid": valid.fallbacks, "test": test.fallbacks},
            "short_pages": {"valid": valid.short_pages, "test": test.short_pages},
            "data_dir": str(work_dir),
        },
        "trials": 1,
        "seconds": round(time.perf_counter() - started, 1),
    }, trained
