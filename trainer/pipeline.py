"""The training pipeline: ingest → features → two-tower → ranker → evaluate → export → index → promote.

    run(settings, cfg) → TrainReport

One local Ray runtime serves the whole run: Ray Data reads the event log (one task per segment), Ray
Train fits both models (a TorchTrainer with one worker each). Everything else — feature rows, candidate
lists, evaluation, export — is numpy/torch in the driver, because at this scale moving it into Ray would
cost more in task overhead than it saves.

Every artefact of a run shares one version string (sortable by time): features/<version>/,
models/<name>/<version>/, index/creators/<version>/. Models are promoted (CURRENT) last, after the
index and the online store are written, so a service that follows CURRENT never sees a model whose
index or features are not there yet — and only if the promotion gate (trainer.promotion) finds the new
models not worse than the current ones on this run's hold-out (or `force_promote`); either way the
decision and both metric sets are written to models/<name>/<version>/promotion.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import re
import secrets
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from kindred.config import Settings
from kindred.data.catalogue import Catalogue
from kindred.eventlog import EventLog
from kindred.features import (
    RANKER_FEATURES,
    USER_TOWER_FEATURES,
    build_creator_rows,
    build_fan_rows,
    build_popular_lists,
    creator_tower_features_batch,
    following_pairs,
)
from kindred.mf import MANIFEST_KEY as MF_MANIFEST_KEY
from kindred.models import npy_bytes, write_model
from trainer.candidates import ServingPool, candidates_config
from trainer.config import TrainConfig
from trainer.datasets import (
    Snapshot,
    TimeSplit,
    build_snapshot,
    build_training_snapshots,
    ingest_with_ray,
    label_type_codes,
    objective_label_codes,
    time_split,
    to_interactions,
)
from trainer.mf import fit_mf

MODEL_NAMES = ("two_tower_user", "ranker")
STEPS = ("ingest", "features", "two-tower", "ranker", "evaluate", "export", "index", "online+promote")


class NotEnoughData(ValueError):
    """The event log is too small or too short to train or evaluate on; the message says what is missing."""


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise NotEnoughData(f"{what}: generate more fans or days (e.g. `kindred generate --days 30`)")


@dataclasses.dataclass
class TrainReport:
    version: str
    metrics: dict[str, dict[str, float]]
    timings: dict[str, float]
    split: TimeSplit
    model_dirs: dict[str, Path]
    features_dir: Path
    n_events: int
    history: dict[str, list[dict[str, float]]]
    promotion: dict[str, Any] | None = None  # the promotion.json record (trainer.promotion)


class Progress:
    """Numbered step lines with timings: `[train 3/8] two-tower …` then `… done in 12.3 s`."""

    def __init__(self, out: Callable[[str], None] = print) -> None:
        self.out = out
        self.timings: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def step(self, name: str, what: str) -> Iterator[None]:
        n = STEPS.index(name) + 1
        self.out(f"[train {n}/{len(STEPS)}] {name}: {what}")
        t = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - t
        self.out(f"[train {n}/{len(STEPS)}] {name}: done in {self.timings[name]:.1f} s")

    def note(self, msg: str) -> None:
        self.out(f"    {msg}")


def new_version() -> str:
    """Sortable, unique enough for one machine: UTC time plus 16 random bits."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def in_holdout(fan_id: str, share: float, seed: int) -> bool:
    """Stable per-fan coin (crc32, not the salted `hash`): is this fan held out of two-tower training?"""
    return (zlib.crc32(f"{seed}:{fan_id}".encode()) % 10_000) < share * 10_000


# ------------------------------------------------------------------------------------------------
# Ray
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def local_ray(num_cpus: int) -> Iterator[None]:
    """A local Ray runtime with the settings STACK.md requires; reuses one that is already up."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import ray

    if ray.is_initialized():
        yield
        return
    # Short path under /tmp: Ray's Unix sockets live in here and socket paths are limited to ~107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="kray-", dir="/tmp")
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=temp_dir,
        logging_level=logging.WARNING,
        # Workers' output stays in their log files under temp_dir: Ray Train's controller and placement
        # group cleaner are chatty, and each worker line arrived twice. Epoch histories come back with
        # the result and are printed by the driver; a failing worker still raises here with its traceback.
        log_to_driver=False,
        configure_logging=True,
    )
    _quiet_ray()
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _quiet_ray() -> None:
    from ray.data import DataContext

    for name in ("ray.data", "ray.train", "ray.tune", "ray.air"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def fit_in_ray_train(
    loop: Callable[[dict[str, Any]], None],
    payload: Mapping[str, Any],
    *,
    cfg: Mapping[str, Any],
    seed: int,
    threads: int,
    name: str,
    storage: Path,
) -> Any:
    """Runs `loop` in a one-worker TorchTrainer and returns the pickled result from its checkpoint."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    data_ref = ray.put(dict(payload))
    trainer = TorchTrainer(
        loop,
        train_loop_config={"data_ref": data_ref, "cfg": dict(cfg), "seed": seed, "threads": threads},
        scaling_config=ScalingConfig(num_workers=1, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=name, storage_path=str(storage)),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {name} finished without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as d, open(Path(d) / "result.pkl", "rb") as fh:
        return pickle.load(fh)


def train_in_ray(
    loop: Callable[[dict[str, Any]], None],
    train: Any,
    val: Any,
    model_cfg: Any,
    cfg: TrainConfig,
    *,
    name: str,
    work: Path,
    note: Callable[[str], None],
) -> Any:
    """One model fit by `loop` in Ray Train with the run's seed and threads; prints its loss history."""
    result = fit_in_ray_train(
        loop,
        {"train": train, "val": val},
        cfg=dataclasses.asdict(model_cfg),
        seed=cfg.seed,
        threads=cfg.ray.torch_threads,
        name=name,
        storage=work / "ray",
    )
    _print_history(note, result.history)
    return result


# ------------------------------------------------------------------------------------------------
# Packing
# ------------------------------------------------------------------------------------------------


def pack_two_tower(snaps: Sequence[Snapshot], keep: Callable[[str], bool]) -> Any:
    from trainer.two_tower import TwoTowerData

    users: list[npt.NDArray[np.float32]] = []
    ex_user: list[int] = []
    ex_snap: list[int] = []
    ex_creator: list[int] = []
    for s, snap in enumerate(snaps):
        for i, fan in enumerate(snap.fan_ids):
            if not keep(fan):
                continue
            u = len(users)
            users.append(snap.user_x[i])
            for c in sorted(snap.positives[i]):
                ex_user.append(u)
                ex_snap.append(s)
                ex_creator.append(c)
    width = snaps[0].user_x.shape[1] if snaps else len(USER_TOWER_FEATURES)
    return TwoTowerData(
        user_x=np.stack(users) if users else np.zeros((0, width), np.float32),
        creator_x=np.stack([snap.creator_x for snap in snaps]),
        ex_user=np.array(ex_user, dtype=np.int64),
        ex_snap=np.array(ex_snap, dtype=np.int64),
        ex_creator=np.array(ex_creator, dtype=np.int64),
    )


def fan_fold(fan_id: str, folds: int, seed: int) -> int:
    """Stable cross-fitting fold of a fan (crc32, not the salted `hash`)."""
    return zlib.crc32(f"{seed}:fold:{fan_id}".encode()) % folds


FanFilter = Callable[[str], bool]
Fit = TypeVar("Fit")


def fit_two_towers(
    cfg: TrainConfig, fit: Callable[[FanFilter, FanFilter, str], Fit]
) -> tuple[Fit, list[tuple[FanFilter, Fit]]]:
    """The served two-tower's fit, and (fans, fit) pairs whose tower never trained on those fans.

    The ranker must learn from two-tower scores as honest as serving's. Default: one tower trained on
    all fans but a `ranker_holdout_fans` share, which alone gives the ranker its lists, and which is also
    the tower served. With `cross_fit_folds` = K > 1: K towers, each trained on all folds but one, score
    their own fold's lists (every fan a ranker list, every score out of fold), and the served tower is a
    (K+1)-th trained on every fan. `fit(train_on, validate_on, name)` trains one tower.
    """
    folds = cfg.two_tower.cross_fit_folds
    if folds <= 1:

        def holdout(fan: str) -> bool:
            return in_holdout(fan, cfg.two_tower.ranker_holdout_fans, cfg.seed)

        def not_held_out(fan: str) -> bool:
            return not holdout(fan)

        tower = fit(not_held_out, holdout, "two_tower")
        return tower, [(holdout, tower)]
    ranker_towers: list[tuple[FanFilter, Fit]] = []
    for k in range(folds):

        def in_fold(fan: str, k: int = k) -> bool:
            return fan_fold(fan, folds, cfg.seed) == k

        def out_of_fold(fan: str, k: int = k) -> bool:
            return fan_fold(fan, folds, cfg.seed) != k

        ranker_towers.append((in_fold, fit(out_of_fold, in_fold, f"two_tower fold {k + 1}/{folds}")))
    return fit(lambda fan: True, lambda fan: False, "two_tower (all fans, served)"), ranker_towers


def fit_two_tower(
    snaps: Sequence[Snapshot],
    train_on: FanFilter,
    validate_on: FanFilter,
    cfg: TrainConfig,
    name: str,
    *,
    version: str,
    work: Path,
    note: Callable[[str], None],
) -> Any:
    """One two-tower fit in a Ray Train worker on the snapshots of the fans `train_on` accepts (weights,
    statistics and loss history); `validate_on`'s pairs give the held-out loss."""
    from trainer import two_tower as tt

    train, val = pack_two_tower(snaps, train_on), pack_two_tower(snaps, validate_on)
    _require(len(train) > 1, "no two-tower training pairs in the train window")
    held = f"{len(val):,} held-out pairs for validation" if len(val) else "no held-out pairs"
    note(f"{name}: {len(train):,} training pairs ({held}); fitting in a Ray Train worker…")
    result: tt.TwoTowerResult = train_in_ray(
        tt.ray_train_loop,
        train,
        val,
        cfg.two_tower,
        cfg,
        # One Ray run name per fit ("two_tower-fold-1-2-<version>"): Ray Train may resume a run by name.
        name="-".join([*re.findall(r"[a-z0-9_]+", name.lower()), version]),
        work=work,
        note=note,
    )
    return result


def write_parquet(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(list(rows)), tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


def run(
    settings: Settings,
    cfg: TrainConfig,
    *,
    out: Callable[[str], None] = print,
    version: str | None = None,
    force_promote: bool = False,
) -> TrainReport:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import torch

    torch.set_num_threads(cfg.ray.torch_threads)
    data_dir = Path(settings.data_dir).resolve()
    models_dir = Path(settings.resolved_models_dir).resolve()
    settings = settings.replace(data_dir=data_dir, models_dir=models_dir)
    version = version or new_version()
    progress = Progress(out)
    out(f"[train] version {version}  config {cfg.name}  data {data_dir}")
    work = Path(tempfile.mkdtemp(prefix="ktrain-", dir="/tmp"))
    try:
        with local_ray(cfg.ray.num_cpus):
            report = _run(settings, cfg, data_dir, models_dir, version, progress, work, force_promote)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - progress.started
    out(
        "[train] timings: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in progress.timings.items())
        + f"; total {total:.1f} s"
    )
    report.timings["total"] = total
    return report


def _run(
    settings: Settings,
    cfg: TrainConfig,
    data_dir: Path,
    models_dir: Path,
    version: str,
    progress: Progress,
    work: Path,
    force_promote: bool = False,
) -> TrainReport:
    from trainer import ranker as rk
    from trainer import two_tower as tt
    from trainer.evaluate import evaluate_holdout, format_table, holdout_pool
    from trainer.export import build_manifest, check_parity, export_onnx, parity_inputs

    note = progress.note
    catalogue = Catalogue.load(data_dir)
    creator_ids = [c.creator_id for c in catalogue.creators]
    if not creator_ids:
        raise ValueError(f"the catalogue under {data_dir} has no creators")

    # 1. ingest ------------------------------------------------------------------------------------
    with progress.step("ingest", "reading the event log with Ray Data"):
        segments = EventLog(data_dir / "events").segment_paths()
        events = to_interactions(ingest_with_ray(segments), catalogue)
        split = time_split(events, cfg.split.test_fraction)
        n_train = int((events.ts < split.train_end).sum())
        note(
            f"{len(events):,} events from {len(segments)} segment(s); {len(catalogue.fans):,} fans, "
            f"{len(creator_ids):,} creators"
        )
        note(
            f"train window {_day(split.start)} → {_day(split.train_end)} ({n_train:,} events), "
            f"hold-out → {_day(split.end)} ({len(events) - n_train:,} events)"
        )

    # 2. features ----------------------------------------------------------------------------------
    label_codes = label_type_codes(cfg.split.label_types)
    positive_codes = label_type_codes(cfg.two_tower.positive_types)
    objective_codes = objective_label_codes(cfg.ranker.objectives)
    with progress.step("features", f"fan/creator rows at {cfg.split.n_cuts} training cuts + the train end"):
        snaps = build_training_snapshots(
            events,
            catalogue,
            creator_ids,
            split,
            n_cuts=cfg.split.n_cuts,
            warmup_fraction=cfg.split.warmup_fraction,
            label_codes=label_codes,
            positive_codes=positive_codes,
            objective_codes=objective_codes,
            progress=note,
        )
        test = build_snapshot(
            events, catalogue, creator_ids, cut=split.train_end, window_end=split.end, label_codes=label_codes
        )
        note(f"hold-out: {len(test.fan_ids)} fans discovered {sum(len(x) for x in test.labels)} creators")
        _require(any(test.labels), "no fan discovered a creator in the hold-out window")
        features_dir = data_dir / "features" / version
        write_parquet(features_dir / "train" / "fans.parquet", list(test.fan_rows.values()))
        write_parquet(features_dir / "train" / "creators.parquet", list(test.creator_rows.values()))
        note(f"train-window features → {features_dir / 'train'}")

    # 3. two-tower ---------------------------------------------------------------------------------
    with progress.step("two-tower", "in-batch softmax with logQ correction, Ray Train (1 worker)"):
        tt_result, ranker_results = fit_two_towers(
            cfg,
            lambda train_on, validate_on, name: fit_two_tower(
                snaps, train_on, validate_on, cfg, name, version=version, work=work, note=note
            ),
        )
        tower = tt.build_model(tt_result, cfg.two_tower)
        ranker_towers = [(fans, tt.build_model(r, cfg.two_tower)) for fans, r in ranker_results]

    # 4. ranker ------------------------------------------------------------------------------------
    heads = ", ".join(cfg.ranker.objectives)
    with progress.step("ranker", f"listwise multi-objective MLP ({heads}) over the {cfg.ranker.pool} pool"):
        train_events = events.before(split.train_end)
        pools: list[ServingPool | None] = [
            ServingPool.as_of(
                train_events,
                catalogue,
                s.creator_rows,
                as_of=s.cut,
                k=cfg.ranker.pool_size,
                popular_k=cfg.popular_k,
                cfg=candidates_config(cfg),
            )
            if cfg.ranker.pool == "serving"
            else None
            for s in snaps
        ]
        # Each fan's lists are scored by a tower that never trained on that fan (see fit_two_towers).
        rdata = rk.RankerData.concat(
            [
                rk.build_ranker_data(
                    snaps,
                    [tt.user_vectors(ranker_tower, s.user_x) for s in snaps],
                    [tt.creator_vectors(ranker_tower, s.creator_x) for s in snaps],
                    fans,
                    creator_ids,
                    cfg.ranker,
                    seed=cfg.seed + k,
                    pools=pools,
                )
                for k, (fans, ranker_tower) in enumerate(ranker_towers)
            ]
        )
        _require(len(rdata) > 1, "too few ranker lists (fans scored out of fold with a retrieved discovery)")
        rng = np.random.default_rng(cfg.seed)
        is_val = rng.random(len(rdata)) < cfg.ranker.val_fraction
        r_train, r_val = rdata.subset(~is_val), rdata.subset(is_val)
        positives = ", ".join(
            f"{name} {int((rdata.y[..., h].sum(1) > 0).sum()):,}"
            for h, name in enumerate(cfg.ranker.objectives)
        )
        note(
            f"{len(rdata):,} candidate lists × {rdata.x.shape[1]} candidates × {rdata.x.shape[2]} features "
            f"({len(r_val)} for validation); lists with a positive: {positives}"
        )
        note("fitting in a Ray Train worker…")
        rk_result: rk.RankerResult = train_in_ray(
            rk.ray_train_loop, r_train, r_val, cfg.ranker, cfg, name=f"ranker-{version}", work=work, note=note
        )
        trained = rk.trained_heads(r_train)
        if not all(trained):
            untrained = [n for n, t in zip(rk_result.objectives, trained, strict=True) if not t]
            note(f"no training list has a positive for {untrained}: weight 0 (an untrained head is noise)")
            weights = rk.without_untrained(rk_result.weights, trained)
            rk_result = dataclasses.replace(rk_result, weights=weights)
        ranker = rk.build_model(rk_result, cfg.ranker)
        weight_table: list[dict[str, Any]] = []
        if cfg.ranker.select_weights and len(r_val):
            chosen, weight_table = rk.select_weights(ranker, r_val, cfg.ranker.weight_grid, trained=trained)
            rk_result = dataclasses.replace(rk_result, weights=chosen)
            ranker = rk.build_model(rk_result, cfg.ranker)
            best = max(row["ndcg@10"] for row in weight_table)
            note(
                "objective weights (chosen on the validation lists, NDCG@10 "
                f"{best:.4f}): {dict(zip(rk_result.objectives, chosen, strict=True))}"
            )

    # 5. evaluate ----------------------------------------------------------------------------------
    with progress.step("evaluate", "Recall@K / NDCG@K on the time hold-out"):
        eval_pool = holdout_pool(cfg, events, catalogue, test, split.train_end)  # the gate ranks it too
        metrics = evaluate_holdout(
            test,
            tt.user_vectors(tower, test.user_x),
            tt.creator_vectors(tower, test.creator_x),
            creator_ids,
            ks=cfg.eval.ks,
            n_two_tower=cfg.eval.candidates_two_tower,
            n_popular=cfg.eval.candidates_popular,
            ranker_score=lambda x: rk.score(ranker, x),
            two_tower_score_for_popular=cfg.ranker.two_tower_score_for_popular,
            pool=eval_pool,
            chunk_fans=cfg.eval.chunk_fans,
        )
        for line in format_table(metrics, cfg.eval.ks).splitlines():
            note(line)

    # 6. export ------------------------------------------------------------------------------------
    with progress.step("export", "ONNX + manifests (parity checked against torch)"):
        # Serving features: every event, so the services see each fan's full history.
        as_of = split.end
        fan_rows = build_fan_rows(events, catalogue.fans, catalogue.creators, as_of=as_of)
        creator_rows = build_creator_rows(events, catalogue.creators, catalogue.posts, as_of=as_of)
        write_parquet(features_dir / "serving" / "fans.parquet", list(fan_rows.values()))
        write_parquet(features_dir / "serving" / "creators.parquet", list(creator_rows.values()))
        (features_dir / "window.json").write_text(
            json.dumps(
                {
                    "version": version,
                    "train": {"start": split.start, "end": split.train_end},
                    "serving": {"start": split.start, "end": split.end},
                },
                indent=2,
            )
            + "\n"
        )
        serving_creator_x = creator_tower_features_batch([creator_rows.get(c) for c in creator_ids])
        serving_vectors = tt.creator_vectors(tower, serving_creator_x)
        # The mf source's factors from every follow up to the end, like the serving tables; they ship
        # in the user tower's version so the tower, the creator index and they switch together.
        serving_mf = fit_mf(
            following_pairs(events.before(as_of)), creator_ids, cfg.mf, seed=cfg.seed, version=version
        )

        window = {"start": split.start, "train_end": split.train_end, "end": split.end}
        config = cfg.to_dict()
        user_onnx = export_onnx(tower.user, len(USER_TOWER_FEATURES), "user_vector")
        user_diff = check_parity(tower.user, user_onnx, parity_inputs(test.user_x, seed=cfg.seed))
        user_manifest = build_manifest(
            name="two_tower_user",
            version=version,
            output_name="user_vector",
            features=USER_TOWER_FEATURES,
            data_window=window,
            metrics=metrics,
            config=config,
            parity_max_abs_diff=user_diff,
            extra={
                "embedding_dim": cfg.two_tower.dim,
                "similarity": "cosine",
                "index_version": version,
                "creator_ids_file": "creator_ids.json",
                "creator_embeddings_file": "creator_embeddings.npy",
                "training": tt_result.history,
                MF_MANIFEST_KEY: serving_mf.manifest(),
            },
        )
        graph = rk.RankerGraph(ranker)
        objective_outputs = {name: rk.head_output(name) for name in rk_result.objectives}
        ranker_onnx = export_onnx(graph, len(RANKER_FEATURES), [rk.SCORE_OUTPUT, *objective_outputs.values()])
        ranker_diff = check_parity(graph, ranker_onnx, parity_inputs(rdata.x[rdata.mask], seed=cfg.seed))
        ranker_manifest = build_manifest(
            name="ranker",
            version=version,
            output_name=[rk.SCORE_OUTPUT, *objective_outputs.values()],
            features=RANKER_FEATURES,
            data_window=window,
            metrics=metrics,
            config=config,
            parity_max_abs_diff=ranker_diff,
            extra={
                "two_tower_version": version,
                "training": rk_result.history,
                # ranking_svc.objectives reads these: heads, their outputs, the default combination.
                "objectives": list(rk_result.objectives),
                "objective_outputs": objective_outputs,
                "objective_weights": dict(zip(rk_result.objectives, rk_result.weights, strict=True)),
                "objective_labels": {n: list(t) for n, t in cfg.ranker.objectives.items()},
                "objective_weight_selection": sorted(weight_table, key=lambda r: -r["ndcg@10"])[:10],
                "candidate_pool": cfg.ranker.pool,
            },
        )
        model_dirs = {
            "two_tower_user": write_model(
                models_dir,
                "two_tower_user",
                version,
                user_onnx,
                user_manifest,
                extra_files={
                    "creator_embeddings.npy": npy_bytes(serving_vectors),
                    "creator_ids.json": (json.dumps(creator_ids) + "\n").encode(),
                    **serving_mf.files(),
                },
            ),
            "ranker": write_model(models_dir, "ranker", version, ranker_onnx, ranker_manifest),
        }
        note(f"parity max |Δ|: user tower {user_diff:.1e}, ranker {ranker_diff:.1e}")
        for name, path in model_dirs.items():
            note(f"{name} → {path}")

    # 7. index -------------------------------------------------------------------------------------
    with progress.step("index", f"{len(creator_ids)} creator vectors into the vector index"):
        from kindred.vectorstore import index_creators

        by_id = catalogue.creators_by_id()
        payloads = [
            {
                "creator_id": c,
                "category": by_id[c].category,
                "language": by_id[c].language,
                "mature": bool(by_id[c].mature),
                "popularity": float(creator_rows[c]["popularity"]),
            }
            for c in creator_ids
        ]
        # Built now, switched on in step 8 together with the models: user tower and creator vectors
        # come from one run and must never be served one under the other.
        index_creators(settings, version, creator_ids, serving_vectors, payloads, promote=False)

    # 8. online store + promote --------------------------------------------------------------------
    with progress.step("online+promote", "serving features into the online store, then the promotion gate"):
        from kindred.store.online import open_online_store

        popular = build_popular_lists(creator_rows, k=cfg.popular_k)
        store = open_online_store(settings)
        try:
            store.put("fan", fan_rows)
            store.put("creator", creator_rows)
            store.put("popular", popular)
            from trainer.candidates import Holdout, publish_candidates

            publish_candidates(
                store,
                events,
                catalogue,
                as_of=as_of,
                holdout=Holdout.from_snapshot(
                    test,
                    tt.user_vectors(tower, test.user_x),
                    tt.creator_vectors(tower, test.creator_x),
                    creator_ids,
                ),
                popular_k=cfg.popular_k,
                cfg=candidates_config(cfg),
                report=features_dir / "candidates.json",
                note=note,
            )
        finally:
            close = getattr(store, "close", None)
            if callable(close):
                close()
        note(
            f"online store: {len(fan_rows):,} fans, {len(creator_rows):,} creators, "
            f"{len(popular)} popular lists"
        )
        from kindred.vectorstore import promote_creator_index
        from trainer.promotion import export_creator_tower, run_gate

        export_creator_tower(
            tower.creator,
            creator_ids,
            test.creator_x,
            models_dir=models_dir,
            version=version,
            data_window=window,
            config=config,
            seed=cfg.seed,
        )
        promotion = run_gate(
            models_dir=models_dir,
            model_names=MODEL_NAMES,
            version=version,
            new_metrics=metrics,
            test=test,
            creator_ids=creator_ids,
            cfg=cfg,
            force=force_promote,
            promote_index=lambda v: promote_creator_index(settings, v),
            out=note,
            pool=eval_pool,
        )

    return TrainReport(
        version=version,
        metrics=metrics,
        timings=progress.timings,
        split=split,
        model_dirs=model_dirs,
        features_dir=features_dir,
        n_events=len(events),
        history={"two_tower": tt_result.history, "ranker": rk_result.history},
        promotion=promotion,
    )


def _day(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch_s))


def _print_history(note: Callable[[str], None], history: Sequence[Mapping[str, float]]) -> None:
    every = max(1, len(history) // 8)  # at most ~8 lines however many epochs
    for i, h in enumerate(history):
        if i % every == 0 or i == len(history) - 1:
            note(
                f"epoch {int(h['epoch']):>3}: loss {h['loss']:.4f}"
                + (f", held-out {h['val_loss']:.4f}" if "val_loss" in h else "")
                + f"  ({h['seconds']:.1f} s)"
            )


__all__ = ["NotEnoughData", "TrainReport", "run"]
