"""NotifyService throughput and latency through gRPC on loopback, embedded and Redis state.

For each state backend, notify_svc is started as a real process (`python -m kindred serve notify`,
rule policy, fresh data directory; Redis in its own database number) and measured, in this order:

1. baseline: the empty gRPC round trip to the same server (health Check), 1 and 4 callers;
2. Decide p50/p99 at 1 and 4 concurrent callers (threads, one channel each), every call a new
   notification for one of 20,000 fans in 6 time zones — so caps, spacing and dedupe state are real;
3. DecideBatch: a creator with 100,000 members posts — one stream of chunks (default 1,000),
   decisions/s from the first chunk sent to the last decision received; the request messages are
   built before the clock starts, so the number is the service's, not the client's proto building.

With `--compare-ref REF` (e.g. HEAD) the same phases also run against the service code of that git
commit (exported with `git archive` to a temporary directory, git state untouched), alternating with
the working tree backend by backend, so both see the same machine load; the table gets a row per
(code, backend).

Writes bench/results/notify_throughput.json and the "notify_throughput" section of RESULTS.md.

    .venv/bin/python bench/bench_notify_throughput.py [--backends embedded redis] [--compare-ref HEAD]
        [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.latency import machine  # noqa: E402
from bench.latency.procinfo import cpu_seconds  # noqa: E402
from bench.latency.stats import percentile  # noqa: E402
from bench.results_md import write_section  # noqa: E402
from kindred.grpc_client import wait_until_serving  # noqa: E402
from kindred.v1 import notify_pb2 as pb  # noqa: E402
from kindred.v1 import notify_pb2_grpc  # noqa: E402

JSON_OUT = REPO / "bench" / "results" / "notify_throughput.json"
REDIS_URL = "redis://127.0.0.1:6379/11"  # a database of its own; the run's keys are deleted after
ZONES = ("Europe/London", "America/New_York", "Asia/Tokyo", "Europe/Berlin", "America/Los_Angeles", "UTC")
TRIGGERS = (pb.TRIGGER_TYPE_NEW_POST, pb.TRIGGER_TYPE_LIVE_STARTED, pb.TRIGGER_TYPE_COMMENT_REPLY)
FANS = 20_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def candidate(tag: str, n: int, fan: int, creator: str, trigger: int) -> pb.NotificationCandidate:
    return pb.NotificationCandidate(
        notification_id=f"{tag}-{n}",
        fan_id=f"{tag}-fan-{fan}",
        creator_id=creator,
        post_id=f"{tag}-post-{n}",
        trigger=trigger,  # type: ignore[arg-type]
        channel=pb.CHANNEL_PUSH,
        fan_time_zone=ZONES[fan % len(ZONES)],
    )


def latencies(
    call: Callable[[int, int], None], callers: int, per_caller: int, warmup: int
) -> dict[str, float]:
    """Runs `call(caller, i)` from `callers` threads; p50/p99/mean in ms and calls/s overall."""
    samples: list[list[float]] = [[] for _ in range(callers)]
    start_gate = threading.Barrier(callers + 1)

    def run(caller: int) -> None:
        for i in range(warmup):
            call(caller, -1 - i)
        start_gate.wait()
        out = samples[caller]
        for i in range(per_caller):
            t = time.perf_counter()
            call(caller, i)
            out.append((time.perf_counter() - t) * 1000.0)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(callers)]
    for t in threads:
        t.start()
    start_gate.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    flat = sorted(x for s in samples for x in s)
    return {
        "calls": len(flat),
        "p50_ms": percentile(flat, 50, is_sorted=True),
        "p99_ms": percentile(flat, 99, is_sorted=True),
        "mean_ms": sum(flat) / len(flat),
        "calls_per_s": len(flat) / wall,
    }


def export_ref(ref: str, into: Path) -> Path:
    """The repository's files at `ref`, written under `into` (read-only for git: `git archive`)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref], cwd=REPO, check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def measure_backend(backend: str, args: argparse.Namespace, tag: str, code: Path = REPO) -> dict[str, Any]:
    port = free_port()
    target = f"127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="notify-bench-") as data_dir:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KINDRED_")}
        env.update(
            {
                "KINDRED_DATA_DIR": data_dir,
                "KINDRED_NOTIFY_PORT": str(port),
                "KINDRED_ONLINE_STORE": backend,
                "KINDRED_REDIS_URL": REDIS_URL,
                "OMP_NUM_THREADS": "1",
            }
        )
        proc = subprocess.Popen([sys.executable, "-m", "kindred", "serve", "notify"], cwd=code, env=env)
        try:
            wait_until_serving(target, proc=proc, timeout_s=60)
            print(f"[{backend}] notify_svc serving on {target} (pid {proc.pid})", flush=True)
            return run_phases(backend, target, args, tag, proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def redis_cpu_seconds() -> float:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        client.close()


def run_phases(backend: str, target: str, args: argparse.Namespace, tag: str, pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = args.calls
    for callers in (1, 4):
        channels = [grpc.insecure_channel(target) for _ in range(callers)]
        health = [health_pb2_grpc.HealthStub(c) for c in channels]
        stubs = [notify_pb2_grpc.NotifyServiceStub(c) for c in channels]
        check = health_pb2.HealthCheckRequest()

        def ping(caller: int, i: int, health: list[Any] = health, check: Any = check) -> None:
            health[caller].Check(check, timeout=5)

        out[f"baseline_health_check_{callers}"] = latencies(ping, callers, n, warmup=50)
        print(f"[{backend}] baseline x{callers}: {fmt(out[f'baseline_health_check_{callers}'])}", flush=True)

        run_tag = f"{tag}-d{callers}"

        def decide(caller: int, i: int, run_tag: str = run_tag, stubs: list[Any] = stubs) -> None:
            k = caller * 1_000_000 + i + (10_000_000 if i < 0 else 0)
            fan = (k * 7919) % FANS
            c = candidate(run_tag, k, fan, f"creator-{k % 50}", TRIGGERS[k % len(TRIGGERS)])
            stubs[caller].Decide(pb.DecideRequest(candidate=c), timeout=5)

        out[f"decide_{callers}"] = latencies(decide, callers, n, warmup=50)
        print(f"[{backend}] Decide x{callers}: {fmt(out[f'decide_{callers}'])}", flush=True)
        for c in channels:
            c.close()

    members, chunk = args.members, args.chunk
    chunks = [
        pb.DecideBatchRequest(
            candidates=[
                candidate(f"{tag}-b", i, i, "creator-big", pb.TRIGGER_TYPE_NEW_POST)
                for i in range(start, min(members, start + chunk))
            ]
        )
        for start in range(0, members, chunk)
    ]
    with grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        stub = notify_pb2_grpc.NotifyServiceStub(channel)
        # Warm-up stream on other fans, so the timed one does not pay first-call costs.
        warm = [
            candidate(f"{tag}-w", i, FANS + i, "creator-warm", pb.TRIGGER_TYPE_NEW_POST) for i in range(chunk)
        ]
        list(stub.DecideBatch(iter([pb.DecideBatchRequest(candidates=warm)]), timeout=60))
        cpu_before = cpu_seconds(pid)
        redis_before = redis_cpu_seconds() if backend == "redis" else 0.0
        began = time.perf_counter()
        decided = 0
        actions: dict[str, int] = {}
        for i, response in enumerate(stub.DecideBatch(iter(chunks), timeout=600)):
            decided += len(response.decisions)
            for d in response.decisions:
                name = pb.Action.Name(d.action)
                actions[name] = actions.get(name, 0) + 1
            if (i + 1) % max(1, len(chunks) // 10) == 0:
                rate = decided / (time.perf_counter() - began)
                print(f"[{backend}] DecideBatch {decided:,}/{members:,} ({rate:,.0f}/s)", flush=True)
        wall = time.perf_counter() - began
        server_cpu = cpu_seconds(pid) - cpu_before
        redis_cpu = redis_cpu_seconds() - redis_before if backend == "redis" else 0.0
    assert decided == members, f"{decided} decisions for {members} candidates"
    out["decide_batch"] = {
        "members": members,
        "chunk": chunk,
        "seconds": wall,
        "decisions_per_s": members / wall,
        # CPU the service (and Redis) spent: what the rate would be with a core to itself.
        "server_cpu_s": server_cpu,
        "redis_cpu_s": redis_cpu,
        "decisions_per_server_cpu_s": members / server_cpu if server_cpu > 0 else None,
        "actions": actions,
    }
    print(f"[{backend}] DecideBatch: {members / wall:,.0f} decisions/s", flush=True)
    return out


def pair(stats: dict[str, float]) -> str:
    return f"{stats['p50_ms']:.2f} / {stats['p99_ms']:.2f} ms"


def fmt(stats: dict[str, float]) -> str:
    return f"p50 {stats['p50_ms']:.2f} ms, p99 {stats['p99_ms']:.2f} ms, {stats['calls_per_s']:,.0f} calls/s"


def delete_run_keys(tag: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"kindred:notify:*{tag}*", count=5000))
        for start in range(0, len(keys), 5000):
            client.delete(*keys[start : start + 5000])
        # The delivery queue holds members, not keys, of this run.
        queued: list[Any] = client.zrange("kindred:notify:due", 0, -1)
        members = [m for m in queued if tag.encode() in m]
        for start in range(0, len(members), 5000):
            client.zrem("kindred:notify:due", *members[start : start + 5000])
    finally:
        client.close()


def render(result: dict[str, Any]) -> str:
    lines = [
        "## notify_svc throughput and latency (gRPC, loopback)",
        "",
        f"`{result['command']}` — {result['machine']['date_utc']}, {result['machine']['nproc']} cores "
        f"({result['machine']['cpu_model']}), load average before {result['load_before']}, after "
        f"{result['load_after']} (the machine is shared). notify_svc as a real process with the rule "
        "policy; Decide calls are new notifications for 20,000 fans in 6 zones; DecideBatch is one "
        f"{result['members']:,}-member fan-out in chunks of {result['chunk']:,}.",
        "",
        "| state | empty round trip p50 / p99 (1 caller) | Decide p50 / p99, 1 caller | "
        "empty round trip p50 / p99 (4 callers) | Decide p50 / p99, 4 callers | Decide calls/s, 4 callers "
        "| DecideBatch decisions/s | notify_svc CPU s (Redis CPU s) for the fan-out "
        "| decisions per notify_svc CPU-second |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [(backend, r) for backend, r in result["backends"].items()]
    if result.get("compare_ref"):
        rows = [
            row
            for backend, r in result["backends"].items()
            for row in (
                (f"{backend}, code at {result['compare_ref']}", result["baseline"][backend]),
                (f"{backend}, this code", r),
            )
        ]
    for backend, r in rows:
        b1, d1, b4, d4 = (
            r[k] for k in ("baseline_health_check_1", "decide_1", "baseline_health_check_4", "decide_4")
        )
        lines.append(
            f"| {backend} | {pair(b1)} | {pair(d1)} | {pair(b4)} | {pair(d4)} "
            f"| {d4['calls_per_s']:,.0f} | {r['decide_batch']['decisions_per_s']:,.0f} "
            f"| {r['decide_batch']['server_cpu_s']:.1f} ({r['decide_batch']['redis_cpu_s']:.1f}) "
            f"| {r['decide_batch']['decisions_per_server_cpu_s'] or 0:,.0f} |"
        )
    lines += [
        "",
        "Goals on this machine: Decide p99 ≤ 5 ms, DecideBatch ≥ 20,000 decisions/s. The wall-clock "
        "rates depend on what else the shared cores run (the load averages above); the CPU columns "
        "(from /proc and Redis `INFO cpu`) say what the service costs regardless: decisions per "
        "notify_svc CPU-second is the rate it would reach with one core to itself. "
        "Machine-readable: `bench/results/notify_throughput.json`.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", nargs="+", default=["embedded", "redis"], choices=["embedded", "redis"])
    p.add_argument("--calls", type=int, default=2000, help="Decide calls per caller")
    p.add_argument("--members", type=int, default=100_000)
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--quick", action="store_true", help="a smoke run: 200 calls, 10,000 members")
    p.add_argument(
        "--compare-ref", default="", help="also measure the service code of this git commit (e.g. HEAD)"
    )
    p.add_argument("--json-out", type=Path, default=JSON_OUT)
    p.add_argument("--no-md", action="store_true", help="do not write the RESULTS.md section")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.calls, args.members = 200, 10_000
    tag = f"nb{uuid.uuid4().hex[:8]}"
    load_before = machine.load_average()
    backends: dict[str, Any] = {}
    baseline: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="notify-bench-ref-") as ref_dir:
        ref_code = export_ref(args.compare_ref, Path(ref_dir)) if args.compare_ref else None
        for backend in args.backends:
            try:
                if ref_code is not None:
                    print(f"[{backend}] the service code at {args.compare_ref}", flush=True)
                    baseline[backend] = measure_backend(backend, args, tag + "r", ref_code)
                    print(f"[{backend}] this code", flush=True)
                backends[backend] = measure_backend(backend, args, tag)
            finally:
                if backend == "redis":
                    delete_run_keys(tag)
    result = {
        "command": "python bench/bench_notify_throughput.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine.describe(),
        "load_before": load_before,
        "load_after": machine.load_average(),
        "members": args.members,
        "chunk": args.chunk,
        "calls_per_caller": args.calls,
        "backends": backends,
        "compare_ref": args.compare_ref,
        "baseline": baseline,
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_md:
        write_section("notify_throughput", render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
