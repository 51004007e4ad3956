"""HetRec Last.fm recommendation benchmark: every system on the same per-seed split, beside the paper.

    .venv/bin/python bench/bench_recsys_lastfm.py --seeds 0 1 2     # full run, writes results
    .venv/bin/python bench/bench_recsys_lastfm.py --quick --seeds 0  # smoke run, writes nothing
    # on shared cores: one process per seed, each writing a part, then one call merges them
    .venv/bin/python bench/bench_recsys_lastfm.py --seeds 0 --part var/recsys/lastfm_seed0.json &  # 1, 2 too
    .venv/bin/python bench/bench_recsys_lastfm.py --combine var/recsys/lastfm_seed{0,1,2}.json
    # only some systems (e.g. a changed pipeline), reusing what the others chose from a stored part of
    # the same seed; combine merges parts by system, a later part's row replacing an earlier one's
    .venv/bin/python bench/bench_recsys_lastfm.py --seeds 0 --systems kindred \
        --reuse var/recsys/lastfm_seed0.json --part var/recsys/lastfm_kindred_seed0.json  # 1, 2 too
    .venv/bin/python bench/bench_recsys_lastfm.py --combine var/recsys/lastfm_seed{0,1,2}.json \
        var/recsys/lastfm_kindred_seed{0,1,2}.json

Protocol in bench/recsys/protocol.py. Each system is tuned on valid (NDCG@10) and scored once on
test; mean and spread are over seeds. Writes bench/results/recsys_lastfm.json and replaces this
benchmark's section of bench/RESULTS.md (bench.results_md). Every number written is measured in the
run, except the published table, which is labelled as such. With `--systems` + `--reuse` some
systems come from a later run on the same seeds; each row records the run that measured it.

"kindred" is Kindred's pipeline (bench/recsys/kindred_pipeline.py): multi-source retrieval (ALS
embeddings in the two-tower's role, EASE and item-kNN co-engagement, the tuned ALS + EASE + friends
blend, friends, popular) pooled per user, then a LightGBM lambdarank ranker trained on labels held
back from each user's *train* interactions, chosen on valid, and served as ONNX. Shared with the
services: the ranker is written and loaded through kindred.models (write_model / load_model: sha256
+ feature-order check + open_session, the path ranking_svc loads its ranker by) and every kindred
score is computed by that onnxruntime session. Bench-specific: the sources are matrix computations
over the benchmark's ids (not retrieval_svc's Qdrant-backed modules), and the features are the
pipeline module's own, since Last.fm has no creators, categories or prices for kindred/features.py
to compute. The sources reuse the hyper-parameters the standalone ALS/EASE/item-kNN peers and the
blend chose on valid in the same seed.
Not used: user_taggedartists.dat (unsplit; it would leak held-out listening).

"kindred_services" is the product itself on the same split (bench/recsys/served.py): the train pairs
become a platform data directory, the platform's trainer runs with a stock config (`--platform-config`,
default `default`), and Recommend(k=10) goes through ranking_svc's servicer with retrieval in its
process. Nothing of it is tuned on valid. It can be added to an existing results file without re-running
the peers (same seeds):
    .venv/bin/python bench/bench_recsys_lastfm.py --seeds 0 1 2 --systems kindred_services \
        --add-to bench/results/recsys_lastfm.json
(the user_taggedartists tags do reach it, as its creators' tags and category: they are catalogue data,
not held-out listening.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (make bench): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Before numpy/scipy load their OpenBLAS builds (there are two): implicit runs its own thread pool
# and OpenBLAS threads on top of it oversubscribe the cores. threadpool_limits in main() covers
# a caller that imported numpy first.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from bench.recsys.kindred_pipeline import PipelineConfig, SourceParams, tune_kindred
from bench.recsys.metrics import metric_keys
from bench.recsys.peers import Grids, PeerTuner, Tuned, peer_tuners
from bench.recsys.protocol import (
    DATASET_DIRNAME,
    Interactions,
    Split,
    default_data_dir,
    describe,
    evaluate,
    load_friends,
    load_interactions,
    mean_metrics,
    repo_root,
    split_per_user,
)
from bench.recsys.served import PlatformConfig, TrainedPlatform, services_row
from bench.recsys.strong import StrongGrids, tune_blend, tune_ease
from bench.results_md import write_section

K = 10
EXPECTED_INTERACTIONS = 92_834
SECTION = "recsys_lastfm"

# RecBole-GNN results/social/lastfm.md (same protocol), as quoted in shared/data/README.md.
PUBLISHED: dict[str, dict[str, float]] = {
    "BPR-MF": {
        "recall@10": 0.1761,
        "ndcg@10": 0.1674,
        "mrr@10": 0.3026,
        "hit@10": 0.5573,
        "precision@10": 0.0858,
    },
    "NGCF": {
        "recall@10": 0.1960,
        "ndcg@10": 0.1898,
        "mrr@10": 0.3479,
        "hit@10": 0.6141,
        "precision@10": 0.0961,
    },
    "LightGCN": {
        "recall@10": 0.2064,
        "ndcg@10": 0.1972,
        "mrr@10": 0.3559,
        "hit@10": 0.6322,
        "precision@10": 0.1009,
    },
    "MHCN (social)": {
        "recall@10": 0.2123,
        "ndcg@10": 0.2068,
        "mrr@10": 0.3782,
        "hit@10": 0.6523,
        "precision@10": 0.1042,
    },
    "SEPT (social)": {
        "recall@10": 0.2127,
        "ndcg@10": 0.2057,
        "mrr@10": 0.3703,
        "hit@10": 0.6465,
        "precision@10": 0.1044,
    },
}
PUBLISHED_SOURCE = "RecBole-GNN results/social/lastfm.md"

# Kindred's pipeline on Last.fm: the tuned ALS + EASE + friends blend as an extra source and feature,
# and 4 label folds. Chosen on seed 0's valid NDCG@10 (bench/recsys/kindred_tune.py): 0.2017 vs 0.2008
# for the module default (LightGBM seed 1: 0.2011 vs 0.2003). No better there: 300 candidates per
# source (453/user, valid pool recall 0.70 vs 0.57: 0.1982), a second ALS, user-kNN, friends weighted
# by taste, rank_xendcg, 8 folds, other LightGBM settings. The module default stays what the
# MovieLens bench measured.
LASTFM_PIPELINE = PipelineConfig(use_blend=True, label_folds=4)


class FinishedRow(dict[str, Any]):
    """A system that evaluates itself (it serves pages, not full-catalogue scores): its results row."""


SystemRun = Callable[[Split, dict[str, Tuned]], Tuned | FinishedRow]
# What a system needs from systems run before it (their chosen hyper-parameters or fitted models).
DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "als_ease_social": ("implicit_als", "ease"),
    "kindred": ("implicit_als", "ease", "itemknn", "als_ease_social"),
}


@dataclass
class NotRunHere:
    """Stands in for a system reused from a stored part: its params are known, no model is fitted."""

    name: str
    source: str

    def score(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        raise RuntimeError(f"{self.name} was not run here (params reused from {self.source}); run it too")


def reused_systems(part: Path, seed: int, names: set[str]) -> dict[str, Tuned]:
    """Systems `names` as a stored part chose them for `seed`: params and valid score, no model."""
    raw = json.loads(part.read_text(encoding="utf-8"))
    rows = dict(zip(raw["seeds"], raw["per_seed"], strict=True))
    if seed not in rows:
        raise ValueError(f"{part} has no seed {seed} (it has {raw['seeds']})")
    return {
        name: Tuned(name, NotRunHere(name, str(part)), row["params"], {f"ndcg@{K}": row["valid_ndcg@10"]})
        for name, row in rows[seed].items()
        if name in names
    }


def systems(
    grids: Grids,
    strong: StrongGrids,
    pipeline: PipelineConfig,
    friends: Any,
    threads: int,
    served: Callable[[Split, bool], dict[str, Any]] | None = None,
) -> dict[str, SystemRun]:
    """Every system in run order. A later system may reuse earlier tuned ones (the blend and
    Kindred's sources take the hyper-parameters the peers chose on valid)."""

    def peer(tuner: PeerTuner) -> SystemRun:
        return lambda split, done: tuner(split, grids, split.seed, threads)

    runs: dict[str, SystemRun] = {name: peer(tuner) for name, tuner in peer_tuners().items()}
    runs["ease"] = lambda split, done: tune_ease(split, strong)
    runs["als_ease_social"] = lambda split, done: tune_blend(
        split, friends, done["implicit_als"], done["ease"], strong
    )
    runs["kindred"] = lambda split, done: (
        tune_kindred(
            split, friends, SourceParams.from_tuned(done), replace(pipeline, seed=split.seed, threads=threads)
        ).tuned
    )
    if served is not None:
        runs["kindred_services"] = lambda split, done: FinishedRow(served(split, True))
        # The same, served with the re-ranking rules off: what they cost in accuracy here.
        runs["kindred_services_no_rerank"] = lambda split, done: FinishedRow(served(split, False))
    return runs


def run_seed(
    seed: int, inter: Interactions, runs: dict[str, SystemRun], reused: dict[str, Tuned] | None = None
) -> dict[str, dict[str, Any]]:
    return run_systems(split_per_user(inter, seed), runs, reused)


def run_systems(
    split: Split, runs: dict[str, SystemRun], reused: dict[str, Tuned] | None = None
) -> dict[str, dict[str, Any]]:
    """Tune every system in `runs` on `split`'s valid part, then score it once on test. `reused`
    systems (from a stored part of the same seed) are not run or reported, only depended on."""
    seed = split.seed
    done: dict[str, Tuned] = dict(reused or {})
    out: dict[str, dict[str, Any]] = {}
    for name, run in runs.items():
        start = time.perf_counter()
        tuned = run(split, done)
        ndcg = f"ndcg@{K}"
        if isinstance(tuned, FinishedRow):
            out[name] = dict(tuned)
            print(
                f"  seed {seed} {name:<16} test {ndcg} {tuned['test'][ndcg]:.4f}  {tuned['params']}",
                flush=True,
            )
            continue
        test = mean_metrics(evaluate(tuned.model.score, split, "test", k=K))
        done[name] = tuned
        out[name] = {
            "test": test,
            "valid_ndcg@10": tuned.valid[f"ndcg@{K}"],
            "params": tuned.params,
            "trials": len(tuned.trials),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(
            f"  seed {seed} {name:<16} test {ndcg} {test[ndcg]:.4f}  valid {tuned.valid[ndcg]:.4f}"
            f"  {out[name]['seconds']:>6.1f}s  {tuned.params}",
            flush=True,
        )
    return out


def aggregate(per_seed: list[dict[str, dict[str, Any]]], seeds: list[int]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for name in per_seed[0]:
        rows = [s[name] for s in per_seed]
        entry: dict[str, Any] = {}
        std: dict[str, float] = {}
        for key in metric_keys(K):
            values = np.array([r["test"][key] for r in rows])
            entry[key] = round(float(values.mean()), 4)
            std[key] = round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4)
        entry["std"] = std
        entry["valid_ndcg@10"] = round(float(np.mean([r["valid_ndcg@10"] for r in rows])), 4)
        if all("pool_recall" in r["params"] for r in rows):
            # Kindred's candidate pool: the share of held-out items retrieval lets the ranker see.
            entry["pool_recall"] = {
                part: round(float(np.mean([r["params"]["pool_recall"][part] for r in rows])), 4)
                for part in rows[0]["params"]["pool_recall"]
            }
            entry["pool_size"] = round(float(np.mean([r["params"]["pool_size"] for r in rows])), 1)
        entry["per_seed"] = [
            {
                "seed": seed,
                **{k: round(v, 4) for k, v in r["test"].items()},
                "params": r["params"],
                "trials": r["trials"],
                "seconds": r["seconds"],
                **({"run": r["run"]} if "run" in r else {}),
            }
            for seed, r in zip(seeds, rows, strict=True)
        ]
        result[name] = entry
    return result


def add_systems(
    report: dict[str, Any], added: dict[str, dict[str, Any]], seeds: list[int], command: str, runtime: float
) -> dict[str, Any]:
    """`report` with the aggregated rows of `added`, measured on the same seeds by a later run (recorded
    in `added_rows` and in each row's `per_seed[].run`). A system the report already holds is replaced,
    as `--combine` replaces a part's row, and each replaced per-seed row is listed in `replaced_rows`."""
    if seeds != report["seeds"]:
        raise ValueError(f"seeds {seeds} differ from the results' {report['seeds']}")
    systems_ = dict(report["systems"])
    replaced = list(report.get("replaced_rows") or [])
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    # When each system was last added: the same command run twice is told apart by its date.
    added_on = {n: r["date"] for r in report.get("added_rows", []) for n in r["systems"]}
    for name, entry in added.items():
        for old in systems_.get(name, {}).get("per_seed", []):
            was = f"{old.get('run', '?')} ({added_on.get(name, 'date unknown')})"
            replaced.append(f"seed {old['seed']} {name}: {was} -> {command} ({date})")
        systems_[name] = {**entry, "per_seed": [{**row, "run": command} for row in entry["per_seed"]]}
    record = {
        "systems": sorted(added),
        "command": command,
        "date": date,
        "machine": machine(),
        "runtime_seconds": round(runtime, 1),
    }
    added_rows = [r for r in report.get("added_rows", []) if not set(r["systems"]) <= set(added)]
    return {**report, "systems": systems_, "added_rows": [*added_rows, record], "replaced_rows": replaced}


def machine(
    packages: tuple[str, ...] = ("numpy", "scipy", "implicit", "lightgbm", "onnxruntime"),
) -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
                break
    versions = {p: metadata.version(p) for p in packages}
    return {
        "nproc": len(os.sched_getaffinity(0)),
        # The 2 cores are shared: the load average says how much of them the run actually had.
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "cpu": cpu,
        "ram_gb": round(mem_kb / 1024**2, 1),
        "python": platform.python_version(),
        **versions,
    }


def render_table(
    systems_: dict[str, dict[str, Any]], published: dict[str, dict[str, float]] | None = None
) -> list[str]:
    keys = metric_keys(K)
    header = "| system | " + " | ".join(k.replace("@", "@") for k in keys) + " |"
    lines = [header, "|---" * (len(keys) + 1) + "|"]
    for name, entry in systems_.items():
        cells = [f"{entry[k]:.4f} ± {entry['std'][k]:.4f}" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, row in (PUBLISHED if published is None else published).items():
        lines.append(f"| published: {name} | " + " | ".join(f"{row[k]:.4f}" for k in keys) + " |")
    return lines


def results_section(report: dict[str, Any]) -> str:
    m = report["machine"]
    kindred = report["systems"].get("kindred", {})
    pool = kindred.get("pool_recall")
    lines = [
        "## HetRec Last.fm: full-ranking quality (@10)",
        "",
        f"- Command: `{report['command']}`",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM; Python {m['python']}, "
        f"numpy {m['numpy']}, scipy {m['scipy']}, implicit {m['implicit']}, lightgbm {m.get('lightgbm')}, "
        f"onnxruntime {m.get('onnxruntime')}",
        f"- Date: {report['date']}; seeds {report['seeds']}; wall time {report['runtime_seconds']:.0f} s, "
        f"CPU time {report['cpu_seconds']:.0f} s, load average at the end {m['load_average_at_end']} "
        "(the cores are shared)",
        "- Protocol: all 92,834 user_artists pairs as implicit feedback, no filtering; per-user "
        "shuffle 8:1:1 train/valid/test; full ranking over all 17,632 artists, train (valid) and "
        "train+valid (test) masked; users without held-out items skipped. Tuned on valid NDCG@10, "
        "fit on train only. Mean ± sample std over seeds; published rows are quoted from "
        f"{PUBLISHED_SOURCE}.",
        "- kindred: ALS / EASE / item-kNN / ALS+EASE+friends blend / friends / popular candidates "
        "pooled per user, LightGBM lambdarank on labels held back from train (4 folds), scored by the "
        "ONNX ranker loaded through kindred.models (bench/recsys/kindred_pipeline.py).",
    ]
    if pool:
        lines.append(
            f"- kindred candidate pool: {kindred['pool_size']:.0f} artists per user; recall of the "
            "held-out items it contains: "
            + ", ".join(f"{part} {value:.3f}" for part, value in pool.items())
            + " (the ceiling for any ranker over it)"
        )
    replaced = report.get("replaced_rows") or []
    if replaced:
        redone = sorted({row.split(":")[0].split()[-1] for row in replaced})
        lines.append(
            f"- Parts merged by system: {', '.join(redone)} re-run later on the same seeds and splits "
            f"(`--systems`), replacing {len(replaced)} earlier per-seed rows; every other row is the one "
            "measured in its own part run. The run behind each row is `per_seed[].run` in the JSON."
        )
    for added in report.get("added_rows") or []:
        lines.append(
            f"- Added later on the same seeds and splits: {', '.join(added['systems'])}, by "
            f"`{added['command']}` ({added['date']}, {added['machine']['cpu']}, "
            f"{added['runtime_seconds']:.0f} s)."
        )
    if "kindred_services" in report["systems"]:
        lines.append(
            "- kindred_services: the product itself (bench/recsys/served.py) — the split's train pairs as "
            "FOLLOW events of a platform data directory, `python -m trainer train` with a stock config, "
            "then Recommend(k=10) through ranking_svc's servicer with retrieval in its process (sources, "
            "quotas, engine filters, ONNX ranker, re-ranking); valid artists excluded by the request. Not "
            "tuned on valid."
        )
    if "kindred_services_no_rerank" in report["systems"]:
        lines.append(
            "- kindred_services_no_rerank: the same, served with `config/ranking.json` switching every "
            "re-ranking rule off (the ranker's order): what freshness, diversity, exposure and the "
            "per-category cap cost in accuracy on this data. When both rows run together, the second "
            "serves the platform the first trained (`platform_reused`: the same models, paired)."
        )
    lines += [
        "",
        *render_table(report["systems"]),
        "",
        "Chosen hyper-parameters per seed are in `bench/results/recsys_lastfm.json`.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="one point per grid; prints, writes nothing")
    p.add_argument("--threads", type=int, default=2, help="implicit's own threads (BLAS is pinned to 1)")
    p.add_argument(
        "--data-dir", type=Path, default=None, help="default: <repo>/../shared/data/" + DATASET_DIRNAME
    )
    p.add_argument("--out", type=Path, default=repo_root() / "bench" / "results" / "recsys_lastfm.json")
    p.add_argument("--results-md", type=Path, default=repo_root() / "bench" / "RESULTS.md")
    # On shared cores one process per seed finishes sooner: each writes a part, one call combines them.
    p.add_argument("--part", type=Path, default=None, help="write this run's raw per-seed results here, only")
    p.add_argument("--combine", type=Path, nargs="+", default=None, help="parts to merge into the results")
    p.add_argument("--systems", nargs="+", default=None, help="run only these systems (default: all)")
    p.add_argument(
        "--reuse", type=Path, default=None, help="part of the same seed to take systems not run from"
    )
    p.add_argument(
        "--platform-config",
        default="default",
        help="trainer config of the kindred_services system (tiny | default | a .toml path)",
    )
    p.add_argument(
        "--add-to",
        type=Path,
        default=None,
        help="add this run's systems (same seeds; a system already there is replaced, and listed) to an "
        "existing results file and its section",
    )
    return p.parse_args(argv)


def this_command(argv: list[str] | None) -> str:
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(repo_root()) if script.is_relative_to(repo_root()) else script
    return " ".join(["python", str(shown), *(argv if argv is not None else sys.argv[1:])])


@dataclass
class Merged:
    """Parts merged by (seed, system). Each row keeps `run`, the command of the part it came from."""

    seeds: list[int]
    per_seed: list[dict[str, dict[str, Any]]]
    runtime: float  # the longest part's wall time (parts of one run go side by side)
    cpu_seconds: float  # summed over the parts
    commands: list[str]
    replaced: list[str] = field(default_factory=list)  # "seed S system: <old run> -> <new run>"


def load_parts(paths: list[Path]) -> Merged:
    """Merge per-seed parts in seed order. A part may hold only some systems (--systems); a later
    part's row for the same seed and system replaces an earlier one's, and the replacement is
    listed. Every seed must end up with the same systems."""
    parts = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    replaced: list[str] = []
    for part in parts:
        for seed, res in zip(part["seeds"], part["per_seed"], strict=True):
            rows = by_seed.setdefault(seed, {})
            for name, row in res.items():
                row = {**row, "run": row.get("run", str(part["command"]))}
                if name in rows:
                    if row["run"] == rows[name]["run"]:
                        raise ValueError(f"seed {seed} {name}: the same run given twice ({row['run']})")
                    replaced.append(f"seed {seed} {name}: {rows[name]['run']} -> {row['run']}")
                rows[name] = row
    seeds = sorted(by_seed)
    names = [set(by_seed[s]) for s in seeds]
    if any(n != names[0] for n in names):
        raise ValueError(f"seeds have different systems: {dict(zip(seeds, map(sorted, names), strict=True))}")
    return Merged(
        seeds,
        [by_seed[s] for s in seeds],
        max(float(part["runtime_seconds"]) for part in parts),
        sum(float(part["cpu_seconds"]) for part in parts),
        [str(part["command"]) for part in parts],
        replaced,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    if not (data_dir / "user_artists.dat").exists():
        print(f"HetRec Last.fm not found at {data_dir}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    inter = load_interactions(data_dir)
    if len(inter.users) != EXPECTED_INTERACTIONS:
        print(f"expected {EXPECTED_INTERACTIONS} interactions, read {len(inter.users)}", file=sys.stderr)
        return 2
    friends = load_friends(data_dir, inter)
    command = this_command(argv)
    replaced: list[str] = []
    if args.combine:
        merged = load_parts(args.combine)
        seeds, per_seed, replaced = merged.seeds, merged.per_seed, merged.replaced
        runtime, cpu_seconds = merged.runtime, merged.cpu_seconds
        command = " & ".join(merged.commands) + "; then " + command
    else:
        grids, strong = (Grids.quick(), StrongGrids.quick()) if args.quick else (Grids(), StrongGrids())
        pipeline = replace(PipelineConfig.quick(), use_blend=True) if args.quick else LASTFM_PIPELINE
        platform_config = PlatformConfig(trainer_config="tiny" if args.quick else args.platform_config)
        work_root = repo_root() / "var" / "bench" / "recsys_services"

        trained: dict[int, TrainedPlatform] = {}  # seed → the platform trained there by this run

        def served(split: Split, rerank: bool) -> dict[str, Any]:
            config = replace(platform_config, rerank=rerank)
            work_dir = work_root / f"seed{split.seed}"
            row, trained[split.seed] = services_row(
                split, inter, data_dir, work_dir, config, trained=trained.get(split.seed)
            )
            return row

        runs = systems(grids, strong, pipeline, friends, args.threads, served)
        wanted = args.systems or list(runs)
        unknown = sorted(set(wanted) - set(runs))
        if unknown:
            print(f"unknown systems {unknown}; known: {list(runs)}", file=sys.stderr)
            return 2
        needed = {dep for name in wanted for dep in DEPENDS_ON.get(name, ())} - set(wanted)
        if needed and args.reuse is None:
            print(f"{wanted} depend on {sorted(needed)}: run them too or --reuse a part", file=sys.stderr)
            return 2
        runs = {name: run for name, run in runs.items() if name in wanted}
        seeds, per_seed = args.seeds, []
        import implicit.cpu.als  # noqa: F401  (loads scipy's OpenBLAS now, so the limit below reaches it)

        with threadpool_limits(limits=1, user_api="blas"):
            for seed in seeds:
                print(f"seed {seed}", flush=True)
                reused = reused_systems(args.reuse, seed, needed) if needed and args.reuse else None
                per_seed.append(run_seed(seed, inter, runs, reused))
        runtime = time.perf_counter() - started
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_seconds = usage.ru_utime + usage.ru_stime  # vs wall time: how much of the shared cores we had
    result = aggregate(per_seed, seeds)

    print(f"\nHetRec Last.fm, {len(seeds)} seed(s), mean ± std, {runtime:.0f} s")
    print("\n".join(render_table(result)))
    if args.quick:
        print("\nquick run: grids reduced, nothing written")
        return 0
    if args.add_to:
        report = add_systems(
            json.loads(args.add_to.read_text(encoding="utf-8")), result, seeds, command, runtime
        )
        args.add_to.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        write_section(SECTION, results_section(report), args.results_md)
        print(f"\nadded {sorted(result)} to {args.add_to} and {args.results_md}")
        return 0
    if args.part:
        rows = [{name: {**row, "run": command} for name, row in res.items()} for res in per_seed]
        raw: dict[str, Any] = {"command": command, "seeds": seeds, "per_seed": rows}
        raw |= {"runtime_seconds": round(runtime, 1), "cpu_seconds": round(cpu_seconds, 1)}
        args.part.parent.mkdir(parents=True, exist_ok=True)
        args.part.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote part {args.part} (combine the parts with --combine)")
        return 0

    report = {
        "protocol": {**describe(inter, k=K), "seeds": seeds, "selection": "valid ndcg@10"},
        "command": command,
        "machine": machine(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seeds": seeds,
        "runtime_seconds": round(runtime, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "systems": result,
        # Which part run produced each row is in systems.<name>.per_seed[].run; rows of a later
        # part that replaced an earlier part's are listed here.
        "replaced_rows": replaced,
        "published": {"source": PUBLISHED_SOURCE, **PUBLISHED},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_section(SECTION, results_section(report), args.results_md)
    print(f"\nwrote {args.out} and {args.results_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
