"""Building and opening the versioned creator index, on either backend.

Edge (default): each version is its own directory, `<data_dir>/index/creators/<version>/` holding
`shard/` (the qdrant-edge shard) and `manifest.json`; the text file `index/creators/CURRENT` names the
served version and is replaced atomically. A version directory is built under a temporary name and
renamed into place when complete, so a reader never sees a half-built index, and versions are
immutable: a reader that opened an older version keeps working after CURRENT moves on.
`prune_creator_indexes` deletes old edge versions (never the current one).

Server: each version is a collection `creators_<version>`; the alias `creators` is the pointer and is
switched in one atomic alias operation. Readers resolve the alias once and pin that collection, the
same as edge readers pin a directory: the user tower and the creator vectors come from one training
run and must be swapped together, never one under the other.

`index_creators(..., promote=False)` builds without switching; `promote_creator_index` switches later,
so a trainer can switch the index in the same step as it promotes the models.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from kindred.config import Settings
from kindred.errors import FailedPrecondition
from kindred.fileio import write_text_atomic
from kindred.replicas import check_replica_name, copy_once
from kindred.vectorstore.base import (
    CATEGORY_KEY,
    LANGUAGE_KEY,
    MATURE_KEY,
    HnswParams,
    IndexPoint,
    VectorIndex,
)
from kindred.vectorstore.edge import EdgeIndex

if TYPE_CHECKING:  # qdrant-client takes ~1 s to import: only the server backend pays for it
    from qdrant_client import QdrantClient

    from kindred.vectorstore.server import ServerIndex

CREATORS = "creators"
CREATOR_VECTOR = "two_tower"
CREATOR_PAYLOAD_INDEXES: Mapping[str, Any] = {
    CATEGORY_KEY: "keyword",
    LANGUAGE_KEY: "keyword",
    MATURE_KEY: "integer",  # stored as 0/1, see base.to_engine_payload
}
MANIFEST = "manifest.json"
SHARD = "shard"
POINTER = "CURRENT"
REPLICAS = "replicas"  # <version>/replicas/<name>/shard: co-located replicas' copies

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def creator_index_root(settings: Settings) -> Path:
    return settings.data_dir / "index" / CREATORS


def index_creators(
    settings: Settings,
    version: str,
    creator_ids: Sequence[str],
    vectors: npt.NDArray[np.float32],
    payloads: Sequence[Mapping[str, Any]],
    *,
    client: QdrantClient | None = None,
    hnsw: HnswParams | None = None,
    promote: bool = True,
) -> None:
    """Builds creator index `version` from (N, D) normalised vectors, then makes it the current one.

    `promote=False` builds without switching readers; `promote_creator_index` switches later, e.g.
    together with the models trained in the same run. `client` (server backend only) reuses an open
    qdrant-client instead of connecting to `settings.qdrant_url`; the caller keeps ownership of it.
    """
    _check_version(version)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(creator_ids) or len(payloads) != len(creator_ids):
        raise ValueError(
            f"need N ids, (N, D) vectors and N payloads; got {len(creator_ids)} ids, "
            f"vectors {vectors.shape}, {len(payloads)} payloads"
        )
    if len(set(creator_ids)) != len(creator_ids):
        raise ValueError("creator_ids contain duplicates")
    if not np.all(np.isfinite(vectors)):
        raise ValueError("vectors contain NaN or infinity")
    points = [IndexPoint(cid, vectors[i], payloads[i]) for i, cid in enumerate(creator_ids)]
    dim = int(vectors.shape[1])
    if settings.vector_backend == "server":
        _index_server(settings, version, points, dim, client=client, hnsw=hnsw)
    else:
        _index_edge(settings, version, points, dim, hnsw=hnsw)
    if promote:
        promote_creator_index(settings, version, client=client)


def promote_creator_index(settings: Settings, version: str, *, client: QdrantClient | None = None) -> None:
    """Makes built version `version` the one readers open (atomic pointer or alias switch)."""
    _check_version(version)
    if settings.vector_backend == "server":
        _switch_alias(settings, version, client=client)
        return
    root = creator_index_root(settings)
    if not (root / version / MANIFEST).is_file():
        raise FailedPrecondition(f"cannot promote creator index {version}: not built at {root / version}")
    write_text_atomic(root / POINTER, version + "\n")


def open_creator_index(settings: Settings, *, client: QdrantClient | None = None) -> VectorIndex:
    """Opens the current creator index version for serving (raises FailedPrecondition if none)."""
    if settings.vector_backend == "server":
        return _open_server(settings, client=client)
    version = current_creator_version(settings)
    if version is None:
        raise FailedPrecondition(
            f"no creator index: {creator_index_root(settings) / POINTER} is missing (run the trainer)"
        )
    vdir = creator_index_root(settings) / version
    manifest = json.loads((vdir / MANIFEST).read_text(encoding="utf-8"))
    shard = vdir / SHARD
    if settings.colocated_replica:  # one process may open a shard: a co-located replica opens its copy
        name = check_replica_name(settings.colocated_replica, what="KINDRED_COLOCATED_REPLICA")
        shard = copy_once(shard, vdir / REPLICAS / name / SHARD)
    return EdgeIndex.open(
        shard,
        dim=int(manifest["dim"]),
        vector_name=str(manifest["vector_name"]),
        version=version,
        distance=manifest.get("distance", "cosine"),
        search_threads=settings.engine_search_threads,
    )


def current_creator_version(settings: Settings, *, client: QdrantClient | None = None) -> str | None:
    """The version readers should serve now, or None if no index was built yet."""
    if settings.vector_backend == "server":
        own = client is None
        from kindred.vectorstore.server import connect

        cl = client if client is not None else connect(settings.qdrant_url)[0]
        try:
            name = _alias_target(cl, CREATORS)
        finally:
            if own:
                cl.close()
        return None if name is None else name.removeprefix(f"{CREATORS}_")
    pointer = creator_index_root(settings) / POINTER
    try:
        version = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return version or None


def prune_creator_indexes(settings: Settings, keep: int = 2) -> list[str]:
    """Deletes all but the `keep` newest edge versions (never the current one); returns those deleted."""
    if keep < 1:
        raise ValueError("keep must be >= 1")
    root = creator_index_root(settings)
    current = current_creator_version(settings)
    versions = (
        sorted(
            (p for p in root.iterdir() if p.is_dir() and (p / MANIFEST).exists()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        if root.exists()
        else []
    )
    deleted = []
    for path in versions[keep:]:
        if path.name != current:
            shutil.rmtree(path)
            deleted.append(path.name)
    return deleted


def _check_version(version: str) -> None:
    if not _VERSION_RE.match(version):
        raise ValueError(f"index version {version!r}: use 1-64 of [A-Za-z0-9._-], starting alphanumeric")


def _index_edge(
    settings: Settings, version: str, points: list[IndexPoint], dim: int, *, hnsw: HnswParams | None
) -> None:
    root = creator_index_root(settings)
    final = root / version
    if final.exists():
        raise FileExistsError(f"creator index version {version} already exists at {final}")
    root.mkdir(parents=True, exist_ok=True)
    building = root / f".{version}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    started = time.perf_counter()
    index = EdgeIndex.create(
        building / SHARD,
        dim=dim,
        vector_name=CREATOR_VECTOR,
        version=version,
        payload_indexes=CREATOR_PAYLOAD_INDEXES,
        hnsw=hnsw,
    )
    try:
        index.upsert(points)
        index.optimize()
        index.flush()
        info = index.info()
    finally:
        index.close()
    manifest = {
        "name": CREATORS,
        "version": version,
        "engine": "qdrant-edge",
        "vector_name": CREATOR_VECTOR,
        "dim": dim,
        "distance": "cosine",
        "count": info["points"],
        "indexed_vectors": info["indexed_vectors"],
        "payload_indexes": dict(CREATOR_PAYLOAD_INDEXES),
        "build_seconds": round(time.perf_counter() - started, 3),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_text_atomic(building / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    os.rename(building, final)


def _index_server(
    settings: Settings,
    version: str,
    points: list[IndexPoint],
    dim: int,
    *,
    client: QdrantClient | None,
    hnsw: HnswParams | None,
) -> None:
    from kindred.vectorstore.server import ServerIndex, connect, create_collection

    local = False
    own = client is None
    if client is None:
        client, local = connect(settings.qdrant_url)
    else:
        local = _is_local(client)
    try:
        name = f"{CREATORS}_{version}"
        if client.collection_exists(name):
            raise FileExistsError(f"collection {name} already exists")
        create_collection(
            client,
            name,
            dim=dim,
            vector_name=CREATOR_VECTOR,
            local=local,
            payload_indexes=CREATOR_PAYLOAD_INDEXES,
            hnsw=hnsw,
        )
        writer = ServerIndex(client, name, vector_name=CREATOR_VECTOR, dim=dim, version=version, local=local)
        writer.upsert(points)
    finally:
        if own:
            client.close()


def _switch_alias(settings: Settings, version: str, *, client: QdrantClient | None) -> None:
    from qdrant_client import models as qm

    from kindred.vectorstore.server import connect

    own = client is None
    cl = client if client is not None else connect(settings.qdrant_url)[0]
    try:
        name = f"{CREATORS}_{version}"
        if not cl.collection_exists(name):
            raise FailedPrecondition(f"cannot promote creator index {version}: no collection {name}")
        ops: list[qm.AliasOperations] = []
        if _alias_target(cl, CREATORS) is not None:
            ops.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=CREATORS)))
        ops.append(
            qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name=name, alias_name=CREATORS))
        )
        cl.update_collection_aliases(change_aliases_operations=ops)  # one call: readers never see no alias
    finally:
        if own:
            cl.close()


def _open_server(settings: Settings, *, client: QdrantClient | None) -> ServerIndex:
    from kindred.vectorstore.server import ServerIndex, connect

    own = client is None
    if client is None:
        client, local = connect(settings.qdrant_url)
    else:
        local = _is_local(client)
    name = _alias_target(client, CREATORS)
    if name is None:
        if own:
            client.close()
        raise FailedPrecondition(f"no creator index: alias {CREATORS!r} does not exist (run the trainer)")
    vectors = client.get_collection(name).config.params.vectors
    if not isinstance(vectors, dict) or CREATOR_VECTOR not in vectors:
        raise FailedPrecondition(f"collection {name} has no dense vector {CREATOR_VECTOR!r}")
    return ServerIndex(
        client,
        name,
        vector_name=CREATOR_VECTOR,
        dim=int(vectors[CREATOR_VECTOR].size),
        version=name.removeprefix(f"{CREATORS}_"),
        local=local,
        owns_client=own,
    )


def _alias_target(client: QdrantClient, alias: str) -> str | None:
    for desc in client.get_aliases().aliases:
        if desc.alias_name == alias:
            return str(desc.collection_name)
    return None


def _is_local(client: QdrantClient) -> bool:
    # qdrant-client exposes no public flag; its init options record how it was created.
    options: dict[str, Any] = getattr(client, "init_options", {}) or {}
    return options.get("location") == ":memory:" or options.get("path") is not None
