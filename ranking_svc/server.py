"""Wiring of the ranking service: load the ranker, open the feature store, connect to retrieval."""

from __future__ import annotations

import dataclasses
import logging

import grpc

from kindred.config import Settings
from kindred.features import RANKER_FEATURES
from kindred.grpc_client import make_channel
from kindred.grpc_server import KindredServer
from kindred.models import load_model
from kindred.service import ServiceSpec, run_service
from kindred.store.online import open_online_store
from kindred.v1 import ranking_pb2_grpc
from ranking_svc.domain import CandidateRetriever, FeatureReader, ScoringModel
from ranking_svc.recommender import Recommender
from ranking_svc.retrieval_client import GrpcRetriever
from ranking_svc.servicer import RankingServicer

SERVICE_NAME = "kindred.v1.RankingService"
log = logging.getLogger(__name__)


@dataclasses.dataclass
class RankingDeps:
    retriever: CandidateRetriever
    features: FeatureReader
    ranker: ScoringModel
    channel: grpc.Channel | None = None  # owned here, closed on shutdown

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        close_store = getattr(self.features, "close", None)
        if close_store is not None:
            close_store()


def build_deps(settings: Settings) -> RankingDeps:
    # load_model refuses a ranker whose manifest's feature order differs from what we compute.
    ranker = load_model(settings.resolved_models_dir, "ranker", expected_features=RANKER_FEATURES)
    channel = make_channel(settings.resolved_retrieval_target)
    return RankingDeps(
        retriever=GrpcRetriever(channel),
        features=open_online_store(settings),
        ranker=ranker,
        channel=channel,
    )


def make_servicer(settings: Settings, deps: RankingDeps) -> RankingServicer:
    return RankingServicer(
        Recommender(deps.retriever, deps.features, deps.ranker), settings.default_deadline_s
    )


SPEC: ServiceSpec[RankingDeps] = ServiceSpec(
    name="ranking",
    grpc_service=SERVICE_NAME,
    port=lambda settings: settings.ranking_port,
    add_servicer=ranking_pb2_grpc.add_RankingServiceServicer_to_server,
    build_deps=build_deps,
    make_servicer=make_servicer,
    close_deps=lambda deps: deps.close(),
)


def create_server(
    settings: Settings, deps: RankingDeps | None = None, *, port: int | None = None
) -> KindredServer:
    """A SERVING server around `deps` (built from settings if not given); the caller closes deps."""
    return SPEC.create_server(settings, deps, port=port)


def main() -> None:
    run_service(SPEC)
