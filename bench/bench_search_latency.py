"""Search latency through gRPC, indexing throughput and index memory, on a generated catalogue.

    .venv/bin/python bench/bench_search_latency.py [--creators 100000 --posts 1000000 --unique-texts 20000]
    .venv/bin/python bench/bench_search_latency.py --quick        # 5k creators, 20k posts: a smoke run
    ... --reuse-index                         # serve the index an earlier run built at the same scale
    ... --int8-query-models var/bench/models-int8   # also serve int8 query encoding, same invocation

1. Catalogue: kindred.data.generate's world (creators with names, tags, descriptions; posts with
   titles and text from per-category vocabularies), the first `--posts` posts by time.
2. Dense vectors: MiniLM (ONNX, onnxruntime) encodes `--unique-texts` documents for real; that
   throughput is measured and reported. Encoding 1M texts at that rate does not fit a session on 2
   shared cores, so every further document reuses the vector of document (i mod U) with a small
   deterministic perturbation (σ 0.1/√d, re-normalised): the engine's cost depends on how many vectors
   it holds and their dimension, not what they mean. BM25 and name vectors are computed from every
   document's own text, and every payload is real. Said again in the results.
3. Index: the production SearchIndex (qdrant-edge shard, dense + BM25-with-IDF + name trigrams,
   payload indexes): upsert throughput, HNSW build time, size on disk.
4. Serve: the production RetrievalServicer (only its search half is wired here: no two-tower bundle)
   in its own process through kindred.service's server plumbing (interceptors, limits, health), and a
   closed-loop load of Search calls at 1, 4 and 16 concurrent callers (each its own channel), query
   encoding included. Queries: creator names (a third with a typo) and word pairs from post titles.
   The encoder's own time per query is measured separately in this process (one caller).
   The server's resident memory after loading and after the load is the index memory figure, and its
   CPU seconds per call (all threads) the cost of a call whatever else shares the cores.
5. Dense recall@100 of the served HNSW query against exact search, unfiltered and filtered.
Each scale has its own directory under var/bench/search_latency/ (index, build.json, queries.json), so
`--reuse-index` skips the catalogue, the encodings and the build.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.latency.load import run_closed_loop  # noqa: E402
from bench.latency.machine import describe, engine_default_search_pool, load_average  # noqa: E402
from bench.latency.mesh import free_port, service_env, wait_serving  # noqa: E402
from bench.latency.procinfo import cpu_seconds, memory_mb  # noqa: E402
from bench.results_md import write_section  # noqa: E402

RESULTS_JSON = ROOT / "bench" / "results" / "search_latency.json"
WORK = ROOT / "var" / "bench" / "search_latency"
GOAL_P99_MS_AT_4 = 30.0


def log(msg: str) -> None:
    print(f"[search-latency] {msg}", flush=True)


# -- serve mode (the child process) ------------------------------------------------------------------


class _NoBundle:
    """The recommendation half of RetrievalService is not wired in this benchmark."""

    def acquire(self) -> Any:
        from kindred.errors import FailedPrecondition

        raise FailedPrecondition("this benchmark server serves Search only")


def int8_model_name(models_dir: Path) -> str:
    """Where the int8 query graph sits in `models_dir`: `text_encoder_int8` as `trainer.text_encoder
    int8-queries` promotes it beside the fp32 model, or `text_encoder` in a directory of its own."""
    from kindred.models import CURRENT_FILE
    from kindred.text.encoder import INT8_QUERY_MODEL_NAME, MODEL_NAME

    beside_fp32 = (models_dir / INT8_QUERY_MODEL_NAME / CURRENT_FILE).is_file()
    return INT8_QUERY_MODEL_NAME if beside_fp32 else MODEL_NAME


def serve(
    index_root: Path,
    models_dir: Path,
    query_models: Path | None,
    *,
    gate_search: bool = False,
    search_params: Mapping[str, Any] | None = None,
) -> None:
    """Serves Search as a search replica does; `gate_search`: Search behind the compute gate, as served
    from 2026-11-27 17:00 to 20:00 UTC (bench.latency.search_gate_ab compares both, and 8 or 1 threads);
    `search_params`: retrieval_svc.search.params.SearchParams fields (what `config/search.json` holds)."""
    from kindred.service import ServiceSpec, run_service
    from kindred.text.encoder import TextEncoder, load_quantized_query_encoder
    from kindred.v1 import retrieval_pb2_grpc
    from retrieval_svc.search.index import SearchIndex
    from retrieval_svc.search.params import SearchParams
    from retrieval_svc.search.service import SearchService
    from retrieval_svc.server import SEARCH_REPLICA_SPEC

    params = SearchParams.from_mapping(search_params or {}, source="--search-params")
    from retrieval_svc.servicer import RetrievalServicer

    def build(_settings: Any) -> SearchService:
        encoder = TextEncoder.from_registry(models_dir)
        query = (
            load_quantized_query_encoder(query_models, encoder, name=int8_model_name(query_models))
            if query_models
            else None
        )
        index = SearchIndex.open(index_root, search_threads=_settings.engine_search_threads)
        return SearchService(index, encoder, params, query_encoder=query)

    spec: ServiceSpec[SearchService] = ServiceSpec(
        name="retrieval",
        grpc_service="kindred.v1.RetrievalService",
        port=lambda settings: settings.retrieval_port,
        add_servicer=retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server,
        build_deps=build,
        make_servicer=lambda _settings, deps: RetrievalServicer(_NoBundle(), deps),  # type: ignore[arg-type]
        close_deps=lambda deps: deps.close(),
        # Served as a search replica serves Search: its gated methods and worker threads.
        gated_methods=(
            (lambda settings: ("Search",) if settings.local_reads_only else ())
            if gate_search
            else SEARCH_REPLICA_SPEC.gated_methods
        ),
        computes_only=SEARCH_REPLICA_SPEC.computes_only,
    )
    run_service(spec)


# -- build -------------------------------------------------------------------------------------------


TEXTS = ("generated", "real")


def build_catalogue(creators: int, posts: int, seed: int, back_days: float, text: str = "generated") -> Any:
    """The generated world's catalogue; `text="real"`: the same with real-language words
    (bench.latency.real_text: SciFact titles and sentences, HetRec artist names)."""
    from kindred.data.generate import GeneratorConfig, build_world

    if text not in TEXTS:
        raise ValueError(f"text must be one of {TEXTS}, not {text!r}")
    config = GeneratorConfig(fans=10, creators=creators, days=1, seed=seed, back_catalogue_days=back_days)
    world = build_world(config)
    catalogue = world.catalogue
    catalogue.posts = catalogue.posts[:posts]
    if text == "real":
        from bench.latency.real_text import TextPool, with_real_text

        catalogue = with_real_text(catalogue, TextPool.load())
    return catalogue


def work_dir(creators: int, posts: int, unique_texts: int, text: str = "generated") -> Path:
    """Each scale (and text) has its own directory: index, build.json, queries.json."""
    return WORK / (f"c{creators}-p{posts}-u{unique_texts}" + ("" if text == "generated" else f"-{text}"))


def dense_vectors(texts: Sequence[str], unique: int, encoder: Any) -> tuple[np.ndarray, dict[str, float]]:
    """Real MiniLM vectors for the first `unique` texts; the rest reuse them, perturbed (see above)."""
    from tqdm import tqdm

    u = min(unique, len(texts))
    real = np.zeros((u, encoder.dim), dtype=np.float32)
    t0 = time.perf_counter()
    step = 256
    for start in tqdm(range(0, u, step), desc="encode", unit="batch", mininterval=10):
        real[start : start + step] = encoder.encode(list(texts[start : min(u, start + step)]))
    encode_s = time.perf_counter() - t0
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    out[:u] = real
    rng = np.random.default_rng(0)
    for start in range(u, len(texts), 65_536):
        stop = min(len(texts), start + 65_536)
        base = real[np.arange(start, stop) % u]
        noisy = base + rng.normal(scale=0.1 / np.sqrt(encoder.dim), size=base.shape).astype(np.float32)
        out[start:stop] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    return out, {"encoded": u, "encode_s": round(encode_s, 1), "encode_docs_per_s": round(u / encode_s, 1)}


def build_index(root: Path, catalogue: Any, encoder: Any, unique: int) -> dict[str, Any]:
    import shutil

    from tqdm import tqdm

    from kindred.text.tokenize import Bm25
    from retrieval_svc.search.bulk import catalogue_docs
    from retrieval_svc.search.index import SearchIndex

    shutil.rmtree(root, ignore_errors=True)
    docs = catalogue_docs(catalogue)
    # Interleave kinds so the real encodings cover creators and posts alike.
    order = np.random.default_rng(1).permutation(len(docs))
    docs = [docs[i] for i in order]
    vectors, enc = dense_vectors([d.text for d in docs], unique, encoder)
    t0 = time.perf_counter()
    bm25, term_stats = Bm25.fit_with_stats(d.text for d in docs)
    fit_s = time.perf_counter() - t0
    index = SearchIndex.create(
        root, dim=encoder.dim, bm25=bm25, encoder_version=encoder.version, term_stats=term_stats
    )
    t0 = time.perf_counter()
    batch = 4096
    for start in tqdm(range(0, len(docs), batch), desc="upsert", unit="batch", mininterval=10):
        index.upsert(docs[start : start + batch], vectors[start : start + batch])
    upsert_s = time.perf_counter() - t0
    t0, cpu0, load0 = time.perf_counter(), _cpu_s(), load_average()
    log("building HNSW (optimize)…")
    index.optimize()
    index.flush()
    optimize_s, optimize_cpu_s = time.perf_counter() - t0, _cpu_s() - cpu0
    info = index.info()
    index.close()
    disk = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    return {
        "documents": len(docs),
        **enc,
        "bm25_fit_s": round(fit_s, 1),
        "upsert_s": round(upsert_s, 1),
        "upsert_docs_per_s": round(len(docs) / upsert_s, 1),
        "hnsw_build_s": round(optimize_s, 1),
        "hnsw_build_cpu_s": round(optimize_cpu_s, 1),
        "load_average_build": [load0, load_average()],
        "index_docs_per_s": round(len(docs) / (upsert_s + optimize_s), 1),
        "disk_mb": round(disk / 2**20, 1),
        "engine": info,
    }


def _cpu_s() -> float:
    """CPU seconds of this process, all threads (the engine's optimizer threads included)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_queries(catalogue: Any, n: int = 400, seed: int = 3) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if i % 2 == 0:
            name = catalogue.creators[int(rng.integers(len(catalogue.creators)))].name
            if i % 6 == 0 and len(name) > 4:  # a typo: drop one character
                j = int(rng.integers(1, len(name) - 1))
                name = name[:j] + name[j + 1 :]
            out.append(name)
        else:
            words = catalogue.posts[int(rng.integers(len(catalogue.posts)))].title.replace(":", " ").split()
            words = [w for w in words if len(w) > 3] or words
            out.append(" ".join(words[:2]))
    return out


def _dense_hits(index: Any, vec: np.ndarray, flt: Any, params: Any) -> tuple[list[str], list[float]]:
    import qdrant_edge as qe

    from retrieval_svc.search.index import DENSE

    request = qe.QueryRequest(
        limit=100, query=qe.Query.Nearest(vec.tolist(), using=DENSE), filter=flt, params=params
    )
    hits = index._call(index._shard.query, request)
    return [str(p.id) for p in hits], [float(p.score) for p in hits]


def _dense_ids(index: Any, vec: np.ndarray, flt: Any, params: Any) -> list[str]:
    return _dense_hits(index, vec, flt, params)[0]


def dense_recall(root: Path, encoder: Any, queries: Sequence[str], n: int = 40) -> dict[str, Any]:
    """Recall@100 of the dense retriever as the service queries it (HNSW on int8, re-scored, ACORN when
    the filter needs it) against exact float32 search, unfiltered and under filters built as the
    service builds them."""
    import qdrant_edge as qe

    from kindred.data.schema import CATEGORIES
    from kindred.vectorstore.base import PayloadFilter
    from retrieval_svc.search.index import SearchFilter, SearchIndex, dense_search_params
    from retrieval_svc.search.params import SearchParams

    index = SearchIndex.open(root)
    try:
        filters: dict[str, SearchFilter | None] = {
            "none": None,
            "kind=creator": SearchFilter(kinds=frozenset({"creator"})),
            f"category={CATEGORIES[1]}": SearchFilter(base=PayloadFilter.build(categories=[CATEGORIES[1]])),
            "language=es": SearchFilter(base=PayloadFilter.build(languages=["es"])),
            "access=tier": SearchFilter(access=frozenset({"tier"})),
            "kind=post and language=es": SearchFilter(
                kinds=frozenset({"post"}), base=PayloadFilter.build(languages=["es"])
            ),
        }
        ef = SearchParams().hnsw_ef
        vectors = encoder.encode(list(queries[:n]))
        out: dict[str, Any] = {"queries": len(vectors), "limit": 100, "hnsw_ef": ef}
        for label, search_filter in filters.items():
            recalls, ms, spreads = [], [], []
            flt = search_filter.to_engine() if search_filter else None
            acorn = search_filter.needs_acorn if search_filter else False
            count = index._call(index._shard.count, qe.CountRequest(filter=flt, exact=True))
            for vec in vectors:
                t0 = time.perf_counter()
                approx = _dense_ids(index, vec, flt, dense_search_params(ef, acorn=acorn))
                ms.append((time.perf_counter() - t0) * 1e3)
                exact, scores = _dense_hits(index, vec, flt, qe.SearchParams(exact=True))
                if scores:
                    spreads.append(scores[0] - scores[-1])
                if exact:
                    recalls.append(len(set(approx) & set(exact)) / len(exact))
            out[label] = {
                "matching_points": int(count),
                "acorn": acorn,
                "recall_at_100": round(float(np.mean(recalls)), 4) if recalls else None,
                # how far apart the exact top 100 lie (cosine, first − 100th): reused vectors make it tiny
                "exact_top100_score_spread_p50": round(float(np.median(spreads)), 4) if spreads else None,
                "engine_p50_ms": round(float(np.median(ms)), 2),
            }
            log(f"dense recall@100, filter {label}: {out[label]}")
        return out
    finally:
        index.close()


# -- run ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--creators", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--unique-texts", type=int, default=20_000)
    parser.add_argument(
        "--back-days", type=float, default=120.0, help="days of back catalogue generated (posts ∝ days)"
    )
    parser.add_argument("--requests", type=int, default=1500, help="measured Search calls per level")
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "var" / "search" / "models")
    parser.add_argument("--quick", action="store_true", help="5k creators, 20k posts, 2k real encodings")
    parser.add_argument("--reuse-index", action="store_true", help="serve the index built by the last run")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--int8-query-models",
        type=Path,
        default=None,
        help="also serve with this int8 export of the encoder for queries, and report both",
    )
    parser.add_argument(
        "--recall-queries", type=int, default=40, help="queries for the dense recall check (0: skip)"
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=2,
        help="also serve through this many search replicas (KINDRED_SEARCH_REPLICA, own index copies, "
        "write log in the local Redis, least-request client), int8 queries if --int8-query-models; 0: skip",
    )
    parser.add_argument(
        "--text",
        choices=TEXTS,
        default="generated",
        help="the catalogue's words: the generator's (default) or real ones (SciFact titles and sentences, "
        "HetRec artist names; needs ../shared/data) in the same catalogue; a directory of its own",
    )
    parser.add_argument(
        "--build-only", action="store_true", help="build (or keep, with --reuse-index) the index and stop"
    )
    parser.add_argument("--serve", type=Path, default=None, help=argparse.SUPPRESS)  # child mode: index root
    parser.add_argument("--gate-search", action="store_true", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--search-params", type=json.loads, default=None, help=argparse.SUPPRESS)  # child
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(
            args.serve,
            args.models_dir,
            args.int8_query_models,
            gate_search=args.gate_search,
            search_params=args.search_params,
        )
        return 0
    if args.quick:
        args.creators, args.posts, args.unique_texts, args.requests = 5000, 20_000, 2000, 400
    if args.text != "generated" and not (args.build_only or args.no_write):
        # bench/results/search_latency.json is the generated catalogue's; the two catalogues are
        # compared by bench.latency.search_text_ab, in one invocation.
        parser.error("--text real builds an index for bench.latency.search_text_ab: add --build-only")

    from kindred.text.encoder import TextEncoder, measure_latency

    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    started = time.time()
    encoder = TextEncoder.from_registry(args.models_dir, intra_op_num_threads=1)
    work = work_dir(args.creators, args.posts, args.unique_texts, args.text)
    work.mkdir(parents=True, exist_ok=True)
    root = work / "index"
    build_path = work / "build.json"
    queries_path = work / "queries.json"
    reuse = args.reuse_index and build_path.exists() and queries_path.exists()
    if args.reuse_index and not reuse:
        log(f"--reuse-index: no finished build in {work}; building it")
    if reuse:
        build = json.loads(build_path.read_text())
        queries = json.loads(queries_path.read_text())
        scale = build["scale"]
    else:
        t0 = time.perf_counter()
        catalogue = build_catalogue(
            args.creators, args.posts, seed=7, back_days=args.back_days, text=args.text
        )
        log(
            f"catalogue: {len(catalogue.creators)} creators, {len(catalogue.posts)} posts "
            f"({time.perf_counter() - t0:.0f} s)"
        )
        queries = make_queries(catalogue)
        build = build_index(root, catalogue, encoder, args.unique_texts)
        scale = {"creators": len(catalogue.creators), "posts": len(catalogue.posts)}
        build["scale"] = scale
        build["text"] = args.text
        del catalogue
        queries_path.write_text(json.dumps(queries))
        build_path.write_text(json.dumps(build, indent=2))
    log(f"index: {json.dumps(build)}")
    if args.build_only:
        log(f"--build-only: the index is in {root}")
        return 0
    encoder_latency = measure_latency(encoder, queries)
    log(f"encoder alone, one caller: {encoder_latency}")

    load_s, memory_loaded, levels, memory_after = serve_and_load(work, root, args, queries, None)
    int8: dict[str, Any] = {}
    if args.int8_query_models is not None:
        from kindred.text.encoder import load_quantized_query_encoder

        quantized = load_quantized_query_encoder(
            args.int8_query_models, encoder, name=int8_model_name(args.int8_query_models)
        )
        int8["encoder_alone_one_caller"] = measure_latency(quantized, queries)
        log(f"int8 query encoder alone, one caller: {int8['encoder_alone_one_caller']}")
        int8["model"] = quantized.version
        _, _, int8["search_grpc"], _ = serve_and_load(work, root, args, queries, args.int8_query_models)
        # The same server as Search was served before kindred.compute_gate: 8 worker threads.
        ungated = {"KINDRED_COMPUTE_CONCURRENCY": "0", "KINDRED_SERVER_THREADS": "8"}
        _, _, int8["search_grpc_ungated"], _ = serve_and_load(
            work, root, args, queries, args.int8_query_models, ungated
        )
        # The same server with the search pool qdrant-edge starts here unasked (what it had before
        # KINDRED_ENGINE_SEARCH_THREADS), right after the served configuration's levels.
        int8["engine_default_pool"] = engine_default_search_pool()
        pool = {"KINDRED_ENGINE_SEARCH_THREADS": str(int8["engine_default_pool"])}
        _, _, int8["search_grpc_engine_default_pool"], _ = serve_and_load(
            work, root, args, queries, args.int8_query_models, pool
        )
    replicated: dict[str, Any] = {}
    if args.replicas > 0:
        replicated = serve_replicas_and_load(work, root, args, queries, args.replicas)
        from kindred.models import CURRENT_FILE
        from kindred.text.encoder import INT8_QUERY_MODEL_NAME

        # The replicas load what retrieval serves from the models dir: the int8 query graph if promoted.
        int8_promoted = (args.models_dir / INT8_QUERY_MODEL_NAME / CURRENT_FILE).is_file()
        replicated["query_encoder"] = "int8" if int8_promoted else "fp32"
    recall = dense_recall(root, encoder, queries, args.recall_queries) if args.recall_queries > 0 else {}
    p99_at_4 = levels.get("4", {}).get("p99_ms")
    result = {
        "benchmark": "search_latency",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": describe(),
        "scale": {
            "creators": scale["creators"],
            "posts": scale["posts"],
            "real_encodings": build["encoded"],
            "vector_reuse": "documents beyond the first U reuse a real vector, perturbed (see docstring)",
        },
        "index": build,
        "server": {
            "startup_s": round(load_s, 1),
            "memory_loaded_mb": memory_loaded,
            "memory_after_load_mb": memory_after,
        },
        "encoder_alone_one_caller": encoder_latency,
        "int8_query_encoder": int8,
        "dense_recall_vs_exact": recall,
        "search_grpc": levels,
        "replicated": replicated,
        "goal": {
            "p99_ms_at_4_callers": GOAL_P99_MS_AT_4,
            "met": p99_at_4 is not None and p99_at_4 <= GOAL_P99_MS_AT_4,
            "met_replicated": bool(replicated)
            and replicated["search_grpc"].get("4", {}).get("p99_ms", float("inf")) <= GOAL_P99_MS_AT_4,
            "met_replicated_shared_channel": bool(replicated)
            and replicated["search_grpc_one_shared_channel"].get("4", {}).get("p99_ms", float("inf"))
            <= GOAL_P99_MS_AT_4,
        },
        "seconds_total": round(time.time() - started, 1),
        "load_average": load_average(),
    }
    print(json.dumps({"search_grpc": levels, "encoder": encoder_latency}, indent=2))
    if not args.no_write:
        RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_JSON.write_text(json.dumps(result, indent=2) + "\n")
        write_section("search_latency", section(result))
        log(f"wrote {RESULTS_JSON} and the RESULTS.md section")
    return 0


def serve_and_load(
    work: Path,
    root: Path,
    args: Any,
    queries: Sequence[str],
    query_models: Path | None,
    extra_env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    after: Callable[[int, int], None] | None = None,
) -> tuple[float, dict[str, float], dict[str, Any], dict[str, float]]:
    """Starts the search server on the index (`extra_env`: more KINDRED_* settings for it, `extra_args`:
    more child-mode flags), runs every load level, then `after(port, server pid)` if given; (startup s,
    memory, levels, memory)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINDRED_")}
    env.update(
        {
            "KINDRED_DATA_DIR": str(work),
            "KINDRED_RETRIEVAL_PORT": str(port),
            "KINDRED_HOST": "127.0.0.1",
            "OMP_NUM_THREADS": "1",
            "ORT_DISABLE_TELEMETRY": "1",
            **(extra_env or {}),
        }
    )
    server_log = work / "server.log"
    with open(server_log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(root), "--models-dir", str(args.models_dir)]
            + (["--int8-query-models", str(query_models)] if query_models else [])
            + list(extra_args),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        t0 = time.perf_counter()
        wait_serving(f"127.0.0.1:{port}", proc, 600.0, server_log)
        load_s = time.perf_counter() - t0
        memory_loaded = memory_mb(proc.pid)
        levels = {str(c): load_level(port, queries, c, args.requests, proc.pid) for c in args.callers}
        memory_after = memory_mb(proc.pid)
        if after is not None:
            after(port, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return load_s, memory_loaded, levels, memory_after


@contextlib.contextmanager
def replicas_serving(
    work: Path,
    root: Path,
    models_dir: Path,
    replicas: int,
    search_params: Mapping[str, Any] | None = None,
) -> Iterator[tuple[str, list[int], float]]:
    """The production search replicas (`python -m retrieval_svc` with KINDRED_SEARCH_REPLICA, see
    retrieval_svc.search.replication) over copies of the index at `root`, a fresh write log in the local
    Redis; yields one target naming them all, their pids and the seconds they took to start (copies
    included), and stops them and drops the write log on the way out. `search_params`: written to their
    data dir's `config/search.json`, which they read as any retrieval_svc does."""
    import shutil
    import uuid

    from retrieval_svc.search.params import CONFIG_FILE

    data = work / "replicas-data"
    shutil.rmtree(data, ignore_errors=True)  # fresh copies of the (possibly rebuilt) bulk index
    (data / "index").mkdir(parents=True)
    if search_params:
        (data / CONFIG_FILE).parent.mkdir(parents=True, exist_ok=True)
        (data / CONFIG_FILE).write_text(json.dumps(search_params))
    (data / "index" / "search").symlink_to(root.resolve(), target_is_directory=True)
    write_log = f"kindred:bench:search:{uuid.uuid4().hex}"
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    t0 = time.perf_counter()
    try:
        for i in range(replicas):
            port = free_port()
            env = service_env(data, {"retrieval": port})
            env.update(
                {
                    "KINDRED_MODELS_DIR": str(models_dir),
                    "KINDRED_SEARCH_REPLICA": f"r{i}",
                    "KINDRED_SEARCH_WRITE_LOG": write_log,
                    "OMP_NUM_THREADS": "1",
                }
            )
            with open(work / f"replica-{i}.log", "wb") as out:  # the child keeps its own descriptor
                procs.append(
                    subprocess.Popen([sys.executable, "-m", "retrieval_svc"], env=env, stdout=out, stderr=out)
                )
            ports.append(port)
        for port, proc, i in zip(ports, procs, range(replicas), strict=True):
            wait_serving(f"127.0.0.1:{port}", proc, 1800.0, work / f"replica-{i}.log")
        target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
        yield target, [proc.pid for proc in procs], time.perf_counter() - t0
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        _delete_write_log(write_log)


def serve_replicas_and_load(
    work: Path, root: Path, args: Any, queries: Sequence[str], replicas: int
) -> dict[str, Any]:
    """`replicas_serving`, every load level through its one target (least-request; and gRPC's
    round_robin for a shared client, the balancing before); then the cost of a write (UpsertPosts
    answers once every replica applied it)."""
    with replicas_serving(work, root, args.models_dir, replicas) as (target, pids, startup_s):
        memory_loaded = [memory_mb(pid) for pid in pids]
        levels = {str(c): load_level(target, queries, c, args.requests, pids) for c in args.callers}
        shared: dict[str, Any] = {}
        shared_rr: dict[str, Any] = {}
        for c in (c for c in args.callers if c > 1):  # the two balancers back to back at each level
            shared_rr[str(c)] = load_level(
                target, queries, c, args.requests, pids, shared_channel=True, round_robin=True
            )
            shared[str(c)] = load_level(target, queries, c, args.requests, pids, shared_channel=True)
        writes = write_latency(target, 40)
        log(f"{replicas} replicas, UpsertPosts of one post: {writes}")
        memory_after = [memory_mb(pid) for pid in pids]
    return {
        "replicas": replicas,
        "startup_s_with_index_copies": round(startup_s, 1),
        "memory_loaded_mb": memory_loaded,
        "memory_after_load_mb": memory_after,
        "search_grpc": levels,
        "search_grpc_one_shared_channel": shared,
        "search_grpc_one_shared_channel_round_robin": shared_rr,
        "upsert_one_post_ms": writes,
    }


def write_latency(target: str, n: int) -> dict[str, float]:
    """UpsertPosts of one new post, `n` times, then DeleteItems of them: when a write returns, every
    replica has applied it."""
    from kindred.data.schema import Post
    from kindred.grpc_client import make_channel
    from kindred.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc

    times = []
    with make_channel(target) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        ids = [f"bench-write-{i}" for i in range(n)]
        for post_id in ids:
            post = Post(
                post_id,
                "bench-creator",
                "bench write",
                "a post written during the benchmark",
                "public",
                time.time(),
            )
            t0 = time.perf_counter()
            stub.UpsertPosts(retrieval_pb2.UpsertPostsRequest(posts=[post.to_proto()]), timeout=10)
            times.append(time.perf_counter() - t0)
        stub.DeleteItems(
            retrieval_pb2.DeleteItemsRequest(item_ids=ids, kind=common_pb2.ITEM_KIND_POST), timeout=10
        )
    ms = np.array(times) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "n": n,
    }


def _delete_write_log(key: str) -> None:
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        client.delete(key, f"{key}:replicas")
    finally:
        client.close()


def load_level(
    target: int | str,
    queries: Sequence[str],
    callers: int,
    requests: int,
    pids: int | Sequence[int],
    *,
    shared_channel: bool = False,
    round_robin: bool = False,
) -> dict[str, Any]:
    """Closed-loop Search load on `target` (a port on loopback, or a gRPC target naming several
    replicas, balanced by kindred.grpc_client.make_channel: least-request); server CPU summed over
    `pids`. Each caller has its own channel (independent clients), or with `shared_channel` all use one
    (the threads of one client process, as the platform's services hold one channel each): the balancer
    then sees every call in flight, not only its caller's. `round_robin`: gRPC's round_robin over the
    target's addresses instead (kindred.grpc_client.round_robin_channel, the balancing before)."""
    from kindred.grpc_client import make_channel, round_robin_channel

    connect = round_robin_channel if round_robin else make_channel
    from kindred.v1 import retrieval_pb2, retrieval_pb2_grpc

    address = f"127.0.0.1:{target}" if isinstance(target, int) else target
    servers = [pids] if isinstance(pids, int) else list(pids)
    shared = connect(address) if shared_channel else None

    def make_caller(_worker: int) -> Any:
        channel = shared if shared is not None else connect(address)
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        return lambda q: stub.Search(retrieval_pb2.SearchRequest(query=q, k=10), timeout=10)

    warmup = 50
    cpu0 = sum(cpu_seconds(pid) for pid in servers)
    try:
        result = run_closed_loop(
            make_caller, list(queries), concurrency=callers, requests=requests, warmup=warmup
        )
    finally:
        if shared is not None:
            shared.close()
    # The server's CPU per call (all its threads): what the load costs, whatever else shares the cores.
    server_cpu_ms = (sum(cpu_seconds(pid) for pid in servers) - cpu0) * 1e3 / (requests + warmup)
    summary = {**result.summary(), "server_cpu_ms_per_call": server_cpu_ms}
    log(
        f"{callers} caller(s): p50 {summary.get('p50_ms', 0):.1f} ms, p99 {summary.get('p99_ms', 0):.1f} ms, "
        f"{summary['throughput_rps']:.0f} req/s, server CPU {server_cpu_ms:.1f} ms/call, "
        f"errors {result.errors} {result.error_samples[:1]}"
    )
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in summary.items()}


def _rows(levels: dict[str, Any]) -> str:
    return "\n".join(
        f"| {c} | {v.get('p50_ms', 0):.1f} | {v.get('p99_ms', 0):.1f} | {v['throughput_rps']:.0f} "
        f"| {v.get('server_cpu_ms_per_call', float('nan')):.1f} | {v['errors']} |"
        for c, v in levels.items()
    )


def _extra_results(name: str) -> dict[str, Any]:
    path = RESULTS_JSON.parent / f"{name}.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def section(r: dict[str, Any]) -> str:
    s, b, enc = r["scale"], r["index"], r["encoder_alone_one_caller"]
    mem = r["server"]["memory_after_load_mb"]
    goal = r["goal"]["p99_ms_at_4_callers"]
    met = "met" if r["goal"]["met"] else "not met"
    header = "| callers | p50 ms | p99 ms | req/s | server CPU ms/call | errors |\n|---|---|---|---|---|---|"
    build_load = b.get("load_average_build")
    cpu = f" ({b['hnsw_build_cpu_s']:.0f} CPU-s" if "hnsw_build_cpu_s" in b else ""
    if cpu and build_load:
        cpu += f"; load average {build_load[0][0]:.0f}–{build_load[1][0]:.0f} while it ran)"
    elif cpu:
        cpu += ")"
    out = f"""## Search — latency through gRPC, indexing, memory

`{r["command"]}` — {r["date"]}, {r["machine"].get("cpu_model", "")} × {r["machine"].get("nproc", "")},
load average {r.get("load_average", "not recorded")} at the end of the run (the machine is shared with
other jobs: latencies are upper bounds of what a quiet machine gives).

Scale: {s["creators"]:,} creators + {s["posts"]:,} posts. {b["encoded"]:,} documents were encoded by
MiniLM for real ({b["encode_docs_per_s"]} docs/s on this machine); the other documents reuse one of
those vectors with a small deterministic perturbation (BM25, names and payloads are every document's
own). Index build: upsert {b["upsert_docs_per_s"]:,.0f} docs/s (BM25, title, term and trigram vectors
included), HNSW build {b["hnsw_build_s"]:,.0f} s{cpu}; {b["index_docs_per_s"]:,.0f} docs/s upsert + build
together; {b["disk_mb"]:,.0f} MB on disk, {b["engine"]["segments"]} segments. The search server's resident
memory: {r["server"]["memory_loaded_mb"]["rss_mb"]:.0f} MB loaded, {mem["rss_mb"]:.0f} MB after the load.

Search through gRPC (k 10, query encoding included, closed loop, each caller its own channel; no
query-embedding cache exists, so every call encodes):

{header}
{_rows(r["search_grpc"])}

Encoder alone (tokenize + ONNX run + pool, one caller, same queries): p50 {enc["p50_ms"]:.1f} ms,
p99 {enc["p99_ms"]:.1f} ms. Goal p99 ≤ {goal:.0f} ms at 4 callers: {met}.
"""
    int8 = r.get("int8_query_encoder") or {}
    if int8.get("search_grpc"):
        q8 = _extra_results("search_query_int8")
        quality = ""
        if q8:
            d = q8["dense_exact"]
            quality = (
                f" SciFact dense (train queries, exact scan, fp32 documents; `{q8['command']}`): NDCG@10 "
                f"{d['int8']['ndcg@10']:.4f} with int8 queries against {d['fp32']['ndcg@10']:.4f} with fp32, "
                f"recall@100 {d['int8']['recall@100']:.3f} against {d['fp32']['recall@100']:.3f}."
            )
        e8 = int8["encoder_alone_one_caller"]
        out += f"""
Same index, same invocation, queries encoded by the int8 export of the same weights
(`load_quantized_query_encoder`; what retrieval serves when `text_encoder_int8` is promoted):

{header}
{_rows(int8["search_grpc"])}

int8 encoder alone: p50 {e8["p50_ms"]:.1f} ms, p99 {e8["p99_ms"]:.1f} ms.{quality}
"""
        if int8.get("search_grpc_ungated"):
            out += f"""
The same int8 server as Search was served before the compute gate (`KINDRED_COMPUTE_CONCURRENCY=0`,
`KINDRED_SERVER_THREADS=8`; served now: 2 worker threads, Search not gated — see
`bench.latency.search_gate_ab` for them alternated), run right after the rows above:

{header}
{_rows(int8["search_grpc_ungated"])}
"""
        if int8.get("search_grpc_engine_default_pool"):
            out += f"""
The same int8 server with the search pool qdrant-edge starts on this machine when given no size
(`KINDRED_ENGINE_SEARCH_THREADS={int8["engine_default_pool"]}`, what retrieval had before the setting; the
served default is 1 thread), run right after the rows above:

{header}
{_rows(int8["search_grpc_engine_default_pool"])}
"""
    rep = r.get("replicated") or {}
    if rep.get("search_grpc"):
        rep_met = "met" if r["goal"].get("met_replicated") else "not met"
        shared_met = "met" if r["goal"].get("met_replicated_shared_channel") else "not met"
        rss = ", ".join(f"{m['rss_mb']:.0f}" for m in rep["memory_after_load_mb"])
        w = rep["upsert_one_post_ms"]
        out += f"""
**{rep["replicas"]} search replicas** (retrieval_svc.search.replication: `python -m retrieval_svc` with
KINDRED_SEARCH_REPLICA, each on its own copy of the same index, writes through one log in the local
Redis; {rep["query_encoder"]} queries), same invocation, one target naming both
(kindred.grpc_client.make_channel), each caller its own client, server CPU summed over the replicas:

{header}
{_rows(rep["search_grpc"])}

The same callers sharing one client (the threads of one client process — each platform service holds
one channel), least-request balanced (kindred.least_request: each call to the replica with fewer of the
client's calls in flight):

{header}
{_rows(rep.get("search_grpc_one_shared_channel", {}))}

The same shared client balanced by gRPC's round_robin instead (the balancing before least-request; each
level run right before the least-request one):

{header}
{_rows(rep.get("search_grpc_one_shared_channel_round_robin", {}))}

Goal p99 ≤ {goal:.0f} ms at 4 callers with replicas: a client per caller {rep_met}, one shared least-request
client {shared_met}. Resident memory per replica after the load: {rss} MB; start-up with the index copies
{rep["startup_s_with_index_copies"]:.0f} s. A write (UpsertPosts of one post, answered once every
replica applied it): p50 {w["p50_ms"]:.1f} ms, p99 {w["p99_ms"]:.1f} ms over {w["n"]}.
"""
    rec = r.get("dense_recall_vs_exact") or {}
    if rec:
        reuse = round((s["creators"] + s["posts"]) / max(1, b["encoded"]))
        lines = "\n".join(
            f"| {label} | {'yes' if v.get('acorn') else 'no'} | {v['matching_points']:,} "
            f"| {v['recall_at_100']} | {v.get('exact_top100_score_spread_p50', '')} "
            f"| {v['engine_p50_ms']:.1f} |"
            for label, v in rec.items()
            if isinstance(v, dict)
        )
        out += f"""
Dense retriever as served (HNSW ef {rec["hnsw_ef"]} on the int8 copy, 2× oversampled and re-scored in
float32, ACORN when filtered) against exact float32 search, {rec["queries"]}
of the queries, top {rec["limit"]}. Caveat: the reused, perturbed vectors put ~{reuse} near-copies of each
real vector in the index, so the exact top 100 lie within a cosine spread of a few hundredths (column) and
recall@100 against it is pessimistic for real text; the synthetic build comparison below (queries
near the data) shows the configuration itself keeps recall:

| filter | ACORN | matching points | recall@100 | exact top-100 score spread | engine p50 ms |
|---|---|---|---|---|---|
{lines}
"""
    hb = _extra_results("search_hnsw_build")
    if hb.get("runs"):
        lines = "\n".join(
            f"| {x['config']} | {x['points']:,} | {x['optimize_wall_s']:.0f} | {x['optimize_cpu_s']:.0f} "
            f"| {x.get('recall_at_100', '')} | {x.get('recall_category_at_100', '')} "
            f"| {x.get('recall_category_acorn_at_100', '')} "
            f"| {x['load_average'][0][0]:.0f} |"
            for x in hb["runs"]
        )
        commands = ", ".join(sorted({f"`{x['command']}`" for x in hb["runs"] if "command" in x}))
        out += f"""
Why the build was slow ({commands}; synthetic points with the search payload's proportions, their
recall measured with queries near the data): `before` = the previous shard configuration (float32
graph, the engine's default extra HNSW links for every value block of every indexed payload field —
published_at's range blocks alone re-insert every point), `after` = the current one (graph on an int8
copy, extra links for kind and category only, int8 candidates oversampled 2× and re-scored in
float32); recall of a category-filtered query without and with ACORN — the previous code queried
without it (`before`, "a category"), the current one with it (`after`, "a category, ACORN"):

| config | points | optimize wall s | optimize CPU s | recall@100 | a category | a category, ACORN | load |
|---|---|---|---|---|---|---|---|
{lines}
"""
    return out


if __name__ == "__main__":
    raise SystemExit(main())
