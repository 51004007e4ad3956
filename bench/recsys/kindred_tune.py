"""Design experiments for Kindred's pipeline on one seed's *valid* split (test is never scored here).

    nice -n 10 .venv/bin/python -m bench.recsys.kindred_tune --seed 0 \\
        --sources var/recsys/lastfm_seed0.json --set per_source=300 use_blend=true --log var/recsys/tune.jsonl

The retrieval sources take the hyper-parameters the peers chose on the same seed's valid split, read
from a harness part (bench/bench_recsys_lastfm.py --part), so the peers are not re-tuned. `--set`
overrides PipelineConfig fields; each run appends its valid NDCG@10, pool recall, size and time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from bench.recsys.kindred_pipeline import PipelineConfig, SourceParams, tune_kindred
from bench.recsys.protocol import (
    default_data_dir,
    load_friends,
    load_interactions,
    split_per_user,
)


def source_params(part: Path, seed: int) -> SourceParams:
    """The peers' chosen hyper-parameters for `seed` from a harness part file."""
    raw = json.loads(part.read_text(encoding="utf-8"))
    rows = dict(zip(raw["seeds"], raw["per_seed"], strict=True))[seed]
    blend = rows["als_ease_social"]["params"] if "als_ease_social" in rows else None
    return SourceParams(
        rows["implicit_als"]["params"], rows["ease"]["params"], rows["itemknn"]["params"], blend
    )


def parse_value(field: dataclasses.Field[Any], text: str) -> Any:
    default: Any = field.default
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(default, tuple):
        return tuple(int(v) for v in text.split(","))
    if isinstance(default, str):
        return text
    return int(text) if isinstance(default, int) else float(text)


def config(overrides: list[str], base: PipelineConfig) -> PipelineConfig:
    fields = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    changes: dict[str, Any] = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown PipelineConfig field {key!r}")
        changes[key] = parse_value(fields[key], value)
    return dataclasses.replace(base, **changes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sources", type=Path, required=True, help="harness part holding the peers' params")
    p.add_argument("--set", nargs="*", default=[], help="PipelineConfig overrides, field=value")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log", type=Path, default=None, help="append the result here as one JSON line")
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_limits

    data_dir = default_data_dir()
    inter = load_interactions(data_dir)
    friends = load_friends(data_dir, inter)
    split = split_per_user(inter, args.seed)
    cfg = config(args.set, PipelineConfig(seed=args.seed, threads=args.threads))
    start = time.perf_counter()
    import implicit.cpu.als  # noqa: F401  (loads scipy's OpenBLAS before the limit)

    with threadpool_limits(limits=1, user_api="blas"):
        run = tune_kindred(split, friends, source_params(args.sources, args.seed), cfg)
    out = {
        "seed": args.seed,
        "set": args.set,
        "valid_ndcg@10": round(run.tuned.valid["ndcg@10"], 5),
        "pool_recall_valid": run.pool_recall["valid"],
        "pool_recall_labels": run.pool_recall["ranker_labels"],
        "pool_size": run.pool_size,
        "trees": run.tuned.params["trees"],
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(out), flush=True)
    if args.log:
        with args.log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
