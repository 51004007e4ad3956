"""index_creators / open_creator_index: versioned builds, the CURRENT switch, and both backends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient
from vs_data import random_catalogue

from kindred.config import Settings
from kindred.errors import FailedPrecondition
from kindred.vectorstore import (
    HnswParams,
    PayloadFilter,
    VectorIndexError,
    creator_index_root,
    current_creator_version,
    index_creators,
    open_creator_index,
    promote_creator_index,
    prune_creator_indexes,
)
from kindred.vectorstore.edge import EdgeIndex


def _catalogue(n: int, dim: int, seed: int) -> tuple[list[str], np.ndarray, list[dict[str, object]]]:
    points, vectors = random_catalogue(n, dim, seed)
    return [p.item_id for p in points], vectors, [dict(p.payload) for p in points]


def test_edge_build_switches_current_and_old_readers_keep_working(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(FailedPrecondition, match="run the trainer"):
        open_creator_index(settings)

    ids, vectors, payloads = _catalogue(300, 16, seed=1)
    index_creators(settings, "v1", ids, vectors, payloads)
    assert current_creator_version(settings) == "v1"
    old = open_creator_index(settings)
    try:
        assert (old.version, old.dim, old.count()) == ("v1", 16, 300)

        # v2: other ids and other vectors; building it must not disturb the reader of v1.
        ids2, vectors2, payloads2 = _catalogue(120, 8, seed=2)
        ids2 = [f"n{i}" for i in range(120)]
        index_creators(settings, "v2", ids2, vectors2, payloads2)
        assert (creator_index_root(settings) / "CURRENT").read_text().strip() == "v2"

        assert old.search(vectors[5], 1)[0].point_id == "c5"
        new = open_creator_index(settings)
        try:
            assert (new.version, new.dim, new.count()) == ("v2", 8, 120)
            assert new.search(vectors2[9], 1)[0].point_id == "n9"
        finally:
            new.close()
    finally:
        old.close()

    manifest = json.loads((creator_index_root(settings) / "v2" / "manifest.json").read_text())
    assert manifest["dim"] == 8 and manifest["count"] == 120 and manifest["vector_name"] == "two_tower"
    # No temporary build directories or pointer files are left behind.
    assert sorted(p.name for p in creator_index_root(settings).iterdir()) == ["CURRENT", "v1", "v2"]


def test_edge_build_creates_the_hnsw_graph_and_payload_indexes(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    ids, vectors, payloads = _catalogue(2000, 32, seed=3)
    # A tiny full-scan threshold so searches really walk the graph instead of scanning 2000 points.
    index_creators(settings, "v1", ids, vectors, payloads, hnsw=HnswParams(full_scan_threshold_kb=1))
    index = open_creator_index(settings)
    assert isinstance(index, EdgeIndex)
    try:
        info = index.info()
        assert info["indexed_vectors"] == 2000
        assert info["payload_schema"] == {"category": "Keyword", "language": "Keyword", "mature": "Integer"}
        # HNSW (not exact) search at a reasonable ef still finds the true neighbours.
        rng = np.random.default_rng(4)
        recalls = []
        for _ in range(20):
            q = rng.normal(size=32).astype(np.float32)
            approx = {h.point_id for h in index.search(q, 10, hnsw_ef=128)}
            exact = {h.point_id for h in index.search(q, 10, exact=True)}
            recalls.append(len(approx & exact) / 10)
        assert np.mean(recalls) >= 0.9
    finally:
        index.close()


def test_an_edge_shard_is_locked_by_the_process_that_opened_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    ids, vectors, payloads = _catalogue(10, 4, seed=5)
    index_creators(settings, "v1", ids, vectors, payloads)
    first = open_creator_index(settings)
    try:
        with pytest.raises(VectorIndexError, match="cannot open"):
            open_creator_index(settings)
    finally:
        first.close()
    open_creator_index(settings).close()  # released on close


def test_versions_are_immutable_and_inputs_are_validated(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    ids, vectors, payloads = _catalogue(10, 4, seed=6)
    index_creators(settings, "2024-01-01.1", ids, vectors, payloads)
    with pytest.raises(FileExistsError):
        index_creators(settings, "2024-01-01.1", ids, vectors, payloads)
    with pytest.raises(ValueError, match="index version"):
        index_creators(settings, "../escape", ids, vectors, payloads)
    with pytest.raises(ValueError, match="need N ids"):
        index_creators(settings, "v2", ids[:-1], vectors, payloads)
    with pytest.raises(ValueError, match="duplicates"):
        index_creators(settings, "v2", ["a"] * 10, vectors, payloads)
    bad = vectors.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        index_creators(settings, "v2", ids, bad, payloads)
    assert current_creator_version(settings) == "2024-01-01.1"


def test_prune_keeps_the_newest_and_never_the_current(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    ids, vectors, payloads = _catalogue(5, 4, seed=7)
    for v in ["v1", "v2", "v3"]:
        index_creators(settings, v, ids, vectors, payloads)
    assert prune_creator_indexes(settings, keep=2) == ["v1"]
    assert sorted(p.name for p in creator_index_root(settings).iterdir()) == ["CURRENT", "v2", "v3"]


def test_server_backend_switches_the_alias_and_pinned_readers_keep_their_version(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, vector_backend="server")
    client = QdrantClient(location=":memory:")
    try:
        with pytest.raises(FailedPrecondition, match="alias"):
            open_creator_index(settings, client=client)
        ids, vectors, payloads = _catalogue(100, 8, seed=8)
        index_creators(settings, "v1", ids, vectors, payloads, client=client)
        old = open_creator_index(settings, client=client)
        assert (old.version, old.dim, old.count()) == ("v1", 8, 100)

        _, vectors2, payloads2 = _catalogue(40, 8, seed=9)
        index_creators(settings, "v2", [f"n{i}" for i in range(40)], vectors2, payloads2, client=client)
        assert current_creator_version(settings, client=client) == "v2"
        assert {a.alias_name: a.collection_name for a in client.get_aliases().aliases} == {
            "creators": "creators_v2"
        }
        assert old.count() == 100 and old.search(vectors[3], 1)[0].point_id == "c3"
        new = open_creator_index(settings, client=client)
        assert (new.version, new.count()) == ("v2", 40)
        flt = PayloadFilter.build(categories=["music"], exclude_mature=True)
        assert all(flt.matches(h.point_id, h.payload) for h in new.search(vectors2[0], 10, flt))
    finally:
        client.close()


def test_server_backend_through_a_persisted_local_url(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, vector_backend="server", qdrant_url=f"file://{tmp_path / 'qdrant'}"
    )
    ids, vectors, payloads = _catalogue(30, 4, seed=10)
    index_creators(settings, "v1", ids, vectors, payloads)  # opens and closes its own client
    index = open_creator_index(settings)
    try:
        assert index.version == "v1" and index.count() == 30
        assert index.search(vectors[2], 1)[0].point_id == "c2"
    finally:
        index.close()


@pytest.mark.parametrize("backend", ["edge", "server"])
def test_build_without_promoting_then_promote(tmp_path: Path, backend: str) -> None:
    settings = Settings(data_dir=tmp_path, vector_backend=backend)  # type: ignore[arg-type]
    client = QdrantClient(location=":memory:") if backend == "server" else None
    try:
        ids, vectors, payloads = _catalogue(10, 4, seed=11)
        index_creators(settings, "v1", ids, vectors, payloads, client=client)
        index_creators(settings, "v2", ids, vectors, payloads, client=client, promote=False)
        assert current_creator_version(settings, client=client) == "v1"
        promote_creator_index(settings, "v2", client=client)
        assert current_creator_version(settings, client=client) == "v2"
        with pytest.raises(FailedPrecondition, match="v3"):
            promote_creator_index(settings, "v3", client=client)
        assert current_creator_version(settings, client=client) == "v2"
    finally:
        if client is not None:
            client.close()


def test_a_colocated_replica_opens_a_copy_of_each_version(tmp_path: Path) -> None:
    """KINDRED_COLOCATED_REPLICA: each promoted version is copied once for the replica (whole, beside the
    version's own shard) and opened from there, so replicas never contend for one shard's lock."""
    settings = Settings(data_dir=tmp_path)
    replica = settings.replace(colocated_replica="a")
    ids, vectors, payloads = _catalogue(200, 8, seed=5)
    index_creators(settings, "v1", ids, vectors, payloads)
    held = open_creator_index(settings)  # another process's hold on the shard itself
    try:
        copy = open_creator_index(replica)
        try:
            assert copy.count() == 200 and copy.search(vectors[7], 1)[0].point_id == "c7"
        finally:
            copy.close()
    finally:
        held.close()
    root = creator_index_root(settings)
    assert (root / "v1" / "replicas" / "a" / "shard").is_dir()
    assert not list((root / "v1" / "replicas").glob(".*"))  # no partial copy left behind
    index_creators(settings, "v2", [f"n{i}" for i in range(50)], vectors[:50], payloads[:50])
    newer = open_creator_index(replica)
    try:
        assert (newer.version, newer.count()) == ("v2", 50)
    finally:
        newer.close()
    assert (root / "v2" / "replicas" / "a" / "shard").is_dir()
    with pytest.raises(ValueError, match="KINDRED_COLOCATED_REPLICA"):
        open_creator_index(settings.replace(colocated_replica="a/b"))
