"""Recommendation-quality benchmark: HetRec Last.fm protocol, metrics, peer systems."""
