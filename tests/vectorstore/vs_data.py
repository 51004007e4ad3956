"""Test data shared by the vector store tests (a uniquely named module: conftest is not importable)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kindred.vectorstore import IndexPoint, VectorIndex

LANGUAGES = ["en", "fr", "de"]
CATEGORIES = ["music", "art", "games", "podcasts", "writing"]

IndexFactory = Callable[[int], VectorIndex]


def random_catalogue(n: int, dim: int, seed: int = 0) -> tuple[list[IndexPoint], np.ndarray]:
    """n creators with unit vectors and varied payloads; returns the points and the (n, dim) matrix."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    points = [
        IndexPoint(
            f"c{i}",
            vectors[i],
            {
                "language": LANGUAGES[int(rng.integers(len(LANGUAGES)))],
                "category": CATEGORIES[int(rng.integers(len(CATEGORIES)))],
                "mature": bool(rng.random() < 0.3),
                "name": f"Creator {i}",
            },
        )
        for i in range(n)
    ]
    return points, vectors
