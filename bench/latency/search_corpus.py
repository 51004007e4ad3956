"""How long the sparse retrievers' posting lists are on the search latency bench's catalogues.

    .venv/bin/python -m bench.latency.search_corpus [--texts generated real] [--creators 100000
                                                    --posts 1000000 --unique-texts 10000] [--queries 200]

Regenerates each catalogue bench/bench_search_latency.py indexes (same generator, seed and scale;
`real`: the same with real words, `--text real` there) and counts, with the index's own tokenizer and
trigrams, each BM25 term's and each name trigram's document frequency; then, for the bench's queries,
the postings a query's distinct terms (trigrams) touch. With the index of that scale and text built
(its directory under var/bench/search_latency/), it also times each query's BM25 and name retriever
run alone in the engine (CPU, best of 3, limit = the service's depth) and relates the time to the
postings.
Why: a generated catalogue with a small vocabulary makes every posting list long, so the sparse
retrievers cost more per query than on real text (README, "Search latency"); the real-word catalogue
measures by how much. Writes bench/results/search_corpus.json and the "Search — posting lists,
generated and real words" section.
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
    lines = [
        "## Search — posting lists, generated and real words",
        "",
        f"`{r['command']}` — {r['date']}, {r['machine'].get('cpu_model', '')} × "
        f"{r['machine'].get('nproc', '')}.",
        "",
        f"Postings a query reads, over {r['queries']} of each catalogue's latency bench queries (mean / "
        "median / max); `real` is the same catalogue with real words (bench/latency/real_text.py: SciFact "
        "titles and abstract sentences, HetRec artist names); word-initial trigrams are `'  c'`.",
        "",
        "| catalogue | documents (creators) | distinct BM25 terms | distinct name trigrams | BM25 postings "
        "| name postings | word-initial share of name postings |",
        "|---|---|---|---|---|---|---|",
    ]
    for text, c in r["catalogues"].items():
        v, q = c["vocabulary"], c["postings_per_query"]
        spread = " | ".join(
            f"{q[k]['mean']:,.0f} / {q[k]['median']:,.0f} / {q[k]['max']:,.0f}" for k in ("bm25", "name")
        )
        lines.append(
            f"| {text} | {v['documents']:,} ({v['creators']:,}) | **{v['bm25_terms']:,}** "
            f"| **{v['name_trigrams']:,}** | {spread} | {q['word_initial_trigram_share']:.0%} |"
        )
    timed = {text: c["engine"] for text, c in r["catalogues"].items() if c.get("engine")}
    if timed:
        lines += [
            "",
            "Each retriever run alone in the engine on the catalogue's served index (CPU, best of 3):",
            "",
            "| catalogue | retriever | CPU ms per query | correlation with postings read | ns per posting |",
            "|---|---|---|---|---|",
        ]
        for text, engine in timed.items():
            for name, t in engine.items():
                lines.append(
                    f"| {text} | {name} | {t['cpu_ms_mean']:.2f} | {t['correlation_with_postings']:.2f} "
                    f"| {t['ns_per_posting']:.1f} |"
                )
    return "\n".join(lines) + "\n"


def measure_catalogue(
    text: str, creators: int, posts: int, unique_texts: int, n_queries: int
) -> dict[str, Any]:
    """Vocabulary and postings per query of one catalogue; engine times if its index is built."""
    from bench.bench_search_latency import build_catalogue, make_queries, work_dir
    from kindred.text.names import trigrams
    from kindred.text.tokenize import Bm25, tokenize
    from retrieval_svc.search.bulk import catalogue_docs

    work = work_dir(creators, posts, unique_texts, text)
    catalogue = build_catalogue(creators, posts, seed=7, back_days=120.0, text=text)
    queries_path = work / "queries.json"
    queries = json.loads(queries_path.read_text()) if queries_path.is_file() else make_queries(catalogue)
    queries = queries[:n_queries]
    tokenizer = Bm25().tokenizer  # what the bench's index is built with (Bm25.fit's default)
    df = document_frequencies(tokenize(d.text, tokenizer) for d in catalogue_docs(catalogue))
    tdf = document_frequencies(trigrams(c.name) for c in catalogue.creators)
    bm25_reads = [postings(df, tokenize(q, tokenizer)) for q in queries]
    name_reads = [postings(tdf, trigrams(q)) for q in queries]
    initial = sum(postings(tdf, [g for g in trigrams(q) if g.startswith("  ")]) for q in queries)
    out: dict[str, Any] = {
        "work": work.name,
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
    if (work / "index").is_dir():
        times = engine_times(work, queries)
        out["engine"] = {
            name: timing_summary(ms, reads)
            for name, ms, reads in (("bm25", times["bm25"], bm25_reads), ("name", times["name"], name_reads))
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", nargs="+", choices=("generated", "real"), default=["generated", "real"])
    parser.add_argument("--creators", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--unique-texts", type=int, default=10_000, help="names the index directory")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    from bench.results_md import run_header, write_results

    catalogues = {
        text: measure_catalogue(text, args.creators, args.posts, args.unique_texts, args.queries)
        for text in args.texts
    }
    result: dict[str, Any] = {
        **run_header("search_corpus", "python -m bench.latency.search_corpus", argv),
        "queries": args.queries,
        "catalogues": catalogues,
    }
    print(render(result))
    if not args.no_write:
        out = write_results("search_corpus", result, render(result))
        print(f"wrote {out} and the RESULTS.md section")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
