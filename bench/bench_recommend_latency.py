"""Latency of Recommend through gRPC on loopback, with a per-stage breakdown and the floor beside it.

    python bench/bench_recommend_latency.py [--quick] [--data-dir D] [--creators N] [--fans N]
                                            [--days N] [--config bench|tiny|default] [--requests N]
                                            [--baseline REV [--ab-rounds N]] [--no-colocated]

Default scale: 100,000 creators (the design's target; what retrieval indexes), 5,000 fans, 14 days — a
fresh build (generate 5.5 min + train 4.8 min) takes ~10 minutes on the shared 2-core machine. 20,000 fans
took 9 + 12 minutes; pass --fans 20000 for that. The "bench" trainer config is default.toml's models
with a small hold-out (see BENCH_TRAINER_CONFIG for why).

1. Data: a generated platform (`kindred generate`) trained by `python -m trainer train`, under
   var/bench/recommend/c<creators>-f<fans>-d<days>-s<seed>-<config>/ (or --data-dir); reused when it
   is already there. Build times are kept in bench_build.json beside the data, so a reused platform
   still reports what building it cost.
2. Phase A — the numbers, per configuration: "mesh" = retrieval_svc and ranking_svc started as real
   processes (`python -m kindred serve`, free loopback ports, KINDRED_* environment), no trace file;
   "colocated" = ranking_svc alone with retrieval's domain in its process (KINDRED_RETRIEVAL_TARGET=
   inprocess); with `--baseline REV`, "baseline" = the mesh of commit REV (`git archive`d to a temporary
   directory and run from there, same data, same machine, same run: the before of before/after).
   Recommend(k=10) at 1, 4 and 16 concurrent callers, closed loop, one gRPC channel and stub per caller
   thread; a fixed number of requests per level after a warm-up; fans sampled deterministically among
   fans with at least one follow. Also: CPU seconds each process spent per request (/proc/<pid>/stat),
   the empty gRPC round trip of each hop (health Check), and VmRSS / VmHWM of each service.
3. Phase B — where the time goes, per configuration: the services restarted with KINDRED_TRACE_FILE,
   warmed by one pass over the sampled fans (as the levels' caches were); a sample of requests from one
   caller; span durations aggregated per stage (bench/latency/traces.py).
4. The floor, in-process, after the services stopped: the bare Qdrant query (a copy of the served
   index version, the same request retrieval sends, a real user-tower vector), the bare ONNX runs (user
   tower batch 1, ranker at the candidate count), and `implicit` ALS `recommend(N=10)` for the same fans.
   Beside the floor, not in it: Recommend through both servicers in one process without the gRPC
   transport, the steps of the retrieval hop's messages, ranker feature building, span export.
   The floor has one gRPC round trip per hop of the configuration: two for the mesh, one co-located.
5. With `--ab-rounds N` (and a baseline): N more rounds of baseline then mesh at 4 callers, the order
   swapped every round, each side started afresh — the configurations of phase A run once each, minutes
   apart, and two runs of this bench on the shared machine have disagreed on the sign of a 10%
   difference; back-to-back pairs compare. Reported per round and as the median per-round ratio.

Writes bench/results/recommend_latency.json and the "## Recommend latency" section of bench/RESULTS.md
(only that section; other benchmarks own the others). Everything printed is measured in this run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit: its own threads do the work

from bench.latency import floor as F
from bench.latency import machine, procinfo, report, traces
from bench.latency.load import run_closed_loop, time_calls
from bench.latency.mesh import Mesh, start_mesh
from bench.latency.stats import round_floats, summarize_ms
from bench.results_md import write_section
from kindred.config import COLOCATED_SERVER_THREADS, Settings
from kindred.service import tune_gc_for_serving

REPO = Path(__file__).resolve().parents[1]
RESULTS_JSON = REPO / "bench" / "results" / "recommend_latency.json"
RESULTS_MD = REPO / "bench" / "RESULTS.md"
LEVELS = (1, 4, 16)
K = 10
GOAL_FLOOR_RATIO = 2.0
GOAL_P99_MS = 25.0
GOAL_P99_LEVEL = 4
BUILD_FILE = "bench_build.json"
# The "bench" trainer config: default.toml's models (64-d two-tower, 128-64 ranker) with a 0.5 % hold-out
# and 3 training cuts instead of 15 % and 6. Why: trainer/evaluate.py keeps three full-catalogue Python
# lists per hold-out fan (~11 MB each at 100k creators), so the default hold-out of a 20k-fan platform
# needs > 22 GB; and the ranker's data build is per cut. Latency does not depend on either.
BENCH_TRAINER_CONFIG = """# Written by bench/bench_recommend_latency.py (default models, small hold-out).
name = "bench-latency"
seed = 7

[split]
test_fraction = 0.005
n_cuts = 3
"""


def log(msg: str) -> None:
    print(f"[latency] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------------
# data


def ensure_data(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """Generates and trains if needed; returns the build record (times, sizes, config)."""
    build_path = data_dir / BUILD_FILE
    build: dict[str, Any] = json.loads(build_path.read_text()) if build_path.is_file() else {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINDRED_")}
    env.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "ORT_DISABLE_TELEMETRY": "1"})
    if not (data_dir / "catalogue" / "creators.jsonl").is_file():
        cmd = [
            sys.executable,
            "-m",
            "kindred",
            "generate",
            "--data-dir",
            str(data_dir),
            "--fans",
            str(args.fans),
            "--creators",
            str(args.creators),
            "--days",
            str(args.days),
            "--seed",
            str(args.seed),
            "--no-progress",
        ]
        build["generate_s"] = _timed_step("generate", cmd, env)
        build["generate_command"] = shlex.join(cmd[1:])
        build.pop("train_s", None)
        _save(build_path, build)
    from kindred.features import SERVED_MODEL_FEATURES
    from kindred.models import current_version, stale_promoted

    stale = stale_promoted(data_dir / "models", SERVED_MODEL_FEATURES)
    if stale:
        log(f"promoted models trained on other features than this code computes: {stale}; retraining")
    if stale or current_version(data_dir / "models", "ranker") is None:
        config = trainer_config_arg(args.config, data_dir)
        cmd = [sys.executable, "-m", "trainer", "train", "--data-dir", str(data_dir), "--config", config]
        build["train_s"] = _timed_step("train", cmd, env)
        build["trainer_config"] = args.config
        build["train_command"] = shlex.join(cmd[1:])
        _save(build_path, build)
    build.setdefault("trainer_config", _trainer_config_of(data_dir))
    return build


def trainer_config_arg(name: str, data_dir: Path) -> str:
    """`--config` for the trainer: "bench" is written beside the data (see BENCH_TRAINER_CONFIG)."""
    if name != "bench":
        return name
    path = data_dir / "bench_trainer_config.toml"
    path.write_text(BENCH_TRAINER_CONFIG)
    return str(path)


def _timed_step(name: str, cmd: list[str], env: dict[str, str]) -> float:
    log(f"{name}: {shlex.join(cmd[1:])}")
    t0 = time.monotonic()
    subprocess.run(cmd, env=env, cwd=REPO, check=True)
    took = time.monotonic() - t0
    log(f"{name} took {took:.0f} s")
    return took


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _trainer_config_of(data_dir: Path) -> str:
    from kindred.models import read_manifest

    try:
        cfg = read_manifest(data_dir / "models", "ranker").get("config") or {}
        return str(cfg.get("name", "?"))
    except Exception:
        return "?"


def read_ids(path: Path, key: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return [str(json.loads(line)[key]) for line in fh if line.strip()]


def count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


# ----------------------------------------------------------------------------------------------------
# phase A: the numbers


class LoadSampler:
    """Samples the 1-minute load average every `every_s` while the measured phases run."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.every_s):
                return

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        s = self.samples or [0.0]
        return {
            "mean": round(sum(s) / len(s), 2),
            "max": round(max(s), 2),
            "min": round(min(s), 2),
            "every_s": self.every_s,
            "samples": [round(x, 2) for x in s],
        }


def recommend_caller(
    target: str, k: int, timeout_s: float, *, channel: Any = None
) -> Callable[[int], Callable[[str], object]]:
    """make_caller for the load generator: each caller thread gets its own channel and stub, or all share
    `channel` (the threads of one client process, e.g. a least-request channel over replicas)."""
    import grpc

    from kindred.v1 import ranking_pb2, ranking_pb2_grpc

    def make(_index: int) -> Callable[[str], object]:
        stub = ranking_pb2_grpc.RankingServiceStub(
            channel if channel is not None else grpc.insecure_channel(target)
        )

        def call(fan_id: str) -> object:
            response = stub.Recommend(ranking_pb2.RecommendRequest(fan_id=fan_id, k=k), timeout=timeout_s)
            # A degraded page is not the path being measured: count it as an error, do not hide it.
            if response.fallback or len(response.items) < k:
                raise RuntimeError(
                    f"fan {fan_id}: {len(response.items)} items, fallback {response.fallback!r}"
                )
            return response

        return call

    return make


def measure_levels(
    mesh: Mesh,
    fans: Sequence[str],
    requests: int,
    warmup: int,
    name: str,
    levels: Sequence[int] = LEVELS,
) -> dict[str, Any]:
    make = recommend_caller(mesh.target("ranking"), K, timeout_s=5.0)
    return measure_load(make, {n: [mesh.pid(n)] for n in mesh.procs}, fans, requests, warmup, name, levels)


def measure_load(
    make: Callable[[int], Callable[[str], object]],
    services: Mapping[str, Sequence[int]],
    fans: Sequence[str],
    requests: int,
    warmup: int,
    name: str,
    levels: Sequence[int] = LEVELS,
) -> dict[str, Any]:
    """Each of `levels` of closed-loop load through `make`; CPU per request of each service (summed over
    its processes: `services` maps a name to its pids) and of this client process."""
    out: dict[str, Any] = {}

    def cpu_now() -> dict[str, float]:
        cpu = {n: sum(procinfo.cpu_seconds(pid) for pid in pids) for n, pids in services.items()}
        return {**cpu, "client": procinfo.cpu_seconds(os.getpid())}

    for level in levels:
        cpu0 = cpu_now()
        result = run_closed_loop(
            make, fans, concurrency=level, requests=requests, warmup=max(warmup, 4 * level)
        )
        cpu1 = cpu_now()
        summary: dict[str, Any] = dict(result.summary())
        # CPU per request includes the warm-up's share, so divide by everything the services served.
        served = requests + max(warmup, 4 * level)
        summary["cpu_ms_per_request"] = {n: 1000.0 * (cpu1[n] - cpu0[n]) / served for n in cpu0}
        summary["error_samples"] = result.error_samples
        summary["load_avg_after"] = round(os.getloadavg()[0], 2)
        out[str(level)] = summary
        log(
            f"{name} {level:>2} callers: p50 {summary.get('p50_ms', 0):.2f} ms  "
            f"p90 {summary.get('p90_ms', 0):.2f}  "
            f"p99 {summary.get('p99_ms', 0):.2f}  mean {summary.get('mean_ms', 0):.2f}  "
            f"{summary['throughput_rps']:.1f} rps  errors {summary['errors']}  "
            f"(load {summary['load_avg_after']})"
        )
        if result.error_samples:
            log(f"   errors, e.g.: {result.error_samples[0]}")
    return out


@dataclasses.dataclass(frozen=True)
class Config:
    """One way of serving Recommend, measured the same way as the others."""

    name: str
    label: str
    cwd: Path  # the code that runs: the working tree, or a baseline commit's export
    colocated: bool = False
    # Co-located ranking processes (KINDRED_COLOCATED_REPLICA, each on its own creator index copy) behind
    # one least-request client the callers share; 1: one process, each caller its own channel.
    replicas: int = 1
    # KINDRED_SERVER_THREADS of the replicas (None: the service's default).
    server_threads: int | None = None

    @property
    def hops(self) -> tuple[str, ...]:
        return ("ranking",) if self.colocated else ("ranking", "retrieval")


def export_commit(rev: str, into: Path) -> str:
    """`git archive` of `rev` unpacked under `into` (read-only for the repository); returns the full sha."""
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", sha], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return sha


def measure_config(
    config: Config, data_dir: Path, work: Path, fans: Sequence[str], args: argparse.Namespace
) -> dict[str, Any]:
    if config.replicas > 1:
        return measure_replicas(config, data_dir, work, fans, args)
    log(f"phase A [{config.name}]: {config.label}, without tracing")
    mesh = start_mesh(data_dir, work / f"logs-{config.name}", cwd=config.cwd, colocated=config.colocated)
    try:
        log(
            f"[{config.name}] serving after "
            + ", ".join(f"{t:.1f} s ({name})" for name, t in mesh.startup_s.items())
        )
        levels = measure_levels(mesh, fans, args.requests, args.warmup, config.name)
        rtt = {hop: F.grpc_rtt(mesh.target(hop), n=max(200, args.requests // 2)) for hop in config.hops}
        memory = {name: procinfo.memory_mb(mesh.pid(name)) for name in mesh.procs}
        startup = dict(mesh.startup_s)
    finally:
        codes = mesh.stop()
    log(f"[{config.name}] stopped (exit codes {codes}); memory {memory}")
    log(f"phase B [{config.name}]: traced sample")
    # Warm-up: one pass over the sampled fans, so the traced requests see the caches as the levels did.
    stages = traced_sample(data_dir, work, fans, args.traced, len(fans), config)
    return {
        "label": config.label,
        "colocated": config.colocated,
        "hops": list(config.hops),
        "levels": levels,
        "rtt_s": rtt,
        "memory_mb": memory,
        "startup_s": startup,
        "stages": stages,
    }


def measure_replicas(
    config: Config, data_dir: Path, work: Path, fans: Sequence[str], args: argparse.Namespace
) -> dict[str, Any]:
    """The levels through `config.replicas` co-located ranking processes and one least-request client
    (kindred.grpc_client.make_channel over their addresses) that every caller thread shares. No traced
    sample: a request's stages are those of one co-located process (the `colocated` configuration)."""
    from kindred.grpc_client import make_channel

    log(f"phase A [{config.name}]: {config.label}, without tracing")
    meshes: list[Mesh] = []
    try:
        for i in range(config.replicas):
            meshes.append(
                start_mesh(
                    data_dir,
                    work / f"logs-{config.name}-r{i}",
                    cwd=config.cwd,
                    colocated=True,
                    extra_env={
                        "KINDRED_COLOCATED_REPLICA": f"r{i}",
                        **(
                            {}
                            if config.server_threads is None
                            else {"KINDRED_SERVER_THREADS": str(config.server_threads)}
                        ),
                    },
                )
            )
        target = "ipv4:" + ",".join(m.target("ranking") for m in meshes)
        log(f"[{config.name}] serving: {target}")
        with make_channel(target) as channel:
            make = recommend_caller(target, K, timeout_s=5.0, channel=channel)
            pids = {"ranking": [m.pid("ranking") for m in meshes]}
            levels = measure_load(make, pids, fans, args.requests, args.warmup, config.name)
        rtt = {"ranking": F.grpc_rtt(meshes[0].target("ranking"), n=max(200, args.requests // 2))}
        memory = {f"ranking r{i}": procinfo.memory_mb(m.pid("ranking")) for i, m in enumerate(meshes)}
        startup = {f"ranking r{i}": m.startup_s["ranking"] for i, m in enumerate(meshes)}
    finally:
        for mesh in meshes:
            mesh.stop()
    return {
        "label": config.label,
        "colocated": True,
        "replicas": config.replicas,
        "hops": list(config.hops),
        "levels": levels,
        "rtt_s": rtt,
        "memory_mb": memory,
        "startup_s": startup,
        "stages": None,
    }


def alternated_rounds(
    before: Config, after: Config, data_dir: Path, work: Path, fans: Sequence[str], args: argparse.Namespace
) -> dict[str, Any]:
    """`args.ab_rounds` rounds of the goal level (4 callers) through `before` then `after`, the order
    swapped every round, each side started afresh: on a shared machine whose speed drifts over minutes,
    only closely alternated measurements compare (the configurations above run once each, minutes
    apart). Per round each side's p50, p99 and service CPU per request; the headline is the median of
    the per-round after/before ratios."""
    rounds: list[dict[str, Any]] = []
    requests = max(200, args.requests // 2)
    for r in range(args.ab_rounds):
        order = (before, after) if r % 2 == 0 else (after, before)
        entry: dict[str, Any] = {"order": [c.name for c in order]}
        for config in order:
            mesh = start_mesh(data_dir, work / f"logs-ab-{config.name}", cwd=config.cwd)
            try:
                name = f"ab {r + 1}/{args.ab_rounds} {config.name}"
                level = measure_levels(mesh, fans, requests, args.warmup, name, (GOAL_P99_LEVEL,))
            finally:
                mesh.stop()
            summary = level[str(GOAL_P99_LEVEL)]
            cpu = summary["cpu_ms_per_request"]
            entry[config.name] = {
                "p50_ms": summary.get("p50_ms"),
                "p99_ms": summary.get("p99_ms"),
                "errors": summary.get("errors"),
                "service_cpu_ms_per_request": sum(v for n, v in cpu.items() if n != "client"),
            }
        rounds.append(entry)
    keys = ("p50_ms", "p99_ms", "service_cpu_ms_per_request")
    return {
        "before": before.name,
        "after": after.name,
        "callers": GOAL_P99_LEVEL,
        "requests_per_side": requests,
        "rounds": rounds,
        "median_ratio": {k: median_of_ratios(rounds, before.name, after.name, k) for k in keys},
    }


def median_of_ratios(rounds: Sequence[Mapping[str, Any]], before: str, after: str, key: str) -> float | None:
    """Median over rounds of after[key] / before[key] (rounds where either value is 0 or missing are
    left out; None when none is left)."""
    ratios = sorted(
        r[after][key] / r[before][key] for r in rounds if r[before].get(key) and r[after].get(key)
    )
    if not ratios:
        return None
    mid = len(ratios) // 2
    return ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2


def config_goals(measured: Mapping[str, Any], floor_p50_ms: float) -> dict[str, Any]:
    p50_1 = measured["levels"]["1"]["p50_ms"]
    p99_4 = measured["levels"][str(GOAL_P99_LEVEL)]["p99_ms"]
    return {
        "p50_within_2x_floor": {
            "recommend_p50_ms": p50_1,
            "floor_p50_ms": floor_p50_ms,
            "ratio": p50_1 / floor_p50_ms,
            "met": p50_1 <= GOAL_FLOOR_RATIO * floor_p50_ms,
        },
        "p99_at_4_callers_le_25ms": {"p99_ms": p99_4, "met": p99_4 <= GOAL_P99_MS},
    }


# ----------------------------------------------------------------------------------------------------
# phase B: traces


def traced_sample(
    data_dir: Path, work: Path, fans: Sequence[str], n: int, warmup: int, config: Config
) -> dict[str, Any]:
    trace_file = work / f"traces-{config.name}.jsonl"
    mesh = start_mesh(
        data_dir,
        work / f"logs-traced-{config.name}",
        trace_file=trace_file,
        cwd=config.cwd,
        colocated=config.colocated,
    )
    try:
        call = recommend_caller(mesh.target("ranking"), K, timeout_s=5.0)(0)
        time_calls(call, list(fans[:warmup]) or list(fans))
        time.sleep(0.5)
        trace_file.write_text("")  # drop the warm-up's spans (each span write opens the file anew)
        sample = list(fans[:n]) if len(fans) >= n else [fans[i % len(fans)] for i in range(n)]
        client = time_calls(call, sample)
        time.sleep(1.0)  # spans are written as they end; give the servers a moment
    finally:
        mesh.stop()
    breakdown = traces.stage_breakdown(traces.read_spans(trace_file))
    breakdown["client"] = summarize_ms(client)
    root = breakdown["stages"].get(breakdown["root"] or "", {})
    if root and breakdown["client"].get("n"):
        # Client → ranking hop and the bench's own stub work: client time not inside ranking's server span.
        breakdown["outside_ranking_server_mean_ms"] = (
            breakdown["client"]["mean_ms"] - root["inclusive"]["mean_ms"]
        )
        breakdown["outside_ranking_server_p50_ms"] = (
            breakdown["client"]["p50_ms"] - root["inclusive"]["p50_ms"]
        )
    breakdown["trace_file_mb"] = trace_file.stat().st_size / 2**20 if trace_file.exists() else 0.0
    return breakdown


# ----------------------------------------------------------------------------------------------------
# the floor, in-process


def measure_floor(
    data_dir: Path,
    fans: Sequence[str],
    fan_rows: dict[str, dict[str, Any]],
    shape: F.RetrievalShape,
    rtt: dict[str, list[float]],
    repeat: int,
    als_fans: dict[str, list[str]],
    creator_ids: Sequence[str],
) -> dict[str, Any]:
    import numpy as np

    from kindred.features import ranker_features_batch, user_tower_features

    components: dict[str, dict[str, Any]] = {}
    for hop in ("ranking", "retrieval"):
        components[f"grpc_rtt_{hop}"] = {
            "label": f"empty gRPC round trip to {hop} (health Check)"
            + (" — the mesh's second hop; not in the co-located floor" if hop == "retrieval" else ""),
            "latency": summarize_ms(rtt[hop]),
            "in_floor": True,
        }

    onnx = F.OnnxFloor(data_dir / "models")
    user_x = [user_tower_features(fan_rows[f], now=None)[None, :].astype(np.float32) for f in fans]
    vectors = [onnx.run("two_tower_user", x)[0] for x in user_x]
    components["onnx_user_tower"] = {
        "label": "bare ONNX run: user tower, batch 1",
        "latency": summarize_ms(onnx.time("two_tower_user", user_x, repeat=repeat)),
        "in_floor": True,
    }

    qd = F.QdrantFloor(data_dir)
    try:
        following = [list(fan_rows[f].get("following") or []) for f in fans]
        filtered = [
            qd.request(v, shape.two_tower_n, shape.hnsw_ef, ex, with_payload=False)
            for v, ex in zip(vectors, following, strict=True)
        ]
        plain = [
            qd.request(v, shape.two_tower_n, shape.hnsw_ef, (), filtered=False, with_payload=False)
            for v in vectors
        ]
        components["qdrant_query"] = {
            "label": "bare Qdrant query as retrieval sends it "
            f"(limit {shape.two_tower_n}, ef {shape.hnsw_ef}, "
            "follows filter, no payload: the item ids come from the index's own map)",
            "latency": summarize_ms(qd.time(filtered, repeat=repeat)),
            "in_floor": True,
        }
        components["qdrant_query_plain"] = {
            "label": "bare Qdrant query without filter (same limit, ef, no payload)",
            "latency": summarize_ms(qd.time(plain, repeat=repeat)),
            "in_floor": False,
        }
        components["qdrant_edgeindex_search"] = {
            "label": "the same query through kindred's EdgeIndex.search (filter, item ids from its map)",
            "latency": summarize_ms(
                qd.time_wrapper(vectors, following, shape.two_tower_n, shape.hnsw_ef, repeat=repeat)
            ),
            "in_floor": False,
        }
        # Candidates for the ranker: the fan's nearest creators, as many as ranking asks retrieval for.
        cand_req = [
            qd.request(v, shape.retrieve_k, shape.retrieve_k_ef, ex)
            for v, ex in zip(vectors, following, strict=True)
        ]
        hits = [qd.shard.query(r) for r in cand_req]
        components["qdrant_query_retrieve_k"] = {
            "label": f"bare Qdrant query at limit {shape.retrieve_k} (what a backfill asks; follows filter, "
            f"payload, ef {shape.retrieve_k_ef})",
            "latency": summarize_ms(qd.time(cand_req, repeat=repeat)),
            "in_floor": False,
        }
        index_info = {
            "copy_s": qd.copy_s,
            "open_s": qd.open_s,
            "size_mb": qd.size_mb,
            "version": qd.version,
            "count": qd.manifest.get("count"),
            "dim": qd.manifest.get("dim"),
        }
        engine_default_pool = machine.engine_default_search_pool()
        engine_configs = engine_config_costs(
            qd, engine_default_pool, data_dir, vectors, following, shape, repeat
        )
    finally:
        qd.close()

    from kindred.vectorstore.base import from_engine_payload

    cand_ids = [[from_engine_payload(h.payload)[0] for h in hs] for hs in hits]
    all_ids = sorted({c for ids in cand_ids for c in ids})
    crow = dict(zip(all_ids, F.creator_rows(data_dir, all_ids), strict=True))
    ranker_in = []
    feature_args = []
    for f, ids, hs in zip(fans, cand_ids, hits, strict=True):
        args = (fan_rows[f], [crow[c] for c in ids])
        kw: dict[str, Any] = {
            "two_tower_scores": [float(h.score) for h in hs],
            "retrieval_scores": [float(h.score) for h in hs],
            "sources": ["CANDIDATE_SOURCE_TWO_TOWER"] * len(ids),
        }
        feature_args.append((args, kw))
        ranker_in.append(ranker_features_batch(*args, **kw))
    batch = int(np.median([len(x) for x in ranker_in]))
    components["onnx_ranker"] = {
        "label": f"bare ONNX run: ranker, batch {batch} (the candidate count)",
        "latency": summarize_ms(onnx.time("ranker", ranker_in, repeat=repeat)),
        "in_floor": True,
    }
    from kindred.features import creator_tower_features_batch

    cached_args = [
        (a, {**kw, "creator_vectors": creator_tower_features_batch(a[1])}) for a, kw in feature_args
    ]
    components["ranker_features_cached"] = {
        "label": f"ranker_features_batch with the creator vectors precomputed ({batch} candidates; what "
        "ranking runs since its per-creator cache) — a ranking step, not floor",
        "latency": summarize_ms(
            time_calls(
                lambda a: ranker_features_batch(*a[0], **a[1]),
                cached_args,
                repeat=max(1, repeat // 2),
                warmup=5,
            )
        ),
        "in_floor": False,
    }
    components["ranker_features_python"] = {
        "label": f"ranker_features_batch (Python, {batch} candidates) — a ranking step, not floor",
        "latency": summarize_ms(
            time_calls(
                lambda a: ranker_features_batch(*a[0], **a[1]),
                feature_args,
                repeat=max(1, repeat // 2),
                warmup=5,
            )
        ),
        "in_floor": False,
    }

    pipeline = F.InProcessRecommend(data_dir)
    try:
        components["in_process_recommend"] = {
            "label": "Recommend(k=10) in-process: both servicers, messages serialised, no gRPC transport "
            "— not floor",
            "latency": summarize_ms(time_calls(pipeline, list(fans), repeat=max(1, repeat // 2), warmup=20)),
            "in_floor": False,
        }
        protos = pipeline.proto_costs(fans, shape.retrieve_k, repeat=max(1, repeat // 2))
        for key, label in (
            ("retrieve_domain", "retrieval: Retriever.retrieve (every source, merge), in-process"),
            ("to_proto", "retrieval: candidates → RetrieveResponse (Python objects)"),
            ("serialize", "retrieval: RetrieveResponse.SerializeToString"),
            ("parse", "ranking: RetrieveResponse.FromString"),
            ("from_proto", "ranking: RetrieveResponse → ScoredCandidate list (details of the page only)"),
        ):
            components[f"proto_{key}"] = {
                "label": f"{label}, {shape.retrieve_k} candidates — not floor",
                "latency": summarize_ms(protos[key]),
                "in_floor": False,
            }
        response_bytes = sum(protos["bytes"]) / max(1, len(protos["bytes"]))
        degraded = pipeline.degraded_sources(fans, shape.retrieve_k)
        if degraded:
            log(f"retrieval sources degraded with this data: {degraded}")
    finally:
        pipeline.close()
    components["span_export"] = {
        "label": "writing one span with JsonLinesSpanExporter (trace-file cost per span) — not floor",
        "latency": summarize_ms(span_export_cost(200)),
        "in_floor": False,
    }

    log(f"fitting implicit ALS on {sum(len(v) for v in als_fans.values()):,} follow pairs")
    als = F.AlsFloor.fit(als_fans, creator_ids)
    components["implicit_als_recommend"] = {
        "label": f"implicit ALS recommend(N=10), in-process, {len(creator_ids):,} items — a peer, not floor",
        "latency": summarize_ms(als.time(fans, repeat=repeat)),
        "in_floor": False,
    }
    total = sum(c["latency"]["p50_ms"] for c in components.values() if c["in_floor"])
    return {
        "components": components,
        "sum_p50_ms": total,
        "sum_p50_ms_one_hop": total - components["grpc_rtt_retrieval"]["latency"]["p50_ms"],
        "definition": "sum of the p50s of: the empty gRPC round trip of every hop (mesh: client→ranking "
        "and ranking→retrieval; co-located: client→ranking), the bare Qdrant query, the user tower and "
        "the ranker ONNX runs",
        "als": {"factors": 64, "iterations": 15, "regularization": 0.05, "fit_s": als.fit_s, "nnz": als.nnz},
        "index": index_info,
        "engine_configs": engine_configs,
        "engine_default_pool": engine_default_pool,
        "retrieve_response_bytes_mean": response_bytes,
        "retrieval_degraded_sources": degraded,
    }


def engine_config_costs(
    served: F.QdrantFloor,
    engine_default_pool: int,
    data_dir: Path,
    vectors: Sequence[Any],
    following: Sequence[Sequence[str]],
    shape: F.RetrievalShape,
    repeat: int,
) -> list[dict[str, Any]]:
    """The two-tower query (limit, ef, follows filter) with the served search pool and with the pool
    qdrant-edge starts here when given no size (`engine_default_pool`), each reading the
    item ids from the payload (the request before EdgeIndex kept them) and reading no payload: wall
    latency and CPU of every thread per query, in this process, one after the other on copies of the
    same index."""
    default_pool = F.QdrantFloor(data_dir, search_threads=engine_default_pool)
    try:
        out = []
        for floor, pool in ((served, served.search_threads), (default_pool, default_pool.search_threads)):
            for payload, read in ((["item_id"], "item ids from the payload"), (False, "no payload")):
                requests = [
                    floor.request(v, shape.two_tower_n, shape.hnsw_ef, ex, with_payload=payload)
                    for v, ex in zip(vectors, following, strict=True)
                ]
                out.append(
                    {
                        "search_threads": pool,
                        "payload": read,
                        "latency": summarize_ms(floor.time(requests, repeat=repeat)),
                        "cpu_ms_per_query": floor.cpu_ms_per_query(requests, repeat=repeat),
                    }
                )
        return out
    finally:
        default_pool.close()


def code_state() -> dict[str, Any]:
    """The commit measured and whether the working tree differed from it (others edit it meanwhile)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line.strip()]
    services = [p for p in changed if p.startswith(("retrieval_svc/", "ranking_svc/", "kindred/"))]
    return {
        "commit": git("rev-parse", "HEAD").strip(),
        "uncommitted_files": len(changed),
        "uncommitted_service_files": services,
    }


def span_export_cost(n: int) -> list[float]:
    """Seconds to export one real span through the services' JSON-lines exporter (file opened per span)."""
    from opentelemetry.sdk.trace import TracerProvider

    from kindred.telemetry import JsonLinesSpanExporter

    with tempfile.TemporaryDirectory() as tmp:
        exporter = JsonLinesSpanExporter(Path(tmp) / "spans.jsonl")
        tracer = TracerProvider().get_tracer("bench")
        spans: list[Any] = []
        for i in range(n):
            with tracer.start_as_current_span("qdrant.query") as span:
                span.set_attribute("kindred.retrieval.source", "two_tower")
                span.set_attribute("kindred.candidates", i)
            spans.append(span)
        return time_calls(lambda s: exporter.export([s]), spans, warmup=5)


# ----------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small platform, few requests: a smoke run")
    p.add_argument("--data-dir", type=Path, default=None, help="reuse (or build) the platform here")
    p.add_argument("--creators", type=int, default=None, help="default 100000 (quick: 2000)")
    p.add_argument("--fans", type=int, default=None, help="default 5000 (quick: 1000)")
    p.add_argument("--days", type=int, default=None, help="days of generated events (default 14)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--config",
        default=None,
        help="trainer config: bench (default; see BENCH_TRAINER_CONFIG) | tiny | default",
    )
    p.add_argument("--requests", type=int, default=None, help="measured requests per level (default 2000)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up requests per level (default 200)")
    p.add_argument("--sample-fans", type=int, default=None, help="distinct fans requested (default 500)")
    p.add_argument("--traced", type=int, default=None, help="requests in the traced sample (default 300)")
    p.add_argument(
        "--floor-repeat", type=int, default=None, help="passes over the fans per floor item (default 4)"
    )
    p.add_argument(
        "--baseline",
        default=None,
        metavar="REV",
        help="also measure the mesh of this commit (git archive, same data and run): the 'before'",
    )
    p.add_argument(
        "--ab-rounds",
        type=int,
        default=0,
        metavar="N",
        help="with --baseline: N more rounds of baseline vs mesh at 4 callers, alternated (default 0)",
    )
    p.add_argument(
        "--no-colocated", action="store_true", help="skip the co-located configuration (retrieval in ranking)"
    )
    p.add_argument(
        "--colocated-replicas",
        type=int,
        default=2,
        metavar="N",
        help="also measure N co-located ranking processes behind one least-request client (0: skip)",
    )
    p.add_argument("--json-out", type=Path, default=RESULTS_JSON)
    p.add_argument("--md-out", type=Path, default=RESULTS_MD)
    args = p.parse_args(argv)
    quick = args.quick
    for name, full, small in (
        ("creators", 100_000, 2000),
        ("fans", 5_000, 1000),
        ("days", 14, 14),
        ("config", "bench", "tiny"),
        ("requests", 2000, 100),
        ("warmup", 200, 20),
        ("sample_fans", 500, 100),
        ("traced", 300, 30),
        ("floor_repeat", 4, 1),
    ):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    load_before = machine.load_average()
    data_dir = (
        args.data_dir
        or REPO
        / "var"
        / "bench"
        / "recommend"
        / f"c{args.creators}-f{args.fans}-d{args.days}-s{args.seed}-{args.config}"
    ).resolve()
    build = ensure_data(args, data_dir)

    catalogue = data_dir / "catalogue"
    fan_ids = read_ids(catalogue / "fans.jsonl", "fan_id")
    creator_ids = read_ids(catalogue / "creators.jsonl", "creator_id")
    rows = F.fan_rows(data_dir, fan_ids)
    following = {
        f: [str(c) for c in (r or {}).get("following") or []] for f, r in zip(fan_ids, rows, strict=True)
    }
    with_follows = [f for f in fan_ids if following[f]]
    if not with_follows:
        raise SystemExit("no fan follows anyone: nothing realistic to recommend for")
    fans = random.Random(args.seed).sample(with_follows, min(args.sample_fans, len(with_follows)))
    chosen = set(fans)
    fan_rows = {f: r for f, r in zip(fan_ids, rows, strict=True) if r is not None and f in chosen}
    shape = F.RetrievalShape.for_k(K)
    log(
        f"data {data_dir}: {len(creator_ids):,} creators, {len(fan_ids):,} fans ({len(with_follows):,} with "
        f"follows); {len(fans)} fans sampled; retrieval shape {shape}"
    )

    work = Path(tempfile.mkdtemp(prefix="kindred-latency-"))
    configs = [Config("mesh", "two services, gRPC hop ranking → retrieval", REPO)]
    if not args.no_colocated:
        configs.append(
            Config(
                "colocated",
                f"ranking with retrieval in its process, {COLOCATED_SERVER_THREADS} server threads "
                "(its default)",
                REPO,
                colocated=True,
            )
        )
    if args.colocated_replicas > 1:
        n = args.colocated_replicas
        label = (
            f"{n} co-located ranking processes (KINDRED_COLOCATED_REPLICA: each its own creator index "
            f"copy, {COLOCATED_SERVER_THREADS} server threads each: the co-located default), one "
            "least-request client shared by the caller threads; CPU summed over the processes"
        )
        configs.append(Config(f"colocated_x{n}", label, REPO, colocated=True, replicas=n))
    baseline_sha = None
    if args.baseline:
        baseline_sha = export_commit(args.baseline, work / "baseline")
        label = f"two services at commit {baseline_sha[:12]} (before)"
        configs.insert(0, Config("baseline", label, work / "baseline"))
    measured: dict[str, dict[str, Any]] = {}
    # The load generator runs in this process: keep its own garbage collector from adding pauses to the
    # latencies it measures (the services do the same once loaded: kindred.service.tune_gc_for_serving).
    tune_gc_for_serving()
    sampler = LoadSampler()
    with sampler:
        for config in configs:
            measured[config.name] = measure_config(config, data_dir, work, fans, args)
        ab = None
        if args.ab_rounds > 0 and baseline_sha is not None:
            log(f"{args.ab_rounds} alternated rounds: baseline vs mesh at {GOAL_P99_LEVEL} callers")
            ab = alternated_rounds(configs[0], configs[1], data_dir, work, fans, args)
            log(f"alternated rounds, median mesh/baseline: {ab['median_ratio']}")
        log("floor, in-process")
        mesh_rtt = measured["mesh"]["rtt_s"]
        floor = measure_floor(
            data_dir,
            fans,
            fan_rows,
            shape,
            mesh_rtt,
            args.floor_repeat,
            {f: v for f, v in following.items() if v},
            creator_ids,
        )
    for config in configs:
        entry = measured[config.name]
        entry["floor_p50_ms"] = floor["sum_p50_ms_one_hop"] if config.colocated else floor["sum_p50_ms"]
        entry["goals"] = config_goals(entry, entry["floor_p50_ms"])
        del entry["rtt_s"]  # raw seconds; the floor has their summaries (mesh)

    info = machine.describe()
    info["load_before"] = load_before
    info["load_during"] = sampler.summary()
    info["load_after"] = machine.load_average()
    result: dict[str, Any] = {
        "command": shlex.join(
            ["python", "bench/bench_recommend_latency.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "machine": info,
        "code": {**code_state(), "baseline_commit": baseline_sha},
        "scale": {
            "creators": int(floor["index"]["count"] or len(creator_ids)),
            "index_dim": floor["index"]["dim"],
            "index_mb": floor["index"]["size_mb"],
            "fans": len(fan_ids),
            "fans_with_follows": len(with_follows),
            "follow_pairs": sum(len(v) for v in following.values()),
            "posts": count_lines(catalogue / "posts.jsonl"),
            "days": _generated(catalogue).get("days", args.days),
            "seed": args.seed,
            "trainer_config": build.get("trainer_config"),
            "train_note": build.get("train_command", ""),
            "generate_s": build.get("generate_s"),
            "train_s": build.get("train_s"),
            "data_dir": str(data_dir),
        },
        "request": {
            "k": K,
            "retrieve_k": shape.retrieve_k,
            "two_tower_n": shape.two_tower_n,
            "hnsw_ef": shape.hnsw_ef,
            # The services' default (kindred.config.Settings.engine_search_threads): the bench sets none.
            "engine_search_threads": Settings().engine_search_threads,
            "sampled_fans": len(fans),
            "seed": args.seed,
        },
        "client": {
            "channels": "one gRPC channel + stub per caller thread (the bench process, same 2 cores)",
            "warmup": f"max({args.warmup}, 4×callers)",
            "requests": args.requests,
        },
        "configs": measured,
        "alternated_rounds": ab,
        "floor": floor,
        "runtime_s": time.monotonic() - started,
    }
    result = round_floats(result)  # type: ignore[assignment]
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    write_section(report.KEY, report.render(result), args.md_out)
    log(f"wrote {args.json_out} and the '{report.SECTION}' section of {args.md_out}")
    for name, entry in result["configs"].items():
        g = entry["goals"]
        log(
            f"[{name}] goal p50 ≤ 2× floor: {g['p50_within_2x_floor']}; "
            f"goal p99@4 ≤ 25 ms: {g['p99_at_4_callers_le_25ms']}"
        )
    return 0


def _generated(catalogue: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((catalogue / "generated.json").read_text()).get("generator", {}))
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    raise SystemExit(main())
