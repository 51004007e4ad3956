"""Where one Search call's CPU goes, in-process, on an index bench_search_latency built.

    .venv/bin/python -m bench.latency.search_profile [--work var/bench/search_latency/c100000-p1000000-u10000]
                                                     [--queries 300] [--models-dir var/search/models]

The production HybridSearcher (int8 query encoder if `text_encoder_int8` is promoted in the models dir,
as retrieval serves), the benchmark's own queries, after a warm-up pass; CPU time (process_time) per
call of each stage of `HybridSearcher.search` as the service runs them — encode, the engine's hybrid
query (prefetches + RRF, payload of the top k), the rescoring batch that gives each result its
per-retriever scores, building the hits — and, separately, each retriever's prefetch run alone as an
engine query (limit = the service's depth, no payload). Prints a table; writes nothing.
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
    args = parser.parse_args(argv)
    if not (args.work / "index").is_dir():
        print(
            f"no index under {args.work}: run bench/bench_search_latency.py at that scale first",
            file=sys.stderr,
        )
        return 2
    result = profile(args.work, args.models_dir, args.queries, args.search_threads)
    print(
        f"CPU ms per Search call, {args.queries} queries, {args.work.name}, models {args.models_dir}, "
        f"engine search threads {args.search_threads}:"
    )
    for key, value in result.items():
        print(f"  {key:32s} {value:7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
