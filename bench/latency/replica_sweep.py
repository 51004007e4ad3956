"""Recommend latency by the number of co-located ranking replicas (and their server threads) per node.

    .venv/bin/python -m bench.latency.replica_sweep [--data-dir D] [--replicas 1,2,4] [--server-threads 8]
                                                    [--rounds 2] [--requests 1500] [--warmup 200]

How many co-located ranking processes (KINDRED_RETRIEVAL_TARGET=inprocess, KINDRED_COLOCATED_REPLICA)
a 2-core node should run, and with how many gRPC worker threads each (KINDRED_SERVER_THREADS): every
combination is served exactly as bench/bench_recommend_latency.py serves its `colocated_xN`
configuration (one least-request client shared by the caller threads, closed loop at 1, 4 and 16
callers, CPU of every process per request) on the platform that benchmark built (run it first).
Combinations take turns for `--rounds` rounds, the order reversed every other round: the machine's speed
drifts within minutes, so only alternated runs compare.

Writes bench/results/recommend_replicas.json and the "Recommend — replicas per node" section of
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT / "var" / "bench" / "recommend" / "c100000-f5000-d14-s7-bench"
LEVELS = ("1", "4", "16")


def positive_ints(text: str) -> list[int]:
    """ "1,2,4" → [1, 2, 4]; anything but distinct positive integers is refused."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct positive integers, got {text!r}")
    return values


def schedule(replicas: Sequence[int], threads: Sequence[int], rounds: int) -> list[tuple[int, int]]:
    """Every (replicas, threads) combination once per round; odd rounds run them in reverse order."""
    combos = list(itertools.product(replicas, threads))
    return [c for r in range(rounds) for c in (combos if r % 2 == 0 else combos[::-1])]


def summary(levels: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """p50, p99 and the ranking processes' CPU per request at each caller level."""
    return {
        level: {
            "p50_ms": levels[level]["p50_ms"],
            "p99_ms": levels[level]["p99_ms"],
            "ranking_cpu_ms_per_request": levels[level]["cpu_ms_per_request"]["ranking"],
            "client_cpu_ms_per_request": levels[level]["cpu_ms_per_request"]["client"],
            "throughput_rps": levels[level]["throughput_rps"],
        }
        for level in LEVELS
        if level in levels
    }


def render(result: Mapping[str, Any]) -> str:
    """The RESULTS.md section: one row per combination, each round's value side by side."""
    machine = result["machine"]
    lines = [
        "## Recommend — replicas per node",
        "",
        f"`{result['command']}` — {result['date']}, "
        f"{machine.get('cpu_model', '')} × {machine.get('nproc', '')}, "
        f"load average {result['load_average']} at the end. Data: `{result['data_dir']}`.",
        "",
        "Co-located ranking processes behind one least-request client, closed loop, "
        f"{result['requests']} requests per level; each cell lists the rounds in order (combinations "
        "alternated, the order reversed every other round). CPU = every ranking process per request.",
        "",
        "| replicas | server threads | p50 ms, 1 caller | p99 ms, 4 callers | CPU ms/request, 4 callers "
        "| p99 ms, 16 callers | throughput rps, 16 callers |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["combinations"]:
        runs = row["rounds"]

        def cells(level: str, key: str, runs: Sequence[Mapping[str, Any]] = runs) -> str:
            return " / ".join(f"{r[level][key]:.1f}" for r in runs)

        lines.append(
            f"| {row['replicas']} | {row['server_threads']} "
            f"| {cells('1', 'p50_ms')} | {cells('4', 'p99_ms')} "
            f"| {cells('4', 'ranking_cpu_ms_per_request')} | {cells('16', 'p99_ms')} "
            f"| {cells('16', 'throughput_rps')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--replicas", type=positive_ints, default=[1, 2, 4])
    parser.add_argument("--server-threads", type=positive_ints, default=[8])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--sample-fans", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not (args.data_dir / "models").is_dir():
        print(
            f"no trained platform under {args.data_dir}: run bench/bench_recommend_latency.py first",
            file=sys.stderr,
        )
        return 2

    from bench.bench_recommend_latency import Config, measure_replicas
    from bench.latency.ab_inprocess import sample_fans
    from bench.latency.machine import load_average
    from bench.results_md import run_header, write_results

    fans = sample_fans(args.data_dir, args.sample_fans, args.seed)
    runs: dict[tuple[int, int], list[dict[str, Any]]] = {}
    work = Path(tempfile.mkdtemp(prefix="replica-sweep-"))
    for replicas, threads in schedule(args.replicas, args.server_threads, args.rounds):
        config = Config(
            f"x{replicas}-t{threads}",
            f"{replicas} co-located replicas, {threads} server threads each",
            ROOT,
            colocated=True,
            replicas=replicas,
            server_threads=threads,
        )
        measured = summary(measure_replicas(config, args.data_dir, work, fans, args)["levels"])
        runs.setdefault((replicas, threads), []).append(measured)
        print(
            f"{config.label}: "
            + "  ".join(
                f"{lv} callers p50 {m['p50_ms']:.1f} p99 {m['p99_ms']:.1f}" for lv, m in measured.items()
            ),
            flush=True,
        )
    result = {
        **run_header("recommend_replicas", "python -m bench.latency.replica_sweep", argv),
        "load_average": load_average(),
        "data_dir": args.data_dir.name,
        "requests": args.requests,
        "combinations": [
            {"replicas": r, "server_threads": t, "rounds": runs[(r, t)]}
            for r, t in itertools.product(args.replicas, args.server_threads)
        ],
    }
    out = write_results("recommend_replicas", result, render(result))
    print(f"wrote {out} and the RESULTS.md section")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
