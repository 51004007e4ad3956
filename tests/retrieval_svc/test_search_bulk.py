"""Bulk indexing: progress, an interrupted run that resumes without re-encoding everything and
without duplicates, and a second run that has nothing to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from search_testkit import creators, posts, write_tiny_encoder

from kindred.data.catalogue import Catalogue
from kindred.text.encoder import TextEncoder
from retrieval_svc.search.bulk import CHECKPOINT_FILE, bulk_index, catalogue_docs
from retrieval_svc.search.index import SearchIndex
from retrieval_svc.search.query import HybridSearcher


class CountingEncoder:
    """The real encoder, counting the texts it encodes."""

    def __init__(self, inner: TextEncoder) -> None:
        self.inner = inner
        self.version = inner.version
        self.dim = inner.dim
        self.encoded = 0

    def encode(self, texts: Any, *, batch_size: int = 32) -> np.ndarray:
        self.encoded += len(texts)
        return self.inner.encode(texts, batch_size=batch_size)


class Interrupted(Exception):
    pass


@pytest.fixture()
def catalogue() -> Catalogue:
    return Catalogue(creators=creators(), posts=posts(per_creator=6))


def test_an_interrupted_run_resumes_without_reencoding_or_duplicates(
    tmp_path: Path, catalogue: Catalogue
) -> None:
    docs = catalogue_docs(catalogue)
    root = tmp_path / "index"
    encoder = CountingEncoder(write_tiny_encoder(tmp_path / "models"))

    def stop_at_second_checkpoint(done: int) -> None:
        if done >= 2 * 2 * 8:
            raise Interrupted

    with pytest.raises(Interrupted):
        bulk_index(
            root,
            docs,
            encoder,
            batch_size=8,
            checkpoint_every=2,
            progress=False,
            after_checkpoint=stop_at_second_checkpoint,
            log=lambda _m: None,
        )
    first_run = encoder.encoded
    assert first_run == 32 < len(docs)

    encoder.encoded = 0
    report = bulk_index(
        root, docs, encoder, batch_size=8, checkpoint_every=2, progress=False, log=lambda _m: None
    )
    assert report.resumed_from == 32
    assert encoder.encoded == report.encoded == len(docs) - 32  # nothing encoded twice
    assert report.points == len(docs)

    index = SearchIndex.open(root)
    try:
        stored = list(index.iter_ids())
        assert len(stored) == len(set(stored)) == len(docs)  # no duplicates
        assert set(stored) == {d.item_id for d in docs}
        hits = HybridSearcher(index, encoder).search("jazz piano", 5).hits
        assert hits and hits[0].payload["category"] == "Music"
    finally:
        index.close()

    encoder.encoded = 0
    again = bulk_index(root, docs, encoder, batch_size=8, progress=False, log=lambda _m: None)
    assert again.encoded == encoder.encoded == 0 and again.points == len(docs)


@pytest.mark.slow
def test_a_crash_between_checkpoints_rewrites_only_the_last_batches(
    tmp_path: Path, catalogue: Catalogue
) -> None:
    # Writes after the last checkpoint are in the shard already; re-writing them must replace, not add.
    docs = catalogue_docs(catalogue)
    root = tmp_path / "index"
    encoder = CountingEncoder(write_tiny_encoder(tmp_path / "models"))
    with pytest.raises(Interrupted):
        bulk_index(
            root,
            docs,
            encoder,
            batch_size=8,
            checkpoint_every=3,
            progress=False,
            after_checkpoint=lambda done: (_ for _ in ()).throw(Interrupted()),
            log=lambda _m: None,
        )
    # Simulate writes past the checkpoint: upsert the next two batches without recording them.
    index = SearchIndex.open(root)
    index.upsert(docs[24:40], encoder.encode([d.text for d in docs[24:40]]))
    index.close()
    encoder.encoded = 0
    report = bulk_index(
        root, docs, encoder, batch_size=8, checkpoint_every=3, progress=False, log=lambda _m: None
    )
    assert report.resumed_from == 24 and encoder.encoded == len(docs) - 24
    assert report.points == len(docs)


@pytest.mark.slow
def test_another_catalogue_reindexes_everything(tmp_path: Path, catalogue: Catalogue) -> None:
    encoder = CountingEncoder(write_tiny_encoder(tmp_path / "models"))
    root = tmp_path / "index"
    docs = catalogue_docs(catalogue)
    bulk_index(root, docs[:20], encoder, batch_size=8, progress=False, log=lambda _m: None)
    assert (root / CHECKPOINT_FILE).is_file()
    encoder.encoded = 0
    report = bulk_index(root, docs, encoder, batch_size=8, progress=False, log=lambda _m: None)
    assert report.resumed_from == 0 and encoder.encoded == len(docs) and report.points == len(docs)


def test_the_index_command_indexes_a_catalogue_and_reports(tmp_path: Path, catalogue: Catalogue) -> None:
    import os
    import subprocess
    import sys

    catalogue.write(tmp_path)
    write_tiny_encoder(tmp_path / "models")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINDRED_")}
    out = subprocess.run(
        [sys.executable, "-m", "kindred", "index", "--data-dir", str(tmp_path), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert f"done: {len(catalogue_docs(catalogue))} items searchable" in out.stdout
    assert "terms in more than 10% of the documents" in out.stdout
    index = SearchIndex.open(tmp_path / "index" / "search")
    try:
        assert index.count() == len(catalogue_docs(catalogue))
        # The common terms' counts are kept with the index (kindred.text.common_terms).
        assert index.term_stats is not None and index.term_stats.n_docs == index.count()
    finally:
        index.close()
