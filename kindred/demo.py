"""`make demo`: the whole single-machine mesh on generated data.

generate (skipped if the data directory already has data) → train (skipped if models exist, unless
--retrain) → export MiniLM and index the catalogue for search → train the notification models (each
skipped when done) → start retrieval, ranking, notify and events as child processes (and, with
--search-replicas N, N search replicas that ranking's SearchRanked then calls) → wait until each reports
SERVING on the standard health service → print how to call them. Ctrl-C (or SIGTERM) stops every
child gracefully, then kills any that do not stop in time.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kindred.config import Settings
from kindred.features import SERVED_MODEL_FEATURES
from kindred.grpc_client import wait_until_serving
from kindred.models import current_version, stale_promoted

# The source checkout (kindred is installed editable from it); the benches live there, not in site-packages.
REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_SERVICES = ("retrieval", "notify", "events", "ranking")  # ranking last: it calls retrieval


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=Path("var/demo"))
    parser.add_argument("--fans", type=int, default=2000)
    parser.add_argument("--creators", type=int, default=300)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--config", default="default", help="trainer config (default | tiny)")
    parser.add_argument("--retrain", action="store_true", help="train even if models exist")
    parser.add_argument("--no-wait", action="store_true", help="start, print, then stop (for tests)")
    parser.add_argument(
        "--search-replicas",
        type=int,
        default=0,
        help="also run N search replicas (retrieval_svc.search.replication; needs Redis at "
        "KINDRED_REDIS_URL) on the ports after retrieval's + 10; SearchRanked then searches them",
    )


def run_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    data_dir: Path = args.data_dir.resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINDRED_")}
    env["KINDRED_DATA_DIR"] = str(data_dir)
    env.setdefault("ORT_DISABLE_TELEMETRY", "1")
    settings = Settings.from_env(env)
    python = sys.executable

    if not (data_dir / "catalogue" / "creators.jsonl").exists():
        _step(
            "generate",
            [
                python,
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
            ],
            env,
        )
    else:
        print(f"[demo] data found in {data_dir}; skipping generation")
    stale = stale_promoted(settings.resolved_models_dir, SERVED_MODEL_FEATURES)
    for name, diff in stale.items():
        print(f"[demo] the promoted {name} was trained on other features than this code computes ({diff})")
    if args.retrain or stale or current_version(settings.resolved_models_dir, "ranker") is None:
        # A stale promoted model cannot be scored at the gate: training promotes over it (trainer.promotion).
        _step(
            "train",
            [python, "-m", "trainer", "train", "--data-dir", str(data_dir), "--config", args.config],
            env,
        )
    else:
        print("[demo] trained models found; skipping training (use --retrain to train again)")
    _prepare_search(settings, data_dir, env, python)
    _prepare_notify(settings, env, python)

    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop_all(*_: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        print("\n[demo] stopping every service…")
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + settings.shutdown_grace_s + 5
        for name, proc in children.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"[demo] {name} did not stop in time; killing it")
                proc.kill()
        print("[demo] all stopped")

    def on_sigterm(*_: object) -> None:
        raise KeyboardInterrupt  # unwinds into the same clean stop as Ctrl-C

    signal.signal(signal.SIGTERM, on_sigterm)
    replicas = _replica_envs(settings, env, args.search_replicas)
    if replicas:
        env["KINDRED_SEARCH_TARGET"] = "ipv4:" + ",".join(
            r["KINDRED_HOST"] + ":" + r["KINDRED_RETRIEVAL_PORT"] for r in replicas
        )
    try:
        for name in DEMO_SERVICES:
            if name == "ranking":  # the replicas first: ranking's SearchRanked calls them
                for i, replica_env in enumerate(replicas):
                    replica = f"search-replica-{i}"
                    children[replica] = subprocess.Popen(
                        [python, "-m", "kindred", "serve", "retrieval"], env=replica_env
                    )
                    target = f"{replica_env['KINDRED_HOST']}:{replica_env['KINDRED_RETRIEVAL_PORT']}"
                    wait_until_serving(target, proc=children[replica])
                    print(f"[demo] {replica} serving Search on {target}", flush=True)
            children[name] = subprocess.Popen([python, "-m", "kindred", "serve", name], env=env)
            wait_until_serving(_target(settings, name), proc=children[name])
            print(f"[demo] {name} serving on {_target(settings, name)}", flush=True)
        elapsed = time.monotonic() - started
        print(_banner(settings, data_dir, elapsed))
        if replicas:
            print(f"[demo] SearchRanked searches {len(replicas)} replicas: {env['KINDRED_SEARCH_TARGET']}")
        if args.no_wait:
            return 0
        while all(p.poll() is None for p in children.values()):
            time.sleep(0.5)
        dead = [n for n, p in children.items() if p.poll() is not None]
        print(f"[demo] service(s) exited unexpectedly: {', '.join(dead)}")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all()


def _prepare_search(settings: Settings, data_dir: Path, env: dict[str, str], python: str) -> None:
    """MiniLM exported to ONNX once (torch, in the trainer) with its int8 query encoder, then the
    catalogue bulk-indexed for search.

    Each step is skipped when done: the exports when their models are promoted, the indexing by
    `kindred index` itself (it resumes, and has nothing to do when the catalogue is indexed)."""
    if current_version(settings.resolved_models_dir, "text_encoder") is None:
        _step(
            "export text encoder",
            [
                python,
                "-m",
                "trainer.text_encoder",
                "export",
                "--out",
                str(settings.resolved_models_dir),
                "--promote",
            ],
            env,
        )
    if current_version(settings.resolved_models_dir, "text_encoder_int8") is None:
        _step(
            "int8 query encoder",
            [
                python,
                "-m",
                "trainer.text_encoder",
                "int8-queries",
                "--models",
                str(settings.resolved_models_dir),
                "--promote",
            ],
            env,
        )
    _step("index for search", [python, "-m", "kindred", "index", "--data-dir", str(data_dir)], env)


def _prepare_notify(settings: Settings, env: dict[str, str], python: str) -> None:
    """The notification models (p(open), p(disable)), so notify_svc serves the learned policy.

    One machine has no production outcome log, so they are trained on the simulator's randomised
    logging policy (bench/notify/train_model.py); skipped when a model is promoted. The bench package
    lives in the source checkout, not in the installed packages, hence the PYTHONPATH."""
    if current_version(settings.resolved_models_dir, "notify_outcomes") is not None:
        return
    step_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))}
    _step(
        "train notification models",
        [python, "-m", "bench.notify.train_model", "--models-dir", str(settings.resolved_models_dir)],
        step_env,
    )


def _step(name: str, cmd: list[str], env: dict[str, str]) -> None:
    print(f"[demo] {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.monotonic()
    subprocess.run(cmd, env=env, check=True)
    print(f"[demo] {name} done in {time.monotonic() - t0:.1f} s", flush=True)


DEMO_SEARCH_LOG = "kindred:demo:search:writes"


def _replica_envs(
    settings: Settings, env: dict[str, str], n: int, log_key: str = DEMO_SEARCH_LOG
) -> list[dict[str, str]]:
    """The environments of `n` search replicas, each on a fresh copy of the demo's search index and one
    fresh write log (both reset here, so a re-indexed catalogue is what they serve)."""
    if n <= 0:
        return []
    import shutil

    import redis

    from retrieval_svc.search.replication import search_replicas_dir

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2)
    try:
        client.delete(log_key, f"{log_key}:replicas")
    except redis.RedisError as exc:
        raise SystemExit(f"[demo] --search-replicas needs Redis at {settings.redis_url}: {exc}") from exc
    finally:
        client.close()
    shutil.rmtree(search_replicas_dir(settings), ignore_errors=True)
    return [
        {
            **env,
            "KINDRED_SEARCH_REPLICA": f"r{i}",
            "KINDRED_SEARCH_WRITE_LOG": log_key,
            "KINDRED_RETRIEVAL_PORT": str(settings.retrieval_port + 10 + i),
            "KINDRED_HOST": settings.host,
        }
        for i in range(n)
    ]


def _target(settings: Settings, name: str) -> str:
    port = getattr(settings, f"{name}_port")
    return f"{settings.host}:{port}"


def _banner(settings: Settings, data_dir: Path, elapsed: float) -> str:
    fan = _first_fan(data_dir)
    return f"""
[demo] the Kindred mesh is up ({elapsed:.0f} s). Data and models: {data_dir}
  ranking    {_target(settings, "ranking")}   kindred.v1.RankingService   (Recommend, Rank, SearchRanked)
  retrieval  {_target(settings, "retrieval")}   kindred.v1.RetrievalService (Retrieve, Search, UpsertPosts, …)
  notify     {_target(settings, "notify")}   kindred.v1.NotifyService    (Decide, DecideBatch, CollectDue, …)
  events     {_target(settings, "events")}   kindred.v1.EventService     (LogEvents)

Try, in another terminal:
  .venv/bin/kindred recommend --fan {fan} -k 10
  .venv/bin/kindred search "watercolor palette" --fan {fan} -k 10
Every service has gRPC reflection and the standard health service. Ctrl-C stops everything.
"""


def _first_fan(data_dir: Path) -> str:
    import json

    path = data_dir / "catalogue" / "fans.jsonl"
    try:
        with open(path, encoding="utf-8") as fh:
            return str(json.loads(fh.readline())["fan_id"])
    except (OSError, ValueError, KeyError):
        return "<fan id>"
