"""Where one Search call's CPU goes, in-process, on an index bench_search_latency built.

    .venv/bin/python -m bench.latency.search_profile [--work var/bench/search_latency/c100000-p1000000-u10000]
                                                     [--queries 300] [--models-dir var/search/models]
                                                     [--search-threads 1] [--compare-threads 8 --rounds 2]

The production HybridSearcher (int8 query encoder if `text_encoder_int8` is promoted in the models dir,
as retrieval serves), the benchmark's own queries, after a warm-up pass; CPU time (process_time) per
call of each stage of `HybridSearcher.search` as the service runs them — encode, the engine's hybrid
query (prefetches + RRF, payload of the top k), the rescoring batch that gives each result its
per-retriever scores, building the hits — and, separately, each retriever's prefetch run alone as an
engine query (limit = the service's depth, no payload). Prints a table; writes nothing.

`--compare-threads M`: the same profile with the shard opened on a search pool of `--search-threads`
and of M threads (KINDRED_ENGINE_SEARCH_THREADS; 8 is what qdrant-edge starts here when given no size),
alternating `--rounds` times (the machine's speed drifts: only alternated runs compare); writes
bench/results/search_profile.json and the "Search — CPU per call by stage" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ROOT = Path(__file__).resolve().parents[2]


def cpu_ms(fn: Callable[[], Any], n: int) -> float:
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) / n * 1e3


def profile(work: Path, models_dir: Path, n: int, search_threads: int = 1) -> dict[str, float]:
    import qdrant_edge as qe

    from kindred.models import CURRENT_FILE
    from kindred.text.encoder import INT8_QUERY_MODEL_NAME, TextEncoder, load_quantized_query_encoder
    from retrieval_svc.search.index import SearchFilter, SearchIndex, dense_search_params
    from retrieval_svc.search.service import SearchService

    encoder = TextEncoder.from_registry(models_dir, intra_op_num_threads=1)
    int8 = (models_dir / INT8_QUERY_MODEL_NAME / CURRENT_FILE).is_file()
    query_encoder = load_quantized_query_encoder(models_dir, encoder) if int8 else None
    service = SearchService(
        SearchIndex.open(work / "index", search_threads=search_threads), encoder, query_encoder=query_encoder
    )
    searcher, flt = service.searcher, SearchFilter()
    queries: Sequence[str] = json.loads((work / "queries.json").read_text())[:n]
    try:
        for q in queries:  # warm-up: page cache, engine caches, onnxruntime
            service.search(q, 10, flt)
        stages = {"encode": 0.0, "hybrid engine query": 0.0, "rescoring of the results": 0.0, "hits": 0.0}
        for q in queries:
            t0 = time.process_time()
            dense = searcher._encode(searcher.encoder, q, "text_encoder")
            t1 = time.process_time()
            plan = searcher._queries(q, dense, flt)
            fused = searcher._fused(plan, flt, 10)
            t2 = time.process_time()
            stage = searcher._stage_scores(plan, [h.item_id for h in fused])
            t3 = time.process_time()
            [searcher._hit(h, stage) for h in fused]
            t4 = time.process_time()
            for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                stages[key] += dt
        out = {f"stage: {k}": v / len(queries) * 1e3 for k, v in stages.items()}
        out["search() total"] = cpu_ms(lambda: [service.search(q, 10, flt) for q in queries], len(queries))
        plans = [searcher._queries(q, searcher._encode(searcher.encoder, q, "x"), flt) for q in queries]
        p = searcher.params
        for name in ("dense", "bm25", "name"):

            def run(name: str = name) -> None:
                for plan in plans:
                    if name not in plan:
                        continue
                    query, f, threshold = plan[name]
                    search = (
                        dense_search_params(max(p.hnsw_ef, p.depth), acorn=False) if name == "dense" else None
                    )
                    searcher.index.query(
                        qe.QueryRequest(
                            limit=p.depth, query=query, filter=f, score_threshold=threshold, params=search
                        )
                    )

            out[f"engine alone: {name}"] = cpu_ms(run, len(plans))
        return out
    finally:
        service.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--work", type=Path, default=ROOT / "var" / "bench" / "search_latency" / "c100000-p1000000-u10000"
    )
    parser.add_argument("--models-dir", type=Path, default=ROOT / "var" / "search" / "models")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument(
        "--search-threads",
        type=int,
        default=1,
        help="the shard's search pool (KINDRED_ENGINE_SEARCH_THREADS; 8 = what qdrant-edge starts here "
        "when given no size)",
    )
    parser.add_argument("--compare-threads", type=int, default=None, metavar="M")
    parser.add_argument("--rounds", type=int, default=2, help="alternations with --compare-threads")
    args = parser.parse_args(argv)
    if not (args.work / "index").is_dir():
        print(
            f"no index under {args.work}: run bench/bench_search_latency.py at that scale first",
            file=sys.stderr,
        )
        return 2
    pools = [args.search_threads] + ([args.compare_threads] if args.compare_threads else [])
    runs: dict[int, list[dict[str, float]]] = {p: [] for p in pools}
    for _ in range(args.rounds if args.compare_threads else 1):
        for pool in pools:
            result = profile(args.work, args.models_dir, args.queries, pool)
            runs[pool].append(result)
            print(
                f"CPU ms per Search call, {args.queries} queries, {args.work.name}, "
                f"models {args.models_dir}, engine search threads {pool}:"
            )
            for key, value in result.items():
                print(f"  {key:32s} {value:7.3f}")
    if args.compare_threads:
        write_comparison(args, runs, argv)
    return 0


def write_comparison(args: Any, runs: dict[int, list[dict[str, float]]], argv: Sequence[str] | None) -> None:
    from bench.latency.machine import describe, load_average
    from bench.results_md import write_section

    command = "python -m bench.latency.search_profile " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {
        "benchmark": "search_profile",
        "command": command,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": describe(),
        "load_average": load_average(),
        "work": args.work.name,
        "queries": args.queries,
        "cpu_ms_per_call_by_search_threads": {str(p): r for p, r in runs.items()},
    }
    out = ROOT / "bench" / "results" / "search_profile.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    pools = list(runs)
    keys = list(runs[pools[0]][0])
    head = " | ".join(f"{p} thread{'s' if p > 1 else ''} (each round)" for p in pools)
    lines = [
        "## Search — CPU per call by stage",
        "",
        f"`{command}` — {result['date']}, {result['machine'].get('cpu_model', '')} × "
        f"{result['machine'].get('nproc', '')}, load average {result['load_average']} at the end.",
        "",
        f"In-process, the production HybridSearcher on the `{args.work.name}` index, {args.queries} of the "
        "latency benchmark's queries after a warm-up pass; CPU of every thread of the process "
        "(process_time) per call, the engine's search pool included, with the shard opened on each "
        "search pool size in turn (KINDRED_ENGINE_SEARCH_THREADS), alternating:",
        "",
        f"| stage | {head} |",
        "|---|" + "---:|" * len(pools),
    ]
    for key in keys:
        cells = " | ".join(" / ".join(f"{r[key]:.2f}" for r in runs[p]) for p in pools)
        lines.append(f"| {key} | {cells} |")
    write_section("search_profile", "\n".join(lines) + "\n")
    print(f"wrote {out} and the RESULTS.md section")


if __name__ == "__main__":
    raise SystemExit(main())
