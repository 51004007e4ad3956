"""Shared by the list-based sources (item-to-item, social, trending): read ranked id lists, filter them
inside the vector engine, interleave them.

The trainer writes these lists to the online store as `{"ids": [...], "scores": [...]}`; they carry no
payloads. The request filter (languages, categories, maturity, excluded and already-followed ids) is
applied by asking the vector index which listed ids pass it (`VectorIndex.fetch(ids, filter)`), so every
source, list-based or ANN, has the one filter semantics the engine implements, and an id missing from
the served index (a creator deleted since training) drops out the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from kindred import telemetry_schema as schema
from kindred.telemetry import get_tracer
from kindred.vectorstore import PayloadFilter, VectorIndex
from retrieval_svc.sources import SourceHit

# Ids checked against the filter per engine call: one call usually suffices, and stays ~1 ms.
CHUNK = 256


def read_ranked(row: Mapping[str, Any] | None) -> list[tuple[str, float]]:
    """(id, score) pairs of one stored list, best first; a list without usable scores ranks 1, 1/2, ..."""
    if not row:
        return []
    ids = [str(i) for i in row.get("ids") or []]
    scores = list(row.get("scores") or [])
    if len(scores) != len(ids):
        scores = [1.0 / (r + 1) for r in range(len(ids))]
    return [(i, float(s)) for i, s in zip(ids, scores, strict=True)]


def filter_in_engine(
    index: VectorIndex, ranked: Sequence[SourceHit], flt: PayloadFilter, n: int, *, source: str
) -> list[SourceHit]:
    """The first `n` of `ranked` (kept in order) that are in the index and pass `flt`, as the engine says."""
    passing: list[SourceHit] = []
    tracer = get_tracer(__name__)
    start = 0
    while len(passing) < n and start < len(ranked):
        # Ask for a little more than still missing: most ids pass an ordinary filter.
        size = min(CHUNK, max(2 * (n - len(passing)), 32))
        chunk = ranked[start : start + size]
        start += len(chunk)
        with tracer.start_as_current_span(schema.SPAN_QDRANT_QUERY) as span:
            span.set_attribute(schema.SOURCE, source)
            span.set_attribute(schema.CANDIDATES, len(chunk))
            ok = {p.point_id for p in index.fetch([h.item_id for h in chunk], flt)}
        passing.extend(h for h in chunk if h.item_id in ok)
    return passing[:n]


def interleave(lists: Iterable[Sequence[SourceHit]]) -> Iterator[SourceHit]:
    """Round-robin over `lists` (each contributes its best first), without repeating an id."""
    pending = [list(x) for x in lists]
    seen: set[str] = set()
    for rank in range(max((len(x) for x in pending), default=0)):
        for hits in pending:
            if rank < len(hits) and hits[rank].item_id not in seen:
                seen.add(hits[rank].item_id)
                yield hits[rank]


def count_phrase(n: int, one: str, many: str) -> str:
    """ "a friend of yours" / "3 of your friends": reasons read as sentences, not templates."""
    return one if n == 1 else many.format(n=n)
