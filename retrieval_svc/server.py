"""Wiring of the retrieval service: creator index + user tower + online store → sources → gRPC.

`build_deps` opens the current creator index, loads the promoted user tower and opens the online
store; `make_servicer` checks the model and the index fit together, builds the sources into a serving
bundle and the servicer around it, and (when `deps.reload_poll_s` is set, as `build_deps` does) starts
the watcher that swaps in newly promoted versions without a restart (retrieval_svc.serving). `main`
listens at once (NOT_SERVING) and waits for the trainer to publish an index and a model if needed.

Candidate sources, in priority order (the first fills its quota first and keeps the candidates several
sources propose), with their default share of the k slots (`retriever.DEFAULT_QUOTA_SHARES`):

    two_tower     0.25  personalised ANN over the creator index
    mf            0.45  ALS: the fan folded in from its follows, its exact top-n (kindred.mf)
    item_to_item  0.15  creators whose audiences overlap with those the fan follows
    social        0.05  creators the fan's friends follow or support
    trending      0.05  fastest-growing creators, 30 % of its slots for new creators (exploration)
    popular       0.05  popular by the fan's interests and overall: always answers, so it backfills

The shares are measured, not guessed: on two generated demo platforms (2,000 fans, 300 creators,
30 days; seeds 7 and 11) the hold-out recall of the k = 100 pool rose from 0.900 / 0.900 (two-tower
0.7 + popular 0.3, the previous default) to 0.927 / 0.931 with the five sources before mf, and at
k = 50 from 0.738 / 0.726 to 0.778 / 0.787 (trainer.candidates measures it on every training run).
Slots moved from popular to the other sources raised the pool's recall in every split tried, hence
its small share; it keeps a slot because it answers for anyone. With mf, the shares were chosen on
the trainer's own hold-out pool recall of three platforms (`bench/bench_quota_shares.py`, results in
bench/RESULTS.md; recall@100 on demo seed 7 / demo seed 11 / the HetRec Last.fm services benchmark's
seed-0 platform, whose hold-out lies inside the benchmark's train pairs): five sources without mf
0.930 / 0.938 / 0.393; mf 0.30 beside two-tower 0.30 0.921 / 0.933 / 0.451; mf 0.45 (these shares)
0.921 / 0.932 / 0.473; mf 0.50 0.922 / 0.928 / 0.475. On the generated platforms, whose fans' tastes
follow their categories and locales, the two-tower is the stronger source (alone 0.925 / 0.931 at
100 against mf's 0.844 / 0.884) and mf costs under a point of pool recall; on Last.fm's real follows
mf alone recalls 0.503 against the two-tower's 0.358. Slots a source cannot fill (a new fan has no
two-tower or mf input, follows nobody, has no friends) go to the others' remaining candidates, so k come
back whenever the catalogue has k that pass the filters. A deployment sets its own shares (and trending's
share for new creators) in `<data_dir>/config/retrieval.json` (`load_retrieval_config`).
Posts from followed creators ("followed_fresh") are not a source yet.

Text search (retrieval_svc.search) lives beside the bundle, not in it: its index is one mutable
shard at `<data_dir>/index/search/` written in real time by UpsertPosts / UpsertCreators, and the
promoted text encoder. Without an exported encoder the service still serves everything else, and
Search answers FAILED_PRECONDITION saying how to export one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from kindred.config import Settings, SettingsError
from kindred.errors import FailedPrecondition, ModelMismatch
from kindred.features import USER_TOWER_FEATURES, user_tower_features
from kindred.grpc_server import KindredServer
from kindred.mf import MANIFEST_KEY as MF_MANIFEST_KEY
from kindred.mf import MfModel
from kindred.service import ServiceSpec, run_service
from kindred.v1 import retrieval_pb2_grpc
from kindred.vectorstore import VectorIndex, VectorIndexError, open_creator_index
from retrieval_svc.creators import CreatorCatalogue
from retrieval_svc.retriever import DEFAULT_QUOTA_SHARES, ModelRef, Retriever, normalize_source_name
from retrieval_svc.search.query import QuerySide
from retrieval_svc.search.replication import WriteLog, replica_root, search_replicas_dir
from retrieval_svc.search.service import SearchService
from retrieval_svc.servicer import RetrievalServicer
from retrieval_svc.serving import (
    DEFAULT_POLL_S,
    BundleSwitch,
    BundleWatcher,
    NotReady,
    ServingBundle,
    VersionKey,
)
from retrieval_svc.sources import CandidateSource, FeatureReader
from retrieval_svc.sources.item_to_item import ItemToItemSource
from retrieval_svc.sources.mf import MfSource
from retrieval_svc.sources.popular import PopularSource
from retrieval_svc.sources.ranked_lists import VerdictCache
from retrieval_svc.sources.social import SocialSource
from retrieval_svc.sources.trending import DEFAULT_NEW_SHARE, TrendingSource
from retrieval_svc.sources.two_tower import FeatureFn, TwoTowerSource, UserTower

if TYPE_CHECKING:
    from kindred.text.encoder import TextEncoder

SERVICE_NAME = "kindred.v1.RetrievalService"
QUERY_ENCODER = "text_query_encoder"  # trainer.search_tuning.QUERY_ENCODER_NAME
QUERY_FUSION_FILE = "fusion.json"  # trainer.search_tuning.FUSION_FILE
USER_TOWER = "two_tower_user"
log = logging.getLogger(__name__)


RETRIEVAL_CONFIG_FILE = Path("config") / "retrieval.json"  # under Settings.data_dir


@dataclasses.dataclass
class RetrievalDeps:
    index: VectorIndex
    user_tower: UserTower
    store: FeatureReader
    features: FeatureFn = user_tower_features
    hnsw_ef: int = 128  # the minimum; grows with k (kindred.vectorstore.search_ef)
    popular_cache_ttl_s: float = 30.0
    quota_shares: Mapping[str, float] | None = None  # None: retrieval_svc.retriever.DEFAULT_QUOTA_SHARES
    trending_new_share: float = DEFAULT_NEW_SHARE
    # Poll for newly promoted versions this often and swap them in; None: serve `index` until closed.
    reload_poll_s: float | None = None
    # Closes `index`, safe to call twice: a swap closes the first index once its requests finished,
    # and `closers` (which should hold this too) closes it at shutdown if no swap did.
    close_index: Callable[[], None] = lambda: None
    closers: list[Callable[[], None]] = dataclasses.field(default_factory=list)
    # Text search over creators and posts; None: not available (no text encoder exported).
    search: SearchService | None = None

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception:
                log.warning("closing a retrieval dependency failed", exc_info=True)


def open_versioned(settings: Settings) -> tuple[VectorIndex, UserTower]:
    """The current creator index and the promoted user tower (the caller closes the index)."""
    from kindred.models import load_model

    index = open_creator_index(settings)
    try:
        model = load_model(settings.resolved_models_dir, USER_TOWER, expected_features=USER_TOWER_FEATURES)
    except BaseException:
        index.close()
        raise
    return index, model


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    """What a deployment may tune without code: each source's share of the k slots (every source named;
    `DEFAULT_QUOTA_SHARES` for those the file leaves out) and trending's share for new creators."""

    quota_shares: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_QUOTA_SHARES))
    trending_new_share: float = DEFAULT_NEW_SHARE


def load_retrieval_config(settings: Settings) -> RetrievalConfig:
    """Defaults, overridden by `<data_dir>/config/retrieval.json`, e.g.
    `{"quota_shares": {"mf": 0.3, "two_tower": 0.4}, "trending_new_share": 0.5}`; unknown keys or
    sources, negative or non-numeric shares and an all-zero split fail the start, naming the file."""
    path = settings.data_dir / RETRIEVAL_CONFIG_FILE
    if not path.exists():
        return RetrievalConfig()
    try:
        data: Any = json.loads(path.read_text())
        if not isinstance(data, dict) or set(data) - {"quota_shares", "trending_new_share"}:
            raise ValueError('expected an object with the keys "quota_shares" and/or "trending_new_share"')
        shares = dict(DEFAULT_QUOTA_SHARES)
        given = data.get("quota_shares") or {}
        if not isinstance(given, dict):
            raise ValueError("quota_shares: expected an object of source name → share")
        for raw, value in given.items():
            name = normalize_source_name(str(raw))
            if name not in shares:
                raise ValueError(f"quota_shares: unknown source {raw!r}; known: {', '.join(shares)}")
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"quota_shares.{raw}: expected a number >= 0, got {value!r}")
            shares[name] = float(value)
        if not any(v > 0 for v in shares.values()):
            raise ValueError("quota_shares: at least one source needs a share > 0")
        new_share = data.get("trending_new_share", DEFAULT_NEW_SHARE)
        if isinstance(new_share, bool) or not isinstance(new_share, int | float) or not 0 <= new_share <= 1:
            raise ValueError(f"trending_new_share: expected a number in [0, 1], got {new_share!r}")
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        raise ValueError(f"{path}: {exc}") from exc
    config = RetrievalConfig(shares, float(new_share))
    log.info("retrieval config from %s: %s", path, config)
    return config


def build_deps(
    settings: Settings, *, reload_poll_s: float | None = DEFAULT_POLL_S, search: bool = True
) -> RetrievalDeps:
    """Opens the index, the model and the store named by `settings`; the caller closes them.
    `search=False`: not the search index either (ranking's co-located retrieval never searches in-process:
    SearchRanked calls KINDRED_SEARCH_TARGET)."""
    from kindred.store.online import open_online_store

    config = load_retrieval_config(settings)  # first: a bad file fails before anything opens
    index, model = open_versioned(settings)
    try:
        store = open_online_store(settings)
    except BaseException:
        index.close()
        raise
    close_index = _once(index.close)
    searcher = open_search(settings) if search else None
    closers: list[Callable[[], None]] = [close_index, store.close]
    if searcher is not None:
        closers.append(searcher.close)
    return RetrievalDeps(
        index=index,
        user_tower=model,
        store=store,
        quota_shares=config.quota_shares,
        trending_new_share=config.trending_new_share,
        reload_poll_s=reload_poll_s,
        close_index=close_index,
        closers=closers,
        search=searcher,
    )


def open_search(settings: Settings) -> SearchService | None:
    """The promoted text encoder over the search index (created empty if none was bulk-indexed yet).

    None, with a warning, when no encoder was exported: search is an optional capability here.
    """
    from kindred.text.encoder import TextEncoder
    from retrieval_svc.search.index import SearchIndex, search_index_root
    from retrieval_svc.search.params import load_search_params

    params = load_search_params(settings)  # first: a bad file fails the start
    try:
        encoder = TextEncoder.from_registry(settings.resolved_models_dir)
    except FailedPrecondition as exc:
        log.warning("search disabled: %s", exc)
        return None
    root = search_index_root(settings)
    if settings.search_replica:  # its own copy, made from the bulk index on its first start
        root = replica_root(search_replicas_dir(settings), settings.search_replica, root)
    try:
        index = SearchIndex.open_or_create(
            root,
            dim=encoder.dim,
            encoder_version=encoder.version,
            search_threads=settings.engine_search_threads,
        )
    except VectorIndexError as exc:
        # E.g. `kindred index` still holds the shard: recommendations need not wait for search.
        log.error("search disabled: %s", exc)
        return None
    try:
        query_side = open_query_side(settings, encoder)
        # A tuned query side's fusion was fitted on fp32 base-encoder scores: it keeps the fp32 encoder.
        int8 = None if query_side is not None else open_int8_query_encoder(settings, encoder)
        service = SearchService(index, encoder, params, query_side=query_side, query_encoder=int8)
    except BaseException:
        index.close()
        raise
    if settings.search_replica:
        try:
            replicate(settings, service, root)
        except BaseException:
            service.close()
            raise
    return service


def replicate(settings: Settings, service: SearchService, root: Path) -> None:
    """Makes `service` a search replica: applies everything logged since its copy's position, then
    follows the write log and sends its own writes through it (retrieval_svc.search.replication)."""
    write_log = WriteLog(
        settings.redis_url, settings.search_write_log, settings.search_replica, root, service.apply
    )
    t0 = time.perf_counter()
    applied = write_log.catch_up()
    write_log.start()
    service.replicate(write_log)
    log.info(
        "search replica %s: applied %d logged writes in %.1f s; following %s",
        settings.search_replica,
        applied,
        time.perf_counter() - t0,
        settings.search_write_log,
    )


def open_search_replica(settings: Settings) -> SearchService:
    search = open_search(settings)
    if search is None:
        raise FailedPrecondition(
            "a search replica needs a text encoder (python -m trainer.text_encoder export --promote)"
        )
    return search


def open_int8_query_encoder(settings: Settings, doc_encoder: TextEncoder) -> TextEncoder | None:
    """The promoted int8 query encoder of `doc_encoder` (trainer.text_encoder int8-queries), or None.

    Queries are then encoded by it (about 2x less encoder CPU; SciFact dense NDCG@10 0.6585 vs 0.6602)
    while documents stay fp32. One quantised from another graph than the served document encoder's is
    not served, with a warning; without one, queries use the document encoder.
    """
    from kindred.models import current_version
    from kindred.text.encoder import INT8_QUERY_MODEL_NAME, load_quantized_query_encoder

    models = settings.resolved_models_dir
    if current_version(models, INT8_QUERY_MODEL_NAME) is None:
        return None
    try:
        encoder = load_quantized_query_encoder(models, doc_encoder)
    except ModelMismatch as exc:
        log.warning("int8 query encoder not served (queries use the fp32 encoder): %s", exc)
        return None
    log.info("search queries encoded by int8 query encoder %s", encoder.version)
    return encoder


def open_query_side(settings: Settings, doc_encoder: TextEncoder) -> QuerySide | None:
    """The promoted fine-tuned query encoder and its fusion (trainer.search_tuning), or None.

    It is only valid with the document encoder it was tuned against: a pair that does not match (its
    manifest names another document encoder's sha256) is not served, with a warning.
    """
    from kindred.models import current_version, version_dir
    from kindred.text.encoder import TextEncoder
    from kindred.text.fusion import FusionModel

    models = settings.resolved_models_dir
    if current_version(models, QUERY_ENCODER) is None:
        return None
    directory = version_dir(models, QUERY_ENCODER, None)
    query_encoder = TextEncoder.load(directory)
    paired = str((query_encoder.manifest.get("document_encoder") or {}).get("sha256", ""))
    if paired != str(doc_encoder.manifest.get("sha256", "")):
        log.warning(
            "query encoder %s was tuned for another document encoder than %s: serving the base encoder",
            query_encoder.version,
            doc_encoder.version,
        )
        return None
    return QuerySide(query_encoder, FusionModel.load(directory / QUERY_FUSION_FILE))


def check_compatible(index: VectorIndex, user_tower: UserTower, features: FeatureFn) -> None:
    """Refuses a user tower whose embeddings do not live in the index's space (dimension check)."""
    probe = np.asarray(features(None), dtype=np.float32)[None, :]
    width = user_tower.run(probe).shape[-1]
    if width != index.dim:
        raise ModelMismatch(
            f"user tower {user_tower.version} embeds into {width} dimensions but creator index "
            f"{index.version} holds {index.dim}: train and index them together"
        )
    # The trainer records which index a tower was trained with; serving another one still works
    # (same dimension) but ranks with mismatched spaces, so say so loudly.
    paired = paired_index_version(user_tower)
    if index.version and paired != index.version:
        log.warning(
            "user tower %s was trained for creator index %s but index %s is served",
            user_tower.version,
            paired,
            index.version,
        )


def load_mf(user_tower: UserTower) -> MfModel | None:
    """The mf source's model shipped with this user tower's version (kindred.mf), or None when the
    version has none (a trainer from before the source): the service then runs without it."""
    manifest = getattr(user_tower, "manifest", None) or {}
    path = getattr(user_tower, "path", None)
    if path is None or MF_MANIFEST_KEY not in manifest:
        log.warning("user tower %s carries no mf model: the mf source is off", user_tower.version)
        return None
    return MfModel.load(Path(path).parent, manifest)


def paired_index_version(user_tower: UserTower) -> str:
    manifest = getattr(user_tower, "manifest", None) or {}
    return str(manifest.get("index_version", user_tower.version))


def build_bundle(
    deps: RetrievalDeps,
    index: VectorIndex,
    user_tower: UserTower,
    *,
    close: Callable[[], None] = lambda: None,
) -> ServingBundle:
    """The sources over `index` and `user_tower` (reading `deps.store`), ready to serve."""
    check_compatible(index, user_tower, deps.features)
    mf = load_mf(user_tower)
    popular = PopularSource(deps.store, index, cache_ttl_s=deps.popular_cache_ttl_s)
    verdicts = VerdictCache(deps.popular_cache_ttl_s)
    sources: list[CandidateSource] = [  # priority order: see the module docstring
        TwoTowerSource(user_tower, index, deps.features, model_name=USER_TOWER, hnsw_ef=deps.hnsw_ef),
        # One cache of the engine's filter verdicts for the per-fan ranked lists (same catalogue).
        *([MfSource(mf, index, verdicts=verdicts)] if mf is not None else []),
        ItemToItemSource(deps.store, index, verdicts=verdicts),
        SocialSource(deps.store, index, verdicts=verdicts),
        TrendingSource(deps.store, index, new_share=deps.trending_new_share),
        popular,
    ]
    retriever = Retriever(
        sources, deps.store, quota_shares=deps.quota_shares, model=ModelRef(USER_TOWER, user_tower.version)
    )
    creators = CreatorCatalogue(
        index,
        hnsw_ef=deps.hnsw_ef,
        on_write=[s.invalidate for s in sources],  # item-to-item and social share `verdicts`
    )
    return ServingBundle(index.version, user_tower.version, retriever, creators, close)


def make_servicer(settings: Settings, deps: RetrievalDeps) -> RetrievalServicer:
    """Builds the first bundle from `deps` and the servicer; starts the version watcher if asked to.

    The watcher's stop and the switch's close join `deps.closers`, so closing deps stops both.
    """
    if settings.colocated_replica:
        # Its creator index copy would take the writes sent to this service, and no other copy would.
        raise SettingsError(
            "KINDRED_COLOCATED_REPLICA is for co-located ranking processes "
            "(KINDRED_RETRIEVAL_TARGET=inprocess), not for the retrieval service, which takes writes"
        )
    return RetrievalServicer(serving_switch(settings, deps), deps.search)


def serving_switch(settings: Settings, deps: RetrievalDeps) -> BundleSwitch:
    """The first bundle from `deps` behind a switch, with the version watcher if asked for (see
    make_servicer); ranking uses it directly when retrieval runs in its process."""
    switch = BundleSwitch(build_bundle(deps, deps.index, deps.user_tower, close=deps.close_index))
    if deps.reload_poll_s is not None:
        watcher = BundleWatcher(
            switch,
            probe=lambda: promoted_versions(settings),
            build=lambda key: open_bundle(settings, deps, key),
            poll_s=deps.reload_poll_s,
        ).start()
        deps.closers += [switch.close, watcher.stop]  # closed in reverse: the watcher first
    return switch


def promoted_versions(settings: Settings) -> VersionKey | None:
    """(index version, user tower version) promoted now, or None while they do not belong together.

    The trainer switches the index and the models one after the other; between the two, the tower's
    manifest names another index than CURRENT does, and serving waits for the pair to settle.
    """
    from kindred.models import current_version, read_manifest
    from kindred.vectorstore import current_creator_version

    index_version = current_creator_version(settings)
    model_version = current_version(settings.resolved_models_dir, USER_TOWER)
    if not index_version or not model_version:
        return None
    manifest = read_manifest(settings.resolved_models_dir, USER_TOWER, model_version)
    if str(manifest.get("index_version", model_version)) != index_version:
        return None
    return (index_version, model_version)


def open_bundle(settings: Settings, deps: RetrievalDeps, key: VersionKey) -> ServingBundle:
    """Opens the promoted index and tower (off the request path) and builds a bundle on them."""
    index, tower = open_versioned(settings)
    try:
        if paired_index_version(tower) != index.version:
            raise NotReady(f"user tower {tower.version} belongs to index {paired_index_version(tower)}")
        return build_bundle(deps, index, tower, close=index.close)
    except BaseException:
        index.close()
        raise


class _Once:
    """Runs `fn` on the first call only (thread-safe)."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn: Callable[[], None] | None = fn
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            fn, self._fn = self._fn, None
        if fn is not None:
            fn()


def _once(fn: Callable[[], None]) -> _Once:
    return _Once(fn)


def wait_for_deps(settings: Settings, retry_s: float = 5.0, *, search: bool = True) -> RetrievalDeps:
    """build_deps, once the trainer has published what it opens. A fresh deployment may start before
    that: wait (not ready, not crash-looping). A model that does not fit is an error no waiting fixes."""
    while True:
        try:
            return build_deps(settings, search=search)
        except ModelMismatch:
            raise
        except FailedPrecondition as exc:
            log.warning("not ready: %s; retrying in %.0f s", exc, retry_s)
            time.sleep(retry_s)


# The methods that only compute in this process, one at a time by default (kindred.compute_gate).
# Not Search: about a fifth of a Search is the query encoder's onnxruntime run, which releases the GIL,
# so two Searches overlapping (one encoding while the other is in the engine) finish sooner than one at
# a time — with the 2 worker threads, 6 alternated rounds at 4 callers (bench.latency.search_gate_ab,
# 2026-11-27 20:30): p50 26.2 against 28.7 ms gated, p99 37.4 against 37.6, 151 against 138 calls/s.
COMPUTE_METHODS: Final = ("Retrieve", "SimilarCreators")

SPEC: ServiceSpec[RetrievalDeps] = ServiceSpec(
    name="retrieval",
    grpc_service=SERVICE_NAME,
    port=lambda settings: settings.retrieval_port,
    add_servicer=retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server,
    build_deps=wait_for_deps,
    make_servicer=make_servicer,
    close_deps=lambda deps: deps.close(),
    # Reads of the in-process index, models and store: computation only (kindred.compute_gate), unless
    # the store or the engine is a server. The writes are left out: with search replicas they wait on
    # the write log.
    gated_methods=lambda settings: COMPUTE_METHODS if settings.local_reads_only else (),
    computes_only=lambda settings: settings.local_reads_only,
)


# A search replica (KINDRED_SEARCH_REPLICA): Search and the search writes, no creator index or models.
SEARCH_REPLICA_SPEC: ServiceSpec[SearchService] = ServiceSpec(
    name="retrieval",
    grpc_service=SERVICE_NAME,
    port=lambda settings: settings.retrieval_port,
    add_servicer=retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server,
    build_deps=open_search_replica,
    make_servicer=lambda _settings, search: RetrievalServicer(None, search),
    close_deps=lambda search: search.close(),
    # Search is not gated (see COMPUTE_METHODS); 2 worker threads still bound how many compute at once.
    computes_only=lambda settings: settings.local_reads_only,
)


def create_server(
    settings: Settings, deps: RetrievalDeps | None = None, *, port: int | None = None
) -> KindredServer:
    """A SERVING server around `deps` (built from settings if not given); the caller closes deps."""
    return SPEC.create_server(settings, deps, port=port)


def main() -> None:
    settings = Settings.from_env()
    run_service(SEARCH_REPLICA_SPEC if settings.search_replica else SPEC, settings)
