"""Why the search index's HNSW build was slow: the same points built under two shard configurations.

    .venv/bin/python -m bench.latency.hnsw_build [--points 200000] [--configs before after]

`before` is the shard configuration the search index had until this change (m 16, ef_construct 128,
full_scan_threshold 10,000 KB, float32 graph, and the engine's default extra HNSW links for every
value block of every indexed payload field); `after` is retrieval_svc.search.index's (the same graph
built on an int8 copy of the vectors, extra links only for HNSW_LINKED_FIELDS). Points: 384-d unit
vectors (3,000 random centres, perturbed like bench_search_latency's reused vectors), a BM25-like and
a name sparse vector, and the search payload with the generated catalogue's proportions (1 creator in
11, 12 categories, 6 languages, 3 access levels, 10 posts a creator, 10% mature, uniform publish
time). Reports upsert and optimize wall time, the optimize's CPU seconds (all engine threads: robust
to other jobs sharing the machine, unlike wall time) and the load average. Writes
bench/results/search_hnsw_build.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.latency.machine import describe, load_average  # noqa: E402

RESULTS_JSON = ROOT / "bench" / "results" / "search_hnsw_build.json"
WORK = ROOT / "var" / "bench" / "hnsw_build"
DIM = 384
LANGUAGES = ("en", "en", "en", "es", "pt", "fr", "de", "ja")
ACCESS = ("public", "members", "tier")


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def shard_config(name: str) -> qe.EdgeConfig:
    from retrieval_svc.search.index import FULL_SCAN_THRESHOLD_KB, HNSW_EF_CONSTRUCT, HNSW_M

    after = name.startswith("after")
    return qe.EdgeConfig(
        vectors={"dense": qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine)},
        sparse_vectors={
            "bm25": qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf),
            "name": qe.EdgeSparseVectorParams(),
        },
        hnsw_config=qe.HnswIndexConfig(
            m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=FULL_SCAN_THRESHOLD_KB
        ),
        quantization_config=(
            qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True)
            if after
            else None
        ),
    )


def field_index(name: str, field: str, kind: str) -> Any:
    from retrieval_svc.search.index import HNSW_LINKED_FIELDS, payload_index_params

    if name == "after":
        return payload_index_params(field, kind)
    if name == "after_language":  # the alternative: language linked too
        params = payload_index_params(field, kind)
        return qe.KeywordIndexParams(enable_hnsw=True) if field == "language" else params
    assert "language" not in HNSW_LINKED_FIELDS
    return {
        "keyword": qe.PayloadSchemaType.Keyword,
        "integer": qe.PayloadSchemaType.Integer,
        "float": qe.PayloadSchemaType.Float,
    }[kind]


def points(n: int, start: int, stop: int, rng: np.random.Generator, base: np.ndarray) -> list[qe.Point]:
    m = stop - start
    v = base[np.arange(start, stop) % len(base)] + rng.normal(scale=0.1 / np.sqrt(DIM), size=(m, DIM)).astype(
        np.float32
    )
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    creators = max(1, n // 11)
    out = []
    for i in range(m):
        j = start + i
        is_creator = j < creators
        terms = sorted(set(rng.integers(0, 20_000, size=12).tolist()))
        vectors: dict[str, Any] = {
            "dense": v[i].tolist(),
            "bm25": qe.SparseVector(terms, [1.0] * len(terms)),
        }
        if is_creator:
            grams = sorted(set(rng.integers(0, 5_000, size=10).tolist()))
            vectors["name"] = qe.SparseVector(grams, [0.3] * len(grams))
        payload = {
            "kind": "creator" if is_creator else "post",
            "category": f"c{j % 12}",
            "language": LANGUAGES[j % len(LANGUAGES)],
            "access": "public" if is_creator else ACCESS[j % 3],
            "creator_id": f"cr{j % creators}",
            "mature": int(j % 10 == 0),
            "published_at": float(rng.uniform(0, 1e7)),
        }
        out.append(qe.Point(str(uuid.UUID(int=j + 1)), vectors, payload))
    return out


def dense_recall(shard: Any, base: np.ndarray, rng: np.random.Generator, n: int = 40) -> dict[str, Any]:
    """Recall@100 and @10 of the built graph (hnsw_ef 128, as served) against exact search, for `n`
    queries near the data (perturbed centres), unfiltered and filtered to one category."""
    from retrieval_svc.search.index import dense_search_params

    out: dict[str, Any] = {}
    category = qe.Filter(must=[qe.FieldCondition("category", match=qe.MatchValue("c1"))])
    for label, flt, acorn in (
        ("recall", None, False),
        ("recall_category", category, False),
        ("recall_category_acorn", category, True),
    ):
        r100, r10 = [], []
        for i in range(n):
            v = base[i * 7 % len(base)] + rng.normal(scale=0.3 / np.sqrt(DIM), size=DIM).astype(np.float32)
            v = (v / np.linalg.norm(v)).tolist()

            def ids(params: Any, vec: list[float] = v, f: Any = flt) -> list[str]:
                req = qe.QueryRequest(
                    limit=100, query=qe.Query.Nearest(vec, using="dense"), filter=f, params=params
                )
                return [str(p.id) for p in shard.query(req)]

            exact = ids(qe.SearchParams(exact=True))
            got = ids(dense_search_params(128, acorn=acorn))
            r100.append(len(set(got) & set(exact)) / max(1, len(exact)))
            r10.append(len(set(got[:10]) & set(exact[:10])) / max(1, len(exact[:10])))
        out[f"{label}_at_100"] = round(float(np.mean(r100)), 4)
        out[f"{label}_at_10"] = round(float(np.mean(r10)), 4)
    return out


def build(name: str, n: int) -> dict[str, Any]:
    from retrieval_svc.search.documents import PAYLOAD_INDEXES

    root = WORK / name
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    shard = qe.EdgeShard.create(str(root), shard_config(name))
    for field, kind in PAYLOAD_INDEXES.items():
        if field in ("kind", "category", "language", "access", "creator_id", "mature", "published_at"):
            shard.update(qe.UpdateOperation.create_field_index(field, field_index(name, field, kind)))
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3000, DIM)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    t0 = time.perf_counter()
    for start in range(0, n, 2048):
        shard.update(qe.UpdateOperation.upsert_points(points(n, start, min(n, start + 2048), rng, base)))
    upsert_s = time.perf_counter() - t0
    load0, cpu0, t0 = load_average(), _cpu_s(), time.perf_counter()
    shard.optimize()
    shard.flush()
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    info = shard.info()
    recall = dense_recall(shard, base, rng)
    shard.close()
    disk = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    shutil.rmtree(root, ignore_errors=True)
    out = {
        "config": name,
        "points": n,
        "upsert_s": round(upsert_s, 1),
        "optimize_wall_s": round(wall, 1),
        "optimize_cpu_s": round(cpu, 1),
        "segments": info.segments_count,
        **recall,
        "disk_mb": round(disk / 2**20, 1),
        "load_average": [load0, load_average()],
    }
    print(json.dumps(out), flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, nargs="+", default=[200_000])
    parser.add_argument(
        "--configs", nargs="+", default=["after", "before"], choices=["before", "after", "after_language"]
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    command = "python -m bench.latency.hnsw_build " + " ".join(argv or sys.argv[1:])
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    runs = [{**build(c, n), "command": command, "date": date} for n in args.points for c in args.configs]
    if not args.no_write:
        write_runs(runs)
    return 0


def write_runs(runs: Sequence[dict[str, Any]], path: Path = RESULTS_JSON) -> None:
    """Adds `runs` to the results file; a new run replaces an earlier one of the same config and size."""
    try:
        old = json.loads(path.read_text())["runs"]
    except (OSError, ValueError, KeyError):
        old = []
    new = {(r["config"], r["points"]) for r in runs}
    kept = [r for r in old if (r["config"], r["points"]) not in new]
    result = {
        "benchmark": "search_hnsw_build",
        "machine": describe(),
        "runs": sorted([*kept, *runs], key=lambda r: (r["points"], r["config"] != "before")),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
