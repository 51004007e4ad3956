"""Does an int8 *query* encoder keep SciFact's dense quality? (documents stay fp32-encoded)

    .venv/bin/python -m bench.latency.query_int8 --int8-models DIR [--fp32-models DIR]

The search index holds fp32 MiniLM document vectors; only the query side would switch to the
per-channel dynamic-int8 export (`python -m trainer.text_encoder export --int8`), which runs about 2×
faster per query on this machine. This scores dense retrieval (exact scan, so the index plays no part)
on BEIR SciFact's training queries with fp32 queries and with int8 queries against the same fp32
corpus vectors, plus each query encoder's single-query latency, and writes
bench/results/search_query_int8.json. Nothing is learned, so no cross-validation is needed.
The fp32 corpus vectors come from bench_search_scifact's cache when it holds them for this model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.bench_search_scifact import cached_embeddings  # noqa: E402
from bench.latency.machine import describe, load_average  # noqa: E402

RESULTS_JSON = ROOT / "bench" / "results" / "search_query_int8.json"
DEPTH = 100
# Quality bar for serving the int8 query encoder by default: NDCG@10 within this of fp32 queries.
MAX_NDCG_LOSS = 0.005


def main(argv: Sequence[str] | None = None) -> int:
    from bench.search import metrics as M
    from bench.search import scifact
    from kindred.text.encoder import TextEncoder, measure_latency

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fp32-models", type=Path, default=ROOT / "var" / "bench" / "models")
    parser.add_argument("--int8-models", type=Path, required=True)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    data = scifact.load()
    qrels = scifact.load_qrels(data.train_qrels_path)
    docs = list(data.corpus.values())
    ids = [d.doc_id for d in docs]
    fp32 = TextEncoder.from_registry(args.fp32_models)
    int8 = TextEncoder.from_registry(args.int8_models)
    t0 = time.perf_counter()
    emb, _ = cached_embeddings(
        fp32, [d.full_text for d in docs], "corpus", lambda m: print(f"[query-int8] {m}", flush=True)
    )
    corpus_s = time.perf_counter() - t0
    qids = sorted(qrels)
    texts = [data.queries[q] for q in qids]
    rows: dict[str, Any] = {}
    for label, enc in (("fp32", fp32), ("int8", int8)):
        vecs = enc.encode(texts)
        scores = vecs @ emb.T
        run = {}
        for qid, row in zip(qids, scores, strict=True):
            top = np.argsort(-row)[:DEPTH]
            run[qid] = {ids[int(d)]: float(row[d]) for d in top}
        rows[label] = {
            **{k: round(v, 4) for k, v in M.evaluate(run, qrels).items()},
            "encode_one": measure_latency(enc, texts[:300]),
            "model": enc.version,
        }
        print(f"[query-int8] {label}: {json.dumps(rows[label])}", flush=True)
    f32 = fp32.encode(texts[:300])
    i8 = int8.encode(texts[:300])
    cos = np.sum(f32 * i8, axis=1)
    loss = rows["fp32"]["ndcg@10"] - rows["int8"]["ndcg@10"]
    result = {
        "benchmark": "search_query_int8",
        "command": "python -m bench.latency.query_int8 " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": describe(),
        "load_average": load_average(),
        "queries": len(qids),
        "corpus_vectors_s": round(corpus_s, 1),
        "dense_exact": rows,
        "ndcg10_loss": round(loss, 4),
        "query_cosine_fp32_vs_int8": {"min": round(float(cos.min()), 4), "mean": round(float(cos.mean()), 4)},
        "quality_holds": bool(loss <= MAX_NDCG_LOSS),
        "max_ndcg_loss": MAX_NDCG_LOSS,
    }
    print(json.dumps(result, indent=2))
    if not args.no_write:
        RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_JSON.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
