"""Candidate-pool recall of retrieval quota shares on trained platforms (how the default shares are chosen).

For each platform (a data dir the trainer has trained, with the trainer config it used), on the
trainer's own time hold-out: the tables and the mf model as of the train end, the promoted two-tower
(user tower + exported creator tower, onnxruntime, creator features as of the hold-out start), then
`trainer.candidates.candidate_pool_recall` — retrieval_svc's own source logic and quota merge — for
every variant of shares, at 50 and 100 candidates, and each source alone. Only the train window is
read to build the pool and only the hold-out to score it; for the HetRec services platform that
hold-out lies inside the benchmark's *train* pairs (its valid and test never reach the platform).

    python bench/bench_quota_shares.py DATA_DIR[=TRAINER_CONFIG] ... [--variants F.json]

Writes bench/results/quota_shares.json and the "Candidate quota shares" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.latency import machine
from bench.results_md import write_section
from kindred.features import build_popular_lists
from kindred.models import current_version
from retrieval_svc.retriever import DEFAULT_QUOTA_SHARES
from trainer.candidates import Holdout, build_candidate_tables, candidate_pool_recall, candidates_config
from trainer.config import load_config
from trainer.datasets import load_platform_holdout
from trainer.promotion import RegistryModels

RESULTS_JSON = Path(__file__).resolve().parent / "results" / "quota_shares.json"
KS = (50, 100)
# The shares compared by default: the five sources before mf, mf beside the two-tower at equal shares,
# the served default, and mf at half the pool.
VARIANTS: Mapping[str, Mapping[str, float]] = {
    "five sources (no mf)": {
        "two_tower": 0.55,
        "item_to_item": 0.2,
        "social": 0.1,
        "trending": 0.1,
        "popular": 0.05,
    },
    "mf 0.30, two-tower 0.30": {
        "two_tower": 0.3,
        "mf": 0.3,
        "item_to_item": 0.2,
        "social": 0.08,
        "trending": 0.07,
        "popular": 0.05,
    },
    "default": dict(DEFAULT_QUOTA_SHARES),
    "mf 0.50, two-tower 0.20": {
        "two_tower": 0.2,
        "mf": 0.5,
        "item_to_item": 0.15,
        "social": 0.05,
        "trending": 0.05,
        "popular": 0.05,
    },
}


def platform_recall(
    data_dir: Path, trainer_config: str, variants: Mapping[str, Mapping[str, float]]
) -> dict[str, Any]:
    cfg = load_config(trainer_config)
    platform = load_platform_holdout(data_dir, cfg.split.test_fraction, cfg.split.label_types)
    version = current_version(data_dir / "models", "two_tower_user")
    if version is None:
        raise SystemExit(f"{data_dir}: no promoted two-tower (train the platform first)")
    models = RegistryModels(data_dir / "models", version, version)
    test, creator_ids = platform.test, platform.creator_ids
    # The same hold-out view the trainer measures its pool on (trainer.candidates.publish_candidates).
    holdout = Holdout.from_snapshot(
        test,
        models.user_vectors(test.user_x),
        models.creator_vectors(creator_ids, test.creator_x),
        creator_ids,
    )
    tables = build_candidate_tables(
        platform.events, platform.catalogue, as_of=holdout.as_of, cfg=candidates_config(cfg)
    )
    popular = build_popular_lists(test.creator_rows, k=cfg.popular_k)
    args = (holdout.fan_ids, holdout.labels, holdout.fan_rows, holdout.two_tower_scores, creator_ids)
    out: dict[str, Any] = {
        "fans": len(holdout.fan_ids),
        "creators": len(creator_ids),
        "version": version,
        "shares": {},
    }
    for name, shares in variants.items():
        started = time.perf_counter()
        recall = candidate_pool_recall(*args, tables, popular, ks=KS, shares=shares)
        out["shares"][name] = {
            "shares": dict(shares),
            **{f"recall@{k}": round(recall[f"recall@{k}"], 4) for k in KS},
        }
        alone = out.setdefault("source_alone", {})  # each source's own list: the same in every variant
        for key, value in recall.items():
            if not key.startswith("recall@"):
                alone.setdefault(key, round(value, 4))
        print(f"  {name}: {out['shares'][name]}  ({time.perf_counter() - started:.0f} s)", flush=True)
    return out


def section(report: Mapping[str, Any]) -> str:
    names = list(next(iter(report["platforms"].values()))["shares"])
    lines = [
        "## Candidate quota shares",
        "",
        f"`{report['command']}` — {report['date']}, {report['machine'].get('cpu_model', '?')}.",
        "",
        "Hold-out recall of the merged candidate pool (the trainer's time hold-out of each platform; pool "
        "built as of the train end by retrieval_svc's source logic and quota merge) at 50 / 100 candidates.",
        "",
        "| shares | " + " | ".join(report["platforms"]) + " |",
        "|---|" + "---|" * len(report["platforms"]),
    ]
    for name in names:
        cells = [
            f"{p['shares'][name]['recall@50']:.4f} / {p['shares'][name]['recall@100']:.4f}"
            for p in report["platforms"].values()
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Each source alone (its own top k, recall@50 / @100):", ""]
    sources = sorted({k.split("@")[0] for p in report["platforms"].values() for k in p["source_alone"]})
    lines.append("| source | " + " | ".join(report["platforms"]) + " |")
    lines.append("|---|" + "---|" * len(report["platforms"]))
    for source in sources:
        alone = [p["source_alone"] for p in report["platforms"].values()]
        cells = [f"{a.get(f'{source}@50', 0):.4f} / {a.get(f'{source}@100', 0):.4f}" for a in alone]
        lines.append(f"| {source} | " + " | ".join(cells) + " |")
    lines += ["", "Shares: " + "; ".join(f"{n} {dict(v)}" for n, v in report["variants"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("platforms", nargs="+", help="DATA_DIR or DATA_DIR=TRAINER_CONFIG (default: default)")
    parser.add_argument("--variants", type=Path, help="JSON {name: {source: share}} instead of the defaults")
    args = parser.parse_args(argv)
    variants = json.loads(args.variants.read_text()) if args.variants else VARIANTS
    started = time.perf_counter()
    platforms: dict[str, Any] = {}
    for spec in args.platforms:
        path, _, config = spec.partition("=")
        print(f"{path} (trainer config {config or 'default'})", flush=True)
        platforms[path] = platform_recall(Path(path), config or "default", variants)
    report = {
        "command": "python bench/bench_quota_shares.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine.describe(),
        "runtime_s": round(time.perf_counter() - started, 1),
        "variants": {k: dict(v) for k, v in variants.items()},
        "platforms": platforms,
    }
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_section("quota_shares", section(report))
    print(f"wrote {RESULTS_JSON} and the RESULTS.md section")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
