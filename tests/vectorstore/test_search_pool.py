"""The engine's search pool: every served shard opens with the threads KINDRED_ENGINE_SEARCH_THREADS asks.

Where a test must tell the pool from what the engine starts unasked (8 threads on 2 CPUs here) it asks for 3.
qdrant-edge names its search pool's threads "edge-search-<n>" and starts them when a shard is opened, so
the pool a shard got is counted from this process's threads.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from vs_data import random_catalogue

from bench.latency.machine import edge_search_threads
from kindred.config import Settings, SettingsError
from kindred.text.tokenize import Bm25
from kindred.vectorstore import index_creators, open_creator_index
from kindred.vectorstore.base import IndexPoint
from kindred.vectorstore.edge import EdgeIndex, search_pool_size
from retrieval_svc.search.index import SearchIndex


def settled_pool_threads(expected: int, timeout_s: float = 5.0) -> int:
    """The count once it equals `expected` (pools of shards closed by earlier tests wind down
    asynchronously), or whatever it is when the time is up."""
    deadline = time.monotonic() + timeout_s
    while (n := edge_search_threads()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return n


@pytest.fixture
def baseline() -> int:
    time.sleep(0.2)
    return edge_search_threads()


def _shard(tmp_path: Path) -> Path:
    path = tmp_path / "shard"
    index = EdgeIndex.create(path, dim=4, vector_name="v")
    index.upsert([IndexPoint(f"c{i}", [1.0, float(i), 0.0, 0.0], {}) for i in range(20)])
    index.close()
    return path


@pytest.mark.parametrize("threads", [1, 3])
def test_an_edge_index_opens_with_the_pool_it_is_given(tmp_path: Path, baseline: int, threads: int) -> None:
    path = _shard(tmp_path)
    index = EdgeIndex.open(path, dim=4, vector_name="v", search_threads=threads)
    try:
        assert settled_pool_threads(baseline + threads) == baseline + threads
        assert [h.point_id for h in index.search([1.0, 0.0, 0.0, 0.0], 1)] == ["c0"]
    finally:
        index.close()
    assert settled_pool_threads(baseline) == baseline


def test_a_shard_keeps_no_pool_size_from_an_earlier_opening(tmp_path: Path, baseline: int) -> None:
    """qdrant-edge writes the size into the shard: every opening says its own, so none inherits one."""
    path = _shard(tmp_path)
    for threads in (3, 1):
        index = EdgeIndex.open(path, dim=4, vector_name="v", search_threads=threads)
        try:
            assert settled_pool_threads(baseline + threads) == baseline + threads
        finally:
            index.close()
    assert search_pool_size(2) == 2
    for bad in (0, -1):
        with pytest.raises(ValueError, match="search threads"):
            search_pool_size(bad)


def test_a_load_declaring_other_vectors_is_refused(tmp_path: Path) -> None:
    path = _shard(tmp_path)
    with pytest.raises(Exception, match="cannot open edge shard"):
        EdgeIndex.open(path, dim=8, vector_name="v")


def test_the_served_creator_index_takes_the_setting(tmp_path: Path, baseline: int) -> None:
    settings = Settings(data_dir=tmp_path, engine_search_threads=3)
    points, vectors = random_catalogue(50, 8, 3)
    index_creators(settings, "v1", [p.item_id for p in points], vectors, [dict(p.payload) for p in points])
    index = open_creator_index(settings)
    try:
        assert settled_pool_threads(baseline + 3) == baseline + 3
    finally:
        index.close()


@pytest.mark.parametrize("encoded_evidence", [False, True])
def test_a_search_index_opens_with_its_own_vectors_and_the_pool(
    tmp_path: Path, baseline: int, encoded_evidence: bool
) -> None:
    root = tmp_path / "search"
    SearchIndex.create(
        root, dim=8, bm25=Bm25(), encoder_version="e", encoded_evidence=encoded_evidence
    ).close()
    index = SearchIndex.open(root, search_threads=3)
    try:
        assert index.encoded_evidence is encoded_evidence
        assert index.count() == 0
        assert settled_pool_threads(baseline + 3) == baseline + 3
    finally:
        index.close()


def test_a_negative_setting_is_refused_by_name() -> None:
    for bad in ("0", "-1"):
        with pytest.raises(SettingsError, match="KINDRED_ENGINE_SEARCH_THREADS"):
            Settings.from_env({"KINDRED_ENGINE_SEARCH_THREADS": bad})
    assert Settings.from_env({}).engine_search_threads == 1
