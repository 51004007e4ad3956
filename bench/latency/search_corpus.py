"""How long the sparse retrievers' posting lists are on the search latency bench's generated catalogue.

    .venv/bin/python -m bench.latency.search_corpus [--work var/bench/search_latency/c100000-p1000000-u10000]
                                                    [--creators 100000 --posts 1000000] [--queries 200]

Regenerates the catalogue bench/bench_search_latency.py indexes (same generator, seed and scale) and
counts, with the index's own tokenizer and trigrams, each BM25 term's and each name trigram's document
frequency; then, for the bench's queries, the postings a query's distinct terms (trigrams) touch. With
the index of that scale present under `--work`, it also times each query's BM25 and name retriever run
alone in the engine (CPU, best of 3, limit = the service's depth) and relates the time to the postings.
Why: a generated catalogue with a small vocabulary makes every posting list long, so the sparse
retrievers cost more per query than on real text (README, "Search latency"). Writes
bench/results/search_corpus.json and the "Search — posting lists of the generated catalogue" section.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WORK = ROOT / "var" / "bench" / "search_latency" / "c100000-p1000000-u10000"


def document_frequencies(token_sets: Iterable[Iterable[str]]) -> collections.Counter[str]:
    """How many of the token sets hold each token (each set counted once per token)."""
    df: collections.Counter[str] = collections.Counter()
    for tokens in token_sets:
        df.update(set(tokens))
    return df


def postings(df: Mapping[str, int], tokens: Iterable[str]) -> int:
    """Postings a query reads: the document frequencies of its distinct tokens, summed."""
    return sum(df.get(t, 0) for t in set(tokens))


def summarize(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


def engine_times(work: Path, queries: Sequence[str]) -> dict[str, list[float]]:
    """CPU ms (best of 3) of each query's BM25 and name retriever run alone, as the service runs them."""
    import qdrant_edge as qe

    from kindred.text.names import name_vector
    from retrieval_svc.search.index import BM25, NAME, SearchIndex, sparse_query
    from retrieval_svc.search.params import SearchParams

    params = SearchParams()
    index = SearchIndex.open(work / "index")
    out: dict[str, list[float]] = {BM25: [], NAME: []}
    try:
        for q in queries:
            for name, vector, threshold in (
                (BM25, index.bm25.query(q), None),
                (NAME, name_vector(q), params.name_min_score),
            ):
                request = qe.QueryRequest(
                    limit=params.depth,
                    query=qe.Query.Nearest(sparse_query(vector), using=name),
                    score_threshold=threshold,
                )
                best = float("inf")
                for _ in range(3):
                    t0 = time.process_time()
                    if len(vector):  # a query with no term (trigram) runs no retriever
                        index.query(request)
                    best = min(best, time.process_time() - t0)
                out[name].append(best * 1e3)
    finally:
        index.close()
    return out


def timing_summary(ms: Sequence[float], reads: Sequence[int]) -> dict[str, float]:
    """Mean CPU per query, its correlation with the postings read, and ns per posting overall."""
    a, b = np.asarray(ms, dtype=float), np.asarray(reads, dtype=float)
    return {
        "cpu_ms_mean": round(float(a.mean()), 3),
        "correlation_with_postings": round(float(np.corrcoef(a, b)[0, 1]), 3),
        "ns_per_posting": round(float(a.sum() / b.sum() * 1e6), 1) if b.sum() else float("nan"),
    }


def render(r: Mapping[str, Any]) -> str:
    v, q = r["vocabulary"], r["postings_per_query"]
    lines = [
        "## Search — posting lists of the generated catalogue",
        "",
        f"`{r['command']}` — {r['date']}, {r['machine'].get('cpu_model', '')} × "
        f"{r['machine'].get('nproc', '')}.",
        "",
        f"{v['documents']:,} documents ({v['creators']:,} creators): **{v['bm25_terms']:,} distinct BM25 "
        f"terms** and **{v['name_trigrams']:,} distinct trigrams over the creator names**. Postings a query "
        f"reads, over {r['queries']} of the latency bench's queries (mean / median / max): BM25 "
        f"{q['bm25']['mean']:,.0f} / {q['bm25']['median']:,.0f} / {q['bm25']['max']:,.0f}, names "
        f"{q['name']['mean']:,.0f} / {q['name']['median']:,.0f} / {q['name']['max']:,.0f}; word-initial "
        f"trigrams (`'  c'`) are {q['word_initial_trigram_share']:.0%} of the name postings.",
    ]
    if r.get("engine"):
        e = r["engine"]
        lines += [
            "",
            "Each retriever run alone in the engine on the served index (CPU, best of 3):",
            "",
            "| retriever | CPU ms per query | correlation with postings read | ns per posting |",
            "|---|---|---|---|",
        ]
        for name, t in e.items():
            lines.append(
                f"| {name} | {t['cpu_ms_mean']:.2f} | {t['correlation_with_postings']:.2f} "
                f"| {t['ns_per_posting']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--creators", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    from bench.bench_search_latency import build_catalogue, make_queries
    from bench.latency.machine import describe
    from bench.results_md import write_results
    from kindred.text.names import trigrams
    from kindred.text.tokenize import Bm25, tokenize
    from retrieval_svc.search.bulk import catalogue_docs

    catalogue = build_catalogue(args.creators, args.posts, seed=7, back_days=120.0)
    queries_path = args.work / "queries.json"
    queries = json.loads(queries_path.read_text()) if queries_path.is_file() else make_queries(catalogue)
    queries = queries[: args.queries]
    tokenizer = Bm25().tokenizer  # what the bench's index is built with (Bm25.fit's default)
    df = document_frequencies(tokenize(d.text, tokenizer) for d in catalogue_docs(catalogue))
    tdf = document_frequencies(trigrams(c.name) for c in catalogue.creators)
    bm25_reads = [postings(df, tokenize(q, tokenizer)) for q in queries]
    name_reads = [postings(tdf, trigrams(q)) for q in queries]
    initial = sum(postings(tdf, [g for g in trigrams(q) if g.startswith("  ")]) for q in queries)
    result: dict[str, Any] = {
        "benchmark": "search_corpus",
        "command": " ".join(
            ["python -m bench.latency.search_corpus", *(argv if argv is not None else sys.argv[1:])]
        ),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": describe(),
        "queries": len(queries),
        "vocabulary": {
            "documents": len(catalogue.creators) + len(catalogue.posts),
            "creators": len(catalogue.creators),
            "bm25_terms": len(df),
            "name_trigrams": len(tdf),
        },
        "postings_per_query": {
            "bm25": summarize(bm25_reads),
            "name": summarize(name_reads),
            "word_initial_trigram_share": round(initial / max(1, sum(name_reads)), 3),
        },
    }
    if (args.work / "index").is_dir():
        times = engine_times(args.work, queries)
        result["engine"] = {
            name: timing_summary(ms, reads)
            for name, ms, reads in (("bm25", times["bm25"], bm25_reads), ("name", times["name"], name_reads))
        }
    print(render(result))
    if not args.no_write:
        out = write_results("search_corpus", result, render(result))
        print(f"wrote {out} and the RESULTS.md section")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
