"""Search through gRPC with and without the compute gate, and with 8 or 1 worker threads, rounds alternated.

    .venv/bin/python -m bench.latency.search_gate_ab [--work var/bench/search_latency/c100000-p1000000-u10000]
                                                     [--rounds 4] [--requests 1500] [--callers 4]

On the index bench/bench_search_latency.py built (run it first), int8 query encoding if the models dir
promotes it, the benchmark's own server (its child mode) started afresh for every measurement, in four
configurations:

- served: Search not gated, the search replica's 2 worker threads (what retrieval serves since 20:00 UTC
  on 2026-11-27);
- gated: Search behind kindred.compute_gate, one computing at a time, 2 worker threads (served from
  17:00 to 20:00 that day);
- 8 threads: no gate, 8 worker threads (served before the gate);
- 1 thread: one worker thread, so one Search at a time without the gate (and nothing else meanwhile).

Each round measures every configuration (`--requests` closed-loop Search calls at `--callers` callers
after a warm-up of 400), the order reversed every other round: the machine's speed drifts within
minutes, so only alternated runs compare. Writes bench/results/search_gate_ab.json and the
"Search — compute gate, alternated" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WORK = ROOT / "var" / "bench" / "search_latency" / "c100000-p1000000-u10000"
WARMUP_CALLS = 400

# name → (extra env for the server, extra child-mode flags)
CONFIGS: Mapping[str, tuple[Mapping[str, str], Sequence[str]]] = {
    "served": ({}, ()),
    "gated": ({}, ("--gate-search",)),
    "8 threads": ({"KINDRED_COMPUTE_CONCURRENCY": "0", "KINDRED_SERVER_THREADS": "8"}, ()),
    "1 thread": ({"KINDRED_SERVER_THREADS": "1"}, ()),
}
T = TypeVar("T")
KEYS = ("p50_ms", "p99_ms", "throughput_rps", "server_cpu_ms_per_call")


def query_models_dir(models_dir: Path) -> Path | None:
    """`models_dir` when it promotes an int8 query encoder (the server then encodes queries with it)."""
    from kindred.models import CURRENT_FILE
    from kindred.text.encoder import INT8_QUERY_MODEL_NAME

    return models_dir if (models_dir / INT8_QUERY_MODEL_NAME / CURRENT_FILE).is_file() else None


def measure_served(
    work: Path,
    models_dir: Path,
    queries: Sequence[str],
    query_models: Path | None,
    callers: int,
    requests: int,
    env: Mapping[str, str] | None = None,
    flags: Sequence[str] = (),
) -> dict[str, Any]:
    """One fresh benchmark server on `work`'s index: WARMUP_CALLS calls, then `requests` measured calls
    at `callers` callers; the measured level's numbers."""
    from bench.bench_search_latency import load_level, serve_and_load

    # serve_and_load runs the plan's levels (the warm-up), then `after` (the measured level).
    plan = SimpleNamespace(models_dir=models_dir, callers=[callers], requests=WARMUP_CALLS)
    measured: dict[str, Any] = {}

    def measure(port: int, pid: int) -> None:
        measured.update(load_level(port, queries, callers, requests, pid))

    serve_and_load(work, work / "index", plan, queries, query_models, env or {}, flags, after=measure)
    return measured


def rounds_order(names: Sequence[T], rounds: int) -> list[list[T]]:
    """Each round's order: as given, reversed every other round."""
    return [list(names) if r % 2 == 0 else list(reversed(names)) for r in range(rounds)]


def medians(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, float]]:
    return {
        name: {k: round(statistics.median(float(run[k]) for run in levels), 2) for k in KEYS}
        for name, levels in runs.items()
    }


def median_rows(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], med: Mapping[str, Mapping[str, float]]
) -> list[str]:
    """A table row per configuration: each of KEYS as its median in bold, then every round in order."""
    rows = []
    for name in runs:
        cells = " | ".join(
            f"**{med[name][k]:.1f}** ({' / '.join(f'{float(r[k]):.1f}' for r in runs[name])})" for k in KEYS
        )
        rows.append(f"| {name} | {cells} |")
    return rows


def render(result: Mapping[str, Any]) -> str:
    runs, med = result["runs"], result["median"]
    lines = [
        "## Search — compute gate, alternated",
        "",
        f"`{result['command']}` — {result['date']}, {result['machine'].get('cpu_model', '')} × "
        f"{result['machine'].get('nproc', '')}, load average {result['load_average']} at the end.",
        "",
        f"The `{result['work']}` index, {result['query_encoder']} query encoding, "
        f"{result['callers']} callers (closed loop, each its own channel), {result['requests']} calls "
        f"per measurement after {WARMUP_CALLS} warm-up calls, a fresh server each time; "
        f"{result['rounds']} rounds, the order reversed every other round.",
        "Each cell: the median, then every round in order.",
        "",
        "| configuration | p50 ms | p99 ms | calls/s | server CPU ms/call |",
        "|---|---|---|---|---|",
    ]
    lines += median_rows(runs, med)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "var" / "search" / "models")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.requests < 1 or args.callers < 1:
        parser.error("--rounds, --requests and --callers must be at least 1")
    if not (args.work / "index").is_dir() or not (args.work / "queries.json").is_file():
        print(
            f"no index under {args.work}: run bench/bench_search_latency.py at that scale first",
            file=sys.stderr,
        )
        return 2

    from bench.latency.machine import load_average
    from bench.results_md import run_header, write_results

    queries = json.loads((args.work / "queries.json").read_text())
    query_models = query_models_dir(args.models_dir)
    int8 = query_models is not None
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    for r, order in enumerate(rounds_order(list(CONFIGS), args.rounds)):
        for name in order:
            env, flags = CONFIGS[name]
            measured = measure_served(
                args.work, args.models_dir, queries, query_models, args.callers, args.requests, env, flags
            )
            runs[name].append(measured)
            print(f"[search-gate-ab] round {r + 1}/{args.rounds} {name}: {measured}", flush=True)
    med = medians(runs)
    result = {
        **run_header("search_gate_ab", "python -m bench.latency.search_gate_ab", argv),
        "load_average": load_average(),
        "work": args.work.name,
        "query_encoder": "int8" if int8 else "fp32",
        "callers": args.callers,
        "requests": args.requests,
        "rounds": args.rounds,
        "configs": {name: {"env": dict(env), "flags": list(flags)} for name, (env, flags) in CONFIGS.items()},
        "runs": runs,
        "median": med,
    }
    for name, values in med.items():
        print(f"[search-gate-ab] median {name}: {values}")
    if not args.no_write:
        out = write_results("search_gate_ab", result, render(result))
        print(f"wrote {out} and the RESULTS.md section")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
