"""Wiring of the retrieval service: creator index + user tower + online store → sources → gRPC.

`build_deps` opens the current creator index, loads the promoted user tower and opens the online
store; `make_servicer` checks the model and the index fit together and builds the sources and the
servicer. `main` listens at once (NOT_SERVING) and waits for the trainer to publish both if needed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np

from kindred.config import Settings
from kindred.errors import FailedPrecondition, ModelMismatch
from kindred.features import USER_TOWER_FEATURES, user_tower_features
from kindred.grpc_server import KindredServer
from kindred.service import ServiceSpec, run_service
from kindred.v1 import retrieval_pb2_grpc
from kindred.vectorstore import VectorIndex, open_creator_index
from retrieval_svc.creators import CreatorCatalogue
from retrieval_svc.retriever import ModelRef, Retriever
from retrieval_svc.servicer import RetrievalServicer
from retrieval_svc.sources import CandidateSource, FeatureReader
from retrieval_svc.sources.popular import PopularSource
from retrieval_svc.sources.two_tower import FeatureFn, TwoTowerSource, UserTower

SERVICE_NAME = "kindred.v1.RetrievalService"
USER_TOWER = "two_tower_user"
log = logging.getLogger(__name__)


@dataclasses.dataclass
class RetrievalDeps:
    index: VectorIndex
    user_tower: UserTower
    store: FeatureReader
    features: FeatureFn = user_tower_features
    hnsw_ef: int = 128  # the minimum; grows with k (kindred.vectorstore.search_ef)
    popular_cache_ttl_s: float = 30.0
    closers: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception:
                log.warning("closing a retrieval dependency failed", exc_info=True)


def build_deps(settings: Settings) -> RetrievalDeps:
    """Opens the index, the model and the store named by `settings`; the caller closes them."""
    from kindred.models import load_model
    from kindred.store.online import open_online_store

    index = open_creator_index(settings)
    try:
        model = load_model(settings.resolved_models_dir, USER_TOWER, expected_features=USER_TOWER_FEATURES)
        store = open_online_store(settings)
    except BaseException:
        index.close()
        raise
    return RetrievalDeps(index=index, user_tower=model, store=store, closers=[index.close, store.close])


def check_compatible(deps: RetrievalDeps) -> None:
    """Refuses a user tower whose embeddings do not live in the index's space (dimension check)."""
    probe = np.asarray(deps.features(None), dtype=np.float32)[None, :]
    width = deps.user_tower.run(probe).shape[-1]
    if width != deps.index.dim:
        raise ModelMismatch(
            f"user tower {deps.user_tower.version} embeds into {width} dimensions but creator index "
            f"{deps.index.version} holds {deps.index.dim}: train and index them together"
        )
    # The trainer records which index a tower was trained with; serving another one still works
    # (same dimension) but ranks with mismatched spaces, so say so loudly.
    manifest = getattr(deps.user_tower, "manifest", None) or {}
    paired = str(manifest.get("index_version", deps.user_tower.version))
    if deps.index.version and paired != deps.index.version:
        log.warning(
            "user tower %s was trained for creator index %s but index %s is served",
            deps.user_tower.version,
            paired,
            deps.index.version,
        )


def make_servicer(settings: Settings, deps: RetrievalDeps) -> RetrievalServicer:
    """Checks the model and the index fit together, then builds the sources and the servicer."""
    check_compatible(deps)
    popular = PopularSource(deps.store, deps.index, cache_ttl_s=deps.popular_cache_ttl_s)
    two_tower = TwoTowerSource(
        deps.user_tower, deps.index, deps.features, model_name=USER_TOWER, hnsw_ef=deps.hnsw_ef
    )
    sources: list[CandidateSource] = [two_tower, popular]  # priority order
    retriever = Retriever(sources, deps.store, model=ModelRef(USER_TOWER, deps.user_tower.version))
    creators = CreatorCatalogue(deps.index, hnsw_ef=deps.hnsw_ef, on_write=[popular.invalidate])
    return RetrievalServicer(retriever, creators)


def _wait_for_deps(settings: Settings, retry_s: float = 5.0) -> RetrievalDeps:
    # A fresh deployment may start before the trainer published an index and a model: wait for them
    # (not ready, not crash-looping). A model that does not fit is an error no waiting fixes.
    while True:
        try:
            return build_deps(settings)
        except ModelMismatch:
            raise
        except FailedPrecondition as exc:
            log.warning("not ready: %s; retrying in %.0f s", exc, retry_s)
            time.sleep(retry_s)


SPEC: ServiceSpec[RetrievalDeps] = ServiceSpec(
    name="retrieval",
    grpc_service=SERVICE_NAME,
    port=lambda settings: settings.retrieval_port,
    add_servicer=retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server,
    build_deps=_wait_for_deps,
    make_servicer=make_servicer,
    close_deps=lambda deps: deps.close(),
)


def create_server(
    settings: Settings, deps: RetrievalDeps | None = None, *, port: int | None = None
) -> KindredServer:
    """A SERVING server around `deps` (built from settings if not given); the caller closes deps."""
    return SPEC.create_server(settings, deps, port=port)


def main() -> None:
    run_service(SPEC)
