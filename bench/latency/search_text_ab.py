"""Search through gRPC on the generated catalogue and on the same catalogue with real words, alternated.

    .venv/bin/python bench/bench_search_latency.py --creators 100000 --posts 1000000 --unique-texts 10000 \\
        --build-only [--text real]                        # once per catalogue
    .venv/bin/python -m bench.latency.search_text_ab [--rounds 4] [--requests 1500] [--callers 4] \\
        [--replicas 2] [--bm25-common-shares none 0.1]

The search latency bench's catalogue (100k creators, 1M posts) is generated: its words come from a few
hundred topic words and a small syllable set, so every posting list is long. `--text real` builds the
same catalogue with real-language words (bench.latency.real_text: SciFact titles and sentences, HetRec
artist names). This serves each index as retrieval serves it (int8 query encoding if the models dir
promotes it), fresh servers per measurement, in two deployments:

- one process (Search not gated, 2 worker threads), each caller its own channel;
- `--replicas` search replicas (default 2; 0 skips them) over copies of the index, a write log in the
  local Redis, the callers sharing one least-request client (how a platform service holds its channel;
  bench_search_latency's replicated rows), after a warm-up of the same size through that client;

and, with `--bm25-common-shares`, each as served with BM25 candidates looked up by every query term
(`none`) and without the terms in more than that share of the documents (SearchParams.
bm25_common_share, kindred.text.common_terms; the indexes must have been built since the term stats
were kept). It alternates every (catalogue, deployment, share) round by round (order reversed every
other round): only alternated runs compare on a machine whose speed drifts. Each catalogue is queried
with its own queries, made the same way (creator names, a third with a typo; word pairs from post titles).
Writes bench/results/search_text_ab.json and the "Search — generated and real words, alternated"
section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.latency.search_gate_ab import WARMUP_CALLS, median_rows, medians, rounds_order

ROOT = Path(__file__).resolve().parents[2]
ONE_PROCESS = "one process"


def replicas_name(n: int) -> str:
    return f"{n} replicas"


def run_key(text: str, deployment: str, share: float | None = None) -> str:
    return f"{text}, {deployment}" + ("" if share is None else f", common terms over {share:.0%} cut")


def parse_share(value: str) -> float | None:
    """`none`, or a share of the documents in (0, 1)."""
    if value.lower() == "none":
        return None
    share = float(value)
    if not 0.0 < share < 1.0:
        raise argparse.ArgumentTypeError(f"a share of the documents is in (0, 1), not {value}")
    return share


def search_params(share: float | None) -> dict[str, Any] | None:
    return None if share is None else {"bm25_common_share": share}


def measure_replicated(
    work: Path,
    models_dir: Path,
    queries: Sequence[str],
    replicas: int,
    callers: int,
    requests: int,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fresh search replicas on `work`'s index (served with `params`, SearchParams fields); WARMUP_CALLS
    calls, then `requests` measured calls at `callers` callers through one shared least-request client."""
    from bench.bench_search_latency import load_level, replicas_serving

    with replicas_serving(work, work / "index", models_dir, replicas, params) as (target, pids, _startup_s):
        load_level(target, queries, callers, WARMUP_CALLS, pids, shared_channel=True)
        return load_level(target, queries, callers, requests, pids, shared_channel=True)


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
        f"2 worker threads; each caller its own channel) and {result['replicas']} search replicas (one "
        f"least-request client shared by the callers; 0: not measured), {result['query_encoder']} query "
        f"encoding, {result['callers']} callers (closed loop), {result['requests']} calls per measurement "
        f"after {WARMUP_CALLS} warm-up calls, fresh servers each time; {result['rounds']} rounds, the order "
        "reversed every other round. Each cell: the median, then every round in order.",
        *(
            [
                "",
                'A row ending "common terms over N% cut" is served with SearchParams.bm25_common_share: BM25 '
                "candidates found without the terms in more than that share of the documents, then scored "
                "with every term (kindred.text.common_terms).",
            ]
            if any(s is not None for s in result.get("bm25_common_shares", [None]))
            else []
        ),
        "",
        "| catalogue, deployment | p50 ms | p99 ms | calls/s | server CPU ms/call |",
        "|---|---|---|---|---|",
    ]
    lines += median_rows(runs, med)
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
    parser.add_argument("--replicas", type=int, default=2, help="search replicas measured too (0: skip)")
    parser.add_argument(
        "--bm25-common-shares",
        type=parse_share,
        nargs="+",
        default=[None],
        help="serve each with these SearchParams.bm25_common_share values (none: every term; e.g. none 0.1)",
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.requests < 1 or args.callers < 1:
        parser.error("--rounds, --requests and --callers must be at least 1")
    if args.replicas < 0 or args.replicas == 1:
        parser.error("--replicas must be 0 (skip) or at least 2")

    from bench.bench_search_latency import GOAL_P99_MS_AT_4, TEXTS, work_dir
    from bench.latency.machine import load_average
    from bench.latency.search_gate_ab import measure_served, query_models_dir
    from bench.results_md import run_header, write_results

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

    def measure(text: str, deployment: str, share: float | None) -> dict[str, Any]:
        params = search_params(share)
        if deployment == ONE_PROCESS:
            flags = ["--search-params", json.dumps(params)] if params else []
            return measure_served(
                works[text],
                args.models_dir,
                queries[text],
                query_models,
                args.callers,
                args.requests,
                flags=flags,
            )
        return measure_replicated(
            works[text], args.models_dir, queries[text], args.replicas, args.callers, args.requests, params
        )

    deployments = [ONE_PROCESS] + ([replicas_name(args.replicas)] if args.replicas > 0 else [])
    shares = list(dict.fromkeys(args.bm25_common_shares))
    cells = [(text, d, share) for d in deployments for text in TEXTS for share in shares]
    runs: dict[str, list[dict[str, Any]]] = {run_key(*cell): [] for cell in cells}
    for r, order in enumerate(rounds_order(cells, args.rounds)):
        for cell in order:
            measured = measure(*cell)
            runs[run_key(*cell)].append(measured)
            print(f"[search-text-ab] round {r + 1}/{args.rounds} {run_key(*cell)}: {measured}", flush=True)
    med = medians(runs)
    result = {
        **run_header("search_text_ab", "python -m bench.latency.search_text_ab", argv),
        "load_average": load_average(),
        "scale": f"{args.creators:,} creators, {args.posts:,} posts, {args.unique_texts:,} real encodings",
        "works": {text: work.name for text, work in works.items()},
        "query_encoder": "int8" if query_models is not None else "fp32",
        "callers": args.callers,
        "requests": args.requests,
        "rounds": args.rounds,
        "replicas": args.replicas,
        "bm25_common_shares": shares,
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
