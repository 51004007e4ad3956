"""Process settings: one frozen object per process, read from the environment once.

Every key is `KINDRED_<FIELD>` in upper case. Unknown `KINDRED_*` keys are rejected so a typo
(`KINDRED_DATADIR`) fails loudly instead of silently using a default. Tests build settings from a
dict: `Settings.from_env({"KINDRED_DATA_DIR": str(tmp_path)})`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

PREFIX = "KINDRED_"

OnlineStoreBackend = Literal["embedded", "redis"]
VectorBackend = Literal["edge", "server"]


class SettingsError(ValueError):
    """An environment variable is unknown or has a value of the wrong type."""


# The one place the default lives (kindred.vectorstore.edge opens shards with it when not told).
DEFAULT_ENGINE_SEARCH_THREADS = 1
# The KINDRED_RETRIEVAL_TARGET that puts retrieval's domain inside the ranking process (ranking_svc.server).
IN_PROCESS = "inprocess"
# gRPC worker threads per server when KINDRED_SERVER_THREADS is unset (Settings.server_threads_for).
DEFAULT_SERVER_THREADS = 8
COLOCATED_SERVER_THREADS = 2


@dataclasses.dataclass(frozen=True)
class Settings:
    # Where generated data, the event log, stores, indexes and models live on one machine.
    data_dir: Path = Path("var/data")
    # Versioned model directories; defaults to <data_dir>/models.
    models_dir: Path | None = None

    host: str = "127.0.0.1"
    retrieval_port: int = 50051
    ranking_port: int = 50052
    notify_port: int = 50053
    events_port: int = 50054
    # Downstream addresses; default to host:port of the matching service.
    retrieval_target: str = ""
    ranking_target: str = ""
    # Where ranking's SearchRanked calls Search; defaults to the retrieval target. Set it to the search
    # replicas (e.g. "ipv4:127.0.0.1:50061,127.0.0.1:50062"; balanced least-request by
    # kindred.grpc_client.make_channel), which serve Search but not Retrieve.
    search_target: str = ""

    online_store: OnlineStoreBackend = "embedded"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Search replicas (retrieval_svc.search.replication): a name makes this retrieval process one of
    # several serving Search, each from its own copy of the search index under
    # <data_dir>/index/search-replicas/<name>, kept equal through the write log (a Redis stream at
    # redis_url named search_write_log). Such a process serves no recommendations. "": one process
    # owns <data_dir>/index/search and applies writes itself.
    search_replica: str = ""
    # Co-located ranking replicas: a name makes this ranking process (KINDRED_RETRIEVAL_TARGET=inprocess)
    # serve each creator index version from its own copy, <version>/replicas/<name>/shard, so several
    # such processes can serve one data dir behind a least-request client. The copies take no writes:
    # the co-located mode has no retrieval service to write through. "": open the version itself.
    colocated_replica: str = ""
    search_write_log: str = "kindred:search:writes"
    vector_backend: VectorBackend = "edge"
    qdrant_url: str = "http://127.0.0.1:6334"
    # Threads qdrant-edge searches one open shard's segments with (its search pool; it starts 8 on this
    # 2-CPU machine for a shard opened without a size). 1: a query runs on one thread — on 2 cores shared
    # with the gRPC threads and the other services, fanning a query out over the segments cost more CPU
    # than it saved wall time (kindred.vectorstore.edge.SEARCH_THREADS says where it was measured).
    engine_search_threads: int = DEFAULT_ENGINE_SEARCH_THREADS

    # Server protection: requests above these are shed (RESOURCE_EXHAUSTED) or refused.
    max_concurrent_rpcs: int = 64
    max_receive_bytes: int = 4 * 1024 * 1024
    # Deadline for calls that arrive without one, and for downstream calls (seconds).
    default_deadline_s: float = 2.0
    shutdown_grace_s: float = 5.0
    # Worker threads per gRPC server; None: the service picks by its role (ServiceSpec.server_threads).
    server_threads: int | None = None
    # How many calls of the methods a service marks as pure computation may run at once in one process
    # (kindred.compute_gate: the others wait their turn instead of taking turns on the GIL); 0: no gate.
    compute_concurrency: int = 1
    # If set, every finished span is also appended to this file as one JSON object a line
    # (used by the end-to-end test to check one trace spans every hop, and handy for debugging).
    trace_file: Path | None = None

    def __post_init__(self) -> None:
        if self.engine_search_threads < 1:
            raise SettingsError(
                f"KINDRED_ENGINE_SEARCH_THREADS must be >= 1, got {self.engine_search_threads}"
            )
        if self.server_threads is not None and self.server_threads < 1:
            raise SettingsError(f"KINDRED_SERVER_THREADS must be >= 1, got {self.server_threads}")
        if self.compute_concurrency < 0:
            raise SettingsError(
                f"KINDRED_COMPUTE_CONCURRENCY must be >= 0 (0: no gate), got {self.compute_concurrency}"
            )

    @property
    def local_reads_only(self) -> bool:
        """Every read a request makes is of this process's own memory and disk: the embedded online store
        and the in-process engine. Then a call that reads never waits on another server, which is what
        the compute gate and the 2-thread default assume (kindred.compute_gate); with Redis or a Qdrant
        server a call waits on the network, and one waiting in the gate would hold up the rest."""
        return self.online_store == "embedded" and self.vector_backend == "edge"

    @property
    def colocated(self) -> bool:
        """A ranking process that runs retrieval's domain itself (KINDRED_RETRIEVAL_TARGET=inprocess)."""
        return self.resolved_retrieval_target == IN_PROCESS

    def server_threads_for(self, *, computes_only: bool) -> int:
        """KINDRED_SERVER_THREADS, else 2 for a process whose calls only compute (never wait on another
        service: retrieval, a co-located ranking process), else 8.

        Why two there: more threads than cores only contend for the GIL (bench.latency.replica_sweep,
        bench/results/recommend_replicas.json: one co-located process at 4 callers p99 47.7 / 57.0 ms
        with 2 threads against 68.6 / 69.2 ms with 8; retrieval in the mesh, kindred.compute_gate's
        docstring). Two rather than one, so a call that does wait (a write on the search replicas' log, a
        health watch or reflection stream) never holds the only thread; the compute gate keeps the two
        from computing at once. A ranking process that calls retrieval over gRPC waits on that hop, so
        it keeps 8."""
        if self.server_threads is not None:
            return self.server_threads
        return COLOCATED_SERVER_THREADS if computes_only else DEFAULT_SERVER_THREADS

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.data_dir / "models"

    @property
    def resolved_retrieval_target(self) -> str:
        return self.retrieval_target or f"{self.host}:{self.retrieval_port}"

    @property
    def resolved_search_target(self) -> str:
        return self.search_target or self.resolved_retrieval_target

    @property
    def resolved_ranking_target(self) -> str:
        return self.ranking_target or f"{self.host}:{self.ranking_port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Builds settings from `environ` (default: os.environ), rejecting unknown KINDRED_* keys."""
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in env.items():
            if not key.startswith(PREFIX):
                continue
            name = key[len(PREFIX) :].lower()
            if name not in fields:
                known = ", ".join(PREFIX + n.upper() for n in sorted(fields))
                raise SettingsError(f"unknown setting {key}; known settings: {known}")
            values[name] = _parse(key, raw, hints[name])
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _parse(key: str, raw: str, hint: Any) -> Any:
    args = get_args(hint)
    if args and type(None) in args:  # Optional[X]
        if raw == "":
            return None
        hint = next(a for a in args if a is not type(None))
        args = get_args(hint)
    try:
        if hint is Path:
            return Path(raw)
        if hint is bool:
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes"}
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if args and all(isinstance(a, str) for a in args):  # Literal[...]
            if raw not in args:
                raise ValueError(f"expected one of {', '.join(args)}")
            return raw
        return raw
    except ValueError as exc:
        raise SettingsError(f"{key}={raw!r}: {exc}") from exc
