"""Kindred's offline benchmarks (quality on public data, latency on generated data)."""
