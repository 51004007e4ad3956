"""Wiring of the ranking service: load the ranker, open the feature store, connect to retrieval.

Re-ranking and explanation parameters default to the documented values in ranking_svc.rerank and
ranking_svc.explain. A deployment overrides them in `<data_dir>/config/ranking.json`, read once at
start-up, e.g. `{"rerank": {"diversity": {"lam": 0.7}, "exposure": null}, "explain": {"max_reasons": 2}}`
(`null` switches a step off; unknown keys fail the start, as unknown settings do).

`KINDRED_RETRIEVAL_TARGET=inprocess` runs retrieval's domain inside this process instead of calling
retrieval_svc (one hop and two protobuf conversions fewer; trade-offs in ranking_svc.retrieval_client).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from kindred.config import IN_PROCESS, Settings, SettingsError
from kindred.features import RANKER_FEATURES
from kindred.grpc_client import make_channel
from kindred.grpc_server import KindredServer
from kindred.models import load_model
from kindred.service import ServiceSpec, run_service
from kindred.store.online import open_online_store
from kindred.v1 import ranking_pb2_grpc
from ranking_svc.domain import CandidateRetriever, FeatureReader, ScoringModel
from ranking_svc.explain import ExplainParams
from ranking_svc.objectives import CONFIG_KEY as OBJECTIVES_KEY
from ranking_svc.objectives import load_weight_overrides, wrap_ranker
from ranking_svc.recommender import Recommender
from ranking_svc.rerank import RerankConfig, params_from_mapping
from ranking_svc.retrieval_client import GrpcRetriever, LocalRetriever
from ranking_svc.servicer import RankingServicer

SERVICE_NAME = "kindred.v1.RankingService"
CONFIG_FILE = Path("config") / "ranking.json"  # under Settings.data_dir
log = logging.getLogger(__name__)


@dataclasses.dataclass
class RankingDeps:
    retriever: CandidateRetriever
    features: FeatureReader
    ranker: ScoringModel
    channel: grpc.Channel | None = None  # owned here, closed on shutdown
    # SearchRanked's channel to Search when it is not `channel` (KINDRED_SEARCH_TARGET); owned here too.
    search_channel: grpc.Channel | None = None
    rerank: RerankConfig = dataclasses.field(default_factory=RerankConfig)
    explain: ExplainParams = dataclasses.field(default_factory=ExplainParams)
    # Set when retrieval runs in this process: they close its index, watcher and the (shared) store.
    closers: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    def close(self) -> None:
        for channel in (self.channel, self.search_channel):
            if channel is not None:
                channel.close()
        if self.closers:
            for close in self.closers:
                close()
            return
        close_store = getattr(self.features, "close", None)
        if close_store is not None:
            close_store()


def load_ranking_config(settings: Settings) -> tuple[RerankConfig, ExplainParams]:
    """The re-rank and explanation parameters: defaults, overridden by `<data_dir>/config/ranking.json`."""
    path = settings.data_dir / CONFIG_FILE
    if not path.exists():
        return RerankConfig(), ExplainParams()
    try:
        data: Any = json.loads(path.read_text())
        if not isinstance(data, dict) or set(data) - {"rerank", "explain", OBJECTIVES_KEY}:
            raise ValueError(
                f'expected an object with the keys "rerank", "explain" and/or "{OBJECTIVES_KEY}"'
            )
        rerank = RerankConfig.from_mapping(data.get("rerank") or {})
        explain = params_from_mapping(ExplainParams, data.get("explain") or {}, where="explain")
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        raise ValueError(f"{path}: {exc}") from exc
    log.info("ranking config from %s: %s, %s", path, rerank, explain)
    return rerank, explain


def build_deps(settings: Settings) -> RankingDeps:
    rerank, explain = load_ranking_config(settings)  # first: a bad file fails before anything opens
    # load_model refuses a ranker whose manifest's feature order differs from what we compute.
    ranker = load_model(settings.resolved_models_dir, "ranker", expected_features=RANKER_FEATURES)
    # Multi-objective rankers: heads combined by the manifest's weights, overridden by ranking.json.
    ranker = wrap_ranker(ranker, load_weight_overrides(settings.data_dir / CONFIG_FILE))
    if settings.colocated:
        return _in_process_deps(settings, ranker, rerank, explain)
    if settings.colocated_replica:
        raise SettingsError(
            "KINDRED_COLOCATED_REPLICA names a co-located ranking replica; it needs KINDRED_RETRIEVAL_TARGET="
            f"{IN_PROCESS} (the retrieval target is {settings.resolved_retrieval_target!r})"
        )
    channel = make_channel(settings.resolved_retrieval_target)
    separate = settings.resolved_search_target != settings.resolved_retrieval_target
    return RankingDeps(
        retriever=GrpcRetriever(channel),
        features=open_online_store(settings),
        ranker=ranker,
        channel=channel,
        search_channel=make_channel(settings.resolved_search_target) if separate else None,
        rerank=rerank,
        explain=explain,
    )


def _in_process_deps(
    settings: Settings, ranker: ScoringModel, rerank: RerankConfig, explain: ExplainParams
) -> RankingDeps:
    """Retrieval's index, user tower and sources in this process (trade-offs: ranking_svc.retrieval_client).
    Waits, as retrieval_svc does, until the trainer has published an index and a user tower."""
    from retrieval_svc import server as retrieval_server

    retrieval = retrieval_server.wait_for_deps(settings, search=False)  # SearchRanked: the search target
    try:
        serving = retrieval_server.serving_switch(settings, retrieval)
        # One store (and one row cache) for both: retrieval reads the same fan rows ranking does.
        # Search still works when a search target is named (e.g. the search replicas).
        search_channel = make_channel(settings.search_target) if settings.search_target else None
        return RankingDeps(
            retriever=LocalRetriever(serving),
            features=retrieval.store,
            ranker=ranker,
            search_channel=search_channel,
            rerank=rerank,
            explain=explain,
            closers=[retrieval.close],
        )
    except BaseException:
        retrieval.close()
        raise


def make_servicer(settings: Settings, deps: RankingDeps) -> RankingServicer:
    recommender = Recommender(
        deps.retriever, deps.features, deps.ranker, rerank=deps.rerank, explain=deps.explain
    )
    # SearchRanked calls Search over the search channel (KINDRED_SEARCH_TARGET), else retrieval's; in the
    # in-process mode without a search target there is none.
    search = None
    search_channel = deps.search_channel or deps.channel
    if search_channel is not None:
        from ranking_svc.search_client import GrpcSearcher
        from ranking_svc.search_ranked import SearchRanker

        search = SearchRanker(GrpcSearcher(search_channel), deps.features)
    return RankingServicer(recommender, settings.default_deadline_s, search)


def compute_methods(settings: Settings) -> tuple[str, ...]:
    """The methods that only compute in this process (kindred.compute_gate): Rank; Recommend when
    retrieval runs in this process, not when it waits on the retrieval hop; never SearchRanked, which
    waits on search; none when reads go to a Redis store or a Qdrant server (Settings.local_reads_only)."""
    if not settings.local_reads_only:
        return ()
    return ("Rank", "Recommend") if settings.colocated else ("Rank",)


SPEC: ServiceSpec[RankingDeps] = ServiceSpec(
    name="ranking",
    grpc_service=SERVICE_NAME,
    port=lambda settings: settings.ranking_port,
    add_servicer=ranking_pb2_grpc.add_RankingServiceServicer_to_server,
    build_deps=build_deps,
    make_servicer=make_servicer,
    close_deps=lambda deps: deps.close(),
    gated_methods=compute_methods,
    computes_only=lambda settings: settings.colocated and settings.local_reads_only,
)


def create_server(
    settings: Settings, deps: RankingDeps | None = None, *, port: int | None = None
) -> KindredServer:
    """A SERVING server around `deps` (built from settings if not given); the caller closes deps."""
    return SPEC.create_server(settings, deps, port=port)


def main() -> None:
    run_service(SPEC)
