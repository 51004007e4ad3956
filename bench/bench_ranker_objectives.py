"""The multi-objective ranker against the model it replaces, on one hold-out, from the promotion gate.

    .venv/bin/python -m trainer train --data-dir D            # the earlier model promoted first (CURRENT)
    .venv/bin/python bench/bench_ranker_objectives.py D[:VERSION] [D2[:VERSION] ...]

The promotion gate (trainer.promotion) re-scores the CURRENT model set on the new run's hold-out with
the new run's evaluation code — the five-source serving pool for the ranker row — and writes both metric
sets to models/ranker/<version>/promotion.json. This script reads that record (the latest ranker version
by default) and the new ranker's manifest (heads, chosen weights, the validation scores behind them),
and writes bench/results/ranker_objectives.json and its bench/RESULTS.md section. It measures nothing
itself: every number is the gate's.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one_run(data_dir: Path, version: str | None) -> dict[str, Any]:
    """The gate's record of `version` (default: the latest ranker) under `data_dir`, flattened."""
    from kindred.models import list_versions, read_manifest

    models = data_dir / "models"
    version = version or list_versions(models, "ranker")[-1]
    record: dict[str, Any] = json.loads((models / "ranker" / version / "promotion.json").read_text())
    manifest = read_manifest(models, "ranker", version)
    cur, new = record["current"], record["new"]
    if not cur.get("metrics"):
        raise SystemExit(f"{data_dir} {version} was not compared with a current model: {record['reason']}")
    rows = []
    for model in ("popularity", "two_tower", "two_tower+ranker"):
        for label, metrics in (("current", cur["metrics"]), ("new", new["metrics"])):
            m = metrics[model]
            rows.append({"model": model, "set": label, **{k: round(m[k], 4) for k in METRICS}})
    return {
        "data_dir": str(data_dir),
        "seed": manifest.get("config", {}).get("seed"),
        "holdout": record["holdout"],
        "current": {"versions": cur["versions"], "ranker_objectives": cur.get("ranker_objectives")},
        "new": {
            "version": version,
            "objectives": manifest.get("objectives"),
            "objective_weights": manifest.get("objective_weights"),
            "objective_weight_selection": manifest.get("objective_weight_selection"),
            "candidate_pool": manifest.get("candidate_pool"),
        },
        "rows": rows,
        "decision": record["decision"],
        "reason": record["reason"],
    }


METRICS = ("ndcg@10", "recall@10", "recall@50", "ndcg@50")


def main() -> None:
    from bench.results_md import write_section

    specs = sys.argv[1:] or ["var/data"]
    runs = []
    for spec in specs:
        path, _, version = spec.partition(":")
        runs.append(one_run(Path(path).resolve(), version or None))
    command = "python bench/bench_ranker_objectives.py " + " ".join(specs)
    body = {
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, shared",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "runs": runs,
    }
    out = ROOT / "bench" / "results" / "ranker_objectives.json"
    out.write_text(json.dumps(body, indent=2) + "\n")
    table = "\n".join(
        f"| {run['seed']} | {r['model']} | {r['set']} | "
        + " | ".join(f"{r[k]:.4f}" for k in METRICS)
        + f" | {run['decision'] if r['set'] == 'new' and r['model'] == 'two_tower+ranker' else ''} |"
        for run in runs
        for r in run["rows"]
        if r["model"] != "popularity" or r["set"] == "new"
    )
    h = runs[0]["holdout"]
    weights = "; ".join(
        f"seed {run['seed']}: "
        + ", ".join(f"{k} {v:g}" for k, v in (run["new"]["objective_weights"] or {}).items())
        for run in runs
    )
    write_section(
        "ranker_objectives",
        f"""## Multi-objective ranker vs the single-score ranker (demo hold-out)

`{command}` — {body["machine"]}, {body["date"]}. Numbers from each run's promotion-gate record: the
current set (the earlier trainer: a single-score ranker trained on two-tower + popular candidates) and
the new one (heads follow, support, engage, trained on the five-source serving pool) trained with the
same seed on the same demo data (2,000 fans × 300 creators × 30 days) and scored on one hold-out
({int(h.get("fans", 0))} fans, {int(h.get("discoveries", 0))} discoveries), the ranker row re-ordering
the five-source pool of 100. Default weights chosen on the validation lists — {weights}.

| seed | ranking | model set | NDCG@10 | Recall@10 | Recall@50 | NDCG@50 | gate |
|---|---|---|---|---|---|---|---|
{table}
""",
    )
    print(f"→ {out}")


if __name__ == "__main__":
    main()
