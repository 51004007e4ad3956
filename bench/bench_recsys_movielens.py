"""ml-latest-small, temporal split: the time-respecting check of Kindred's pipeline beside its peers.

    .venv/bin/python bench/bench_recsys_movielens.py --seeds 0 1 2     # full run, writes results
    .venv/bin/python bench/bench_recsys_movielens.py --quick --seeds 0  # smoke run, writes nothing

Split in bench/recsys/temporal.py (per user: the last 20% of the user's time range is test, the
10% before it valid, the rest train). The split is deterministic; the seeds vary the models'
randomness (ALS init, LightGBM bagging). Systems: popularity, item-kNN, implicit ALS, EASE (whose
choice Kindred's co-engagement source reuses) and Kindred's pipeline (bench/recsys/kindred_pipeline.py,
no social source: MovieLens has no friend graph; the ranker's labels are the *latest* ratings of
each user's train period). Same harness, metrics and tuning rule as the Last.fm benchmark. Writes
bench/results/recsys_movielens.json and this benchmark's section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (make bench): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see bench_recsys_lastfm.py

from threadpoolctl import threadpool_limits

from bench.bench_recsys_lastfm import K, SystemRun, aggregate, machine, render_table, run_systems
from bench.recsys.kindred_pipeline import PipelineConfig, SourceParams, tune_kindred
from bench.recsys.peers import Grids, tune_als, tune_itemknn, tune_popularity
from bench.recsys.protocol import repo_root
from bench.recsys.strong import StrongGrids, tune_ease
from bench.recsys.temporal import (
    DATASET_DIRNAME,
    TEST_SHARE,
    VALID_SHARE,
    default_data_dir,
    latest_slice,
    load_ratings,
    split_by_time,
)
from bench.results_md import write_section

SECTION = "recsys_movielens"
# Heavy raters make MovieLens' item co-occurrence dense (train: 19.6M item pairs vs 1.8M for Last.fm),
# and every item-kNN grid point re-sorts it: a 2 x 2 grid keeps the run practical on 2 shared cores.
ML_GRIDS = Grids(knn_neighbours=(100, 400), knn_shrink=(10.0, 50.0))


def systems(
    grids: Grids, strong: StrongGrids, pipeline: PipelineConfig, times: Any, threads: int
) -> dict[str, SystemRun]:
    labels = latest_slice(times)
    return {
        "popularity": lambda split, done: tune_popularity(split),
        "itemknn": lambda split, done: tune_itemknn(split, grids),
        "implicit_als": lambda split, done: tune_als(split, grids, split.seed, threads),
        "ease": lambda split, done: tune_ease(split, strong),
        "kindred": lambda split, done: (
            tune_kindred(
                split,
                None,
                SourceParams.from_tuned(done),
                replace(pipeline, seed=split.seed, threads=threads),
                label_split=labels,
            ).tuned
        ),
    }


def results_section(report: dict[str, Any]) -> str:
    m, p = report["machine"], report["protocol"]
    kindred = report["systems"]["kindred"]
    pool = ", ".join(f"{part} {value:.3f}" for part, value in kindred["pool_recall"].items())
    lines = [
        "## MovieLens ml-latest-small: temporal split (@10)",
        "",
        f"- Command: `{report['command']}`",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM; Python {m['python']}, "
        f"implicit {m['implicit']}, lightgbm {m['lightgbm']}, onnxruntime {m['onnxruntime']}",
        f"- Date: {report['date']}; seeds {report['seeds']} (model randomness; the split is fixed); "
        f"wall time {report['runtime_seconds']:.0f} s, load average at the end {m['load_average_at_end']}",
        f"- Protocol: {p['ratings']:,} ratings of {p['users']} users on {p['items']:,} movies as implicit "
        "positives; per user, the last 20% of the user's own time range is test and the 10% before it "
        "valid (tuning); the rest is train. Full ranking, train (valid) and train+valid (test) masked; "
        f"models fit on train only; {p['eval_users_test']} users have test items.",
        f"- kindred: ALS / EASE / item-kNN / popular candidates ({kindred['pool_size']:.0f} per user; "
        f"pool recall {pool}), LightGBM lambdarank trained on each user's latest train ratings, "
        "scored by the ONNX ranker loaded through kindred.models.",
        "",
        *render_table(report["systems"], published={}),
        "",
        "No published rows: GroupLens calls ml-latest-small a development set. Chosen hyper-parameters "
        "per seed are in `bench/results/recsys_movielens.json`.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="one point per grid; prints, writes nothing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--data-dir", type=Path, default=None, help="default: <repo>/../shared/data/" + DATASET_DIRNAME
    )
    p.add_argument("--out", type=Path, default=repo_root() / "bench" / "results" / "recsys_movielens.json")
    p.add_argument("--results-md", type=Path, default=repo_root() / "bench" / "RESULTS.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    if not (data_dir / "ratings.csv").exists():
        print(f"ml-latest-small not found at {data_dir}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    ratings = load_ratings(data_dir)
    grids, strong = (Grids.quick(), StrongGrids.quick()) if args.quick else (ML_GRIDS, StrongGrids())
    pipeline = PipelineConfig.quick() if args.quick else PipelineConfig()
    per_seed = []
    import implicit.cpu.als  # noqa: F401  (load scipy's OpenBLAS before limiting it)

    with threadpool_limits(limits=1, user_api="blas"):
        for seed in args.seeds:
            split, times = split_by_time(ratings, seed)
            print(f"seed {seed}", flush=True)
            per_seed.append(run_systems(split, systems(grids, strong, pipeline, times, args.threads)))
    result = aggregate(per_seed, args.seeds)
    runtime = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)

    print(f"\nml-latest-small temporal, {len(args.seeds)} seed(s), mean ± std, {runtime:.0f} s")
    print("\n".join(render_table(result, published={})))
    if args.quick:
        print("\nquick run: grids reduced, nothing written")
        return 0

    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(repo_root()) if script.is_relative_to(repo_root()) else script
    report = {
        "protocol": {
            "dataset": DATASET_DIRNAME,
            "ratings": len(ratings.users),
            "users": ratings.n_users,
            "items": ratings.n_items,
            "feedback": "implicit: every rating is a positive, whatever its stars",
            "split": f"per user by time: last {TEST_SHARE:.0%} of the user's time range test, the "
            f"{VALID_SHARE:.0%} before it valid, the rest train (ties at a cut go to the earlier part)",
            "ranking": "full ranking over all items; valid masks train, test masks train+valid",
            "eval_users_test": len(split.eval_users("test")),
            "eval_users_valid": len(split.eval_users("valid")),
            "training_data": "models fit on train only; hyper-parameters chosen on valid NDCG@10",
            "seeds": args.seeds,
            "k": K,
        },
        "command": " ".join(["python", str(shown), *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seeds": args.seeds,
        "runtime_seconds": round(runtime, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "systems": result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_section(SECTION, results_section(report), args.results_md)
    print(f"\nwrote {args.out} and {args.results_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
