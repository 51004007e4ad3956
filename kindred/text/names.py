"""Typo-tolerant creator-name matching with character-trigram sparse vectors.

Why trigrams (and not edit-distance re-scoring): a trigram vector goes into Qdrant's sparse index like
the BM25 one, so a misspelt name *retrieves* the right creator from the whole catalogue inside the engine;
edit distance can only re-order candidates something else already found. One typo changes at most three
of a word's trigrams, so "taylr swift" still shares 10 of its 12 trigrams with "Taylor Swift".

Trigrams follow PostgreSQL's pg_trgm: the name is normalised (NFKC, casefold, accents folded — fans type
"beyonce"), split into words on anything not a letter or digit, and each word is padded with two spaces
in front and one behind ("  cat " → "  c", " ca", "cat", "at "). Word order does not matter, and short
words still yield trigrams.

Vectors: a name's distinct trigrams, each weighted 1/sqrt(n), so the dot product of two name vectors is
the cosine similarity of their trigram sets, |A ∩ B| / sqrt(|A|·|B|), in [0, 1]. Index the name vector in
a sparse vector *without* the IDF modifier, and query with `query_vector` (the same vector): Qdrant's
score is then exactly `similarity(query, name)`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Final

from kindred.text.tokenize import SparseTerms, normalize, sparse_from_weights

TRIGRAM_PREFIX: Final = "tri:"  # keeps trigram indices apart from word indices if ever stored together
MAX_NAME_CHARS: Final = 200
DEFAULT_MIN_SIMILARITY: Final = 0.3
_SPLIT = re.compile(r"[^\w]+|_")


def name_words(name: str) -> list[str]:
    """Normalised words of a name: NFKC, casefold, accents folded, split on non-alphanumerics."""
    norm = normalize(name[:MAX_NAME_CHARS], fold_accents=True)
    return [w for w in _SPLIT.split(norm) if w]


def trigrams(name: str) -> list[str]:
    """Distinct padded trigrams of a name, in first-seen order (pg_trgm's construction)."""
    out: dict[str, None] = {}
    for word in name_words(name):
        padded = f"  {word} "
        for i in range(len(padded) - 2):
            out[padded[i : i + 3]] = None
    return list(out)


def name_vector(name: str) -> SparseTerms:
    """The sparse vector of a name: its distinct trigrams, weight 1/sqrt(n) each (unit L2 norm)."""
    grams = trigrams(name)
    if not grams:
        return SparseTerms((), ())
    w = 1.0 / math.sqrt(len(grams))
    return sparse_from_weights({TRIGRAM_PREFIX + g: w for g in grams})


# Queries and documents use the same vector: the score is a symmetric similarity.
query_vector = name_vector


def similarity(a: str, b: str) -> float:
    """Cosine similarity of the two names' trigram sets, in [0, 1] (1.0 = same normalised words)."""
    ga, gb = set(trigrams(a)), set(trigrams(b))
    if not ga or not gb:
        return 0.0
    return len(ga & gb) / math.sqrt(len(ga) * len(gb))


def rank_names(
    query: str, names: Sequence[str], *, k: int = 10, min_similarity: float = DEFAULT_MIN_SIMILARITY
) -> list[tuple[int, float]]:
    """(position in `names`, similarity) of the k best names at or above `min_similarity`, best first.

    An in-process reference (and a re-scorer for candidates from another source); the index does the
    same through the sparse vectors. Ties keep the input order.
    """
    gq = set(trigrams(query))
    if not gq or k <= 0:
        return []
    scored = []
    for i, name in enumerate(names):
        gn = set(trigrams(name))
        if gn:
            s = len(gq & gn) / math.sqrt(len(gq) * len(gn))
            if s >= min_similarity:
                scored.append((i, s))
    scored.sort(key=lambda t: (-t[1], t[0]))
    return scored[:k]


__all__ = [
    "DEFAULT_MIN_SIMILARITY",
    "name_vector",
    "name_words",
    "query_vector",
    "rank_names",
    "similarity",
    "trigrams",
]
