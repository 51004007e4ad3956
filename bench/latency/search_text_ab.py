"""Search through gRPC on the generated catalogue and on the same catalogue with real words, alternated.

    .venv/bin/python bench/bench_search_latency.py --creators 100000 --posts 1000000 --unique-texts 10000 \\
        --build-only [--text real]                        # once per catalogue
    .venv/bin/python -m bench.latency.search_text_ab [--rounds 4] [--requests 1500] [--callers 4]

The search latency bench's catalogue (100k creators, 1M posts) is generated: its words come from a few
hundred topic words and a small syllable set, so every posting list is long. `--text real` builds the
same catalogue with real-language words (bench.latency.real_text: SciFact titles and sentences, HetRec
artist names). This serves each index in the configuration retrieval serves (one process, Search not
gated, 2 worker threads, int8 query encoding if the models dir promotes it), a fresh server per
measurement, and alternates the two catalogues round by round (order reversed every other round):
only alternated runs compare on a machine whose speed drifts. Each catalogue is queried with its own
queries, made the same way (creator names, a third with a typo; word pairs from post titles).
Writes bench/results/search_text_ab.json and the "Search — generated and real words, alternated"
section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.latency.search_gate_ab import KEYS, WARMUP_CALLS, medians, rounds_order

ROOT = Path(__file__).resolve().parents[2]


def render(result: Mapping[str, Any]) -> str:
    runs, med = result["runs"], result["median"]
    lines = [
        "## Search — generated and real words, alternated",
        "",
        f"`{result['command']}` — {result['date']}, {result['machine'].get('cpu_model', '')} × "
        f"{result['machine'].get('nproc', '')}, load average {result['load_average']} at the end.",
        "",
        f"{result['scale']}; generated words (`{result['works']['generated']}`) against the same catalogue "
        f"with real ones (`{result['works']['real']}`: SciFact titles and abstract sentences, HetRec "
        "artist names; bench/latency/real_text.py). One process as retrieval serves it (Search not gated, "
        f"2 worker threads), {result['query_encoder']} query encoding, {result['callers']} callers "
        f"(closed loop, each its own channel), {result['requests']} calls per measurement after "
        f"{WARMUP_CALLS} warm-up calls, a fresh server each time; {result['rounds']} rounds, the order "
        "reversed every other round. Each cell: the median, then every round in order.",
        "",
        "| catalogue | p50 ms | p99 ms | calls/s | server CPU ms/call |",
        "|---|---|---|---|---|",
    ]
    for name in runs:
        cells = " | ".join(
            f"**{med[name][k]:.1f}** ({' / '.join(f'{float(r[k]):.1f}' for r in runs[name])})" for k in KEYS
        )
        lines.append(f"| {name} | {cells} |")
    goal = result["goal_p99_ms"]
    verdicts = ", ".join(
        f"{name} {'met' if med[name]['p99_ms'] <= goal else 'not met'} ({med[name]['p99_ms']:.1f} ms)"
        for name in runs
    )
    lines += [
        "",
        f"Goal p99 ≤ {goal:.0f} ms at {result['callers']} callers, median of the rounds: {verdicts}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--creators", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--unique-texts", type=int, default=10_000)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "var" / "search" / "models")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.requests < 1 or args.callers < 1:
        parser.error("--rounds, --requests and --callers must be at least 1")

    from bench.bench_search_latency import GOAL_P99_MS_AT_4, TEXTS, work_dir
    from bench.latency.machine import describe, load_average
    from bench.latency.search_gate_ab import measure_served, query_models_dir
    from bench.results_md import write_results

    works = {text: work_dir(args.creators, args.posts, args.unique_texts, text) for text in TEXTS}
    for text, work in works.items():
        if not (work / "index").is_dir() or not (work / "queries.json").is_file():
            flag = "" if text == "generated" else f" --text {text}"
            print(
                f"no index under {work}: run bench/bench_search_latency.py --creators {args.creators} "
                f"--posts {args.posts} --unique-texts {args.unique_texts} --build-only{flag} first",
                file=sys.stderr,
            )
            return 2
    queries = {text: json.loads((work / "queries.json").read_text()) for text, work in works.items()}
    query_models = query_models_dir(args.models_dir)
    runs: dict[str, list[dict[str, Any]]] = {text: [] for text in TEXTS}
    for r, order in enumerate(rounds_order(list(TEXTS), args.rounds)):
        for text in order:
            measured = measure_served(
                works[text], args.models_dir, queries[text], query_models, args.callers, args.requests
            )
            runs[text].append(measured)
            print(f"[search-text-ab] round {r + 1}/{args.rounds} {text}: {measured}", flush=True)
    med = medians(runs)
    command = "python -m bench.latency.search_text_ab " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {
        "benchmark": "search_text_ab",
        "command": command.strip(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": describe(),
        "load_average": load_average(),
        "scale": f"{args.creators:,} creators, {args.posts:,} posts, {args.unique_texts:,} real encodings",
        "works": {text: work.name for text, work in works.items()},
        "query_encoder": "int8" if query_models is not None else "fp32",
        "callers": args.callers,
        "requests": args.requests,
        "rounds": args.rounds,
        "goal_p99_ms": GOAL_P99_MS_AT_4,
        "runs": runs,
        "median": med,
    }
    for text, values in med.items():
        print(f"[search-text-ab] median {text}: {values}")
    print(render(result))
    if not args.no_write:
        out = write_results("search_text_ab", result, render(result))
        print(f"wrote {out} and the RESULTS.md section")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
