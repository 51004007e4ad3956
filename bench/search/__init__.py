"""Search-quality benchmarks on public data (BEIR SciFact): loading, metrics, TREC runs."""
