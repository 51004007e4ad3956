"""Wiring of the ranking service: load the ranker, open the feature store, connect to retrieval."""

from __future__ import annotations

import dataclasses
import logging

import grpc

from kindred.config import Settings
from kindred.features import RANKER_FEATURES
from kindred.grpc_client import make_channel
from kindred.grpc_server import KindredServer, create_grpc_server
from kindred.models import load_model
from kindred.store.online import open_online_store
from kindred.telemetry import configure_telemetry, shutdown_telemetry
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


def create_server(
    settings: Settings, deps: RankingDeps | None = None, *, port: int | None = None
) -> KindredServer:
    deps = deps or build_deps(settings)
    servicer = RankingServicer(
        Recommender(deps.retriever, deps.features, deps.ranker), settings.default_deadline_s
    )
    server = create_grpc_server(
        settings,
        name="ranking",
        port=settings.ranking_port if port is None else port,
        register=lambda s: ranking_pb2_grpc.add_RankingServiceServicer_to_server(servicer, s),
        health_services=[SERVICE_NAME],
    )
    server.set_serving(True)  # deps are loaded by now: the ranker and the store are ready
    return server


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s ranking %(levelname)s %(message)s")
    settings = Settings.from_env()
    configure_telemetry("ranking_svc", settings)
    server = create_server(settings).start()
    server.stop_on_signals(on_stop=shutdown_telemetry)
    server.wait()
