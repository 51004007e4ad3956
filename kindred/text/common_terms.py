"""Which query terms are too common to find BM25 candidates by (Lucene's "common terms" idea).

A sparse query reads every posting of each of its terms. A term in a large share of the documents
makes a query read hundreds of thousands of postings while saying little about which documents come
first: on the search latency bench's catalogue with real words, "cell" is in 49% of the documents and
each of the eight heaviest queries holds it (bench.latency.search_corpus). So retrieval_svc looks the
candidates up by the rarer terms only and scores those candidates with every term (a nested prefetch,
retrieval_svc.search.query). Measured on SciFact (bench.search.common_terms): at a 10% cutoff the top
100 of the cut query, re-scored with every term, give NDCG@10 0.7002 against 0.7001 uncut, at 929
postings per query against 3,878.

The engine applies IDF from its own live counts and exposes no document frequencies, so an index keeps
its own: `TermStats`, counted when a bulk load fits BM25 and stored in the index's meta.json. It is a
snapshot of the terms above `floor` at build time. Items written later do not update it; a stale count
only changes which terms find candidates, never a score.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

# Terms in at most this share of the documents are not stored: a cutoff below it drops nothing more.
STATS_FLOOR: Final = 0.01


@dataclasses.dataclass(frozen=True)
class TermStats:
    """Document frequencies of a corpus's common terms: those in more than `floor` of its `n_docs`."""

    n_docs: int
    df: Mapping[str, int]
    floor: float = STATS_FLOOR

    def __post_init__(self) -> None:
        if self.n_docs < 0 or not 0.0 <= self.floor < 1.0:
            raise ValueError(f"invalid term stats: n_docs={self.n_docs} floor={self.floor}")

    @classmethod
    def count(cls, documents: Iterable[Iterable[str]], *, floor: float = STATS_FLOOR) -> TermStats:
        """From each document's terms (repeats in one document count once)."""
        df: Counter[str] = Counter()
        n = 0
        for terms in documents:
            df.update(set(terms))
            n += 1
        keep = {t: c for t, c in df.items() if c > floor * n}
        return cls(n_docs=n, df=dict(sorted(keep.items(), key=lambda tc: (-tc[1], tc[0]))), floor=floor)

    def common(self, share: float) -> frozenset[str]:
        """The terms in more than `share` of the documents (a share below `floor` acts as `floor`)."""
        return frozenset(t for t, c in self.df.items() if c > share * self.n_docs)

    def to_dict(self) -> dict[str, Any]:
        return {"n_docs": self.n_docs, "floor": self.floor, "df": dict(self.df)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TermStats:
        return cls(
            n_docs=int(data["n_docs"]),
            floor=float(data["floor"]),
            df={str(t): int(c) for t, c in data["df"].items()},
        )


def candidate_terms(terms: Sequence[str], common: frozenset[str]) -> list[str]:
    """`terms` without the `common` ones (`TermStats.common`); all of them if none would remain (a query
    of common terms only must still find something)."""
    return [t for t in terms if t not in common] or list(terms)


__all__ = ["STATS_FLOOR", "TermStats", "candidate_terms"]
