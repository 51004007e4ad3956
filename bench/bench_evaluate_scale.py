"""trainer.evaluate at catalogue scale: wall time and peak resident memory of the hold-out evaluation.

    .venv/bin/python bench/bench_evaluate_scale.py [--old-src DIR] [--quick]

Each configuration runs in its own process (peak RSS = `ru_maxrss` of that process, so runs never mix):
a synthetic hold-out (random 16-d user and creator vectors, 3 discoveries and 20 known creators per fan,
Pareto popularity) over 100k creators, evaluated with K = (10, 50) —

    topk          the current evaluation (top-K per fan, fans in chunks of 512), no ranker, 20k fans
    topk+ranker   the same with the ranker row (two-source candidate draw, a linear scorer on the
                  shared ranker features), 2k fans
    full          the evaluation before this change (full-catalogue score matrix and lists per fan),
                  from `--old-src` (a `git archive` of the earlier commit), at 50 and 100 fans — it
                  does not fit at 20k (22 GB measured there before)

Writes bench/results/evaluate_scale.json and its section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CREATORS = 100_000
DIM = 16


def one(kind: str, creators: int, fans: int, old_src: str) -> dict[str, Any]:
    """Runs one configuration in this process and returns its measurements."""
    from kindred.features import CREATOR_TOWER_FEATURES, RANKER_FEATURES
    from trainer.datasets import Snapshot

    if kind == "full":
        spec = importlib.util.spec_from_file_location(
            "old_evaluate", Path(old_src) / "trainer" / "evaluate.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        evaluate = module.evaluate_holdout
    else:
        from trainer.evaluate import evaluate_holdout as evaluate
    rng = np.random.default_rng(0)
    users = rng.normal(size=(fans, DIM)).astype(np.float32)
    items = rng.normal(size=(creators, DIM)).astype(np.float32)
    snap = Snapshot(
        cut=0.0,
        window_end=1.0,
        fan_ids=[f"f{i}" for i in range(fans)],
        fan_rows={},
        creator_rows={},
        user_x=np.zeros((fans, 0), np.float32),
        creator_x=np.zeros((creators, len(CREATOR_TOWER_FEATURES)), np.float32),
        labels=[{int(c) for c in rng.integers(0, creators, 3)} for _ in range(fans)],
        positives=[set() for _ in range(fans)],
        seen=[{int(c) for c in rng.integers(0, creators, 20)} for _ in range(fans)],
        popularity=rng.pareto(1.5, creators),
    )
    w = rng.normal(size=len(RANKER_FEATURES)).astype(np.float32)
    ranker = (lambda x: x @ w) if kind == "topk+ranker" else None
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    metrics = evaluate(
        snap,
        users,
        items,
        [f"c{i}" for i in range(creators)],
        ks=(10, 50),
        n_two_tower=70,
        n_popular=30,
        ranker_score=ranker,
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "kind": kind,
        "creators": creators,
        "fans": fans,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak, 1),
        "rss_before_eval_mb": round(base_rss, 1),
        "ndcg@10_two_tower": round(metrics["two_tower"]["ndcg@10"], 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-src", default="/tmp/old_kindred", help="the earlier trainer (git archive)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the fans")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "CREATORS", "FANS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, creators, fans = args.one[0], int(args.one[1]), int(args.one[2])
        print(json.dumps(one(kind, creators, fans, args.old_src)))
        return
    scale = 10 if args.quick else 1
    runs = [("topk", 20_000 // scale), ("topk+ranker", 2_000 // scale)]
    if (Path(args.old_src) / "trainer" / "evaluate.py").is_file():
        runs += [("full", 50 // scale), ("full", 100 // scale)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    results = []
    for kind, fans in runs:
        print(f"[evaluate-scale] {kind}: {CREATORS:,} creators × {fans:,} fans …", flush=True)
        out = subprocess.run(
            [sys.executable, __file__, "--old-src", args.old_src, "--one", kind, str(CREATORS), str(fans)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"    {row['seconds']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
        results.append(row)
    command = "python bench/bench_evaluate_scale.py" + (" --quick" if args.quick else "")
    body = {
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, shared",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "protocol": "synthetic hold-out, 100k creators, K = (10, 50); one process per run, RSS = ru_maxrss",
        "runs": results,
    }
    out_path = ROOT / "bench" / "results" / "evaluate_scale.json"
    out_path.write_text(json.dumps(body, indent=2) + "\n")
    rows = "\n".join(
        f"| {r['kind']} | {r['creators']:,} | {r['fans']:,} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |"
        for r in results
    )
    from bench.results_md import write_section

    write_section(
        "evaluate_scale",
        f"""## Trainer evaluation at catalogue scale

`{command}` — {body["machine"]}, {body["date"]}. {body["protocol"]}. `topk` is trainer.evaluate now
(top-K per fan, 512 fans per chunk); `full` the evaluation before (full-catalogue scores and lists per
fan), whose memory grows with fans × catalogue.

| evaluation | creators | hold-out fans | seconds | peak RSS (MB) |
|---|---|---|---|---|
{rows}
""",
    )
    print(f"[evaluate-scale] → {out_path}")


if __name__ == "__main__":
    main()
