"""Ranking with retrieval in its process (KINDRED_RETRIEVAL_TARGET=inprocess): the real wiring on a small
real platform — a qdrant-edge creator index, ONNX user tower and ranker, the embedded online store —
served over gRPC on port 0, with no retrieval service running."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kindred.config import IN_PROCESS, Settings
from kindred.features import RANKER_FEATURES, USER_TOWER_FEATURES
from kindred.models import promote, write_model
from kindred.store.embedded import EmbeddedOnlineStore
from kindred.v1 import common_pb2, ranking_pb2, ranking_pb2_grpc
from kindred.vectorstore import index_creators
from ranking_svc import server as ranking_server
from ranking_svc.retrieval_client import LocalRetriever

N, DIM = 60, 8
CATEGORIES = ("Music", "Art", "Podcasts")


def _onnx(weights: np.ndarray, output: str, *, normalise: bool) -> bytes:
    nodes = [helper.make_node("MatMul", ["features", "W"], ["y" if normalise else output])]
    inits = [numpy_helper.from_array(weights, "W")]
    if normalise:  # the user tower's unit vectors
        nodes += [
            helper.make_node("ReduceL2", ["y"], ["norm"], axes=[1], keepdims=1),
            helper.make_node("Add", ["norm", "eps"], ["safe"]),
            helper.make_node("Div", ["y", "safe"], [output]),
        ]
        inits.append(numpy_helper.from_array(np.array([1e-12], np.float32), "eps"))
    out_shape = ["B", weights.shape[1]] if weights.ndim == 2 else ["B"]
    graph = helper.make_graph(
        nodes,
        output,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["B", weights.shape[0]])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data = tmp_path_factory.mktemp("colocated")
    settings = Settings.from_env({"KINDRED_DATA_DIR": str(data), "KINDRED_RETRIEVAL_TARGET": IN_PROCESS})
    rng = np.random.default_rng(3)
    ids = [f"c{i:03d}" for i in range(N)]
    vectors = rng.normal(size=(N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    payloads = [
        {"category": CATEGORIES[i % 3], "language": "en", "mature": False, "name": c}
        for i, c in enumerate(ids)
    ]
    index_creators(settings, "v1", ids, vectors, payloads)
    models = settings.resolved_models_dir
    tower = rng.normal(size=(len(USER_TOWER_FEATURES), DIM)).astype(np.float32)
    manifest = {"inputs": ["features"], "outputs": ["user_vec"], "features": list(USER_TOWER_FEATURES)}
    write_model(models, "two_tower_user", "v1", _onnx(tower, "user_vec", normalise=True), manifest)
    promote(models, "two_tower_user", "v1")
    ranker = np.zeros((len(RANKER_FEATURES), 1), np.float32)
    ranker[RANKER_FEATURES.index("cross.two_tower_score"), 0] = 1.0
    manifest = {"inputs": ["features"], "outputs": ["score"], "features": list(RANKER_FEATURES)}
    write_model(models, "ranker", "v1", _onnx(ranker, "score", normalise=False), manifest)
    promote(models, "ranker", "v1")
    store = EmbeddedOnlineStore(settings.data_dir / "online")
    try:
        store.put("fan", {"f1": {"fan_id": "f1", "following": ["c001", "c002"], "history": ["c001", "c002"]}})
        store.put("creator", {c: {"creator_id": c, **p} for c, p in zip(ids, payloads, strict=True)})
        store.put(
            "popular", {"global": {"creator_ids": ids[:30], "scores": [1.0 / (i + 1) for i in range(30)]}}
        )
    finally:
        store.close()
    return settings


@pytest.fixture(scope="module")
def stub(settings: Settings) -> Iterator[ranking_pb2_grpc.RankingServiceStub]:
    deps = ranking_server.build_deps(settings)
    server = ranking_server.create_server(settings, deps, port=0).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield ranking_pb2_grpc.RankingServiceStub(channel)
    finally:
        server.stop(0)
        deps.close()


def test_inprocess_target_builds_ranking_over_retrievals_own_domain(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """...and opens no search index: SearchRanked calls the search target, so an in-process search index
    would only hold a shard lock (which several co-located replicas could not all take)."""
    from retrieval_svc import server as retrieval_server

    def no_search(_settings: Settings) -> None:
        raise AssertionError("the co-located mode opened the search index")

    monkeypatch.setattr(retrieval_server, "open_search", no_search)
    deps = ranking_server.build_deps(settings)
    try:
        assert isinstance(deps.retriever, LocalRetriever) and deps.channel is None
    finally:
        deps.close()


def test_recommend_is_served_without_a_retrieval_service(stub: ranking_pb2_grpc.RankingServiceStub) -> None:
    response = stub.Recommend(ranking_pb2.RecommendRequest(fan_id="f1", k=5), timeout=10)
    ids = [c.item_id for c in response.items]
    assert len(ids) == 5 and response.fallback == "" and not {"c001", "c002"} & set(ids)  # follows excluded
    assert response.retriever.version == "v1" and response.ranker.version == "v1"
    assert all(c.source != common_pb2.CANDIDATE_SOURCE_UNSPECIFIED and c.reasons for c in response.items)
    assert all("ranker" in c.scores and "retrieval" in c.scores for c in response.items)
    # Filters reach retrieval's engine as they would over the hop.
    only_art = stub.Recommend(
        ranking_pb2.RecommendRequest(fan_id="f1", k=5, filters=common_pb2.Filters(categories=["Art"])),
        timeout=10,
    )
    assert only_art.items and all(int(c.item_id[1:]) % 3 == 1 for c in only_art.items)


def test_bad_input_is_still_invalid_argument_naming_the_field(
    stub: ranking_pb2_grpc.RankingServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Recommend(ranking_pb2.RecommendRequest(fan_id="f1", k=0), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "k" in (info.value.details() or "")


def test_serving_processes_take_the_garbage_collector_off_the_request_path() -> None:
    import gc

    from kindred.service import GC_THRESHOLD0, tune_gc_for_serving

    before = gc.get_threshold()
    try:
        tune_gc_for_serving()
        assert gc.get_freeze_count() > 0 and gc.get_threshold() == (GC_THRESHOLD0, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_colocated_replicas_serve_one_data_dir_side_by_side(
    settings: Settings, stub: ranking_pb2_grpc.RankingServiceStub
) -> None:
    """The fixture's process holds the creator index; two more co-located processes
    (KINDRED_COLOCATED_REPLICA) open copies of their own and give the same page. Without a name the
    index is locked."""
    from kindred.vectorstore import VectorIndexError, creator_index_root, open_creator_index

    with pytest.raises(VectorIndexError):
        open_creator_index(settings).close()
    expected = stub.Recommend(ranking_pb2.RecommendRequest(fan_id="f1", k=5), timeout=10)
    replicas = []
    try:
        for name in ("r1", "r2"):
            deps = ranking_server.build_deps(settings.replace(colocated_replica=name))
            replicas.append(deps)
            server = ranking_server.create_server(settings, deps, port=0).start()
            try:
                with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                    page = ranking_pb2_grpc.RankingServiceStub(channel).Recommend(
                        ranking_pb2.RecommendRequest(fan_id="f1", k=5), timeout=10
                    )
            finally:
                server.stop(0)
            assert [(c.item_id, c.scores["ranker"]) for c in page.items] == [
                (c.item_id, c.scores["ranker"]) for c in expected.items
            ]
        copies = creator_index_root(settings) / "v1" / "replicas"
        assert {"r1", "r2"} <= {p.name for p in copies.iterdir()}
    finally:
        for deps in replicas:
            deps.close()


def test_a_colocated_replica_name_needs_the_colocated_mode(settings: Settings) -> None:
    from kindred.config import SettingsError
    from retrieval_svc import server as retrieval_server

    meshed = settings.replace(colocated_replica="r1", retrieval_target="127.0.0.1:1")
    with pytest.raises(SettingsError, match="KINDRED_COLOCATED_REPLICA"):
        ranking_server.build_deps(meshed)
    # The retrieval service takes writes: a copy of its own would keep them from every other process.
    deps = retrieval_server.build_deps(settings.replace(colocated_replica="r9"), reload_poll_s=None)
    try:
        with pytest.raises(SettingsError, match="KINDRED_COLOCATED_REPLICA"):
            retrieval_server.make_servicer(settings.replace(colocated_replica="r9"), deps)
    finally:
        deps.close()
    with pytest.raises(ValueError, match=r"KINDRED_COLOCATED_REPLICA name '\.\./x'"):
        ranking_server.build_deps(settings.replace(colocated_replica="../x"))
