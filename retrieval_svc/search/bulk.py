"""Bulk indexing of a catalogue into the search shard: batched, with progress, resumable.

Documents go in a fixed order (creators, then posts, as the catalogue lists them). After every
`checkpoint_every` batches the shard is flushed and `bulk.json` records how many documents are in,
with a fingerprint of the document list and the encoder version. A run that finds a checkpoint with
the same fingerprint resumes after the recorded position, so an interrupted run re-encodes at most the
batches since its last checkpoint; and since an item's point id is derived from its id, re-writing one
replaces it (never a duplicate). A different catalogue or encoder re-indexes everything.

An index created with `encoded_evidence` also stores each document's title and sentence vectors
(retrieval_svc/search/index.py), encoded in the same encoder call as its text: ~10 texts per document
instead of one. A resumed run follows what the existing index stores; asking for encoded evidence of
an index created without it fails (rebuild it).

The BM25 average document length is fitted on the whole document list when the index is created and
kept in the index's meta.json, so a resumed run weights documents exactly like the first one; the same
pass counts the corpus's common terms (kindred.text.common_terms), kept there too.

The shard is locked by the process that has it open: bulk-index while retrieval_svc is stopped (or
stream items through UpsertPosts / UpsertCreators while it runs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from kindred.data.catalogue import Catalogue
from kindred.fileio import write_text_atomic
from kindred.text.tokenize import Bm25
from retrieval_svc.search.documents import TITLE_KEY, SearchDoc, creator_doc, post_doc
from retrieval_svc.search.index import META_FILE, SearchIndex, encode_documents
from retrieval_svc.search.query import QueryEncoder

CHECKPOINT_FILE: Final = "bulk.json"
DEFAULT_BATCH: Final = 256


@dataclasses.dataclass(frozen=True)
class BulkReport:
    total: int
    resumed_from: int  # documents found already indexed by an earlier run
    encoded: int  # documents encoded by this run
    seconds: float
    encode_seconds: float
    points: int  # points in the shard at the end

    @property
    def docs_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


def catalogue_docs(catalogue: Catalogue) -> list[SearchDoc]:
    """Creators then posts; a post inherits its creator's maturity (so `exclude_mature` hides it)."""
    mature = {c.creator_id: c.mature for c in catalogue.creators}
    return [creator_doc(c) for c in catalogue.creators] + [
        post_doc(p, mature=mature.get(p.creator_id, False)) for p in catalogue.posts
    ]


def fingerprint(docs: Sequence[SearchDoc], encoder_version: str) -> str:
    h = hashlib.sha256(encoder_version.encode())
    for d in docs:
        h.update(f"\n{d.item_id}\t{len(d.text)}".encode())
    return h.hexdigest()[:32]


def bulk_index(
    root: Path,
    docs: Sequence[SearchDoc],
    encoder: QueryEncoder,
    *,
    batch_size: int = DEFAULT_BATCH,
    checkpoint_every: int = 4,
    rebuild: bool = False,
    optimize: bool = True,
    progress: bool = True,
    after_checkpoint: Callable[[int], None] | None = None,
    log: Callable[[str], None] = print,
    encoded_evidence: bool = False,
) -> BulkReport:
    """Indexes `docs` into the search index at `root`, resuming an interrupted run of the same docs.
    `encoded_evidence`: a new index also stores the title and sentence vectors (see the module doc)."""
    from tqdm import tqdm

    started = time.perf_counter()
    root = Path(root)
    if rebuild and root.exists():
        shutil.rmtree(root)
    fp = fingerprint(docs, encoder.version)
    checkpoint = _read_checkpoint(root)
    if (root / META_FILE).exists():
        index = SearchIndex.open(root)
        if index.dim != encoder.dim:
            index.close()
            raise ValueError(
                f"search index at {root} holds {index.dim}-d vectors, encoder {encoder.version} yields "
                f"{encoder.dim}-d: rebuild it (--rebuild)"
            )
        if encoded_evidence and not index.encoded_evidence:
            index.close()
            raise ValueError(
                f"search index at {root} was created without encoded evidence: rebuild it (--rebuild)"
            )
    else:
        log(f"fitting BM25 document length on {len(docs)} documents")
        bm25, term_stats = Bm25.fit_with_stats(d.text for d in docs)
        common = sorted(term_stats.common(0.1), key=lambda t: -term_stats.df[t])
        log(
            f"{len(common)} terms in more than 10% of the documents"
            + (f" ({', '.join(common[:5])}{', …' if len(common) > 5 else ''})" if common else "")
            + ": SearchParams.bm25_common_share can leave them out of the BM25 candidate lookup"
        )
        titles = Bm25.fit(str(d.payload.get(TITLE_KEY) or "") for d in docs)  # title BM25's length
        index = SearchIndex.create(
            root,
            dim=encoder.dim,
            bm25=bm25,
            encoder_version=encoder.version,
            title_avg_len=titles.avg_len,
            encoded_evidence=encoded_evidence,
            term_stats=term_stats,
        )
        checkpoint = {}
    done = int(checkpoint.get("done", 0)) if checkpoint.get("fingerprint") == fp else 0
    done = min(done, len(docs))
    if done:
        log(f"resuming: {done} of {len(docs)} documents already indexed")
    resumed_from = done
    encoded = 0
    encode_s = 0.0
    try:
        with tqdm(total=len(docs), initial=done, unit="doc", disable=not progress, smoothing=0.1) as bar:
            batches = 0
            while done < len(docs):
                batch = docs[done : done + batch_size]
                t0 = time.perf_counter()
                vectors, evidence = encode_documents(batch, encoder.encode, evidence=index.encoded_evidence)
                encode_s += time.perf_counter() - t0
                index.upsert(batch, vectors, evidence)
                done += len(batch)
                encoded += len(batch)
                batches += 1
                bar.update(len(batch))
                if batches % checkpoint_every == 0 or done == len(docs):
                    index.flush()
                    _write_checkpoint(root, {"fingerprint": fp, "done": done, "total": len(docs)})
                    if after_checkpoint is not None:
                        after_checkpoint(done)
        # HNSW over the sealed segments: after new writes, or if an earlier run stopped before it.
        if optimize and (encoded or not checkpoint.get("optimized")):
            log("building the HNSW index over the loaded segments")
            index.optimize()
            index.flush()
            _write_checkpoint(root, {"fingerprint": fp, "done": done, "total": len(docs), "optimized": True})
        points = index.count()
    finally:
        index.close()
    return BulkReport(
        total=len(docs),
        resumed_from=resumed_from,
        encoded=encoded,
        seconds=time.perf_counter() - started,
        encode_seconds=encode_s,
        points=points,
    )


def _read_checkpoint(root: Path) -> dict[str, Any]:
    try:
        data = json.loads((root / CHECKPOINT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_checkpoint(root: Path, data: dict[str, Any]) -> None:
    write_text_atomic(root / CHECKPOINT_FILE, json.dumps(data) + "\n")


__all__ = ["CHECKPOINT_FILE", "BulkReport", "bulk_index", "catalogue_docs", "fingerprint"]
