"""The floor: what Recommend could not beat with this stack, measured piece by piece.

- `grpc_rtt`: an empty unary call (the standard health Check) to a running service: one loopback
  hop through the same server stack (interceptors, thread pool, serialisation), no work.
- `QdrantFloor`: the creator index version the service serves, copied to a temporary directory (an
  edge shard is locked by the one process that opened it) and queried in-process with the very request
  retrieval sends: a real user-tower vector, the same limit, hnsw_ef and payload filter.
- `OnnxFloor`: the two promoted models in fresh onnxruntime sessions configured like the services'
  (1 intra-op thread, sequential): the user tower at batch 1 and the ranker at the candidate count.
- `AlsFloor`: `implicit` ALS fit on the same follow pairs the services exclude (the fans' `following`
  in the online store), then its in-process `recommend(N=10)` for one fan at a time.

Each returns raw timings in seconds; the caller summarises them.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.latency.load import time_calls


def grpc_rtt(target: str, n: int, warmup: int = 20) -> list[float]:
    """Sequential health Checks on one channel (seconds each)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        return time_calls(lambda _: stub.Check(request, timeout=5.0), [None], repeat=n, warmup=warmup)


@dataclasses.dataclass(frozen=True)
class RetrievalShape:
    """What one Recommend(k) asks of retrieval and of the two-tower source (from the services' constants)."""

    k: int
    retrieve_k: int  # candidates ranking asks retrieval for (= ranker batch)
    two_tower_n: int  # limit of the two-tower ANN query
    hnsw_ef: int
    retrieve_k_ef: int  # hnsw_ef of a query at limit retrieve_k (a backfill)

    @classmethod
    def for_k(cls, k: int, hnsw_ef_min: int = 128) -> RetrievalShape:
        from kindred.vectorstore import search_ef
        from ranking_svc.recommender import MIN_RETRIEVE, RETRIEVAL_MULTIPLIER
        from retrieval_svc.retriever import DEFAULT_QUOTA_SHARES, MIN_SLACK, resolve_quotas

        want = max(MIN_RETRIEVE, k * RETRIEVAL_MULTIPLIER)
        quota = resolve_quotas(want, DEFAULT_QUOTA_SHARES, {})["two_tower"]
        n = min(want, quota + max(MIN_SLACK, quota // 4))
        return cls(
            k=k,
            retrieve_k=want,
            two_tower_n=n,
            hnsw_ef=search_ef(n, hnsw_ef_min),
            retrieve_k_ef=search_ef(want, hnsw_ef_min),
        )


def fan_rows(data_dir: Path, fan_ids: Sequence[str]) -> list[dict[str, Any] | None]:
    """The online store's "fan" rows (read-only here; WAL lets this run beside the services)."""
    from kindred.config import Settings
    from kindred.store.online import open_online_store

    store = open_online_store(Settings.from_env({"KINDRED_DATA_DIR": str(data_dir)}))
    try:
        out: list[dict[str, Any] | None] = []
        for start in range(0, len(fan_ids), 2000):
            out.extend(store.get("fan", list(fan_ids[start : start + 2000])))
        return out
    finally:
        store.close()


def creator_rows(data_dir: Path, creator_ids: Sequence[str]) -> list[dict[str, Any] | None]:
    from kindred.config import Settings
    from kindred.store.online import open_online_store

    store = open_online_store(Settings.from_env({"KINDRED_DATA_DIR": str(data_dir)}))
    try:
        return store.get("creator", list(creator_ids))
    finally:
        store.close()


class OnnxFloor:
    """Fresh sessions on the promoted user tower and ranker, configured like kindred.models.load_model."""

    def __init__(self, models_dir: Path) -> None:
        import onnxruntime as ort

        from kindred.models import version_dir

        self.sessions: dict[str, Any] = {}
        self.manifests: dict[str, dict[str, Any]] = {}
        for name in ("two_tower_user", "ranker"):
            directory = version_dir(models_dir, name)
            manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.log_severity_level = 3
            self.sessions[name] = ort.InferenceSession(
                str(directory / manifest.get("model_file", "model.onnx")),
                sess_options=options,
                providers=["CPUExecutionProvider"],
            )
            self.manifests[name] = manifest

    def run(self, name: str, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        session = self.sessions[name]
        manifest = self.manifests[name]
        return np.asarray(session.run([manifest["outputs"][0]], {manifest["inputs"][0]: x})[0])

    def time(
        self, name: str, inputs: Sequence[npt.NDArray[np.float32]], repeat: int, warmup: int = 20
    ) -> list[float]:
        session = self.sessions[name]
        out_name, in_name = [self.manifests[name]["outputs"][0]], self.manifests[name]["inputs"][0]
        return time_calls(
            lambda x: session.run(out_name, {in_name: x}), list(inputs), repeat=repeat, warmup=warmup
        )


class QdrantFloor:
    """A private copy of the served creator index version, opened in this process."""

    def __init__(self, data_dir: Path, *, search_threads: int | None = None) -> None:
        """`search_threads`: the copy's engine search pool (default: what retrieval uses)."""
        from kindred.config import Settings
        from kindred.vectorstore import creator_index_root, current_creator_version

        settings = Settings.from_env({"KINDRED_DATA_DIR": str(data_dir)})
        if search_threads is not None:
            settings = settings.replace(engine_search_threads=search_threads)
        version = current_creator_version(settings)
        if version is None:
            raise RuntimeError(f"no creator index under {data_dir} (train first)")
        source = creator_index_root(settings) / version
        self._tmp = Path(tempfile.mkdtemp(prefix="kindred-bench-index-"))
        t0 = time.perf_counter()
        shutil.copytree(source, self._tmp / version)
        self.copy_s = time.perf_counter() - t0
        self.manifest: dict[str, Any] = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
        self.version = version
        import qdrant_edge as qe

        from kindred.vectorstore.edge import EdgeIndex

        self._qe = qe
        self.vector_name = str(self.manifest["vector_name"])
        t0 = time.perf_counter()
        # As retrieval opens it (kindred.vectorstore.open_creator_index): its search pool, its item ids.
        self.index = EdgeIndex.open(
            self._tmp / version / "shard",
            dim=int(self.manifest["dim"]),
            vector_name=self.vector_name,
            version=version,
            distance=self.manifest.get("distance", "cosine"),
            search_threads=settings.engine_search_threads,
        )
        self.shard = self.index.shard
        self.search_threads = settings.engine_search_threads
        self.open_s = time.perf_counter() - t0
        self.size_mb = sum(p.stat().st_size for p in source.rglob("*") if p.is_file()) / 2**20

    def request(
        self,
        vector: npt.NDArray[np.float32],
        limit: int,
        hnsw_ef: int,
        exclude_ids: Sequence[str],
        *,
        filtered: bool = True,
        with_payload: bool | list[str] = True,
    ) -> Any:
        """The QueryRequest kindred.vectorstore.edge.EdgeIndex.search builds for the same arguments
        (`with_payload`: True, False, or the payload keys to return, e.g. ["item_id"])."""
        from kindred.vectorstore import PayloadFilter
        from kindred.vectorstore.edge import edge_filter

        qe = self._qe
        flt = edge_filter(PayloadFilter().excluding(exclude_ids)) if filtered else None
        return qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest([float(x) for x in vector], using=self.vector_name),
            filter=flt,
            params=qe.SearchParams(hnsw_ef=hnsw_ef, exact=False),
            with_payload=with_payload,
        )

    def time(self, requests: Sequence[Any], repeat: int, warmup: int = 20) -> list[float]:
        return time_calls(self.shard.query, list(requests), repeat=repeat, warmup=warmup)

    def cpu_ms_per_query(self, requests: Sequence[Any], repeat: int, warmup: int = 20) -> float:
        """CPU of every thread of this process (the engine's search pool included) per query."""
        for i in range(warmup):
            self.shard.query(requests[i % len(requests)])
        t0 = time.process_time()
        for _ in range(repeat):
            for request in requests:
                self.shard.query(request)
        return (time.process_time() - t0) / (repeat * len(requests)) * 1e3

    def time_wrapper(
        self,
        vectors: Sequence[npt.NDArray[np.float32]],
        exclude: Sequence[Sequence[str]],
        limit: int,
        hnsw_ef: int,
        repeat: int,
        warmup: int = 20,
    ) -> list[float]:
        """The same queries through kindred's EdgeIndex.search as the two-tower source calls it (checks,
        filter, ids only)."""
        from kindred.vectorstore import PayloadFilter

        args = [(v, PayloadFilter().excluding(ex)) for v, ex in zip(vectors, exclude, strict=True)]
        return time_calls(
            lambda a: self.index.search(a[0], limit, a[1], hnsw_ef=hnsw_ef, with_payload=False),
            args,
            repeat=repeat,
            warmup=warmup,
        )

    def close(self) -> None:
        try:
            self.index.close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)


@dataclasses.dataclass
class AlsFloor:
    model: Any
    user_items: Any  # scipy csr (fans × creators)
    fan_index: dict[str, int]
    fit_s: float
    nnz: int

    @classmethod
    def fit(
        cls,
        following: Mapping[str, Sequence[str]],
        creator_ids: Sequence[str],
        *,
        factors: int = 64,
        iterations: int = 15,
        regularization: float = 0.05,
        seed: int = 7,
    ) -> AlsFloor:
        import scipy.sparse as sp
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        col = {c: i for i, c in enumerate(creator_ids)}
        fans = sorted(following)
        fan_index = {f: i for i, f in enumerate(fans)}
        rows, cols = [], []
        for f in fans:
            for c in following[f]:
                if c in col:
                    rows.append(fan_index[f])
                    cols.append(col[c])
        data = np.ones(len(rows), dtype=np.float32)
        user_items = sp.csr_matrix((data, (rows, cols)), shape=(len(fans), len(creator_ids)))
        model = AlternatingLeastSquares(
            factors=factors,
            iterations=iterations,
            regularization=regularization,
            random_state=seed,
            num_threads=1,
        )
        with threadpool_limits(1):
            t0 = time.perf_counter()
            model.fit(user_items, show_progress=False)
            fit_s = time.perf_counter() - t0
        return cls(model, user_items, fan_index, fit_s, int(user_items.nnz))

    def time(self, fan_ids: Sequence[str], repeat: int, warmup: int = 20) -> list[float]:
        from threadpoolctl import threadpool_limits

        # Rows sliced beforehand: the floor is the recommend call, not scipy's row slicing.
        users = [(u, self.user_items[u]) for u in (self.fan_index[f] for f in fan_ids if f in self.fan_index)]
        with threadpool_limits(1):
            return time_calls(
                lambda ur: self.model.recommend(ur[0], ur[1], N=10), users, repeat=repeat, warmup=warmup
            )


class InProcessRecommend:
    """Recommend with no gRPC transport: both services' servicers, built by their own server modules
    (`build_deps` + `make_servicer`, so the same sources, quotas, models, re-ranking and store), in this
    process. Ranking's retrieval client talks to the retrieval servicer through `_LoopbackChannel`, which
    serialises and parses both messages as the wire would; what is left out is the gRPC transport, the
    server thread pools and the interceptors. Opens the served index itself: stop the services first.
    Spans are no-ops here (no tracer provider), slightly cheaper than the services' recording spans.
    """

    def __init__(self, data_dir: Path) -> None:
        from kindred.config import Settings
        from ranking_svc import server as ranking_server
        from ranking_svc.retrieval_client import GrpcRetriever
        from retrieval_svc import server as retrieval_server

        settings = Settings.from_env({"KINDRED_DATA_DIR": str(data_dir)})
        self.retrieval_deps = retrieval_server.build_deps(settings, reload_poll_s=None)
        try:
            self.retrieval = retrieval_server.make_servicer(settings, self.retrieval_deps)
            # A second bundle over the same index, for timing the domain step on its own.
            d = self.retrieval_deps
            self.retriever = retrieval_server.build_bundle(d, d.index, d.user_tower).retriever
            self.ranking_deps = ranking_server.build_deps(settings)
        except BaseException:
            self.retrieval_deps.close()
            raise
        if self.ranking_deps.channel is not None:
            self.ranking_deps.channel.close()  # never used: the loopback below replaces it
            self.ranking_deps.channel = None
        self.ranking_deps.retriever = GrpcRetriever(_LoopbackChannel(self.retrieval))  # type: ignore[arg-type]
        self.ranking = ranking_server.make_servicer(settings, self.ranking_deps)

    def __call__(self, fan_id: str) -> Any:
        from kindred.v1 import ranking_pb2

        response = self.ranking.Recommend(ranking_pb2.RecommendRequest(fan_id=fan_id, k=10), None)  # type: ignore[arg-type]
        if response.fallback or len(response.items) < 10:
            raise RuntimeError(f"in-process Recommend for {fan_id} degraded: {response.fallback!r}")
        return response

    def proto_costs(self, fans: Sequence[str], retrieve_k: int, repeat: int) -> dict[str, list[float]]:
        """Seconds spent per request on retrieval's domain step and on the messages of the hop."""
        from kindred.v1 import retrieval_pb2
        from ranking_svc.retrieval_client import candidates_from_proto
        from retrieval_svc.retriever import RetrieveQuery
        from retrieval_svc.servicer import retrieve_response

        queries = [RetrieveQuery(fan_id=f, k=retrieve_k) for f in fans]
        results = [self.retriever.retrieve(q) for q in queries]

        responses = [retrieve_response(r) for r in results]
        blobs = [r.SerializeToString() for r in responses]
        return {
            "retrieve_domain": time_calls(self.retriever.retrieve, queries, repeat=repeat, warmup=5),
            "to_proto": time_calls(retrieve_response, results, repeat=repeat, warmup=5),
            "serialize": time_calls(lambda r: r.SerializeToString(), responses, repeat=repeat, warmup=5),
            "parse": time_calls(retrieval_pb2.RetrieveResponse.FromString, blobs, repeat=repeat, warmup=5),
            # As ranking reads the reply: every candidate's id, source and scores; sources and reasons
            # are read later for the page's candidates only (ranking_svc.retrieval_client).
            "from_proto": time_calls(
                lambda r: candidates_from_proto(r.candidates, details=False),
                responses,
                repeat=repeat,
                warmup=5,
            ),
            "bytes": [float(len(b)) for b in blobs],
        }

    def degraded_sources(self, fans: Sequence[str], retrieve_k: int) -> dict[str, dict[str, Any]]:
        """Which candidate sources were skipped or failed for these fans (with the data as trained)."""
        import logging

        from retrieval_svc.retriever import RetrieveQuery

        out: dict[str, dict[str, Any]] = {}
        quiet = logging.getLogger("retrieval_svc")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # a failing source logs a traceback per request
        try:
            for fan in fans:
                result = self.retriever.retrieve(RetrieveQuery(fan_id=fan, k=retrieve_k))
                for source, why in result.degraded.items():
                    entry = out.setdefault(source, {"fans": 0, "example": why[:200]})
                    entry["fans"] += 1
        finally:
            quiet.setLevel(level)
        return out

    def close(self) -> None:
        try:
            self.ranking_deps.close()
        finally:
            self.retrieval_deps.close()


class _LoopbackChannel:
    """Just enough of grpc.Channel for a generated stub: each call serialises the request, runs the
    servicer method in this thread (no context: servicers here read none) and parses its response."""

    def __init__(self, servicer: Any) -> None:
        self._servicer = servicer

    def unary_unary(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **_: Any
    ) -> Any:
        handler = getattr(self._servicer, method.rsplit("/", 1)[-1])
        request_type: Any = None

        def call(request: Any, timeout: float | None = None, **__: Any) -> Any:
            nonlocal request_type
            request_type = request_type or type(request)
            received = request_type.FromString(request_serializer(request))
            return response_deserializer(handler(received, None).SerializeToString())

        return call
